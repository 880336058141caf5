"""Reading the result back from the customer-profile API: the proof that journeys assembled."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from hilo.contract import AGENT_MARKS
from traffic_simulator.journeys import chats
from traffic_simulator.offers import price_mismatches
from traffic_simulator.people import Person
from traffic_simulator.settings import SimulatorSettings


@dataclass
class Readback:
    customers: set[str] = field(default_factory=set)
    merges: int = 0
    entries_per_channel: Counter[str] = field(default_factory=Counter)
    complete: int = 0
    """Journeys holding at least every event sent."""
    missing: int = 0
    """Events sent (and accepted) that no journey holds."""
    duplicated: int = 0
    """Entries beyond those sent: an event stored twice (a retried request, a redelivery)."""
    sample: list[dict[str, Any]] = field(default_factory=list)
    sample_name: str = ""
    customer_of: dict[int, str] = field(default_factory=dict)
    """Each person's customer id, by person number."""
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    """`GET /v1/mismatches` of the last 16 days (every run's; `offers.judge` picks this one's)."""
    chats: int = 0
    """WhatsApp and Messenger entries read back."""
    unnamed_chats: int = 0
    """Of those, entries whose conversation id is not the one the simulator names when a call
    continues the chat: its `HILO_SUBJECT_PEPPER` is not the channels'."""
    waiting: list[dict[str, Any]] | None = field(default_factory=list)
    """The agents' queue (`GET /v1/conversations?awaiting=true`), the longest waiting first."""


async def read_back(
    crowd: list[Person], expected: dict[int, int], settings: SimulatorSettings
) -> Readback:
    """Wait (up to the timeout) until every person's journey holds every event sent; then the
    price mismatches (found as each entry is stored, so all there by then)."""
    headers = {"X-API-Key": settings.api_key.get_secret_value()}
    async with httpx.AsyncClient(base_url=settings.profile_url, headers=headers, timeout=30) as api:
        deadline = time.monotonic() + settings.readback_timeout_seconds
        while True:
            try:
                result = await _snapshot(api, crowd, expected, settings)
            except httpx.TransportError:
                # An instance of the profile service went down mid-read (a replica restarting
                # behind the name): read again, until the deadline.
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(1.0)
                continue
            if result.complete == len(crowd) or time.monotonic() > deadline:
                result.mismatches = await price_mismatches(api)
                result.waiting = await _queue(api)
                return result
            await asyncio.sleep(1.0)


QUEUE_READ = 500


async def _queue(api: httpx.AsyncClient) -> list[dict[str, Any]] | None:
    """The agents' queue as the profile service holds it; None when it does not say."""
    try:
        response = await api.get(
            "/v1/conversations", params={"awaiting": "true", "limit": QUEUE_READ}
        )
        response.raise_for_status()
    except httpx.HTTPError:
        return None
    return list(response.json())


def queue_line(waiting: list[dict[str, Any]] | None, now: datetime) -> str:
    """How many customers the agents' queue holds, and how long the first has waited (of this
    run and earlier ones: the queue is the platform's; customers an agent marked done on the
    desk do not count)."""
    if waiting is None:
        return "  waiting for a reply     unknown (the profile service did not say)"
    if not waiting:
        return "  waiting for a reply     nobody"
    since = datetime.fromisoformat(waiting[0]["conversation"]["awaiting_reply_since"])
    minutes = max(int((now - since).total_seconds() // 60), 0)
    count = f"{len(waiting)} or more" if len(waiting) >= QUEUE_READ else str(len(waiting))
    return f"  waiting for a reply     {count} (the longest for {minutes} min)"


async def entries_held(crowd: list[Person], settings: SimulatorSettings) -> int:
    """How many journey entries the crowd's customers hold now: before a run, those of an
    earlier run with the same seed (whose events a rerun repeats, so adds none)."""
    headers = {"X-API-Key": settings.api_key.get_secret_value()}
    async with httpx.AsyncClient(base_url=settings.profile_url, headers=headers, timeout=30) as api:
        held = 0
        try:
            for person in crowd:
                customer = await _customer(api, person)
                if customer is not None:
                    held += len(await customer_journey(api, customer))
        except httpx.TransportError:
            return 0  # not answering yet: the run itself says what is wrong
        return held


async def _customer(api: httpx.AsyncClient, person: Person) -> str | None:
    found = await api.post("/v1/customers/lookup", json={"kind": "email", "value": person.email})
    if found.status_code != 200:  # unknown (404), or not answering yet: read again later
        return None
    customer: str = found.json()["customer_id"]
    return customer


async def customer_journey(api: httpx.AsyncClient, customer: str) -> list[dict[str, Any]]:
    """What the simulated customer's journey holds of what they did: not an agent's done mark
    (an agent may look at a simulated customer on the desk), which no channel sent and which
    journey-analytics does not count either."""
    journey = (await api.get(f"/v1/customers/{customer}/journey", params={"limit": 200})).json()
    entries: list[dict[str, Any]] = journey.get("entries", [])
    return [entry for entry in entries if entry.get("type") not in AGENT_MARKS]


async def _snapshot(
    api: httpx.AsyncClient,
    crowd: list[Person],
    expected: dict[int, int],
    settings: SimulatorSettings,
) -> Readback:
    result = Readback()
    showcase = next((p for p in crowd if p.uses_messenger and p.drops_a_call), crowd[0])
    for person in crowd:
        customer = await _customer(api, person)
        if customer is None:
            result.missing += expected.get(person.number, 0)
            continue
        result.customers.add(customer)
        result.customer_of[person.number] = customer
        profile = (await api.get(f"/v1/customers/{customer}")).json()
        result.merges += len(profile.get("merged_from", []))
        entries = await customer_journey(api, customer)
        result.entries_per_channel.update(entry["channel"] for entry in entries)
        check_chats(result, entries, chats(person, settings))
        sent = expected.get(person.number, 0)
        result.missing += max(0, sent - len(entries))
        result.duplicated += max(0, len(entries) - sent)
        if len(entries) >= sent:
            result.complete += 1
        if person is showcase:
            result.sample = entries
            result.sample_name = f"{person.first_name} {person.last_name}"
    return result


def check_chats(result: Readback, entries: list[dict[str, Any]], named: dict[str, str]) -> None:
    """Count the person's chat entries whose conversation id differs from the one the simulator
    names: with another pepper, every "continued on WhatsApp" would point at nothing."""
    for entry in entries:
        if entry["channel"] in named:
            result.chats += 1
            conversation = entry.get("conversation") or {}
            result.unnamed_chats += conversation.get("id") != named[entry["channel"]]


def timeline(entries: list[dict[str, Any]]) -> str:
    """A journey as a person reads it: when, where, what."""
    return "\n".join(
        f"    {entry['occurred_at'][:16].replace('T', ' ')}  {entry['channel']:<10} "
        f"{entry['type']:<15} {entry['summary']}"
        for entry in entries
    )
