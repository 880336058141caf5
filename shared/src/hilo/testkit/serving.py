"""Serving an ASGI app on a real port inside the test's event loop.

A browser, a provider stand-in posting its callbacks, or a service calling another needs a real
address; the app's lifespan runs as in production (its consumers start, its producer connects).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Literal

import uvicorn

from hilo.testkit.local_infra import free_port


class InLoopServer(uvicorn.Server):
    """uvicorn in the caller's event loop, leaving signals to the caller (pytest)."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@asynccontextmanager
async def served(
    app: Any,
    port: int | None = None,
    *,
    host: str = "127.0.0.1",
    lifespan: Literal["auto", "on", "off"] = "on",
) -> AsyncIterator[str]:
    """Serve `app` until the block ends; yields its base URL (`http://host:port`).

    `lifespan="off"` serves an app whose lifespan the caller already runs.
    """
    port = port or free_port()
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan=lifespan,
        timeout_graceful_shutdown=3,  # an open event stream (a browser's) never ends by itself
    )
    server = InLoopServer(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError(f"the app did not start on {host}:{port}")
        await asyncio.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        await task
