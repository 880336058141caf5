"""Sending the journeys: people in parallel, each person's steps in order."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import IO

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    retry_if_result,
    stop_after_attempt,
    wait_exponential,
)

from traffic_simulator.journeys import Step, journey, journey_start
from traffic_simulator.offers import OfferPlan, OffersClient, OffersUnavailable
from traffic_simulator.people import Person
from traffic_simulator.settings import SimulatorSettings


@dataclass
class PlayReport:
    requests: int = 0
    events: Counter[str] = field(default_factory=Counter)
    expected_entries: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    retries: int = 0
    """Tries beyond the first: a channel that was down, restarting or busy."""
    plans: dict[int, OfferPlan] = field(default_factory=dict)
    """The offers journeys' prices, by person number (only of those on one)."""
    offers_unavailable: list[str] = field(default_factory=list)


async def play(
    crowd: list[Person], settings: SimulatorSettings, out: IO[str] = sys.stdout
) -> PlayReport:
    report = PlayReport()
    limit = asyncio.Semaphore(settings.concurrency)
    done = 0
    offers_http = httpx.AsyncClient(
        base_url=settings.offers_url,
        headers={"X-API-Key": settings.offers_api_key.get_secret_value()},
        timeout=30.0,
    )
    async with httpx.AsyncClient(timeout=30.0) as client, offers_http:
        offers = OffersClient(offers_http)

        async def one(person: Person) -> None:
            nonlocal done
            async with limit:
                start = journey_start(person)
                plan = OfferPlan()
                try:
                    plan = await offers.plan(person, start)
                except OffersUnavailable as exc:
                    report.offers_unavailable.append(str(exc))
                if plan != OfferPlan():
                    report.plans[person.number] = plan
                steps = journey(person, settings, start, plan)
                for step in steps:
                    await _send(client, step, report)
                report.expected_entries[person.number] = sum(step.events for step in steps)
                done += 1
                channels = " ".join(sorted({step.channel for step in steps}))
                out.write(
                    f"  [{done:>{len(str(len(crowd)))}}/{len(crowd)}] "
                    f"{person.first_name} {person.last_name[0]}.  {len(steps)} requests: "
                    f"{channels}\n"
                )
                out.flush()

        await asyncio.gather(*(one(person) for person in crowd))
    return report


RETRIED_STATUSES = frozenset({502, 503, 504})
"""Kafka busy (503), or a proxy in front of a channel that is restarting."""


def _try_later(response: httpx.Response) -> bool:
    return response.status_code in RETRIED_STATUSES


def _last_outcome(state: RetryCallState) -> httpx.Response:
    """Out of attempts: the last answer is reported; no answer at all raises."""
    if state.outcome is None:
        raise RuntimeError("no attempt was made")
    return state.outcome.result()  # type: ignore[no-any-return]


async def _send(client: httpx.AsyncClient, step: Step, report: PlayReport) -> None:
    """Send like a provider: a request the channel refused for now (503) or never answered (it
    was down, restarting) is sent again with backoff for about a minute; anything else is
    reported. A channel may so see one request twice: the journey must hold it once."""
    retrying = AsyncRetrying(
        retry=retry_if_exception_type(httpx.TransportError) | retry_if_result(_try_later),
        wait=wait_exponential(multiplier=0.5, max=10),
        stop=stop_after_attempt(10),
        retry_error_callback=_last_outcome,
    )
    response: httpx.Response = await retrying(
        client.post, step.url, content=step.body, headers=step.headers
    )
    report.requests += 1
    report.retries += retrying.statistics.get("attempt_number", 1) - 1
    if response.is_success:
        report.events[step.channel] += step.events
    else:
        report.failures.append(f"{step.channel} {response.status_code}: {response.text[:200]}")
