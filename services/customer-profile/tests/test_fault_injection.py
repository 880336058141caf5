"""Every accepted event has all its effects exactly once, whichever step of a batch fails.

A fault is injected at one step of `Pipeline.process` (the store or the publisher raises, as a
crash, a timeout or a refused write would), then the batch is delivered again, as Kafka does when
offsets were not committed, and once more after that. Afterwards MongoDB must hold every entry once
with views equal to a fresh derivation from the journey (nothing lost, nothing folded twice), no
unfinished marks, and the topics must carry every journey record, the merge and, as the last record
of each key on the compacted `profiles` topic, the current profile.

`HILO_FAULT_RUNS` (default 1; `make faults` sets 20) repeats each injection point with other data.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson import ObjectId
from pymongo import DeleteOne

from customer_profile.adapters.store import ProfileStore
from customer_profile.domain.identity import UNVERIFIED_MERGE, Conflict
from customer_profile.domain.profile import ProfileView, derive_view
from customer_profile.service.batches import is_transient
from customer_profile.service.pipeline import BatchOutcome, Pipeline
from customer_profile.service.ports import HOLD_EXPIRY, ErasureUnderWay, StoredProfile, ViewSave
from customer_profile.service.privacy import Privacy
from customer_profile.service.splits import Requester, Splits
from customer_profile.settings import ProfileSettings
from customer_profile.testing import (
    FAULT_POINTS,
    FaultPoint,
    InjectedFault,
    clear_faults,
    inject_fault,
    interaction,
    interleave,
    profile_settings,
    raw_records,
    wrap_once,
)
from hilo.contract import Interaction
from hilo.kafka import KafkaPublisher, Record, create_broker
from hilo.mongo import create_mongo_client
from hilo.sealing import create_sealer
from hilo.settings import HiloSettings
from hilo.testkit.probes import read_to_end
from hilo.topics import Topic, topic_name

RUNS = int(os.environ.get("HILO_FAULT_RUNS", "1"))
POINTS = FAULT_POINTS


class Harness:
    def __init__(
        self,
        store: ProfileStore,
        publisher: KafkaPublisher,
        pipeline: Pipeline,
        profile: ProfileSettings,
    ) -> None:
        self.store = store
        self.publisher = publisher
        self.pipeline = pipeline
        self.profile = profile

    async def current_view_of_whole_journey(self, customer: str, *, entries: int) -> StoredProfile:
        """The customer's profile, checked to hold a fresh derivation of its whole journey (which
        has `entries` entries, aliases included): no event left out, none counted twice."""
        current = (await self.store.load([customer]))[customer]
        journey = await self.store.entries(current.aliases)
        assert len(journey) == entries
        assert current.view == derive_view(journey, self.profile.conversation_window)
        return current

    def another_instance(self, publisher: KafkaPublisher | None = None) -> Pipeline:
        """A second consumer instance on the same database and topics (or `publisher`)."""
        return Pipeline(
            self.store,
            publisher or self.publisher,
            self.pipeline._sealer,
            self.profile.identity_policy(),
            self.profile.conversation_window,
        )


@pytest.fixture
async def harness(settings: HiloSettings, topics: list[str]) -> AsyncIterator[Harness]:
    profile = profile_settings(settings)
    mongo = create_mongo_client(settings)
    broker = create_broker(settings)
    await broker.start()
    store = ProfileStore(mongo, settings.mongodb_database)
    await store.create_indexes()
    sealer = create_sealer(settings, mongo)
    publisher = KafkaPublisher(broker, settings, sealer=sealer)
    pipeline = Pipeline(
        store, publisher, sealer, profile.identity_policy(), profile.conversation_window
    )
    try:
        yield Harness(store, publisher, pipeline, profile)
    finally:
        await broker.stop()
        await mongo.drop_database(settings.mongodb_database)
        await mongo.close()


def known_customers(seed: int) -> list[Interaction]:
    """The state before the failing batch: two people who will turn out to be one, and others."""
    s = f"{seed}"
    return [
        interaction(f"{s}-p1", minutes=0, email=f"pat{s}@example.com"),
        interaction(f"{s}-q1", minutes=1, phone="+34612345678"),
        interaction(f"{s}-a1", minutes=2, anonymous_id=f"anon-{s}"),
        interaction(f"{s}-r1", minutes=3, kind="order", loyalty_id=f"L1-{s}", email=f"r{s}@x.org"),
    ]


def failing_batch(seed: int) -> list[Interaction]:
    """A merge, new entries, a late entry, an anonymous visitor identified, a conflict, a new
    customer: every effect `process` has, in an order drawn from `seed`."""
    s = f"{seed}"
    batch = [
        interaction(f"{s}-m1", minutes=10, email=f"pat{s}@example.com", phone="+34612345678"),
        interaction(f"{s}-p2", minutes=11, kind="order", email=f"pat{s}@example.com"),
        interaction(f"{s}-q0", minutes=-5, kind="message", phone="+34612345678"),
        interaction(f"{s}-a2", minutes=12, anonymous_id=f"anon-{s}", email=f"w{s}@example.com"),
        interaction(f"{s}-r2", minutes=13, loyalty_id=f"L2-{s}", email=f"r{s}@x.org"),
        interaction(f"{s}-n1", minutes=14, kind="cart", phone="+34699887766"),
    ]
    random.Random(seed).shuffle(batch)
    return batch


@pytest.mark.parametrize("run", range(RUNS))
@pytest.mark.parametrize("point", POINTS, ids=lambda p: p.name)
async def test_a_batch_that_failed_at_any_step_is_completed_exactly_once_on_redelivery(
    harness: Harness, settings: HiloSettings, point: FaultPoint, run: int
) -> None:
    seed = run * 7919 + POINTS.index(point)
    before, batch = known_customers(seed), failing_batch(seed)
    await harness.pipeline.process(raw_records(before))

    target = harness.store if point.target == "store" else harness.publisher
    inject_fault(target, point)
    with pytest.raises(InjectedFault):
        await harness.pipeline.process(raw_records(batch))
    clear_faults(target, point.method)
    repaired = await harness.pipeline.process(raw_records(batch))
    again = await harness.pipeline.process(raw_records(batch))

    assert again.repaired == 0, "a settled batch redelivered again changes nothing"
    assert again.duplicates == len(batch)
    assert not again.merges, "a finished merge is not published again"
    events = [*before, *batch]
    await assert_every_effect_once(
        harness.store, events, profile_settings(settings).conversation_window
    )
    await assert_topics_complete(harness.store, settings, events)
    assert repaired.accepted == len(batch)


async def assert_every_effect_once(
    store: ProfileStore, events: list[Interaction], window: timedelta
) -> None:
    journey = [doc async for doc in store.journey.find({})]
    assert Counter(doc["_id"] for doc in journey) == Counter(e.id for e in events)
    assert not await store.unsettled(), "unsettled entries remain"
    assert await store.profiles.count_documents({"merge_pending": True}) == 0
    assert await store.profiles.count_documents({"merged_into": {"$ne": None}}) == 1
    for head in [doc async for doc in store.profiles.find({"merged_into": None})]:
        profile = (await store.load([head["_id"]]))[head["_id"]]
        entries = await store.entries(profile.aliases)
        assert profile.view is not None
        assert profile.view.model_dump(mode="json") == derive_view(entries, window).model_dump(
            mode="json"
        ), "the stored view is exactly the journey folded once"
    conflicts = [doc async for doc in store.conflicts.find({})]
    assert len(conflicts) == 1, f"the conflict is recorded once, not {conflicts}"


async def assert_topics_complete(
    store: ProfileStore, settings: HiloSettings, events: list[Interaction]
) -> None:
    servers = settings.kafka_bootstrap_servers
    journey = await read_to_end(servers, topic_name(Topic.JOURNEY, settings))
    assert {e.id for e in events} <= {json.loads(r.value)["id"] for r in journey}

    [absorbed] = [doc async for doc in store.profiles.find({"merged_into": {"$ne": None}})]
    merges = [
        json.loads(r.value)
        for r in await read_to_end(servers, topic_name(Topic.IDENTITY_MERGES, settings))
    ]
    assert merges, "the merge record is published"
    assert {(m["survivor"], tuple(m["absorbed"])) for m in merges} == {
        (absorbed["merged_into"], (absorbed["_id"],))
    }

    last: dict[bytes, bytes | None] = {}
    for record in await read_to_end(servers, topic_name(Topic.PROFILES, settings)):
        last[record.key] = record.value
    assert json.loads(last[absorbed["_id"].encode()] or b"{}") == {
        "customer_id": absorbed["_id"],
        "merged_into": absorbed["merged_into"],
    }
    for head in [doc async for doc in store.profiles.find({"merged_into": None})]:
        snapshot = json.loads(last[head["_id"].encode()] or b"{}")
        profile = (await store.load([head["_id"]]))[head["_id"]]
        assert snapshot["version"] == profile.version, "the compacted topic ends on the latest"
        assert profile.view is not None
        assert snapshot["view"] == profile.view.model_dump(mode="json")


async def test_a_snapshot_overtaken_by_another_instance_is_followed_by_the_latest(
    harness: Harness, settings: HiloSettings
) -> None:
    """Instance A saves version n, B saves n+1 and publishes first; A's n lands last on Kafka."""
    other = harness.another_instance()
    await harness.pipeline.process(raw_records([interaction("o-1", email="ovi@example.com")]))
    a_waiting, b_done = asyncio.Event(), asyncio.Event()
    publish = harness.publisher.publish_records
    slow = KafkaPublisher(harness.publisher._broker, settings, sealer=harness.pipeline._sealer)

    async def held_back(records: Sequence[Record]) -> None:
        if any(record.topic is Topic.PROFILES for record in records) and not b_done.is_set():
            a_waiting.set()
            await b_done.wait()
        await publish(records)

    slow.publish_records = held_back  # type: ignore[method-assign]
    instance_a = harness.another_instance(slow)

    async def instance_b() -> None:
        await a_waiting.wait()  # A has saved its view and is waiting to publish the snapshot
        await other.process(raw_records([interaction("o-3", minutes=2, email="ovi@example.com")]))
        b_done.set()

    await asyncio.gather(
        instance_a.process(raw_records([interaction("o-2", minutes=1, email="ovi@example.com")])),
        instance_b(),
    )

    [head] = [doc async for doc in harness.store.profiles.find({})]
    records = await read_to_end(
        settings.kafka_bootstrap_servers, topic_name(Topic.PROFILES, settings)
    )
    versions = [json.loads(r.value)["version"] for r in records]
    current = (await harness.store.load([head["_id"]]))[head["_id"]]
    assert current.version == 3
    assert 2 in versions[versions.index(3) :], "A's older snapshot did land after B's"
    assert versions[-1] == current.version, "and the latest followed it"


