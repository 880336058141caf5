"""The channel contract test: what every present or future channel service must honour.

A channel team passes its provider's sample requests (already signed as the provider would
sign them) and gets, against the real broker, the checks the rest of Hilo relies on:

- every request is answered 2xx, and by then its events are on `interactions`;
- every record validates against the published sealed JSON Schema (readable without Python, and
  without personal data), and opens with the deployment's keys to an event that validates
  against the interaction JSON Schema;
- the record key is the subject of the event's strongest identifier (never the identifier) and
  the CloudEvents headers match;
- delivering every request again yields the same event ids (provider retries deduplicate).

`assert_refused_while_kafka_is_down` proves the other half of "nothing accepted is lost": with
the broker gone the channel answers 503, and the provider's retry is published once it is back.
For a provider that never retries, `assert_spooled_while_kafka_is_down` proves instead that the
one request is answered 200, kept, and published once the broker is back, also by an instance
started while the broker was away. For one that also keeps a log Hilo can read (Twilio),
`assert_read_back_after_outages` proves that what a webhook refused while MongoDB was away, or
unanswered while no instance ran, is read back from that log (`hilo.catch_up`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
from aiokafka.structs import ConsumerRecord
from fastapi import FastAPI

from hilo.catch_up import WATERMARKS_COLLECTION
from hilo.mongo import create_mongo_client
from hilo.settings import HiloSettings, MongoUrl
from hilo.spool import SPOOL_COLLECTION
from hilo.testkit.contract_check import opened_interactions
from hilo.testkit.probes import eventually, read_topic
from hilo.topics import Topic, ensure_topics, topic_name
from hilo_devkit.local_infra import LocalKafka, LocalSecantusDB

Settings = TypeVar("Settings", bound=HiloSettings)


@dataclass(frozen=True)
class ProviderRequest:
    """One request exactly as the provider sends it, signature included."""

    path: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    events: int = 1
    """How many interactions the request must publish."""


@asynccontextmanager
async def channel_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The channel app in-process with its lifespan run (so its Kafka producer is connected)."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://channel") as client:
            yield client


async def send(client: httpx.AsyncClient, request: ProviderRequest) -> httpx.Response:
    return await client.post(request.path, content=request.body, headers=dict(request.headers))


async def published_records(
    settings: HiloSettings, expected: int, timeout: float = 30.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """The raw records on this test's `interactions` topic (`read_topic`)."""
    return await read_topic(
        settings.kafka_bootstrap_servers,
        topic_name(Topic.INTERACTIONS, settings),
        expected=expected,
        timeout=timeout,
    )


async def assert_channel_contract(
    client: httpx.AsyncClient, settings: HiloSettings, requests: Sequence[ProviderRequest]
) -> list[dict[str, Any]]:
    """Run the contract; return the events of the first delivery, in publish order per key."""
    expected = sum(request.events for request in requests)
    for request in requests:
        response = await send(client, request)
        assert response.is_success, f"{request.path} answered {response.status_code}"
    first = await opened_interactions(settings, await published_records(settings, expected))
    assert len(first) == expected, f"expected {expected} events, found {len(first)}"
    for request in requests:
        assert (await send(client, request)).is_success, "a provider retry was refused"
    both = await opened_interactions(settings, await published_records(settings, 2 * expected))
    first_ids = {event["id"] for event in first}
    assert len(first_ids) == expected, "two different requests produced the same event id"
    assert {event["id"] for event in both} == first_ids, "a retry produced a new event id"
    return first


@asynccontextmanager
async def broker_of_its_own(
    settings: Settings, workdir: Path, **updates: object
) -> AsyncIterator[tuple[Settings, LocalKafka]]:
    """A local broker for one test (to stop and start at will), the settings that point at it
    (publishes give up after 3 s) with `updates`, and its topics."""
    kafka = LocalKafka(workdir)
    await asyncio.to_thread(kafka.format_storage)
    await asyncio.to_thread(kafka.start)
    try:
        local = settings.model_copy(
            update={
                "kafka_bootstrap_servers": kafka.bootstrap_servers,
                "kafka_publish_timeout_seconds": 3.0,
                **updates,
            }
        )
        await ensure_topics(local)
        yield local, kafka
    finally:
        await asyncio.to_thread(kafka.stop)


async def assert_refused_while_kafka_is_down(
    create_app: Callable[[Settings], FastAPI],
    settings: Settings,
    request: ProviderRequest,
    workdir: Path,
) -> list[dict[str, Any]]:
    """503 (with Retry-After) while a broker of its own is down; the retry is published after.

    `settings` is the channel's settings class with everything but the broker filled in. The
    refused request may still reach Kafka later (the idempotent producer keeps retrying what it
    had queued), so the events come back possibly twice, under one id: dedupe by id.
    """
    async with broker_of_its_own(settings, workdir) as (local, kafka):
        async with channel_client(create_app(local)) as client:
            await asyncio.to_thread(kafka.stop)
            down = await send(client, request)
            ready = await client.get("/health/ready")
            await asyncio.to_thread(kafka.start)
            retried = await send(client, request)
        assert down.status_code == 503, f"answered {down.status_code} while Kafka was down"
        assert down.headers["Retry-After"], "503 without Retry-After"
        assert ready.status_code == 503, "ready while Kafka was down"
        assert retried.is_success, f"the retry answered {retried.status_code}"
        return await opened_interactions(local, await published_records(local, request.events))


