"""The queue's figures for a supervisor, and what an outage leaves of them."""

from __future__ import annotations

import asyncio
import math
import time
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import httpx
import pytest
from prometheus_client import REGISTRY

from agent_desk.handling import Handling
from agent_desk.profiles import ProfileApi, ProfileUnavailable
from agent_desk.queue import QueueFigures, figures, show, watch_queue
from agent_desk.settings import DeskSettings

T0 = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def waiting(customer: str, since: int, *, started: int = 0) -> dict[str, Any]:
    """A summary of the queue as the profile service sends it (times in minutes after T0)."""
    return {
        "customer_id": customer,
        "conversation": {
            "started_at": at(started).isoformat(),
            "awaiting_reply_since": at(since).isoformat(),
            "last_inbound_at": at(since).isoformat(),
        },
    }


def test_the_figures_leave_out_customers_marked_done_and_count_who_has_the_rest() -> None:
    listed = [waiting("ana", 0), waiting("bo", 20), waiting("cy", 25), waiting("di", 5)]
    handlings = {
        "bo": Handling(agent="bo.agent", taken_for=at(0)),
        "di": Handling(done_through=at(5), done_by="ana.agent"),
        "cy": Handling(agent="ana.agent", taken_for=at(-600)),  # an earlier conversation's
    }

    found = figures(listed, handlings, timedelta(minutes=30), now=at(40))

    assert found == QueueFigures(
        waiting=3, overdue=1, unassigned=2, longest_wait=timedelta(minutes=40)
    )


def test_an_empty_queue_waits_for_nothing() -> None:
    assert figures([], {}, timedelta(minutes=30), at(0)) == QueueFigures(0, 0, 0, timedelta(0))


def gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value(f"hilo_desk_queue_{name}")


class Profiles:
    """A profile service with one page of two customers waiting, or none answering."""

    def __init__(self, *, answering: bool = True) -> None:
        self.answering = answering
        self.reads = 0
        self.thrice = asyncio.Event()

    async def open_conversations(self, *_args: object, **_kwargs: object) -> list[Any]:
        self.reads += 1
        if self.reads == 3:
            self.thrice.set()
        if not self.answering:
            raise ProfileUnavailable("down")
        return [waiting("ana", 0), waiting("bo", 30)]


async def watched(profiles: Profiles, handlings_of: Any) -> None:
    """Run the queue's watch until it read three times."""
    task = asyncio.create_task(
        watch_queue(
            cast(ProfileApi, profiles),
            handlings_of,
            target=timedelta(minutes=30),
            every=0.01,
            now=lambda: at(40),
        )
    )
    await asyncio.wait_for(profiles.thrice.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def nobody(_ids: list[str]) -> dict[str, Handling]:
    return {}


async def away(_ids: list[str]) -> dict[str, Handling]:
    raise TimeoutError


async def test_a_read_shows_the_figures_and_when_it_was_read() -> None:
    before = time.time()

    await watched(Profiles(), nobody)

    assert (gauge("waiting"), gauge("overdue"), gauge("unassigned")) == (2, 1, 2)
    assert gauge("longest_wait_seconds") == 40 * 60
    assert (gauge("read_timestamp_seconds") or 0) >= before
    assert gauge("failed_reads") == 0


@pytest.mark.parametrize(
    ("profiles", "handlings_of"),
    [(Profiles(answering=False), nobody), (Profiles(), away)],
    ids=["the profile service away", "MongoDB away"],
)
async def test_a_failed_read_shows_the_figures_unknown_not_an_empty_queue(
    profiles: Profiles, handlings_of: Any
) -> None:
    """An alert on the queue must not read an outage as nobody waiting: the figures are NaN
    (PromQL's `max` over the replicas takes the others'), the failures in a row counted, the
    last good read's time kept."""
    show(QueueFigures(7, 2, 3, timedelta(minutes=90)))
    read_at = gauge("read_timestamp_seconds")

    await watched(profiles, handlings_of)

    assert all(
        math.isnan(gauge(name) or 0)
        for name in ("waiting", "overdue", "unassigned", "longest_wait_seconds")
    )
    assert (gauge("failed_reads") or 0) >= 3
    assert gauge("read_timestamp_seconds") == read_at


async def test_a_profile_api_url_that_reaches_something_else_is_an_outage_not_an_empty_queue(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A wrong `HILO_PROFILE_API_URL` (or a gateway) answers 404 to every path: the queue read
    as nobody waiting, and its gauges said 0 where an outage says NaN."""
    monkeypatch.setenv("HILO_ENVIRONMENT", "test")
    misrouted = httpx.MockTransport(lambda request: httpx.Response(404, json={"detail": "no"}))
    api = ProfileApi(DeskSettings(), transport=misrouted)

    with pytest.raises(ProfileUnavailable, match="answered 404 for /v1/conversations"):
        await api.open_conversations(awaiting=True)
    assert await api.profile("c-1") is None, "one customer's 404 is still nobody"
    await api.close()