async def test_a_save_that_overtook_nothing_is_derived_again(
    harness: Harness, settings: HiloSettings
) -> None:
    """Three instances on one customer: A reads version 1; meanwhile B saves 2 and C saves 3,
    which deletes 2; A's insert of 2 then succeeds, yet 3 (without A's event) is current."""
    b, c = harness.another_instance(), harness.another_instance()
    email = "ona@example.com"
    await harness.pipeline.process(raw_records([interaction("x0", email=email)]))
    [head] = [doc async for doc in harness.store.profiles.find({})]

    async def others() -> None:
        await b.process(raw_records([interaction("b1", minutes=2, email=email)]))
        await c.process(raw_records([interaction("c1", minutes=3, email=email)]))

    interleave(harness.store, "save_views", others)
    await harness.pipeline.process(raw_records([interaction("a1", minutes=1, email=email)]))

    current = await harness.current_view_of_whole_journey(head["_id"], entries=4)
    records = await read_to_end(
        settings.kafka_bootstrap_servers, topic_name(Topic.PROFILES, settings)
    )
    assert json.loads(records[-1].value)["version"] == current.version
    views = [doc["version"] async for doc in harness.store.views.find({"customer_id": head["_id"]})]
    assert views == [current.version], "A's overtaken view is not left behind"


async def test_a_profile_merged_away_while_it_is_saved_leaves_its_events_to_the_survivor(
    harness: Harness, settings: HiloSettings
) -> None:
    """A resolves an event to C; before A stores it, B merges C into the older S and derives S
    without it. A's save of C succeeds; the read after publishing must derive S again."""
    b = harness.another_instance()
    email, phone = "ona@example.com", "+34612345678"
    await harness.pipeline.process(raw_records([interaction("s1", minutes=0, phone=phone)]))
    await harness.pipeline.process(raw_records([interaction("c1", minutes=1, email=email)]))

    async def merge() -> None:
        await b.process(raw_records([interaction("m1", minutes=2, email=email, phone=phone)]))

    interleave(harness.store, "insert_entries", merge)
    await harness.pipeline.process(raw_records([interaction("a1", minutes=3, email=email)]))

    heads = [doc async for doc in harness.store.profiles.find({})]
    [survivor] = [doc["_id"] for doc in heads if not doc.get("merged_into")]
    [absorbed] = [doc["_id"] for doc in heads if doc.get("merged_into") == survivor]
    current = await harness.current_view_of_whole_journey(survivor, entries=4)
    records = await read_to_end(
        settings.kafka_bootstrap_servers, topic_name(Topic.PROFILES, settings)
    )
    last = {r.key: r.value for r in records}
    assert json.loads(last[survivor.encode()])["version"] == current.version
    assert json.loads(last[absorbed.encode()]) == {"customer_id": absorbed, "merged_into": survivor}


async def test_claims_a_crash_left_without_a_profile_get_it_from_the_next_event_with_them(
    harness: Harness, settings: HiloSettings
) -> None:
    """A new customer's identifiers are claimed, then its profile is created holding them. A
    crash in between leaves claims pointing at no profile: another instance's event with one of
    those identifiers creates it from the claims, and the redelivered batch completes it."""
    email, phone = "hana@example.com", "+34600111222"
    first = [interaction("h1", minutes=0, email=email, phone=phone)]
    inject_fault(harness.store, FaultPoint("store", "claim", "after"))
    with pytest.raises(InjectedFault):
        await harness.pipeline.process(raw_records(first))
    clear_faults(harness.store, "claim")
    claims = [doc async for doc in harness.store.identities.find({})]
    assert {doc["_id"] for doc in claims} == {f"email:{email}", f"phone:{phone}"}
    assert await harness.store.profiles.count_documents({}) == 0, "claimed, no profile yet"

    await harness.another_instance().process(
        raw_records([interaction("h2", minutes=1, email=email)])
    )
    await harness.pipeline.process(raw_records(first))

    [head] = [doc async for doc in harness.store.profiles.find({})]
    assert head["_id"] == claims[0]["customer_id"]
    assert sorted(head["identifiers"]) == [f"email:{email}", f"phone:{phone}"]
    assert head["created_at"] == min(doc["claimed_at"] for doc in claims)
    current = await harness.current_view_of_whole_journey(head["_id"], entries=2)
    assert not await harness.store.unsettled()
    records = await read_to_end(
        settings.kafka_bootstrap_servers, topic_name(Topic.PROFILES, settings)
    )
    last = json.loads(records[-1].value)
    assert (last["version"], sorted(last["identifiers"])) == (current.version, head["identifiers"])


async def test_a_claim_a_crash_left_on_an_erased_profile_is_released_not_brought_back(
    harness: Harness,
) -> None:
    """An instance claimed an identifier for a profile that was being erased and crashed before
    taking it back: the next event with it starts a new profile; the erased one stays gone."""
    email, phone = "olga@example.com", "+34600555666"
    await harness.pipeline.process(raw_records([interaction("e1", minutes=0, email=email)]))
    [erased] = [doc["_id"] async for doc in harness.store.profiles.find({})]
    await harness.store.record_erasure(erased, [erased], [], datetime.now(UTC))
    await harness.store.erase([erased])
    await harness.store.identities.insert_one(
        {"_id": f"phone:{phone}", "customer_id": erased, "claimed_at": datetime.now(UTC)}
    )

    await harness.pipeline.process(raw_records([interaction("e2", minutes=1, phone=phone)]))

    [head] = [doc async for doc in harness.store.profiles.find({})]
    assert head["_id"] != erased
    assert head["identifiers"] == [f"phone:{phone}"]
    claims = {doc["_id"]: doc["customer_id"] async for doc in harness.store.identities.find({})}
    assert claims == {f"phone:{phone}": head["_id"]}


async def erase(harness: Harness, customer: str) -> None:
    """The right to be forgotten, as the API does it: recorded, keys forgotten, MongoDB
    erased, tombstones published."""
    profile = (await harness.store.load([customer]))[customer]
    await Privacy(harness.store, harness.publisher, harness.pipeline._sealer).erase(profile)


async def nothing_left_of(harness: Harness, settings: HiloSettings, customer: str) -> None:
    """Nothing of the one person these tests know, under any profile id, in MongoDB, and a
    tombstone last on `profiles` for their profile."""
    store = harness.store
    held = {
        "profiles": await store.profiles.count_documents({}),
        "views": await store.views.count_documents({}),
        "journey": await store.journey.count_documents({}),
        "identities": await store.identities.count_documents({}),
        "conflicts": await store.conflicts.count_documents({}),
    }
    assert held == dict.fromkeys(held, 0)
    records = await read_to_end(
        settings.kafka_bootstrap_servers, topic_name(Topic.PROFILES, settings)
    )
    assert [r.value for r in records if r.key == customer.encode()][-1] is None


