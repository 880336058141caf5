"""Provider webhooks answered straight from the app, past FastAPI's per-request layers.

A webhook is a channel's hot path: at a steady 500 requests/s on two cores, FastAPI's layers
around it (the error, telemetry and exit-stack middleware, two routers, the request/response
wrappers) cost about 0.1 ms of the 0.6-0.7 ms of CPU a WhatsApp webhook took (measured with and
without them, docs/benchmarks.md). A `DirectRoute` stays an ordinary FastAPI route: documented
in OpenAPI, and served by the full stack whenever the fast path does not apply. A
`DirectRoutingApp` answers a request for a direct route's exact method and path itself: the
endpoint takes the `Request`, returns the `Response`, and its exceptions are rendered by the
app's exception handlers as FastAPI's `ExceptionMiddleware` would; anything without a handler
propagates to the server, which answers 500 and logs it, as `ServerErrorMiddleware` would have.

Middleware would not see those requests, so once the app has any (`add_middleware`: tracing,
say) every request takes the full stack again.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine, Iterable
from itertools import takewhile
from typing import Any, cast

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import Receive, Scope, Send

Endpoint = Callable[[Request], Coroutine[Any, Any, Response]]


class DirectRoute(APIRoute):
    """A route whose endpoint takes the `Request` and returns the `Response` itself.

    FastAPI's hook for custom route classes: the route is matched, documented (response model,
    tags) and its exceptions handled like any other, but a request skips dependency solving and
    response-model serialisation, which cost more CPU than a webhook's own work.

    So nothing declared on it runs: a route (or router) with dependencies, an API-key check
    say, or with parameters besides the `Request` is refused when it is built, instead of
    being answered without them. A direct route checks its caller itself (a signature).
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        declared = self.dependant
        if declared.dependencies or _parameters(declared):
            raise TypeError(
                f"{self.path}: a DirectRoute runs no dependencies and reads no parameters; "
                "check the caller in the endpoint (it takes the Request) or use an APIRoute"
            )

    def get_route_handler(self) -> Endpoint:
        return cast("Endpoint", self.endpoint)


class DirectRoutingApp(FastAPI):
    """A FastAPI app that answers its included `DirectRoute`s without its middleware and router."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._direct: dict[tuple[str, str], Endpoint] = {}

    def include_direct_router(self, router: APIRouter) -> None:
        """`include_router`, and serve the router's direct routes from `__call__`."""
        self.include_router(router)
        for route in _direct_routes(router.routes):
            for method in route.methods or ():
                self._direct[(method, route.path)] = cast("Endpoint", route.endpoint)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = (
            self._direct.get((scope["method"], scope["path"]))
            if scope["type"] == "http" and not self.user_middleware
            else None
        )
        if endpoint is None:
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        request = Request(scope, receive)
        try:
            response = await endpoint(request)
        except Exception as exc:
            response = await self._handled(request, exc)
        await response(scope, receive, send)

    async def _handled(self, request: Request, exc: Exception) -> Response:
        """The app's answer to `exc`: its handler by status, then by class, as
        `ExceptionMiddleware` looks them up; re-raised when it has none (a handler of
        `Exception` is the server error middleware's, which lets the error reach the server)."""
        handlers = self.exception_handlers
        handler = handlers.get(exc.status_code) if isinstance(exc, HTTPException) else None
        if handler is None:
            classes = takewhile(lambda cls: cls is not Exception, type(exc).__mro__)
            handler = next((handlers[cls] for cls in classes if cls in handlers), None)
        if handler is None:
            raise exc
        if inspect.iscoroutinefunction(handler):
            return cast("Response", await handler(request, exc))
        return cast("Response", await run_in_threadpool(handler, request, exc))


def _parameters(dependant: Dependant) -> list[Any]:
    """What FastAPI would have read from the request for the endpoint besides the `Request`."""
    return [
        *dependant.path_params,
        *dependant.query_params,
        *dependant.header_params,
        *dependant.cookie_params,
        *dependant.body_params,
    ]


def _direct_routes(routes: Iterable[Any]) -> list[DirectRoute]:
    return [route for route in routes if isinstance(route, DirectRoute)]
