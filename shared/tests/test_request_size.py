"""Request bodies bounded before the app reads them (`hilo.request_size`)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
from fastapi import Depends, FastAPI, Header, HTTPException

from hilo.request_size import limit_request_bodies

LIMIT = 1_000


def keyed_app() -> tuple[FastAPI, list[int]]:
    """An API whose key check runs, as FastAPI's dependencies do, after its body is parsed."""
    app = FastAPI()
    limit_request_bodies(app, LIMIT)
    parsed: list[int] = []

    def key(x_api_key: str = Header(default="")) -> None:
        if x_api_key != "k":
            raise HTTPException(401, "no key")

    @app.post("/v1/things", dependencies=[Depends(key)])
    async def things(body: dict[str, str]) -> dict[str, int]:
        parsed.append(len(body))
        return {"fields": len(body)}

    return app, parsed


async def chunks(size: int) -> AsyncIterator[bytes]:
    """A body sent without `Content-Length` (chunked): its size shows only as it arrives."""
    yield b'{"a":"'
    for _ in range(size // 100):
        yield b"x" * 100
    yield b'"}'


async def test_a_body_larger_than_the_limit_is_refused_before_it_is_read() -> None:
    app, parsed = keyed_app()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        declared = await client.post("/v1/things", content=b"x" * (LIMIT + 1))
        streamed = await client.post("/v1/things", content=chunks(LIMIT * 5))
        unkeyed_small = await client.post("/v1/things", json={"a": "b"})
        small = await client.post("/v1/things", json={"a": "b"}, headers={"X-API-Key": "k"})

    assert (declared.status_code, declared.json()) == (
        413,
        {"detail": f"request body larger than {LIMIT} bytes"},
    )
    assert streamed.status_code == 413
    assert unkeyed_small.status_code == 401
    assert (small.status_code, small.json()) == (200, {"fields": 1})
    assert parsed == [1]