async def known_person(harness: Harness, name: str) -> tuple[Interaction, str]:
    """One person with a profile, and an event of theirs (with a phone not claimed yet) that
    happens before their erasure; their profile id."""
    email = f"{name}@example.com"
    await harness.pipeline.process(raw_records([interaction(f"{name}1", minutes=0, email=email)]))
    [customer] = [doc["_id"] async for doc in harness.store.profiles.find({})]
    return interaction(f"{name}2", minutes=1, email=email, phone="+34600123123"), customer


@pytest.mark.parametrize("step", ["load_canonical", "insert_entries", "save_views", "head_states"])
async def test_an_erasure_done_while_a_batch_is_under_way_leaves_nothing_of_the_person(
    harness: Harness, settings: HiloSettings, step: str
) -> None:
    """The batch resolved its event to the customer before they were erased: what it writes
    afterwards is found and erased again, not left behind without a profile."""
    event, customer = await known_person(harness, "vera")

    interleave(harness.store, step, lambda: erase(harness, customer))
    await harness.pipeline.process(raw_records([event]))

    await nothing_left_of(harness, settings, customer)


@pytest.mark.parametrize("collection", ["profiles", "views", "journey", "identities"])
async def test_a_batch_writing_while_an_erasure_is_half_done_leaves_nothing_of_the_person(
    harness: Harness, settings: HiloSettings, collection: str
) -> None:
    """The batch resolved its event, then writes everything while the erasure is about to
    delete from `collection`: whatever the order of the two, nothing of the person stays."""
    event, customer = await known_person(harness, "wen")
    resolved, erasing = asyncio.Event(), asyncio.Event()

    async def wait_for_the_erasure() -> None:
        resolved.set()
        await erasing.wait()

    interleave(harness.store, "insert_entries", wait_for_the_erasure)
    batch = asyncio.create_task(harness.pipeline.process(raw_records([event])))

    async def let_the_batch_finish() -> None:
        erasing.set()
        await batch

    interleave(getattr(harness.store, collection), "delete_many", let_the_batch_finish)
    await resolved.wait()
    await erase(harness, customer)

    assert batch.done()
    await nothing_left_of(harness, settings, customer)


def held_after_its_check(
    harness: Harness, event: Interaction, *more: Interaction
) -> tuple[asyncio.Task[BatchOutcome], asyncio.Event, asyncio.Event]:
    """A batch of `event` (and `more`), started and held right after it checked them against
    erasures (their keys come next); it goes on once the second event is set."""
    checked, go_on = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        checked.set()
        await go_on.wait()

    interleave(harness.pipeline._sealer.keys, "get_or_create", hold)
    batch = asyncio.create_task(harness.pipeline.process(raw_records([event, *more])))
    return batch, checked, go_on


@pytest.mark.parametrize("erasure", ["claims-not-deleted-yet", "done"])
async def test_a_batch_resolving_during_or_after_an_erasure_it_did_not_see_starts_no_profile(
    harness: Harness, settings: HiloSettings, erasure: str
) -> None:
    """The batch checked its event against erasures just before the person's erasure began, and
    resolves it while the profile is deleted but its claims are not yet (it meets them), or
    once the erasure is done (the identifiers look new, and the profile made for them is found
    to be for an erased event): no profile is left with the person's identifiers or event."""
    event, customer = await known_person(harness, "una")
    batch, checked, go_on = held_after_its_check(harness, event)

    async def let_the_batch_resolve() -> None:
        go_on.set()
        await batch

    if erasure == "claims-not-deleted-yet":
        interleave(harness.store.identities, "delete_many", let_the_batch_resolve)
    await checked.wait()
    await erase(harness, customer)
    go_on.set()

    assert (await batch).erased == 1
    await nothing_left_of(harness, settings, customer)


@pytest.mark.parametrize("emails", [0, 5], ids=["claimable", "over-the-cap"])
async def test_a_batch_resolving_after_an_erasure_it_did_not_see_adds_nothing_to_another_profile(
    harness: Harness, settings: HiloSettings, emails: int
) -> None:
    """The batch checked its event (the customer's email and a phone of another profile)
    against erasures just before the customer was erased, and resolves it once the erasure is
    done: the email looks unclaimed and the phone's profile known. That profile takes the email
    or, holding as many emails as it may already, only the event. The event happened before
    the erasure: it is not stored, and the phone's profile is left as it was."""
    phone, email = "+34600123123", "ivy@example.com"
    await harness.pipeline.process(raw_records([interaction("ivy1", minutes=0, email=email)]))
    [customer] = [doc["_id"] async for doc in harness.store.profiles.find({})]
    theirs = [
        interaction(f"q{n}", minutes=0, phone=phone, email=f"q{n}@example.com")
        for n in range(emails)
    ]
    await harness.pipeline.process(raw_records(theirs or [interaction("q", phone=phone)]))
    [other] = {doc["_id"] async for doc in harness.store.profiles.find({})} - {customer}
    before = [doc async for doc in harness.store.identities.find({"customer_id": other})]
    event = interaction("ivy2", minutes=1, phone=phone, email=email)
    batch, checked, go_on = held_after_its_check(harness, event)
    await checked.wait()
    await erase(harness, customer)
    go_on.set()

    assert (await batch).erased == 1
    [head] = [doc async for doc in harness.store.profiles.find({})]
    assert sorted(head["identifiers"]) == sorted(doc["_id"] for doc in before)
    assert [doc async for doc in harness.store.identities.find({})] == before
    assert await harness.store.conflicts.count_documents({}) == 0
    await harness.current_view_of_whole_journey(other, entries=max(emails, 1))


async def test_an_event_with_an_old_and_a_new_identifier_resolved_after_an_erasure_is_dropped(
    harness: Harness, settings: HiloSettings
) -> None:
    """The customer's email was claimed long ago; the batch reads it as theirs just before they
    are erased, then claims the event's new phone. The phone alone is not erased, but the event
    (checked again by all its identifiers, since one was new) is the erased person's: it is not
    stored, and the phone is not left claimed."""
    event, customer = await known_person(harness, "lea")
    await harness.store.identities.update_many(
        {}, {"$set": {"claimed_at": datetime.now(UTC) - timedelta(days=30)}}
    )

    interleave(harness.store, "claim", lambda: erase(harness, customer))
    outcome = await harness.pipeline.process(raw_records([event]))

    assert outcome.erased == 1
    await nothing_left_of(harness, settings, customer)


async def test_a_merge_an_event_made_before_it_was_found_erased_is_finished_and_published(
    harness: Harness, settings: HiloSettings
) -> None:
    """The event (the erased customer's email, Quim's phone, Rita's WhatsApp id) merged Quim's
    and Rita's profiles before it was found to be the erased person's. The merge stays, and is
    finished like any other: nothing left pending, the merge on `identity.merges`, the
    survivor derived from both journeys."""
    email = "max@example.com"
    await harness.pipeline.process(raw_records([interaction("max1", minutes=0, email=email)]))
    [customer] = [doc["_id"] async for doc in harness.store.profiles.find({})]
    await harness.pipeline.process(
        raw_records([interaction("quim", minutes=0, phone="+34600111000")])
    )
    await harness.pipeline.process(
        raw_records([interaction("rita", minutes=0, whatsapp_id="34600222000")])
    )
    event = interaction(
        "max2", minutes=1, email=email, phone="+34600111000", whatsapp_id="34600222000"
    )
    batch, checked, go_on = held_after_its_check(harness, event)
    await checked.wait()
    await erase(harness, customer)
    go_on.set()

    assert (await batch).erased == 1
    heads = [doc async for doc in harness.store.profiles.find({})]
    assert [h for h in heads if h.get("merge_pending")] == []
    [survivor] = [h["_id"] for h in heads if not h.get("merged_into")]
    await harness.current_view_of_whole_journey(survivor, entries=2)
    merges = await read_to_end(
        settings.kafka_bootstrap_servers, topic_name(Topic.IDENTITY_MERGES, settings)
    )
    assert [json.loads(r.value)["event_id"] for r in merges] == [event.id]


