"""Serving an ASGI app on a real port: in the test's event loop (`served`), or in a thread of its
own (`ThreadedServer`) for a caller that has no event loop to serve it in.

A browser, a provider stand-in posting its callbacks, or a service calling another needs a real
address; the app's lifespan runs as in production (its consumers start, its producer connects).
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import uvicorn

Lifespan = Literal["auto", "on", "off"]
GRACEFUL_SHUTDOWN = 3
"""Seconds a stopping server waits for open connections: an event stream (a browser's) never
ends by itself."""


def _config(app: Any, host: str, port: int, lifespan: Lifespan) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan=lifespan,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
    )


LOWEST_PORT = 20_000
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def free_port() -> int:
    """A port nothing uses now, for a server a test starts: below the range the OS gives
    outgoing connections their own ports from. A server stopped and started again on its port
    (a Kafka brought back after an outage) would otherwise find it taken meanwhile by some
    connection's end, or by a port the OS gave another test (two pytest workers run at once).
    Each pytest-xdist worker takes its ports from a slice of its own."""
    low, high = _own_slice()
    recent = list(_GIVEN)[-(high - low + 1) // 2 :]  # a small slice lets older ones go again
    for _ in range(1_000):
        port = random.randint(low, high)  # noqa: S311 - a port, not a secret
        if port in recent:  # free now, but maybe only until the one it went to starts
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _GIVEN.append(port)
        return port
    raise RuntimeError(f"no free port between {low} and {high}")


_GIVEN: deque[int] = deque(maxlen=2_000)
"""Ports handed out lately, not handed out again: a Kafka asks for four before it binds any."""


def _own_slice() -> tuple[int, int]:
    """This process's ports: below the OS's outgoing range, one slice per xdist worker."""
    try:
        high = int(EPHEMERAL_RANGE.read_text().split()[0]) - 1
    except (OSError, ValueError, IndexError):
        high = 32_767
    if high < LOWEST_PORT + 1_000:  # a machine whose outgoing range starts low: below it
        high = max(high, 2_047)
        return _split(1_024, high)
    return _split(LOWEST_PORT, high)


def _split(lowest: int, high: int) -> tuple[int, int]:
    """The slice of `lowest..high` this xdist worker takes its ports from."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    index = int(worker) if worker.isdigit() else 0
    size = (high - lowest + 1) // max(count, 1)
    low = lowest + (index % max(count, 1)) * size
    return low, low + size - 1


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
    lifespan: Lifespan = "on",
) -> AsyncIterator[str]:
    """Serve `app` until the block ends; yields its base URL (`http://host:port`).

    `lifespan="off"` serves an app whose lifespan the caller already runs.
    """
    port = port or free_port()
    server = InLoopServer(_config(app, host, port, lifespan))
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


class ThreadedServer:
    """`app` served by uvicorn in a daemon thread of its own, with an event loop of its own:
    `start()` (or `with`) serves it, `stop()` (or the block's end) stops it. A subclass may pass
    its own app (a provider's stand-in does)."""

    def __init__(
        self,
        app: Any,
        *,
        name: str = "threaded-server",
        host: str = "127.0.0.1",
        lifespan: Lifespan = "auto",
    ) -> None:
        self.app = app
        self.name = name
        """The thread's name, and the server's in errors."""
        self.host = host
        self.lifespan: Lifespan = lifespan
        self.url = ""
        """The base URL (`http://host:port`) while it serves."""
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self, port: int | None = None, *, timeout: float = 10) -> str:
        """Serve on `port` (a free one by default) once uvicorn has started; the base URL is
        returned. RuntimeError if it could not start (the port is taken) within `timeout` s."""
        if self._thread is not None:
            raise RuntimeError(f"{self.name} is already serving on {self.url}")
        port = port or free_port()
        server = uvicorn.Server(_config(self.app, self.host, port, self.lifespan))
        thread = threading.Thread(target=server.run, name=self.name, daemon=True)
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                thread.join(timeout=GRACEFUL_SHUTDOWN + 1)
                raise RuntimeError(f"{self.name} did not start on {self.host}:{port}")
            time.sleep(0.01)
        self._server, self._thread = server, thread
        self.url = f"http://{self.host}:{port}"
        return self.url

    def stop(self, *, timeout: float = 10) -> None:
        """Stop serving: uvicorn closes its connections (waiting `GRACEFUL_SHUTDOWN` s at most
        for open ones) and its thread ends (waited for `timeout` s at most)."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=timeout)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
