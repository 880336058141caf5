"""A direct route answers past FastAPI's layers, and answers exactly what they would have."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.types import Receive, Scope, Send

from hilo.direct_routes import DirectRoute, DirectRoutingApp


class Refused(Exception):
    """Handled by the app, as a channel's `Rejected` is."""


class Teapot(Exception):
    """Handled by a plain (not async) handler, which runs in a thread."""


async def hook(request: Request) -> Response:
    """Answers as the request's `?do=` says: the cases an endpoint meets."""
    body = await request.body()
    match request.query_params.get("do"):
        case "refuse":
            raise Refused("no")
        case "http":
            raise HTTPException(409, "taken", headers={"x-why": "taken"})
        case "teapot":
            raise Teapot
        case "gone":
            raise HTTPException(410, "gone")
        case "crash":
            raise RuntimeError("a bug")
    return Response(f'{{"bytes":{len(body)}}}', media_type="application/json")


def app() -> DirectRoutingApp:
    app = DirectRoutingApp()
    router = APIRouter(prefix="/hooks")
    router.add_api_route("/in", hook, methods=["POST"], route_class_override=DirectRoute)
    router.add_api_route("/health", lambda: {"ok": True}, methods=["GET"])
    app.include_direct_router(router)

    @app.exception_handler(Refused)
    async def refused(_request: Request, _exc: Refused) -> JSONResponse:
        return JSONResponse({"error": "refused"}, status_code=400)

    @app.exception_handler(Teapot)
    def teapot(_request: Request, _exc: Teapot) -> PlainTextResponse:
        return PlainTextResponse("teapot", status_code=418)

    @app.exception_handler(410)
    async def gone(_request: Request, _exc: Exception) -> PlainTextResponse:
        return PlainTextResponse("long gone", status_code=410)

    return app


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app")


@pytest.fixture
def stack_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths FastAPI's own `__call__` (its middleware and router) was entered for."""
    calls: list[str] = []
    full_stack = FastAPI.__call__

    async def counted(self: FastAPI, scope: Scope, receive: Receive, send: Send) -> None:
        calls.append(scope.get("path", scope["type"]))
        await full_stack(self, scope, receive, send)

    monkeypatch.setattr(FastAPI, "__call__", counted)
    return calls


async def test_a_direct_route_is_answered_without_the_stack_and_others_with_it(
    stack_calls: list[str],
) -> None:
    async with client(app()) as http:
        direct = await http.post("/hooks/in", content=b"abc")
        health = await http.get("/hooks/health")

    assert direct.json() == {"bytes": 3}
    assert health.json() == {"ok": True}
    assert stack_calls == ["/hooks/health"]


@pytest.mark.parametrize("do", ["", "refuse", "http", "teapot", "gone"])
async def test_every_answer_is_the_one_the_full_stack_gives(do: str) -> None:
    plain = app()
    plain.add_middleware(BaseHTTPMiddleware, dispatch=lambda request, call_next: call_next(request))
    async with client(app()) as direct, client(plain) as full:
        fast = await direct.post("/hooks/in", params={"do": do}, content=b"{}")
        slow = await full.post("/hooks/in", params={"do": do}, content=b"{}")

    assert (fast.status_code, fast.content) == (slow.status_code, slow.content)
    assert fast.headers.get("x-why") == slow.headers.get("x-why")
    assert fast.headers["content-type"] == slow.headers["content-type"]


async def test_an_error_without_a_handler_reaches_the_server(stack_calls: list[str]) -> None:
    async with client(app()) as http:
        with pytest.raises(RuntimeError, match="a bug"):
            await http.post("/hooks/in", params={"do": "crash"})

    assert stack_calls == []


async def test_an_app_with_middleware_puts_every_request_through_it(
    stack_calls: list[str],
) -> None:
    seen: list[str] = []

    async def note(request: Request, call_next: Any) -> Response:
        seen.append(request.url.path)
        response: Response = await call_next(request)
        return response

    traced = app()
    traced.add_middleware(BaseHTTPMiddleware, dispatch=note)
    async with client(traced) as http:
        response = await http.post("/hooks/in", content=b"abcd")

    assert response.json() == {"bytes": 4}
    assert seen == ["/hooks/in"]
    assert stack_calls == ["/hooks/in"]


async def test_another_method_or_path_falls_back_to_the_router(stack_calls: list[str]) -> None:
    async with client(app()) as http:
        wrong_method = await http.put("/hooks/in")
        trailing = await http.post("/hooks/in/", follow_redirects=False)

    assert wrong_method.status_code == 405
    assert trailing.status_code == 307
    assert stack_calls == ["/hooks/in", "/hooks/in/"]


def test_a_direct_route_with_a_dependency_is_refused_not_answered_without_it() -> None:
    """A router's API-key dependency would never run on a direct route: building it fails."""

    def require_key() -> None:
        raise HTTPException(401, "no key")

    router = APIRouter(prefix="/hooks", dependencies=[Depends(require_key)])
    with pytest.raises(TypeError, match="runs no dependencies"):
        router.add_api_route("/in", hook, methods=["POST"], route_class_override=DirectRoute)

    async def reads_a_query(request: Request, sender: str) -> Response:
        return Response(sender)

    with pytest.raises(TypeError, match="reads no parameters"):
        APIRouter().add_api_route(
            "/q", reads_a_query, methods=["POST"], route_class_override=DirectRoute
        )
