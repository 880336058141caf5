"""Work the service finishes by itself: erasures and splits that Kafka or MongoDB interrupted."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from prometheus_client import Gauge
from pymongo.errors import PyMongoError

log = structlog.get_logger(__name__)

UNFINISHED = Gauge(
    "hilo_profile_unfinished",
    "Erasures or splits left unfinished by the last sweep (what: erasures, splits)",
    ["what"],
)


async def keep_finishing(finish: Callable[[], Awaitable[int]], interval: float, what: str) -> None:
    """Run `finish` every `interval` seconds for the life of the service, so the work completes
    once Kafka or MongoDB are back; warn (`<what>_unfinished`) while some is left, and say how
    much in `hilo_profile_unfinished{what}`: an erasure that keeps failing keeps its hold, and
    batches that need the person's profile wait for it, so operators alert on it staying up."""
    event = what + "_unfinished"
    gauge = UNFINISHED.labels(what)
    while True:
        try:
            left = await finish()
            gauge.set(left)
            if left:
                log.warning(event, count=left)
        except PyMongoError as exc:
            log.warning(event, error=type(exc).__name__)
        except Exception:  # keep going: one bad item must not stop every later one
            log.exception(event)
        await asyncio.sleep(interval)
