"""The agents' queue: who waits for a reply, as the desk shows them (past the customers an agent
marked done that the profile service has not read the mark of yet), and the gauges a
supervisor's dashboard reads from it.

The profile service lists the customers waiting, the longest first; the desk's `desk_handling`
collection says who handles them and what was marked done. The inbox's *Waiting for a reply*
tab reads until it has a screenful; the gauges read every page there is, up to `QUEUE_PAGES`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import structlog
from prometheus_client import Gauge

from agent_desk.handling import ConversationState, Handling, overdue, state_of
from agent_desk.profiles import ProfileApi
from hilo.logs import error_text

log = structlog.get_logger(__name__)

QUEUE_PAGE: Final = 500
QUEUE_PAGES: Final = 5
"""The queue reads at most this many pages: 2,500 customers, those marked done included."""

Summary = dict[str, Any]
HandlingLookup = Callable[[list[str]], Awaitable[dict[str, Handling] | None]]
"""Who handles these customers' conversations; None while MongoDB does not answer."""
StrictHandlingLookup = Callable[[list[str]], Awaitable[dict[str, Handling]]]
"""The same, raising while MongoDB does not answer: no page is left out unnoticed."""

UNKNOWN: Final = float("nan")
"""What a figure shows while not read: an outage is no empty queue, and PromQL's `max` over the
desk replicas leaves a NaN out while another replica has a number."""

GAUGES: Final = {
    "waiting": Gauge(
        "hilo_desk_queue_waiting",
        "Customers waiting for a reply, as the desk's queue shows them (counted up to the "
        "2,500 the queue reads); NaN while the last read failed.",
    ),
    "overdue": Gauge(
        "hilo_desk_queue_overdue",
        "Customers waiting longer than HILO_DESK_FIRST_REPLY_MINUTES (always 0 without a "
        "target); NaN while the last read failed.",
    ),
    "unassigned": Gauge(
        "hilo_desk_queue_unassigned",
        "Customers waiting whose conversation no agent handles; NaN while the last read failed.",
    ),
    "longest": Gauge(
        "hilo_desk_queue_longest_wait_seconds",
        "How long the customer waiting longest has waited (0: nobody waits); NaN while the last "
        "read failed.",
    ),
    "read": Gauge(
        "hilo_desk_queue_read_timestamp_seconds",
        "When the queue was last read (Unix time; NaN: never).",
    ),
    "failed": Gauge(
        "hilo_desk_queue_failed_reads",
        "Reads of the queue that failed in a row (the profile service or MongoDB away): "
        "alert on the smallest over the desk replicas.",
    ),
}
for _gauge in GAUGES.values():
    _gauge.set(UNKNOWN)
GAUGES["failed"].set(0)


async def read_queue(
    profiles: ProfileApi, handlings_of: HandlingLookup, *, enough: int | None = None
) -> tuple[list[Summary], dict[str, Handling] | None]:
    """The customers waiting for a reply, the longest waiting first, and who handles them:
    read on by pages past those an agent marked done, until `enough` still wait (None: every
    page) or `QUEUE_PAGES` were read. A page starts at the last one's wait, inclusive
    (customers who began waiting in the same millisecond are not skipped), so it reads one
    again. The handlings are None when MongoDB did not answer for the first page."""
    listed: dict[str, Summary] = {}
    handlings: dict[str, Handling] = {}
    waiting_from: str | None = None
    for _ in range(QUEUE_PAGES):
        page = await profiles.open_conversations(
            QUEUE_PAGE, awaiting=True, waiting_from=waiting_from
        )
        fresh = [c for c in page if c["customer_id"] not in listed]
        found = await handlings_of([c["customer_id"] for c in fresh])
        if found is None:  # MongoDB away: the pages read so far stand, if any
            return (list(listed.values()), handlings) if listed else (fresh, None)
        handlings.update(found)
        listed.update((c["customer_id"], c) for c in fresh)
        waiting_from = page[-1]["conversation"].get("awaiting_reply_since") if page else None
        done = len(page) < QUEUE_PAGE or not fresh or waiting_from is None
        if done or (enough is not None and _still_waiting(listed, handlings) >= enough):
            break
    return list(listed.values()), handlings


def _still_waiting(listed: Mapping[str, Summary], handlings: Mapping[str, Handling]) -> int:
    return sum(s.waiting_since is not None for s in _states(listed.values(), handlings))


def _states(
    listed: Iterable[Summary], handlings: Mapping[str, Handling]
) -> list[ConversationState]:
    """Who handles each customer's conversation and since when they wait, as the tab shows."""
    return [state_of(c["conversation"], handlings.get(c["customer_id"])) for c in listed]


@dataclass(frozen=True)
class QueueFigures:
    """What a supervisor watches of the queue at one moment."""

    waiting: int
    overdue: int
    unassigned: int
    longest_wait: timedelta


def figures(
    listed: list[Summary], handlings: Mapping[str, Handling], target: timedelta, now: datetime
) -> QueueFigures:
    """The queue's figures from what `read_queue` read: customers marked done do not wait."""
    waiting = [s for s in _states(listed, handlings) if s.waiting_since is not None]
    since = [s.waiting_since for s in waiting if s.waiting_since is not None]
    return QueueFigures(
        waiting=len(waiting),
        overdue=sum(overdue(s, target, now) for s in waiting),
        unassigned=sum(s.agent is None for s in waiting),
        longest_wait=max(now - min(since), timedelta(0)) if since else timedelta(0),
    )


def show(found: QueueFigures | None) -> None:
    """Set the gauges to `found`, read now; None: the read failed, and the figures are
    unknown."""
    if found is None:
        for name in ("waiting", "overdue", "unassigned", "longest"):
            GAUGES[name].set(UNKNOWN)
        GAUGES["failed"].inc()
        return
    GAUGES["waiting"].set(found.waiting)
    GAUGES["overdue"].set(found.overdue)
    GAUGES["unassigned"].set(found.unassigned)
    GAUGES["longest"].set(found.longest_wait.total_seconds())
    GAUGES["read"].set(time.time())
    GAUGES["failed"].set(0)


async def watch_queue(
    profiles: ProfileApi,
    handlings_of: StrictHandlingLookup,
    *,
    target: timedelta,
    every: float,
    now: Callable[[], datetime],
) -> None:
    """Read the queue every `every` seconds and show its figures on the gauges. A read that
    fails, wholly or in part (`handlings_of` raises for any page MongoDB does not answer),
    shows them unknown, never as an empty queue."""
    while True:
        found = None
        try:
            listed, handlings = await read_queue(profiles, handlings_of)
            found = figures(listed, handlings or {}, target, now())  # never None: it raises
        except Exception as exc:  # the profile service or MongoDB away: again next round
            log.warning("desk_queue_not_read", error=error_text(exc))
        show(found)
        await asyncio.sleep(every)