async def test_a_merge_of_a_profile_being_erased_by_an_event_found_erased_is_not_finished(
    harness: Harness, settings: HiloSettings
) -> None:
    """The event (the customer's long-held email, an older profile's phone, a new WhatsApp id)
    merges the customer into that older profile while their erasure is recorded but has not
    deleted anything yet; the event is then found to be the erased person's. Its merge is not
    finished: the survivor's snapshot never carries the erased email, and no merge is
    published."""
    email, phone = "nia@example.com", "+34600444000"
    await harness.pipeline.process(raw_records([interaction("older", minutes=0, phone=phone)]))
    [older] = [doc["_id"] async for doc in harness.store.profiles.find({})]
    await harness.pipeline.process(raw_records([interaction("nia1", minutes=0, email=email)]))
    [customer] = {doc["_id"] async for doc in harness.store.profiles.find({})} - {older}
    await harness.store.identities.update_many(
        {}, {"$set": {"claimed_at": datetime.now(UTC) - timedelta(days=30)}}
    )
    event = interaction("nia2", minutes=1, email=email, phone=phone, whatsapp_id="34600444111")
    subject = harness.pipeline._sealer.subject(f"email:{email}")

    async def erasure_recorded() -> None:
        await harness.store.record_erasure(customer, [customer], [subject], datetime.now(UTC))

    interleave(harness.store, "finish_merges", erasure_recorded)
    outcome = await harness.pipeline.process(raw_records([event]))

    assert (outcome.erased, outcome.merges) == (1, [])
    profiles = await read_to_end(
        settings.kafka_bootstrap_servers, topic_name(Topic.PROFILES, settings)
    )
    published = [json.loads(r.value) for r in profiles if r.key == older.encode() and r.value]
    assert all(f"email:{email}" not in p.get("identifiers", []) for p in published)
    merges = await read_to_end(
        settings.kafka_bootstrap_servers, topic_name(Topic.IDENTITY_MERGES, settings)
    )
    assert merges == []


async def test_a_profile_a_batch_merged_into_a_person_erased_meanwhile_is_erased_for_good(
    harness: Harness, settings: HiloSettings
) -> None:
    """The customer is erased just before the batch merges a second profile of theirs (its phone
    is on the customer's event) into theirs. That profile and its phone go as if they had been
    the customer's when the erasure was asked for: the erasure names them, the phone's key is
    deleted (its records on the topics cannot be opened), its pre-erasure events are not stored
    again, and the profile gets its tombstone."""
    event, customer = await known_person(harness, "zoe")
    await harness.pipeline.process(
        raw_records([interaction("zoe-d", minutes=0, phone="+34600123123")])
    )
    others = {doc["_id"] async for doc in harness.store.profiles.find({})} - {customer}

    interleave(harness.store, "merge", lambda: erase(harness, customer))
    await harness.pipeline.process(raw_records([event]))

    await nothing_left_of(harness, settings, customer)
    await erased_for_good(harness, settings, customer, {customer, *others}, "phone:+34600123123")


async def absorbable_person(harness: Harness, name: str) -> tuple[Interaction, str, str]:
    """An older profile (a phone) and a person's newer one (an email), both claimed long ago, and
    an event of the person's with both, which merges theirs into the older one; the event, the
    person's profile id and the older one's."""
    phone, email = "+34600555000", f"{name}@example.com"
    await harness.pipeline.process(raw_records([interaction("elder", minutes=0, phone=phone)]))
    [older] = [doc["_id"] async for doc in harness.store.profiles.find({})]
    await harness.pipeline.process(raw_records([interaction(f"{name}1", minutes=1, email=email)]))
    [customer] = {doc["_id"] async for doc in harness.store.profiles.find({})} - {older}
    await harness.store.identities.update_many(
        {}, {"$set": {"claimed_at": datetime.now(UTC) - timedelta(days=30)}}
    )
    return interaction(f"{name}2", minutes=2, email=email, phone=phone), customer, older


async def erased_after_a_batch(
    harness: Harness, customer: str, event: Interaction, step: str
) -> BatchOutcome:
    """Erase the customer while a batch of `event`, checked against erasures just before the
    erasure was recorded, runs to its end right before the erasure's `step` (a `ProfileStore`
    method); the batch's outcome."""
    batch, checked, go_on = held_after_its_check(harness, event)

    async def the_batch_runs() -> None:
        go_on.set()
        await batch

    interleave(harness.store, step, the_batch_runs)
    await checked.wait()
    await erase(harness, customer)
    return await batch


async def test_a_profile_a_merge_took_before_its_erasure_held_it_is_erased_with_the_survivor(
    harness: Harness, settings: HiloSettings
) -> None:
    """The batch merges the person's profile into an older one after the request read it and
    before the erasure holds it (nothing recorded yet): the two are one customer now, as if the
    merge had come before the request, and erasing the person erases that customer. Nothing of
    either is left, both get their tombstones, and neither identifier has a key. (Before, the
    survivor kept the erased email, its claim and the merged journey for good.)"""
    event, customer, older = await absorbable_person(harness, "ona")

    outcome = await erased_after_a_batch(harness, customer, event, "hold")

    assert [m.absorbed for m in outcome.merges] == [(customer,)]
    await erased_with(harness, settings, customer, older, "ona")
    erasure = await harness.store.erasure_of(customer)
    assert erasure is not None
    assert (erasure.customer_id, erasure.generation) == (older, 0), "recorded for the survivor"


async def erased_with(
    harness: Harness, settings: HiloSettings, customer: str, older: str, name: str
) -> None:
    """Nothing is left of the customer nor of the older profile theirs was merged into; the
    erasure names both and is done, neither identifier has a key, both have tombstones."""
    await nothing_left_of(harness, settings, customer)
    erasure = await harness.store.erasure_of(customer)
    assert erasure is not None
    assert (set(erasure.aliases), erasure.done) == ({customer, older}, True)
    sealer = harness.pipeline._sealer
    keys = [sealer.subject(key) for key in (f"email:{name}@example.com", "phone:+34600555000")]
    assert await sealer.keys.get(keys) == {}
    profiles = await read_to_end(
        settings.kafka_bootstrap_servers, topic_name(Topic.PROFILES, settings)
    )
    assert [r.value for r in profiles if r.key == older.encode()][-1] is None


async def test_an_erasure_recorded_unheld_follows_its_profile_merged_meanwhile(
    harness: Harness, settings: HiloSettings
) -> None:
    """An erasure recorded without a hold (by an earlier version, still pending at the upgrade)
    whose profile a batch then merged into an older one: completing it holds what is left,
    finds the merge, and extends the erasure to the survivor."""
    event, customer, older = await absorbable_person(harness, "uma")
    sealer = harness.pipeline._sealer
    profile = (await harness.store.load([customer]))[customer]
    keys = await harness.store.identifiers_to_erase(profile.aliases, profile.identifiers)
    batch, checked, go_on = held_after_its_check(harness, event)
    await checked.wait()
    erasure = await harness.store.record_erasure(
        customer, [customer], [sealer.subject(key) for key in keys], datetime.now(UTC)
    )
    go_on.set()
    assert [m.absorbed for m in (await batch).merges] == [(customer,)]

    await Privacy(harness.store, harness.publisher, sealer).complete(erasure)

    await erased_with(harness, settings, customer, older, "uma")


async def test_a_profile_merged_into_a_held_one_before_it_is_deleted_is_erased_with_it(
    harness: Harness, settings: HiloSettings
) -> None:
    """A batch read the person's profile before the erasure held it, and merges another
    profile into it (the event carries both) once it is held, all before the erasure deletes:
    the merged profile is theirs now. It is added to the erasure and deleted with it (before,
    its head and journey outlived the erasure), and the erasure is completed again."""
    email, phone = "kai@example.com", "+34600666000"
    await harness.pipeline.process(raw_records([interaction("kai1", minutes=0, email=email)]))
    [customer] = [doc["_id"] async for doc in harness.store.profiles.find({})]
    await harness.pipeline.process(raw_records([interaction("kai-x", minutes=1, phone=phone)]))
    [other] = {doc["_id"] async for doc in harness.store.profiles.find({})} - {customer}
    await harness.store.identities.update_many(
        {}, {"$set": {"claimed_at": datetime.now(UTC) - timedelta(days=30)}}
    )
    event = interaction("kai2", minutes=2, email=email, phone=phone)
    privacy = Privacy(harness.store, harness.publisher, harness.pipeline._sealer)
    profile = (await harness.store.load([customer]))[customer]
    held, go_on = asyncio.Event(), asyncio.Event()

    async def pause_before_deleting() -> None:
        held.set()
        await go_on.wait()

    interleave(harness.store, "erase_for", pause_before_deleting)

    async def the_erasure_holds() -> None:
        request.append(asyncio.create_task(privacy.erase(profile)))
        await held.wait()

    request: list[asyncio.Task[dict[str, Any]]] = []
    interleave(harness.store, "merge", the_erasure_holds)
    outcome = await harness.pipeline.process(raw_records([event]))
    go_on.set()
    answer = await request[0]

    assert [m.absorbed for m in outcome.merges] == [(other,)]
    assert answer["status"] == "pending", "extended: completed again in the background"
    await erased_for_good(harness, settings, customer, {customer, other}, f"phone:{phone}")
    await nothing_left_of(harness, settings, customer)


