"""Profiles and journeys rebuilt from the topic match the ones built live."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from customer_profile.__main__ import run_rebuild
from customer_profile.adapters.store import ProfileStore
from customer_profile.service import derivation
from customer_profile.service.rebuild import NotEmpty, rebuild
from customer_profile.testing import (
    T0,
    RunningProfileService,
    interaction,
    profile_settings,
    refuse_event,
)
from hilo.mongo import create_mongo_client
from hilo.settings import HiloSettings
from hilo.topics import Topic, topic_name


async def snapshot(store: ProfileStore) -> dict[frozenset[str], dict[str, Any]]:
    """Profiles keyed by their identifier sets (customer ids are random and differ)."""
    heads = [doc["_id"] async for doc in store.profiles.find({"merged_into": None}, {"_id": 1})]
    result = {}
    for profile in (await store.load(heads)).values():
        entries = await store.entries(profile.aliases)
        assert profile.view is not None
        view = profile.view.model_dump()
        result[frozenset(profile.identifiers)] = {
            # `late` flags and how many merges it took depend on arrival order, which a replay of
            # several partitions does not repeat; who the customer is and what happened do not.
            "journey": [(e.id, e.channel, e.type, e.occurred_at) for e in entries],
            "view": {k: v for k, v in view.items() if k != "conversation"},
            "conversation": (view["conversation"] or {}).get("channels"),
        }
    return result


async def test_rebuilding_from_the_topic_gives_the_same_profiles(
    profile_service: RunningProfileService, settings: HiloSettings
) -> None:
    svc = profile_service
    events = [
        interaction(1, minutes=1, anonymous_id="a1", kind="page_view"),
        interaction(2, minutes=2, anonymous_id="a1", email="ana@example.com", kind="identify"),
        interaction(3, minutes=3, phone="+34612345678", channel="whatsapp", kind="message"),
        interaction(4, minutes=4, phone="+34612345678", email="ana@example.com", kind="cart"),
        interaction(
            5, minutes=5, loyalty_id="L-1", email="ana@example.com", channel="store", kind="order"
        ),
        interaction(6, minutes=6, email="bob@example.com", kind="survey_answer"),
        interaction(7, minutes=0, email="bob@example.com", kind="consent"),
        interaction(8, minutes=7, email="eve@example.com", phone="+34612345699", kind="order"),
    ]
    await svc.publish(events)
    await svc.wait_for_entries(len(events))
    eve = await svc.customer_of("email", "eve@example.com")
    assert (await svc.http.delete(f"/v1/customers/{eve}")).status_code == 200
    live = await snapshot(svc.service.store)

    target = profile_settings(settings, mongodb_database=settings.mongodb_database + "_rebuilt")
    client = create_mongo_client(target)
    try:
        store = ProfileStore(client, target.mongodb_database)
        report = await rebuild(target, store)
        rebuilt = await snapshot(store)
        with pytest.raises(NotEmpty):
            await rebuild(target, store)
    finally:
        await client.drop_database(target.mongodb_database)
        await client.close()

    assert report.records == len(events)
    assert len(live) == 2, "Ana and Bob; Eve was erased and stays erased in the rebuild"
    assert rebuilt.keys() == live.keys()
    for identifiers, profile in live.items():
        for part, value in profile.items():
            assert rebuilt[identifiers][part] == value, f"{part} differs for {sorted(identifiers)}"


async def test_a_rebuild_keeps_checkpoints_where_the_settings_say(
    profile_service: RunningProfileService,
    settings: HiloSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`HILO_CHECKPOINT_BEHIND_HOURS` at 10 minutes, checkpoints from 10 entries on: a rebuild
    of a 40-minute walk-in journey, ten minutes a batch, keeps a checkpoint per batch as the
    live consumer would (minutes 10, 20, 30), its view naming the one 10 to 20 minutes behind
    and the next. It used the hour's default: the first, minute 10, and no other."""
    monkeypatch.setattr(derivation, "CHECKPOINT_AFTER", 10)
    events = [interaction(n, minutes=n, loyalty_id="L-WALK-IN", kind="cart") for n in range(40)]
    await profile_service.publish(events)
    await profile_service.wait_for_entries(len(events))

    target = profile_settings(
        settings,
        mongodb_database=settings.mongodb_database + "_rebuilt",
        checkpoint_behind_hours=1 / 6,
    )
    client = create_mongo_client(target)
    try:
        store = ProfileStore(client, target.mongodb_database)
        await rebuild(target, store, batch_size=10)
        [head] = [doc["_id"] async for doc in store.profiles.find({"merged_into": None})]
        [rebuilt] = (await store.load([head])).values()
    finally:
        await client.drop_database(target.mongodb_database)
        await client.close()

    named = [*rebuilt.earlier_checkpoints, rebuilt.checkpoint, rebuilt.next_checkpoint]
    assert [c.at if c is not None else None for c in named] == [
        T0 + timedelta(minutes=n) for n in (10, 20, 30)
    ], "10 minutes back, not an hour"


async def test_a_record_that_cannot_be_processed_is_left_out_not_the_end_of_the_rebuild(
    profile_service: RunningProfileService, settings: HiloSettings
) -> None:
    """The live consumer dead-letters a record that fails on its own; it stays on the topic.
    The rebuild called the pipeline directly and stopped at it for good, and could not be run
    again into the half-filled database. Now it is left out, as live, and the rest rebuilt."""
    svc = profile_service
    events = [interaction(n, minutes=n, email=f"c{n}@example.com", kind="order") for n in (1, 2, 3)]
    await svc.publish(events)
    await svc.wait_for_entries(len(events))

    target = profile_settings(
        settings, mongodb_database=settings.mongodb_database + "_rebuilt", poison_attempts=1
    )
    client = create_mongo_client(target)
    try:
        store = ProfileStore(client, target.mongodb_database)
        refuse_event(store, events[1].id)
        report = await rebuild(target, store)
        owners = await store.owners([f"email:c{n}@example.com" for n in (1, 2, 3)])
        journeys = {key: await store.entries([owner]) for key, owner in owners.items()}
    finally:
        await client.drop_database(target.mongodb_database)
        await client.close()

    assert (report.records, report.left_out) == (3, 1)
    assert {key: [e.id for e in entries] for key, entries in journeys.items() if entries} == {
        "email:c1@example.com": [events[0].id],
        "email:c3@example.com": [events[2].id],
    }


async def test_a_rebuild_that_left_records_out_does_not_exit_as_a_success(
    profile_service: RunningProfileService, settings: HiloSettings
) -> None:
    """A fault every record meets (a bug) would leave them all out: `customer-profile rebuild`
    says how many and exits 3, so a script does not take an empty database for a rebuild."""
    svc = profile_service
    await svc.publish([interaction(1, minutes=1, email="c1@example.com", kind="order")])
    await svc.wait_for_entries(1)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(
            topic_name(Topic.INTERACTIONS, settings), b"not an event", key=b"k"
        )
    finally:
        await producer.stop()

    target = profile_settings(settings, mongodb_database=settings.mongodb_database + "_rebuilt")
    try:
        assert await run_rebuild(target) == 3
    finally:
        client = create_mongo_client(target)
        await client.drop_database(target.mongodb_database)
        await client.close()
