"""kill -9 of the real `customer-profile` process mid-traffic: nothing lost, nothing applied twice.

The service runs as its own process (the installed `customer-profile serve`), consuming a stream
with merges; it is killed with SIGKILL mid-stream (half the runs the moment a batch is seen half
done), restarted, and left to finish. Then every event is counted: lost = published but not in
any journey; missing from view / applied twice = events a profile's view counts fewer / more than
its journey holds; missing on topic = not on `journey`; unfinished = a pending mark left over.

`HILO_KILL_RUNS` (default 1; `make faults` sets 20) repeats it with other kill times and data.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from customer_profile.adapters.store import ProfileStore
from customer_profile.testing import interaction
from hilo.contract import Interaction
from hilo.kafka import KafkaPublisher, create_broker, read_to_end
from hilo.mongo import create_mongo_client
from hilo.settings import HiloSettings
from hilo.testkit.probes import eventually
from hilo.testkit.serving import free_port
from hilo.topics import Topic, topic_name

RUNS = int(os.environ.get("HILO_KILL_RUNS", "1"))
CUSTOMERS = 40
EVENTS_PER_CUSTOMER = 6
SERVICE = Path(sys.executable).with_name("customer-profile")


def stream(seed: int) -> list[Interaction]:
    """Each customer: a phone-only profile, an email-only one, then events linking both. Every
    other customer's phone comes with a loyalty card: merging it brings a unique identifier,
    reserved on the survivor first (`Store.reserve`), so a kill can land in that step too."""
    events = []
    for c in range(CUSTOMERS):
        email, phone = f"k{seed}-{c}@example.com", f"+3461{seed % 100:02d}{c:05d}"
        card = {"loyalty_id": f"L{seed}-{c}"} if c % 2 else {}
        events.append(interaction(f"{seed}-{c}-0", minutes=c, email=email))
        events.append(interaction(f"{seed}-{c}-1", minutes=c + 1, phone=phone, **card))
        for n in range(2, EVENTS_PER_CUSTOMER):
            kind = random.Random(seed * 1000 + c * 10 + n).choice(["order", "message", "cart"])
            events.append(
                interaction(f"{seed}-{c}-{n}", minutes=c + n, kind=kind, email=email, phone=phone)
            )
    return events


@contextmanager
def service_process(settings: HiloSettings, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "HILO_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "HILO_MONGODB_URL": str(settings.mongodb_url),
        "HILO_MONGODB_DATABASE": settings.mongodb_database,
        "HILO_TOPIC_PREFIX": settings.topic_prefix,
        "HILO_CONSUMER_GROUP": f"{settings.topic_prefix}customer-profile",
        "HILO_HTTP_PORT": str(free_port()),
        "HILO_BATCH_MAX_RECORDS": "40",
        "HILO_ENVIRONMENT": "test",
    }
    with log.open("ab") as out:
        process = subprocess.Popen([str(SERVICE), "serve"], env=env, stdout=out, stderr=out)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)


@pytest.mark.parametrize("run", range(RUNS))
async def test_kill_nine_mid_stream_loses_nothing_and_applies_nothing_twice(
    settings: HiloSettings, topics: list[str], tmp_path: Path, run: int
) -> None:
    chance = random.Random(run)
    events = stream(run)
    broker = create_broker(settings)
    await broker.start()
    log = tmp_path / "service.log"
    try:
        with service_process(settings, log) as first:
            publisher = KafkaPublisher(broker, settings)
            await asyncio.gather(*map(publisher.publish_interaction, events))
            await _kill_moment(
                settings,
                run,
                share=chance.randrange(1, len(events)),
                delay=chance.uniform(0, 0.3),
                total=len(events),
            )
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
            stored = await _journey_count(settings)
            unfinished_at_kill = await _pending(settings)
        with service_process(settings, log):
            await eventually(
                lambda: _journey_count(settings), until=lambda n: n >= len(events), timeout=180
            )
            await eventually(lambda: _pending(settings), until=lambda n: n == 0, timeout=60)
    finally:
        await broker.stop()

    report = await _count(settings, events)
    print(  # noqa: T201
        f"kill -9 run {run}: {stored} stored and {unfinished_at_kill} unfinished at the kill; "
        f"after restart {report}"
    )
    assert report == dict.fromkeys(report, 0)


async def _kill_moment(
    settings: HiloSettings, run: int, *, share: int, delay: float, total: int
) -> None:
    """Return when the kill should land: in even runs as soon as a batch is seen half done (a
    merge or journey entries stored, not yet settled; or, should no look catch one, once the
    stream is all stored), in odd runs `delay` seconds after `share` of the stream's entries
    are stored, at whatever step a batch then is."""
    client = create_mongo_client(settings)
    store = ProfileStore(client, settings.mongodb_database)
    try:
        if run % 2 == 0:
            await eventually(
                lambda: _half_done_or_all_stored(store, total), timeout=60, interval=0.002
            )
        else:
            await eventually(
                store.journey.estimated_document_count,
                until=lambda n: n >= share,
                timeout=60,
                interval=0.005,
            )
            await asyncio.sleep(delay)
    finally:
        await client.close()


async def _journey_count(settings: HiloSettings) -> int:
    client = create_mongo_client(settings)
    try:
        return await client[settings.mongodb_database]["journey"].count_documents({})
    finally:
        await client.close()


async def _pending(settings: HiloSettings) -> int:
    client = create_mongo_client(settings)
    try:
        return await _unfinished(ProfileStore(client, settings.mongodb_database))
    finally:
        await client.close()


async def _half_done_or_all_stored(store: ProfileStore, total: int) -> bool:
    stored = await store.journey.estimated_document_count()
    return stored >= total or await _unfinished(store) > 0


async def _unfinished(store: ProfileStore) -> int:
    """Merges and journey entries whose effects are not all done yet."""
    merges = await store.profiles.count_documents({"merge_pending": True})
    return len(await store.unsettled()) + merges


async def _count(settings: HiloSettings, events: list[Interaction]) -> dict[str, int]:
    client = create_mongo_client(settings)
    try:
        db = client[settings.mongodb_database]
        stored = [doc["_id"] async for doc in db["journey"].find({}, {"_id": 1})]
        heads = [doc async for doc in db["profiles"].find({"merged_into": None})]
        aliases: dict[str, str] = {
            doc["_id"]: doc["merged_into"]
            async for doc in db["profiles"].find({"merged_into": {"$ne": None}})
        }
        per_customer: dict[str, int] = {}
        async for doc in db["journey"].find({}, {"customer_id": 1}):
            owner = doc["customer_id"]
            while owner in aliases:
                owner = aliases[owner]
            per_customer[owner] = per_customer.get(owner, 0) + 1
        short = twice = 0
        for head in heads:
            view = await db["profile_views"].find_one(
                {"customer_id": head["_id"]}, sort=[("version", -1)]
            )
            counted = view["view"]["event_count"] if view else 0
            held = per_customer.get(head["_id"], 0)
            short += max(0, held - counted)
            twice += max(0, counted - held)
        unfinished = await _pending(settings)
        reservations = await db["profiles"].count_documents({"merging_in": {"$exists": True}})
        two_cards = sum(
            sum(key.startswith("loyalty_id:") for key in head.get("identifiers", [])) > 1
            for head in heads
        )
    finally:
        await client.close()
    published = {
        json.loads(r.value)["id"]
        for r in await read_to_end(
            settings.kafka_bootstrap_servers, topic_name(Topic.JOURNEY, settings)
        )
    }
    ids = {event.id for event in events}
    return {
        "lost": len(ids - set(stored)),
        "stored_twice": len(stored) - len(set(stored)),
        "missing_from_view": short,
        "applied_twice": twice,
        "missing_on_topic": len(ids - published),
        "unfinished": unfinished,
        "reservations_left": reservations,
        "two_loyalty_ids": two_cards,
    }