async def test_a_hold_whose_erasure_was_never_recorded_is_taken_back_after_a_while(
    harness: Harness,
) -> None:
    """An erasure request that died between holding the profiles and recording the erasure: a
    batch meeting the hold waits like one meeting an outage (never dead-letters), and once the
    hold is older than `HOLD_EXPIRY` it is taken back, from every profile it marked, and the
    event stored."""
    event, customer = await known_person(harness, "ada")
    await harness.pipeline.process(
        raw_records([interaction("ada-x", minutes=0, phone="+34600777000")])
    )
    await harness.store.hold([doc["_id"] async for doc in harness.store.profiles.find({})])

    with pytest.raises(ErasureUnderWay):
        await harness.pipeline.process(raw_records([event]))
    assert is_transient(ErasureUnderWay("held"))

    made_long_ago = ObjectId.from_datetime(datetime.now(UTC) - HOLD_EXPIRY - timedelta(seconds=1))
    await harness.store.profiles.update_many({}, {"$set": {"erasing": [made_long_ago]}})
    outcome = await harness.pipeline.process(raw_records([event]))

    assert outcome.accepted == 1
    assert not [doc async for doc in harness.store.profiles.find({}) if doc.get("erasing")]
    await harness.current_view_of_whole_journey(customer, entries=2)


async def test_a_request_that_fails_before_recording_takes_back_its_own_hold_only(
    harness: Harness,
) -> None:
    """Two erasure requests for one customer (a double click): the second fails before
    recording its erasure and takes its hold back; the first's, made in the same instant and
    still recording, stands, so a batch still cannot merge the profile. (Before, a hold was
    named by its millisecond: the second replaced the first's, and taking it back left the
    profile unheld.)"""
    event, customer, _ = await absorbable_person(harness, "ida")
    profile = await harness.store.get(customer)
    assert profile is not None
    first, _ = await harness.store.hold([customer])
    privacy = Privacy(harness.store, harness.publisher, harness.pipeline._sealer)
    inject_fault(harness.store, FaultPoint("store", "record_erasure", "before"))

    with pytest.raises(InjectedFault):
        await privacy.erase(profile)

    assert await harness.store.held([customer]) == {customer}
    with pytest.raises(ErasureUnderWay):
        await harness.pipeline.process(raw_records([event]))
    await harness.store.release_hold(first)
    assert await harness.store.held([customer]) == set()
    assert (await harness.pipeline.process(raw_records([event]))).accepted == 1


async def test_a_request_whose_hold_was_taken_back_as_abandoned_holds_again_before_recording(
    harness: Harness,
) -> None:
    """A request slower than `HOLD_EXPIRY` between holding and recording: a batch took its
    hold back as abandoned while it read the identifiers. It holds again before recording, so
    no merge can take the profile between the record and the deletion."""
    _, customer, _ = await absorbable_person(harness, "noa")
    profile = await harness.store.get(customer)
    assert profile is not None
    held_when_recorded: list[set[str]] = []

    async def a_batch_takes_the_hold_back() -> None:
        for head in [doc async for doc in harness.store.profiles.find({"_id": customer})]:
            for hold in head["erasing"]:
                await harness.store.release_hold(hold)

    async def recorded() -> None:
        held_when_recorded.append(await harness.store.held([customer]))

    interleave(harness.store, "identifiers_to_erase", a_batch_takes_the_hold_back)
    interleave(harness.store, "record_erasure", recorded)
    privacy = Privacy(harness.store, harness.publisher, harness.pipeline._sealer)

    answer = await privacy.erase(profile)

    assert held_when_recorded == [{customer}]
    assert answer["status"] == "done"
    assert await harness.store.profiles.count_documents({"_id": customer}) == 0


async def test_a_hold_the_previous_release_made_stands_and_expires_after_the_service_starts(
    harness: Harness,
) -> None:
    """The previous release named a hold by its time, one per head, which `$addToSet` cannot
    add to. Starting turns each into a list holding an ObjectId of that time: a recent one
    still holds, an old one expires, and a new request can hold the head too."""
    _, customer, older = await absorbable_person(harness, "uma")
    long_ago = datetime.now(UTC) - HOLD_EXPIRY - timedelta(seconds=5)
    await harness.store.profiles.update_one(
        {"_id": customer}, {"$set": {"erasing": datetime.now(UTC)}}
    )
    await harness.store.profiles.update_one({"_id": older}, {"$set": {"erasing": long_ago}})

    await harness.store.create_indexes()

    assert await harness.store.held([customer, older]) == {customer}
    await harness.store.hold([older])
    assert await harness.store.held([customer, older]) == {customer, older}


async def test_retried_completions_of_an_erasure_do_not_pile_holds_up(harness: Harness) -> None:
    """Kafka refusing the tombstones: the sweep completes the erasure again every few seconds.
    Each completion holds its profiles again, under the erasure's own hold, so the head keeps
    that one hold, not one more per retry."""
    _, customer, _ = await absorbable_person(harness, "ivo")
    profile = await harness.store.get(customer)
    assert profile is not None
    erasure = await harness.store.record_erasure(customer, [customer], [], datetime.now(UTC))

    for _ in range(3):
        await harness.store.hold_for_erasure(erasure, harness.pipeline._sealer.subject)

    [head] = [doc async for doc in harness.store.profiles.find({"_id": customer})]
    assert head["erasing"] == [erasure.hold]


