"""Sending the journeys: people in parallel, each person's steps in order."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import IO

import httpx

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


async def _send(client: httpx.AsyncClient, step: Step, report: PlayReport) -> None:
    """Send like a provider: retry a 503 (Kafka busy) a few times, report anything else."""
    for attempt in range(5):
        response = await client.post(step.url, content=step.body, headers=step.headers)
        if response.status_code != 503:
            break
        await asyncio.sleep(1 + attempt)
    report.requests += 1
    if response.is_success:
        report.events[step.channel] += step.events
    else:
        report.failures.append(f"{step.channel} {response.status_code}: {response.text[:200]}")
