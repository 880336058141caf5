"""Work the service finishes by itself: erasures and splits that Kafka or MongoDB interrupted."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from pymongo.errors import PyMongoError

log = structlog.get_logger(__name__)


async def keep_finishing(finish: Callable[[], Awaitable[int]], interval: float, what: str) -> None:
    """Run `finish` every `interval` seconds for the life of the service, so the work completes
    once Kafka or MongoDB are back; warn (`<what>_unfinished`) while some is left."""
    event = what + "_unfinished"
    while True:
        try:
            if left := await finish():
                log.warning(event, count=left)
        except PyMongoError as exc:
            log.warning(event, error=type(exc).__name__)
        except Exception:  # keep going: one bad item must not stop every later one
            log.exception(event)
        await asyncio.sleep(interval)