async def test_a_request_whose_hold_is_half_way_to_expiry_holds_again_before_recording(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch takes back a hold older than `HOLD_EXPIRY` that no erasure names: one checked at
    half that age could be taken back between the check and the record, so the request holds
    again first."""
    monkeypatch.setattr("customer_profile.service.privacy.HOLD_EXPIRY", timedelta(seconds=4))
    _, customer, _ = await absorbable_person(harness, "lia")
    profile = await harness.store.get(customer)
    assert profile is not None

    async def a_slow_read() -> None:
        await asyncio.sleep(3.1)

    interleave(harness.store, "identifiers_to_erase", a_slow_read)
    holds_made: list[object] = []
    hold = harness.store.hold

    async def counted(aliases: list[str]) -> Any:
        holds_made.append(aliases)
        return await hold(aliases)

    monkeypatch.setattr(harness.store, "hold", counted)

    answer = await Privacy(harness.store, harness.publisher, harness.pipeline._sealer).erase(
        profile
    )

    assert len(holds_made) == 2, "held again after the slow read"
    assert answer["status"] == "done"


async def test_a_split_waits_while_an_erasure_holds_its_profiles(harness: Harness) -> None:
    """An alias merged into the person's profile is held with it: a split asked for while the
    erasure is under way does not free it (a batch could then merge it into someone else); the
    split stays pending, and goes with the erasure's records of the customer."""
    event, customer, older = await absorbable_person(harness, "eva")
    await harness.pipeline.process(raw_records([event]))
    sealer = harness.pipeline._sealer
    splits = Splits(harness.store, harness.publisher, sealer, timedelta(days=1), timedelta(0))
    privacy = Privacy(harness.store, harness.publisher, sealer)
    profile = (await harness.store.load([older]))[older]

    async def the_split_is_asked_for() -> None:
        answer = await splits.undo_merge(older, customer, Requester("agent-7", "two people"))
        assert answer["status"] == "pending"
        [head] = [doc async for doc in harness.store.profiles.find({"_id": customer})]
        assert head["merged_into"] == older, "still merged: held"

    interleave(harness.store, "record_erasure", the_split_is_asked_for)
    await privacy.erase(profile)

    assert await harness.store.unfinished_splits() == []
    assert await harness.store.profiles.count_documents({}) == 0


async def the_older_profile_is_as_it_was(
    harness: Harness, settings: HiloSettings, older: str, outcome: BatchOutcome
) -> None:
    """The event was dropped as the erased person's, merged nothing, and the older profile
    holds its phone and its one entry, and was never published with the email."""
    assert (outcome.erased, outcome.merges) == (1, [])
    heads = [doc async for doc in harness.store.profiles.find({"_id": older})]
    assert [(h.get("merged_into"), h["identifiers"]) for h in heads] == [
        (None, ["phone:+34600555000"])
    ]
    assert [doc["_id"] async for doc in harness.store.identities.find({"customer_id": older})] == [
        "phone:+34600555000"
    ]
    await harness.current_view_of_whole_journey(older, entries=1)
    profiles = await read_to_end(
        settings.kafka_bootstrap_servers, topic_name(Topic.PROFILES, settings)
    )
    published = [json.loads(r.value) for r in profiles if r.key == older.encode() and r.value]
    assert published
    assert all(len(p.get("identifiers", [])) == 1 for p in published), published
    merges = await read_to_end(
        settings.kafka_bootstrap_servers, topic_name(Topic.IDENTITY_MERGES, settings)
    )
    assert merges == []


async def test_a_batch_meeting_a_profile_its_erasure_holds_merges_nothing_and_drops_the_event(
    harness: Harness, settings: HiloSettings
) -> None:
    """The batch checked the person's event just before their erasure was recorded, and
    resolves it once the erasure holds their profile (its keys forgotten, nothing deleted
    yet): it does not merge the profile into the older one, and the event (checked again)
    is the erased person's. (Before, the merge moved the erased email to the older profile.)"""
    event, customer, older = await absorbable_person(harness, "pia")

    outcome = await erased_after_a_batch(harness, customer, event, "erase_for")

    await the_older_profile_is_as_it_was(harness, settings, older, outcome)
    assert await harness.store.profiles.count_documents({"_id": customer}) == 0
    assert await harness.store.identities.count_documents({"customer_id": customer}) == 0


async def test_a_profile_held_between_a_batch_reading_it_and_merging_it_is_not_taken(
    harness: Harness, settings: HiloSettings
) -> None:
    """The batch read the person's profile as free to merge; their erasure holds it before the
    batch's merge: the merge's conditional update does not take it, the next round meets the
    hold, and the event is checked again and dropped. The erasure then completes."""
    event, customer, older = await absorbable_person(harness, "ria")
    sealer = harness.pipeline._sealer
    subject = sealer.subject("email:ria@example.com")

    async def the_erasure_holds() -> None:
        erasure = await harness.store.record_erasure(
            customer, [customer], [subject], datetime.now(UTC)
        )
        await harness.store.hold_for_erasure(erasure, sealer.subject)

    interleave(harness.store, "merge", the_erasure_holds)
    outcome = await harness.pipeline.process(raw_records([event]))

    await the_older_profile_is_as_it_was(harness, settings, older, outcome)
    erasure = await harness.store.erasure_of(customer)
    assert erasure is not None
    await Privacy(harness.store, harness.publisher, sealer).complete(erasure)
    assert await harness.store.profiles.count_documents({"_id": customer}) == 0
    assert await harness.store.identities.count_documents({"customer_id": customer}) == 0


async def test_an_identifier_claimed_while_the_erasure_was_being_recorded_is_erased_too(
    harness: Harness,
) -> None:
    """A batch that resolved before the hold claims a phone for the person while the request
    reads their identifiers and records the erasure: completing it adds the phone, whose key is
    deleted and whose earlier events are kept out like the others'."""
    _, customer = await known_person(harness, "ivo")
    phone = "phone:+34600888000"
    sealer = harness.pipeline._sealer
    subject = sealer.subject(phone)
    await sealer.keys.get_or_create([subject])

    async def a_batch_claims() -> None:
        await harness.store.claim({phone: customer})
        # Claimed after the request read the person's identifiers, before it took its time.
        await harness.store.identities.update_one(
            {"_id": phone}, {"$set": {"claimed_at": datetime.now(UTC) - timedelta(seconds=1)}}
        )

    interleave(harness.store, "record_erasure", a_batch_claims)
    await erase(harness, customer)

    erasure = await harness.store.erasure_of(customer)
    assert erasure is not None
    assert subject in erasure.subjects
    assert subject in await harness.store.erased_at([subject])
    assert await sealer.keys.get([subject]) == {}
    assert await harness.store.identities.count_documents({}) == 0


async def test_an_erasure_that_cannot_complete_does_not_hold_up_the_others(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The background sweep completes every unfinished erasure it can, whatever one of them
    raises, and counts the one left."""
    _, first = await known_person(harness, "gus")
    await harness.pipeline.process(raw_records([interaction("hal1", minutes=0, email="h@x.es")]))
    [second] = {doc["_id"] async for doc in harness.store.profiles.find({})} - {first}
    at = datetime.now(UTC) - timedelta(minutes=1)  # old enough for the sweep
    for customer in (first, second):
        await harness.store.record_erasure(customer, [customer], [], at)
    hold = harness.store.hold_for_erasure

    async def broken_for_the_first(erasure: Any, subject: Any) -> Any:
        if erasure.customer_id == first:
            raise RuntimeError("a survivor without a head")
        return await hold(erasure, subject)

    monkeypatch.setattr(harness.store, "hold_for_erasure", broken_for_the_first)
    privacy = Privacy(harness.store, harness.publisher, harness.pipeline._sealer)

    assert await privacy.finish_unfinished() == 1
    assert [e.customer_id for e in await harness.store.unfinished_erasures()] == [first]
    assert await harness.store.profiles.count_documents({"_id": second}) == 0


async def test_a_profile_made_in_an_earlier_round_for_an_event_found_erased_is_erased(
    harness: Harness,
) -> None:
    """The batch's first round makes a profile for an erased person's event (their erasure,
    after the batch's check, had deleted their claims) while another event's merge meets a
    profile an erasure begins to hold; the next round meets the hold. The batch is retried,
    and what the first round claimed and made for the erased person's event is not left
    behind. (Before, that profile kept the erased email.)"""
    event, customer = await known_person(harness, "mia")
    await harness.pipeline.process(raw_records([interaction("q", minutes=0, phone="+34600999000")]))
    await harness.pipeline.process(raw_records([interaction("h", minutes=0, whatsapp_id="3466")]))
    before = {doc["_id"] async for doc in harness.store.profiles.find({})} - {customer}
    [held] = [
        doc["customer_id"]
        async for doc in harness.store.identities.find({"_id": "whatsapp_id:3466"})
    ]
    linking = interaction("qh", minutes=1, phone="+34600999000", whatsapp_id="3466")
    batch, checked, go_on = held_after_its_check(harness, event, linking)
    await checked.wait()
    await erase(harness, customer)

    async def an_erasure_holds() -> None:
        await harness.store.hold([held])

    interleave(harness.store, "merge", an_erasure_holds)
    go_on.set()

    with pytest.raises(ErasureUnderWay):
        await batch
    assert {doc["_id"] async for doc in harness.store.profiles.find({})} == before
    assert await harness.store.identities.count_documents({"_id": "email:mia@example.com"}) == 0


async def test_what_a_person_did_after_their_erasure_is_not_added_to_it(
    harness: Harness, settings: HiloSettings
) -> None:
    """An event the customer sends after asking to be erased (a new phone with their email)
    was resolved to their profile just before the erasure; the erasure lands before the batch
    claims the phone. The batch's writes for the erased profile go, but the phone, used only
    after the erasure, is not added to it: its key stays."""
    _, customer = await known_person(harness, "kim")
    phone = "phone:+34600777888"
    later = interaction("kim3", email="kim@example.com", phone=phone.removeprefix("phone:"))
    later = later.model_copy(update={"occurred_at": datetime.now(UTC) + timedelta(seconds=30)})
    sealer = harness.pipeline._sealer
    await sealer.keys.get_or_create([sealer.subject(phone)])  # the channel sealed with it

    interleave(harness.store, "claim", lambda: erase(harness, customer))
    await harness.pipeline.process(raw_records([later]))

    await nothing_left_of(harness, settings, customer)
    erasure = await harness.store.erasure_of(customer)
    assert erasure is not None
    assert (erasure.done, sealer.subject(phone) in erasure.subjects) == (True, False)
    assert await sealer.keys.get([sealer.subject(phone)]) != {}


async def test_an_erasure_its_request_is_completing_when_a_batch_extends_it_is_completed_again(
    harness: Harness, settings: HiloSettings
) -> None:
    """The batch merges the customer's second profile into theirs while the erasure's request is
    completing it (keys deleted, MongoDB erased, tombstones out, not yet marked done): the
    request does not mark it done over the extension, which is left to be completed again."""
    event, customer = await known_person(harness, "ada")
    await harness.pipeline.process(
        raw_records([interaction("ada-d", minutes=0, phone="+34600123123")])
    )
    others = {doc["_id"] async for doc in harness.store.profiles.find({})} - {customer}
    finishing, extended = asyncio.Event(), asyncio.Event()

    async def hold_before_marking_done() -> None:
        finishing.set()
        await extended.wait()

    interleave(harness.store, "erasure_finished", hold_before_marking_done)
    privacy = Privacy(harness.store, harness.publisher, harness.pipeline._sealer)
    profile = (await harness.store.load([customer]))[customer]
    request: list[asyncio.Task[dict[str, Any]]] = []

    async def erase_until_it_is_finishing() -> None:
        request.append(asyncio.create_task(privacy.erase(profile)))
        await finishing.wait()

    interleave(harness.store, "merge", erase_until_it_is_finishing)
    await harness.pipeline.process(raw_records([event]))
    extended.set()
    assert (await request[0])["status"] == "pending", "what the request answers"

    await nothing_left_of(harness, settings, customer)
    await erased_for_good(harness, settings, customer, {customer, *others}, "phone:+34600123123")


async def erased_for_good(
    harness: Harness, settings: HiloSettings, customer: str, aliases: set[str], key: str
) -> None:
    """The customer's erasure names `aliases` and the identifier `key`, and is left to be
    completed again; completed (as `Privacy.finish_unfinished` does), the identifier has no key
    and every alias has its tombstone."""
    sealer = harness.pipeline._sealer
    subject = sealer.subject(key)
    erasure = await harness.store.erasure_of(customer)
    assert erasure is not None
    assert (set(erasure.aliases), subject in erasure.subjects) == (aliases, True)
    assert subject in await harness.store.erased_at([subject])
    assert not erasure.done, "left for the erasure to complete again"
    await Privacy(harness.store, harness.publisher, sealer).complete(erasure)
    assert (await harness.store.erasure_of(customer)).done  # type: ignore[union-attr]
    assert await sealer.keys.get([subject]) == {}
    records = await read_to_end(
        settings.kafka_bootstrap_servers, topic_name(Topic.ERASURES, settings)
    )
    last = json.loads([r.value for r in records if r.key == customer.encode()][-1])
    assert (set(last["aliases"]), subject in last["subjects"]) == (aliases, True)
    profiles = await read_to_end(
        settings.kafka_bootstrap_servers, topic_name(Topic.PROFILES, settings)
    )
    for alias in aliases:
        assert [r.value for r in profiles if r.key == alias.encode()][-1] is None


async def test_entries_a_failed_attempt_wrote_after_the_erasure_go_on_its_redelivery(
    harness: Harness, settings: HiloSettings
) -> None:
    """The attempt wrote for the customer after they were erased and failed before its check:
    the redelivery drops the event as erased and erases what the attempt left."""
    event, customer = await known_person(harness, "yan")

    async def erase_then_kafka_fails() -> None:
        await erase(harness, customer)
        inject_fault(harness.publisher, FaultPoint("publisher", "publish_records", "before"))

    interleave(harness.store, "insert_entries", erase_then_kafka_fails)

    with pytest.raises(InjectedFault):
        await harness.pipeline.process(raw_records([event]))
    assert await harness.store.journey.count_documents({}) == 1, "left by the attempt"
    clear_faults(harness.publisher, "publish_records")
    outcome = await harness.pipeline.process(raw_records([event]))

    assert outcome.erased == 1
    await nothing_left_of(harness, settings, customer)


async def test_a_profile_made_from_its_claims_by_another_instance_is_added_to_not_replaced(
    harness: Harness,
) -> None:
    """While A is between claiming a new customer's identifiers and creating its profile, B
    meets one of them and creates the profile from the claims; A's create then finds it and
    adds its identifiers the way identifiers are added to any known profile."""
    email, phone = "ines@example.com", "+34600333444"

    async def meanwhile() -> None:
        await harness.another_instance().process(
            raw_records([interaction("i2", minutes=1, phone=phone)])
        )

    interleave(harness.store, "create_profiles", meanwhile)
    await harness.pipeline.process(
        raw_records([interaction("i1", minutes=0, email=email, phone=phone)])
    )

    [head] = [doc async for doc in harness.store.profiles.find({})]
    assert sorted(head["identifiers"]) == [f"email:{email}", f"phone:{phone}"]
    claims = [doc async for doc in harness.store.identities.find({})]
    assert {doc["customer_id"] for doc in claims} == {head["_id"]}
    assert head["created_at"] == min(doc["claimed_at"] for doc in claims), "B made it"
    await harness.current_view_of_whole_journey(head["_id"], entries=2)
    assert not await harness.store.unsettled()


async def test_a_superseded_view_is_deleted_by_its_token_never_a_later_view_in_its_slot(
    harness: Harness,
) -> None:
    """W1 stores version 2 over version 1 and, before W1 deletes version 1: W3 stores 3 (freeing
    2), W4 (which read 1) stores 2 and deletes 1, and W5 (which read nothing) stores 1. W1's
    delete must leave W5's view alone: it is how W5 learns that its save overtook nothing."""
    store = harness.store
    await store.ensure_profiles(["c"])
    nothing = (await store.load(["c"]))["c"]
    await store.save_views({"c": ViewSave(nothing, ProfileView())})
    first = (await store.load(["c"]))["c"]
    w5 = ViewSave(nothing, ProfileView())

    async def others() -> None:
        second = (await store.load(["c"]))["c"]
        assert second.version == 2
        for save in (ViewSave(second, ProfileView()), ViewSave(first, ProfileView()), w5):
            assert not await store.save_views({"c": save})

    views = store.views
    write = views.bulk_write
    waiting = [others]

    async def delete_later(operations: Any, **kwargs: Any) -> Any:
        if waiting and any(isinstance(op, DeleteOne) for op in operations):
            await waiting.pop()()
        return await write(operations, **kwargs)

    views.bulk_write = delete_later  # type: ignore[method-assign, assignment]
    assert not await store.save_views({"c": ViewSave(first, ProfileView())})
    assert not waiting, "the others acted between W1's insert and its delete"

    [state] = (await store.head_states(["c"])).values()
    assert state.version == 3
    assert w5.token in state.stored, "W5's view, in the slot W1 superseded, is still stored"


@pytest.mark.parametrize("token", [None, "t-earlier"], ids=["before-tokens", "token-in-a-field"])
async def test_a_view_stored_by_an_earlier_release_is_still_deleted_when_superseded(
    harness: Harness, token: str | None
) -> None:
    """Earlier releases stored views under `<customer>:<version>`, with the token (if any) in a
    field: the save that supersedes one deletes it, and only it."""
    store = harness.store
    await store.ensure_profiles(["c"])
    legacy = {"_id": "c:1", "customer_id": "c", "version": 1, "view": {}}
    await store.views.insert_one(legacy if token is None else {**legacy, "token": token})
    first = (await store.load(["c"]))["c"]
    assert (first.version, first.view_token, first.view_key) == (1, token, "c:1")

    save = ViewSave(first, ProfileView())
    assert not await store.save_views({"c": save})

    assert [doc["_id"] async for doc in store.views.find({})] == [f"c:2:{save.token}"]
    [state] = (await store.head_states(["c"])).values()
    assert (state.version, state.stored) == (2, frozenset({save.token}))


async def test_a_view_in_an_earlier_releases_slot_is_not_deleted_by_a_later_token(
    harness: Harness,
) -> None:
    """An earlier release's view at version 1 holds a token other than the one superseded (that
    release filled the slot again): the delete by `_id` and token leaves it alone."""
    store = harness.store
    await store.ensure_profiles(["c"])
    await store.views.insert_one(
        {"_id": "c:1", "customer_id": "c", "version": 1, "token": "theirs", "view": {}}
    )
    first = (await store.load(["c"]))["c"]

    await store.discard_views({"c": replace(first, view_token="superseded")})

    assert [doc["_id"] async for doc in store.views.find({})] == ["c:1"]


async def test_an_entry_settled_while_the_unsettled_are_counted_is_not_counted(
    harness: Harness,
) -> None:
    """The count reads the entries and the settled markers one after the other; an entry stored
    and settled between the two reads is finished, so it must not be counted."""
    store = harness.store
    collections = {"journey": store.journey, "settled": store._journey.settled}
    reads = {name: collection.find for name, collection in collections.items()}
    counting: list[str] = []

    async def batch_then(cursor: Any) -> AsyncIterator[Any]:
        collections["journey"].find = reads["journey"]  # type: ignore[method-assign]
        collections["settled"].find = reads["settled"]  # type: ignore[method-assign]
        await harness.pipeline.process(raw_records([interaction("x1", email="x@example.com")]))
        async for doc in cursor:
            yield doc

    def second_read_waits(name: str) -> Any:
        def find(*args: Any, **kwargs: Any) -> Any:
            counting.append(name)
            cursor = reads[name](*args, **kwargs)
            return batch_then(cursor) if len(counting) == 2 else cursor

        return find

    for name, collection in collections.items():
        collection.find = second_read_waits(name)  # type: ignore[method-assign]
    unsettled = await store.unsettled()

    assert len(counting) == 2, "a batch was stored and settled between the two reads"
    assert await store.journey.count_documents({}) == 1
    assert unsettled == []


async def test_each_save_deletes_the_view_it_superseded(harness: Harness) -> None:
    """Once a batch returned, only each profile's current view is stored."""
    for n in range(3):
        event = interaction(f"v{n}", minutes=n, email="vi@example.com")
        await harness.pipeline.process(raw_records([event]))

    [head] = [doc async for doc in harness.store.profiles.find({})]
    views = [doc["version"] async for doc in harness.store.views.find({"customer_id": head["_id"]})]
    assert views == [3]


RESERVATION_POINTS = [
    FaultPoint("store", "reserve", "after"),
    FaultPoint("store", "merge", "after"),
    FaultPoint("store", "finish_merges", "before"),
    FaultPoint("store", "finish_merges", "after"),
]


@pytest.mark.parametrize("point", RESERVATION_POINTS, ids=lambda p: p.name)
async def test_a_merge_bringing_a_loyalty_id_that_failed_at_any_step_leaves_no_reservation(
    harness: Harness, point: FaultPoint
) -> None:
    """A merge that brings a loyalty id reserves it on the survivor first (`Store.reserve`).
    Whichever step of it fails, the redelivered batch finishes it and drops the reservation:
    another instance's merge there right after is not held off by what the failure left."""
    before = [
        interaction("c1", minutes=0, email="cara@example.com"),
        interaction("c2", minutes=1, loyalty_id="LC-1"),
        interaction("k1", minutes=2, customer_id="K-7"),
    ]
    await harness.pipeline.process(raw_records(before))
    batch = [interaction("c3", minutes=3, loyalty_id="LC-1", email="cara@example.com")]
    inject_fault(harness.store, point)
    with pytest.raises(InjectedFault):
        await harness.pipeline.process(raw_records(batch))
    clear_faults(harness.store, point.method)
    await harness.pipeline.process(raw_records(batch))

    later = [interaction("k2", minutes=4, customer_id="K-7", email="cara@example.com")]
    await harness.another_instance().process(raw_records(later))

    [cara] = (await harness.store.owners(["email:cara@example.com"])).values()
    profile = (await harness.store.load([cara]))[cara]
    assert {"loyalty_id:LC-1", "customer_id:K-7"} <= set(profile.identifiers)
    assert len(profile.merged_from) == 2
    assert await harness.store.profiles.count_documents({"merging_in": {"$exists": True}}) == 0
    assert await harness.store.profiles.count_documents({"merge_pending": True}) == 0


@pytest.mark.parametrize("point", RESERVATION_POINTS, ids=lambda p: p.name)
async def test_a_batch_of_two_cards_for_one_profile_that_failed_midway_completes_on_redelivery(
    harness: Harness, point: FaultPoint
) -> None:
    """Two cards meet one shared email in one batch; the first's merge reserved its card on the
    shared profile when the attempt failed. Redelivered, the second card's merge meets that
    reservation: the earlier attempt's merge is finished, and the second card is kept apart
    with a conflict, instead of the batch meeting the reservation on every delivery."""
    before = [
        interaction("s1", minutes=0, email="shared@example.com"),
        interaction("c1", minutes=1, loyalty_id="L1"),
        interaction("c2", minutes=2, loyalty_id="L2"),
    ]
    await harness.pipeline.process(raw_records(before))
    batch = [
        interaction(f"card-{n}", minutes=3 + n, loyalty_id=f"L{n}", email="shared@example.com")
        for n in (1, 2)
    ]
    inject_fault(harness.store, point)
    with pytest.raises(InjectedFault):
        await harness.pipeline.process(raw_records(batch))
    clear_faults(harness.store, point.method)
    await harness.pipeline.process(raw_records(batch))

    [shared] = (await harness.store.owners(["email:shared@example.com"])).values()
    profile = (await harness.store.load([shared]))[shared]
    assert [k for k in profile.identifiers if k.startswith("loyalty_id:")] == ["loyalty_id:L1"]
    assert len(profile.merged_from) == 1
    assert await harness.store.profiles.count_documents({"merging_in": {"$exists": True}}) == 0
    assert await harness.store.profiles.count_documents({"merge_pending": True}) == 0
    await harness.current_view_of_whole_journey(shared, entries=3)


async def ana_and_bo_asked_together(harness: Harness) -> tuple[str, Interaction]:
    """Ana (a phone) and Bo (an email), and an unverified event with both and a new customer
    number: it makes a profile for the number and a merge request naming Ana and Bo. Ana's id."""
    phone, email = "+34600888001", "bo@example.com"
    await harness.pipeline.process(raw_records([interaction("ana1", minutes=0, phone=phone)]))
    [ana] = [doc["_id"] async for doc in harness.store.profiles.find({})]
    await harness.pipeline.process(raw_records([interaction("bo1", minutes=1, email=email)]))
    both = interaction("asks", minutes=2, phone=phone, email=email, customer_id="C-777")
    return ana, both.model_copy(update={"identity_trust": "unverified"})


async def merge_request_types(settings: HiloSettings) -> list[str]:
    records = await read_to_end(
        settings.kafka_bootstrap_servers, topic_name(Topic.MERGE_REQUESTS, settings)
    )
    return [json.loads(record.value)["type"] for record in records]


async def test_a_request_published_after_the_erasure_withdrew_it_is_withdrawn_again(
    harness: Harness, settings: HiloSettings
) -> None:
    """Ana's erasure runs whole between the batch recording the merge request naming her and
    publishing it: it withdraws the request, then the batch publishes `requested`. The batch's
    check after publishing notes it on the erasure again, whose next completion withdraws it
    once more, so a reader following the queue does not see it open for good."""
    ana, asks = await ana_and_bo_asked_together(harness)

    async def recorded_then_erased(record: Any, conflicts: Any) -> set[str]:
        decided: set[str] = await record(conflicts)
        await erase(harness, ana)
        return decided

    wrap_once(harness.store, "record_conflicts", recorded_then_erased)
    await harness.pipeline.process(raw_records([asks]))
    [erasure] = await harness.store.unfinished_erasures()
    await Privacy(harness.store, harness.publisher, harness.pipeline._sealer).complete(erasure)

    assert await merge_request_types(settings) == ["withdrawn", "requested", "withdrawn"]
    assert await harness.store.conflicts.count_documents({}) == 0


async def test_a_request_a_crashed_batch_recorded_for_a_customer_erased_meanwhile_is_withdrawn(
    harness: Harness, settings: HiloSettings
) -> None:
    """Ana is erased after the batch resolved and before it records the merge request naming
    her; the batch crashes right after. Redelivered, its event is Ana's from before her erasure
    and is dropped, and nothing it wrote for her is an entry: the request it left is found by
    the event that raised it, deleted and withdrawn (the first attempt may have published it)."""
    ana, asks = await ana_and_bo_asked_together(harness)

    async def erased_recorded_then_crash(record: Any, conflicts: Any) -> set[str]:
        await erase(harness, ana)
        await record(conflicts)
        raise InjectedFault("after-record_conflicts")

    wrap_once(harness.store, "record_conflicts", erased_recorded_then_crash)
    with pytest.raises(InjectedFault):
        await harness.pipeline.process(raw_records([asks]))
    outcome = await harness.pipeline.process(raw_records([asks]))
    [erasure] = await harness.store.unfinished_erasures()
    await Privacy(harness.store, harness.publisher, harness.pipeline._sealer).complete(erasure)

    assert outcome.erased == 1
    assert await harness.store.conflicts.count_documents({}) == 0
    assert await merge_request_types(settings) == ["withdrawn"]


async def test_a_completion_finishes_no_erasure_another_noted_a_request_of_since(
    harness: Harness, settings: HiloSettings
) -> None:
    """Two completions of one erasure at once (two instances' background loops): B notes and
    deletes a request A listed too early to see, then dies before publishing. A publishes only
    what it noted: it must not mark the erasure done, or the request is never withdrawn."""
    ana, _ = await ana_and_bo_asked_together(harness)
    await erase(harness, ana)
    read_by_a = await harness.store.erasure_of(ana)
    assert read_by_a is not None
    assert read_by_a.done
    [bo] = [doc["_id"] async for doc in harness.store.profiles.find({"_id": {"$ne": ana}})]
    late = Conflict(UNVERIFIED_MERGE, None, tuple(sorted([ana, bo])), ("phone:+34600888001",))
    await harness.store.record_conflicts([(late, "evt-late")])

    await harness.store.erase_for(read_by_a, read_by_a.aliases)  # B, which then dies

    assert not await harness.store.erasure_finished(read_by_a), "A's finish is refused"
    [left] = await harness.store.unfinished_erasures()
    await Privacy(harness.store, harness.publisher, harness.pipeline._sealer).complete(left)
    assert await merge_request_types(settings) == ["withdrawn"]
    assert await harness.store.conflicts.count_documents({}) == 0