async def assert_spooled_while_kafka_is_down(
    create_app: Callable[[Settings], FastAPI],
    settings: Settings,
    request: ProviderRequest,
    workdir: Path,
) -> list[dict[str, Any]]:
    """200 while a broker of its own is down, sent once, and published once it is back; an
    instance (re)started during the outage starts, keeps its webhook too, connects once Kafka
    answers, and then publishes webhooks itself.

    The instances stay ready (readiness says `degraded`): they can still take webhooks. The
    producer may also deliver what it had queued, so the events may come back twice under one
    id: dedupe by id.
    """
    async with broker_of_its_own(settings, workdir, spool_drain_seconds=0.5) as (local, kafka):
        mongo = create_mongo_client(local)
        spooled = mongo[local.mongodb_database][SPOOL_COLLECTION]
        async with channel_client(create_app(local)) as running:
            await asyncio.to_thread(kafka.stop)
            down = await send(running, request)
            ready = await running.get("/health/ready")
            async with channel_client(create_app(local)) as restarted:
                down_at_start = await send(restarted, request)
                ready_at_start = await restarted.get("/health/ready")
                kept = await spooled.count_documents({})
                await asyncio.to_thread(kafka.start)
                records = await published_records(local, request.events)
                left = await eventually(lambda: spooled.count_documents({}), until=lambda n: n == 0)
                connected = await eventually(
                    lambda: restarted.get("/health/ready"), until=_kafka_ok, timeout=60
                )
                after = await send(restarted, request)
                kept_after = await spooled.count_documents({})
        await mongo.close()
        for answer in (down, down_at_start):
            assert answer.is_success, f"answered {answer.status_code} while Kafka was down"
        degraded = {"status": "degraded", "checks": {"keys": "ok", "kafka": "failing"}}
        for readiness in (ready, ready_at_start):
            assert readiness.status_code == 200, "not ready while it could keep webhooks"
            assert readiness.json() == degraded
        assert (kept, left) == (2, 0), "kept in MongoDB while Kafka was down, then published"
        assert _kafka_ok(connected), "the instance started during the outage never connected"
        assert after.is_success, f"answered {after.status_code} once Kafka was back"
        assert kept_after == 0, "the instance started during the outage still cannot publish"
        return await opened_interactions(local, records)


def _kafka_ok(readiness: httpx.Response) -> bool:
    return bool(readiness.json()["checks"]["kafka"] == "ok")


Arrival = Callable[[], tuple[ProviderRequest, str]]
"""A provider event that happens now (kept in the provider's log): its webhook as the provider
would post it, and the event id it must publish. From a customer not seen before, so that no key
of theirs is cached when MongoDB is away."""


async def assert_read_back_after_outages(
    create_app: Callable[[Settings], FastAPI],
    settings: Settings,
    workdir: Path,
    arrive: Arrival,
) -> list[dict[str, Any]]:
    """Against a MongoDB-wire server of its own: a webhook answered 200 while all is up; one
    refused with 503 while MongoDB is away (the provider never posts it again), read back once
    MongoDB answers; one that arrives while no instance runs (nobody posts it), read back when
    an instance starts. `settings` reads back every 0.5 s. Returns the events published, one
    per id, the three first."""
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    database = LocalSecantusDB(workdir)
    await asyncio.to_thread(database.start)
    local = settings.model_copy(update={"mongodb_url": MongoUrl(database.url)})
    mongo = create_mongo_client(local)
    watermarks = mongo[local.mongodb_database][WATERMARKS_COLLECTION]
    try:
        async with channel_client(create_app(local)) as running:
            await eventually(lambda: watermarks.count_documents({}), until=lambda n: n == 1)
            delivered, delivered_id = arrive()
            up = await send(running, delivered)
            await asyncio.to_thread(database.stop)
            refused, refused_id = arrive()
            down = await send(running, refused)
            await asyncio.to_thread(database.start)
            events = await published_with(local, {delivered_id, refused_id})
        _unanswered, unanswered_id = arrive()
        async with channel_client(create_app(local)):
            events = await published_with(local, {delivered_id, refused_id, unanswered_id})
    finally:
        await mongo.close()
        database.stop()
    assert (up.status_code, down.status_code) == (200, 503), (
        "answered as usual while MongoDB was up, refused while it was away"
    )
    first = {delivered_id: 0, refused_id: 1, unanswered_id: 2}
    return sorted(events, key=lambda event: first.get(event["id"], 3))


async def everything_published(settings: HiloSettings, settle: float = 3.0) -> list[dict[str, Any]]:
    """Every interaction on this test's topic, every partition read for `settle` seconds: for
    asserting what was *not* published beside what was."""
    records = await published_records(settings, expected=1_000_000, timeout=settle)
    return await opened_interactions(settings, records)


async def published_with(settings: HiloSettings, ids: set[str]) -> list[dict[str, Any]]:
    """The interactions on this test's topic once every one of `ids` is there, one per id."""

    async def read() -> list[dict[str, Any]]:
        records = await published_records(settings, len(ids))
        return await opened_interactions(settings, records)

    def complete(events: list[dict[str, Any]]) -> bool:
        return ids <= {event["id"] for event in events}

    events = await eventually(read, until=complete, timeout=60)
    return list({event["id"]: event for event in events}.values())
