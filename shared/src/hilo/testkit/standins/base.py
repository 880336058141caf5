"""What every provider stand-in shares: how it is served, and the webhooks it sends after an
answer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import uvicorn

from hilo.testkit.serving import ThreadedServer, served

SENDING_TIMEOUT = 10
"""Seconds a stopping stand-in waits for the webhooks it is still sending."""


class StandIn(ThreadedServer):
    """A provider's API (`app`) on 127.0.0.1, served one of three ways: `with` (or `start` and
    `stop`) in a thread of its own, `async with serving()` in the caller's event loop, and
    `serve_forever` in the foreground of its own process (`python -m`, `make run`).

    Work it starts after an answer (`_later`: the webhooks a provider sends after accepting a
    message) is done before it stops serving, `SENDING_TIMEOUT` s at most.
    """

    def __init__(self, app: Any, *, name: str) -> None:
        super().__init__(app, name=name)
        self._pending: set[asyncio.Task[None]] = set()

    @asynccontextmanager
    async def serving(self, port: int | None = None) -> AsyncIterator[str]:
        """Serve in the caller's event loop until the block ends; yields the base URL."""
        async with served(self.app, port, host=self.host, lifespan=self.lifespan) as url:
            self.url = url
            try:
                yield url
            finally:
                if self._pending:
                    await asyncio.wait(self._pending, timeout=SENDING_TIMEOUT)

    def stop(self, *, timeout: float = 10) -> None:
        """Stop serving (see `ThreadedServer.stop`), after the webhooks it is sending are sent."""
        deadline = time.monotonic() + SENDING_TIMEOUT
        while self._pending and time.monotonic() < deadline:
            time.sleep(0.01)
        super().stop(timeout=timeout)

    def serve_forever(self, port: int) -> None:
        """Serve in the foreground until interrupted (SIGINT, SIGTERM)."""
        uvicorn.run(self.app, host=self.host, port=port, log_config=None, access_log=False)

    def _later(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` after the answer, as a provider's webhooks follow its API's answer."""
        task = asyncio.get_running_loop().create_task(work)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
