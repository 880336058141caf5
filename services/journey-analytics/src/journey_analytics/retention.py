"""Touches past retention, deleted: `analytics_touches` otherwise grows for ever.

A touch is kept `HILO_ANALYTICS_RETENTION_DAYS` after it happened (its event time, not when it
was stored: a late upload of last year's sales ages as last year's). The default, 400 days,
outlasts the `journey` topic's 365, so reading the topics again after a consumer-group reset
brings back nothing the sweep would delete. The API refuses measures that would read further
back (`earliest_start`), rather than answering with touches missing.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import structlog
from prometheus_client import Counter
from pymongo.errors import PyMongoError

from hilo.logs import error_text
from journey_analytics.measures import Windows
from journey_analytics.store import TouchStore

log = structlog.get_logger(__name__)

EXPIRED = Counter(
    "hilo_analytics_touches_expired_total",
    "Touches deleted because they happened longer ago than HILO_ANALYTICS_RETENTION_DAYS",
)
AT_MOST = 10_000
"""Touches deleted per round trip: a first sweep over years of history goes in steps, each a
bounded read of ids and one delete."""


def earliest_start(now: datetime, retention: timedelta, windows: Windows) -> datetime:
    """The earliest `from` whose measures have every touch they read (`Windows.reach` looks
    back `lookback` before it) still kept."""
    return now - retention + windows.lookback


async def expire_touches(store: TouchStore, before: datetime, at_most: int = AT_MOST) -> int:
    """Delete every touch that happened before `before`, `at_most` a step; how many."""
    total = 0
    while True:
        deleted = await store.expire(before, at_most)
        total += deleted
        EXPIRED.inc(deleted)
        if deleted < at_most:
            return total


async def keep_expiring(store: TouchStore, retention: timedelta, every: float) -> None:
    """For the life of the service: expire touches at start, then every `every` seconds; a
    failure waits for the next round."""
    while True:
        try:
            expired = await expire_touches(store, datetime.now(UTC) - retention)
        except PyMongoError as exc:
            log.warning("touches_not_expired", error=type(exc).__name__)
        except Exception as exc:  # a bug must not end the sweep for the life of the service
            log.exception("touches_expiry_failed", error=error_text(exc))
        else:
            if expired:
                log.info("touches_expired", count=expired)
        await asyncio.sleep(every)
