"""A long journey (a shop's walk-in account) is derived again without being held whole.

A late event re-derives the view from the whole journey. Past `derivation.HELD_ENTRIES` the
journey is folded as it is read, in event-time order, from one cursor on the real server; these
tests lower the bound to a few entries and check the order, the view and that a read stopped at
the bound closes its cursor on the server.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY
from pymongo import AsyncMongoClient, monitoring
from pymongo.errors import AutoReconnect

from customer_profile.adapters import journey
from customer_profile.adapters.store import ProfileStore
from customer_profile.domain.journey import JourneyEntry
from customer_profile.domain.profile import derive_view
from customer_profile.service import checkpoint_sweep, derivation, privacy
from customer_profile.service.ports import Checkpoint, StoredProfile
from customer_profile.testing import (
    T0,
    RunningProfileService,
    interaction,
    running_profile_service,
    stored_entry,
)
from hilo.contract import Identifiers
from hilo.mongo import MongoDocument, create_mongo_client
from hilo.settings import HiloSettings
from hilo.testkit.probes import eventually
from hilo.testkit.query_plans import winning_stages

START = datetime(2026, 11, 1, 9, tzinfo=UTC)
WINDOW = timedelta(hours=24)


def entries(count: int, customers: tuple[str, ...]) -> list[JourneyEntry]:
    """Entries spread over `customers`, four to a minute: times tie across aliases."""
    return [
        stored_entry(
            f"e{n:04}",
            customers[n % len(customers)],
            START + timedelta(minutes=(count - n) // 4),
            channel="store",
        )
        for n in range(count)
    ]


def profile(customer_id: str) -> StoredProfile:
    return StoredProfile(
        customer_id=customer_id,
        version=1,
        created_at=START,
        identifiers=[],
        merged_from=[],
        view=None,
    )


async def test_a_journey_read_in_order_gives_each_aliass_entries_once_by_time_then_id(
    mongo_client: AsyncMongoClient[MongoDocument],
    settings: HiloSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(journey, "READ_BATCH", 7)  # many batches, each read as needed
    store = ProfileStore(mongo_client, settings.mongodb_database)
    await store.create_indexes()
    stored = entries(60, ("c1", "c2", "c3"))
    await store.insert_entries(stored)

    read = [entry.id async for entry in store.in_order(["c1", "c2"])]

    mine = sorted((e for e in stored if e.customer_id in ("c1", "c2")), key=JourneyEntry.sort_key)
    assert read == [e.id for e in mine]
    query = {"customer_id": {"$in": ["c1", "c2"]}}
    plan = await store.journey.find(query).sort([("occurred_at", 1), ("_id", 1)]).explain()
    assert "COLLSCAN" not in winning_stages(plan), plan


async def test_a_journey_read_after_an_entry_starts_right_after_it_within_its_instant(
    mongo_client: AsyncMongoClient[MongoDocument],
    settings: HiloSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """From a checkpoint on: entries of the checkpoint's very instant with a higher id come,
    those up to it do not, nor past the bound; each alias's read is a range on the index."""
    monkeypatch.setattr(journey, "READ_BATCH", 7)
    store = ProfileStore(mongo_client, settings.mongodb_database)
    await store.create_indexes()
    stored = entries(60, ("c1", "c2", "c3"))
    await store.insert_entries(stored)
    mine = sorted((e for e in stored if e.customer_id in ("c1", "c2")), key=JourneyEntry.sort_key)
    ties = [n for n in range(1, len(mine)) if mine[n].occurred_at == mine[n - 1].occurred_at]
    cut = mine[ties[len(ties) // 2] - 1]
    after = [e.id for e in mine if e.sort_key() > cut.sort_key()]

    read = await store.entries_after(["c1", "c2"], cut.sort_key(), len(after))

    assert mine[mine.index(cut) + 1].occurred_at == cut.occurred_at, "a tie after the cut"
    assert read is not None
    assert [entry.id for entry in read] == after
    assert await store.entries_after(["c1", "c2"], cut.sort_key(), len(after) - 1) is None
    query = {"customer_id": "c1", "occurred_at": {"$gte": cut.occurred_at}}
    plan = await store.journey.find(query).explain()
    assert "COLLSCAN" not in winning_stages(plan), plan


async def test_an_erasure_deletes_every_checkpoint_folded_from_the_persons_ids(
    mongo_client: AsyncMongoClient[MongoDocument], settings: HiloSettings
) -> None:
    """One left under the profile a split took the person out of (folded from both) goes with
    them; another customer's stays. Found on the index, not by a scan."""
    store = ProfileStore(mongo_client, settings.mongodb_database)
    await store.create_indexes()
    view = derive_view([], WINDOW)
    kept, other = Checkpoint("k1", START, "e1"), Checkpoint("x1", START, "e2")
    await store.keep_checkpoint("kept", kept, ["kept", "restored"], view)
    await store.keep_checkpoint("other", other, ["other"], view)

    erased = await store.erase(["restored"])

    assert erased["checkpoints"] == 1
    assert await store.checkpoint_view(kept, ["kept", "restored"]) is None
    assert await store.checkpoint_view(other, ["other"]) == view
    checkpoints = mongo_client[settings.mongodb_database]["profile_checkpoints"]
    plan = await checkpoints.find({"aliases": {"$in": ["restored", "r2"]}}).explain()
    assert "COLLSCAN" not in winning_stages(plan), plan


class Commands(monitoring.CommandListener):
    """The names of the commands sent, and the documents the server's replies held."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.documents: list[dict[str, object]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.names.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        cursor = event.reply.get("cursor", {})
        self.documents += cursor.get("firstBatch", []) + cursor.get("nextBatch", [])

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@asynccontextmanager
async def listened_store(settings: HiloSettings, commands: Commands) -> AsyncIterator[ProfileStore]:
    """A store on the real server whose client reports every command to `commands`."""
    client = create_mongo_client(settings, listeners=[commands])
    store = ProfileStore(client, settings.mongodb_database)
    try:
        await store.create_indexes()
        yield store
    finally:
        await client.drop_database(settings.mongodb_database)
        await client.close()


async def test_journeys_read_within_a_bound_stop_there_and_close_their_cursor(
    settings: HiloSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journey, "READ_BATCH", 7)  # the server holds the rest when it stops
    commands = Commands()
    async with listened_store(settings, commands) as store:
        await store.insert_entries(entries(250, ("c1", "c2")))
        both = [profile("c1"), profile("c2")]

        assert await store.entries_within(both, 10) is None
        killed = commands.names.count("killCursors")
        assert killed == 1, "the server's cursor is closed, not left to time out"
        within = await store.entries_within(both, 250)
        assert within is not None
        assert {c: len(journey) for c, journey in within.items()} == {"c1": 125, "c2": 125}


@pytest.mark.parametrize("read_fails_midway", [False, True])
async def test_a_late_event_on_a_journey_past_the_bound_gives_the_view_a_derivation_gives(
    profile_service: RunningProfileService,
    monkeypatch: pytest.MonkeyPatch,
    read_fails_midway: bool,
) -> None:
    """The consumer on the real servers: a walk-in account's orders and messages, then a refund
    dated before all of them, folded as read in batches of 7 (the bound is 20 entries). With
    the read failing after 10 entries once (MongoDB lost midway), the batch is tried again and
    the refund counted once."""
    monkeypatch.setattr(derivation, "HELD_ENTRIES", 20)
    monkeypatch.setattr(journey, "READ_BATCH", 7)
    svc = profile_service
    folded_before = _folded_as_read()
    house = {"loyalty_id": "L-WALK-IN"}
    history = [
        interaction(f"o{n}", minutes=10 + n, kind=("order", "message", "cart")[n % 3], **house)
        for n in range(45)
    ]
    await svc.publish(history)
    await svc.wait_for_entries(len(history))
    failures = _fail_once_midway(svc.service.store, monkeypatch) if read_fails_midway else []
    await svc.publish([interaction("late", minutes=1, kind="refund", **house)])
    await svc.wait_for_entries(len(history) + 1)
    assert len(failures) == int(read_fails_midway)

    customer = await svc.customer_of("loyalty_id", "L-WALK-IN")
    [stored] = (await svc.service.store.load([customer])).values()
    whole = await svc.service.store.entries(stored.aliases)
    assert stored.view is not None
    assert stored.view.event_count == len(history) + 1
    assert any(entry.late for entry in whole)
    assert stored.view.model_dump() == derive_view(whole, timedelta(hours=24)).model_dump()
    assert _folded_as_read() > folded_before, "folded as read, not gathered"


async def test_a_late_event_after_a_checkpoint_folds_from_it_and_an_erasure_deletes_it(
    settings: HiloSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The consumer on the real servers, a checkpoint kept 10 minutes behind the view's end
    (`HILO_CHECKPOINT_BEHIND_HOURS`) once 10 entries came before: a refund dated before every
    entry derives the view from the beginning and keeps one (and an earlier one, just before 20
    minutes back: `ladder`); a message late by a few minutes folds from it, reading the entries
    since it alone. Both views are the ones a derivation gives; the person's erasure deletes
    the checkpoints."""
    monkeypatch.setattr(derivation, "CHECKPOINT_AFTER", 10)
    async with running_profile_service(settings, checkpoint_behind_hours=1 / 6) as svc:
        await _late_after_a_checkpoint(svc)


async def _late_after_a_checkpoint(svc: RunningProfileService) -> None:
    house = {"loyalty_id": "L-WALK-IN"}
    history = [
        interaction(f"c{n}", minutes=10 + n, kind=("order", "message", "cart")[n % 3], **house)
        for n in range(45)
    ]
    await svc.publish(history)
    await svc.wait_for_entries(len(history))
    customer = await svc.customer_of("loyalty_id", "L-WALK-IN")
    checkpoints = svc.service.store.journey.database["profile_checkpoints"]

    await svc.publish([interaction("before-all", minutes=1, kind="refund", **house)])
    await svc.wait_for_entries(len(history) + 1)
    first = await _profile(svc, customer)
    assert first.checkpoint is not None, "kept by the derivation from the beginning"
    assert first.checkpoint.at == T0 + timedelta(minutes=44), "the last entry 10 minutes back"
    assert [c.at for c in first.earlier_checkpoints] == [T0 + timedelta(minutes=34)]
    assert await checkpoints.count_documents({"customer_id": customer}) == 2
    assert first.view == derive_view(await svc.service.store.entries(first.aliases), WINDOW)

    folded = _derivations("from_checkpoint"), _entries_folded()
    await svc.publish([interaction("minutes-late", minutes=50, kind="message", **house)])
    await svc.wait_for_entries(len(history) + 2)
    second = await _profile(svc, customer)

    assert _derivations("from_checkpoint") == folded[0] + 1
    assert _entries_folded() - folded[1] == 11, "minutes 45 to 54 and the late one, not 47"
    assert second.checkpoint == first.checkpoint
    assert second.view == derive_view(await svc.service.store.entries(second.aliases), WINDOW)

    await _erased_with_checkpoints(svc, customer)


async def test_a_journey_grown_on_time_names_checkpoints_its_first_late_event_folds_from(
    settings: HiloSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The consumer on the real servers, checkpoints 10 minutes behind once a view counts 10
    entries: a walk-in account's events come on time, ten minutes of them a batch. Its view
    document names a checkpoint and a next one, and the one the checkpoint took the place of
    (`ladder`), all stored; its first late event ever, three minutes back, folds the entries
    since the next one (minute 50) without reading the journey whole, and the view is a
    derivation's. The person's erasure deletes every checkpoint."""
    monkeypatch.setattr(derivation, "CHECKPOINT_AFTER", 10)
    async with running_profile_service(settings, checkpoint_behind_hours=1 / 6) as svc:
        house = {"loyalty_id": "L-WALK-IN"}
        customer = await _grown_on_time(svc)
        store = svc.service.store
        grown = await _profile(svc, customer)
        assert grown.checkpoint is not None
        assert grown.next_checkpoint is not None
        assert (grown.checkpoint.at, grown.next_checkpoint.at) == (
            T0 + timedelta(minutes=40),
            T0 + timedelta(minutes=50),
        ), "kept at the first entry of a batch, the next one taking its place 10 minutes on"
        document = await store.journey.database["profile_views"].find_one(
            {"customer_id": customer, "version": grown.version}
        )
        assert document is not None
        assert document["next_checkpoint"]["id"] == grown.next_checkpoint.id
        assert [c.at for c in grown.earlier_checkpoints] == [T0 + timedelta(minutes=20)], (
            "the oldest of those kept 20 to 40 minutes back"
        )
        assert [named["id"] for named in document["earlier_checkpoints"]] == [
            c.id for c in grown.earlier_checkpoints
        ]
        checkpoints = store.journey.database["profile_checkpoints"]
        assert await checkpoints.count_documents({"customer_id": customer}) == 3

        folded = _derivations("from_checkpoint"), _entries_folded(), _folded_as_read()
        await svc.publish([interaction("first-late", minutes=56.5, kind="message", **house)])
        await svc.wait_for_entries(51)
        late = await _profile(svc, customer)
        assert _derivations("from_checkpoint") == folded[0] + 1
        assert _entries_folded() - folded[1] == 10, "minutes 51 to 59 and the late one, not 51"
        assert _folded_as_read() == folded[2]
        assert late.view == derive_view(await store.entries(late.aliases), WINDOW)
        assert (late.checkpoint, late.next_checkpoint) == (grown.checkpoint, grown.next_checkpoint)

        await _erased_with_checkpoints(svc, customer)


async def test_a_till_back_online_sends_its_sales_late_and_only_the_first_batch_reads_it_whole(
    settings: HiloSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The consumer on the real servers, checkpoints 10 minutes behind once a view counts 10
    entries: a walk-in account grown on time to minute 59; a till offline since minute 20 sends
    its sales (minutes 20.5 to 47.5) in three batches, oldest first. The first, dated before
    the checkpoint and the next one, folds from the earlier one the view names (`ladder`: minute
    20, the oldest of those 20 to 40 minutes back), which stays its checkpoint; the next two
    fold from it (each in one or more of the consumer's batches). None reads the journey from
    the beginning. Every view is a derivation's."""
    monkeypatch.setattr(derivation, "CHECKPOINT_AFTER", 10)
    async with running_profile_service(settings, checkpoint_behind_hours=1 / 6) as svc:
        customer = await _grown_on_time(svc)
        store = svc.service.store
        sales = [
            interaction(f"till{n}", minutes=20.5 + 3 * n, kind="cart", loyalty_id="L-WALK-IN")
            for n in range(10)
        ]
        grown = await _profile(svc, customer)
        whole = _derivations("held"), _folded_as_read()
        from_checkpoint = _derivations("from_checkpoint")
        await svc.publish(sales[:4])
        await svc.wait_for_entries(54)
        first = await _profile(svc, customer)
        assert first.checkpoint is not None
        assert first.checkpoint == grown.earlier_checkpoints[0], "the ladder's, before the sale"
        assert first.checkpoint.at == T0 + timedelta(minutes=20)
        assert first.view == derive_view(await store.entries(first.aliases), WINDOW)
        assert (_derivations("held"), _folded_as_read()) == whole, "not from the beginning"

        for batch, stored in ((sales[4:7], 57), (sales[7:], 60)):
            await svc.publish(batch)
            await svc.wait_for_entries(stored)
            assert (_derivations("held"), _folded_as_read()) == whole, "never from the beginning"
        after = await _profile(svc, customer)
        assert _derivations("from_checkpoint") >= from_checkpoint + 3
        assert after.checkpoint is not None
        assert after.checkpoint.at < T0 + timedelta(minutes=41.5), "before the last batch's sales"
        assert after.view == derive_view(await store.entries(after.aliases), WINDOW)


async def test_a_long_journey_merged_away_takes_its_checkpoints_with_it(
    settings: HiloSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The consumer on the real servers: a web customer known by an email grows on time, ten
    entries a batch, and keeps checkpoints; an event naming the email and a loyalty card merges
    it into the card's profile, and the merge deletes the absorbed profile's checkpoints (found
    by customer on an index)."""
    monkeypatch.setattr(derivation, "CHECKPOINT_AFTER", 10)
    async with running_profile_service(settings, checkpoint_behind_hours=1 / 6) as svc:
        await svc.publish([interaction("card", minutes=5, loyalty_id="L-CARD")])
        await svc.wait_for_entries(1)
        for first in range(10, 50, 10):
            await svc.publish(
                [
                    interaction(f"w{n}", minutes=n, email="walk@example.com")
                    for n in range(first, first + 10)
                ]
            )
            await svc.wait_for_entries(first - 9 + 10)
        absorbed = await svc.customer_of("email", "walk@example.com")
        checkpoints = svc.service.store.journey.database["profile_checkpoints"]
        named = (await _profile(svc, absorbed)).checkpoints()
        assert len(named) >= 2, "a checkpoint and a next one, and earlier ones"
        assert await checkpoints.count_documents({"customer_id": absorbed}) == len(named)

        both = interaction("both", minutes=55, kind="cart", email="walk@example.com")
        both = both.model_copy(
            update={"identifiers": Identifiers(loyalty_id="L-CARD", email="walk@example.com")}
        )
        await svc.publish([both])
        await svc.wait_for_entries(42)
        survivor = await svc.customer_of("loyalty_id", "L-CARD")
        assert survivor != absorbed
        assert await svc.customer_of("email", "walk@example.com") == survivor
        assert await checkpoints.count_documents({"customer_id": absorbed}) == 0
        plan = await checkpoints.find({"customer_id": {"$in": [absorbed]}}).explain()
        assert "COLLSCAN" not in winning_stages(plan), plan


@pytest.mark.parametrize("step", ["keep_checkpoint", "checkpoint_view", "entries_after"])
async def test_mongodb_lost_at_a_checkpoint_step_fails_the_batch_and_its_retry_counts_once(
    settings: HiloSettings, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    """The consumer on the real servers, MongoDB lost once (AutoReconnect) as a checkpoint is
    kept, or read, or the entries since it are read: the batch fails, is delivered again, and
    each late event is counted once; the view names a checkpoint that is stored."""
    monkeypatch.setattr(derivation, "CHECKPOINT_AFTER", 10)
    async with running_profile_service(settings, checkpoint_behind_hours=1 / 6) as svc:
        await _lost_at(svc, step, monkeypatch)


async def test_a_checkpoint_a_failed_batch_left_is_swept_and_those_named_stay(
    settings: HiloSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The consumer on the real servers, MongoDB lost right after a late event's derivation kept
    a checkpoint: the batch fails, and its redelivery keeps its own, so the first is named by
    no view. The service's sweep (every 0.2 s here, of checkpoints kept over a second ago)
    deletes it, and none that the view names."""
    monkeypatch.setattr(derivation, "CHECKPOINT_AFTER", 10)
    monkeypatch.setattr(checkpoint_sweep, "GRACE", timedelta(seconds=1))
    swept = _swept()
    overrides = {"checkpoint_behind_hours": 1 / 6, "checkpoint_sweep_seconds": 0.2}
    async with running_profile_service(settings, **overrides) as svc:
        await _lost_at(svc, "keep_checkpoint", monkeypatch)
        customer = await svc.customer_of("loyalty_id", "L-WALK-IN")
        named = (await _profile(svc, customer)).checkpoints()
        checkpoints = svc.service.store.journey.database["profile_checkpoints"]

        async def kept() -> set[str]:
            return {doc["_id"] async for doc in checkpoints.find({"customer_id": customer})}

        assert await eventually(kept, until=lambda ids: ids == named, timeout=10) == named
        assert _swept() > swept, "the sweep deleted the one the failed batch kept"
        assert (await _profile(svc, customer)).checkpoints() == named


def _swept() -> float:
    return REGISTRY.get_sample_value("hilo_profile_checkpoints_swept_total") or 0.0


async def _lost_at(svc: RunningProfileService, step: str, monkeypatch: pytest.MonkeyPatch) -> None:
    house = {"loyalty_id": "L-WALK-IN"}
    history = [
        interaction(f"f{n}", minutes=10 + n, kind=("order", "message")[n % 2], **house)
        for n in range(40)
    ]
    await svc.publish(history)
    await svc.wait_for_entries(len(history))
    store = svc.service.store
    failed = _fail_once(store, step, monkeypatch)

    await svc.publish([interaction("first-late", minutes=1, kind="refund", **house)])
    await svc.wait_for_entries(len(history) + 1)
    await svc.publish([interaction("recent-late", minutes=45, kind="refund", **house)])
    await svc.wait_for_entries(len(history) + 2)

    customer = await svc.customer_of("loyalty_id", "L-WALK-IN")
    stored = await _profile(svc, customer)
    assert failed == [step], f"MongoDB was never lost at {step}"
    assert stored.view is not None
    assert stored.view.event_count == len(history) + 2
    assert stored.view == derive_view(await store.entries(stored.aliases), WINDOW)
    assert stored.checkpoint is not None
    checkpoints = store.journey.database["profile_checkpoints"]
    assert await checkpoints.find_one({"_id": stored.checkpoint.id}) is not None


def _fail_once(store: ProfileStore, step: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make the store's `step` raise AutoReconnect once, after doing its work; the list says
    whether it did."""
    real = getattr(store, step)
    failed: list[str] = []

    async def losing(*args: object, **kwargs: object) -> object:
        result = await real(*args, **kwargs)
        if not failed:
            failed.append(step)
            raise AutoReconnect(f"connection lost during {step}")
        return result

    monkeypatch.setattr(store, step, losing)
    return failed


async def _grown_on_time(svc: RunningProfileService) -> str:
    """A walk-in account's events on time, minutes 10 to 59, ten minutes of them a batch; its
    customer id."""
    house = {"loyalty_id": "L-WALK-IN"}
    for first in range(10, 60, 10):
        await svc.publish(
            [
                interaction(f"g{n}", minutes=n, kind=("order", "message")[n % 2], **house)
                for n in range(first, first + 10)
            ]
        )
        await svc.wait_for_entries(first)
    return await svc.customer_of("loyalty_id", "L-WALK-IN")


async def _erased_with_checkpoints(svc: RunningProfileService, customer: str) -> None:
    """The person's erasure deletes the checkpoints of their journey."""
    checkpoints = svc.service.store.journey.database["profile_checkpoints"]
    erased = await svc.http.delete(f"/v1/customers/{customer}")
    assert erased.status_code in (200, 202)
    assert await checkpoints.count_documents({"customer_id": customer}) == 0


async def _profile(svc: RunningProfileService, customer: str) -> StoredProfile:
    [stored] = (await svc.service.store.load([customer])).values()
    return stored


def _derivations(read: str) -> float:
    return REGISTRY.get_sample_value("hilo_profile_views_derived_total", {"read": read}) or 0.0


def _entries_folded() -> float:
    return REGISTRY.get_sample_value("hilo_profile_derived_entries_total") or 0.0


def _fail_once_midway(store: ProfileStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make the store's next journey read in order fail after 10 entries, once; the list says
    whose read failed."""
    whole = store.in_order
    failed: list[str] = []

    async def failing(aliases: list[str]) -> AsyncGenerator[JourneyEntry, None]:
        read = 0
        async for entry in whole(aliases):
            read += 1
            if read > 10 and not failed:
                failed.append(aliases[0])
                raise AutoReconnect("connection lost midway through the journey")
            yield entry

    monkeypatch.setattr(store, "in_order", failing)
    return failed


def _folded_as_read() -> float:
    labels = {"read": "as_read"}
    return REGISTRY.get_sample_value("hilo_profile_views_derived_total", labels) or 0.0


async def test_the_ids_of_a_journey_come_without_the_entries(settings: HiloSettings) -> None:
    """What an erasure and an export ask for the ids: the server sends the ids alone."""
    commands = Commands()
    async with listened_store(settings, commands) as store:
        await store.insert_entries(entries(30, ("c1",)))
        commands.documents.clear()

        ids = await store.journey_ids(["c1"])

        assert sorted(ids) == [f"e{n:04}" for n in range(30)]
        assert [set(document) for document in commands.documents] == [{"_id"}] * 30


async def test_an_export_sends_the_journey_in_time_order_as_it_is_read(
    profile_service: RunningProfileService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The export's body is one JSON document whatever the chunks it went in (1 KB here)."""
    monkeypatch.setattr(privacy, "EXPORT_CHUNK_BYTES", 1024)
    monkeypatch.setattr(journey, "READ_BATCH", 7)
    svc = profile_service
    history = [
        interaction(f"x{n}", minutes=(n * 7) % 60, kind="message", email="walk-in@example.com")
        for n in range(60)
    ]
    await svc.publish(history)
    await svc.wait_for_entries(len(history))
    customer = await svc.customer_of("email", "walk-in@example.com")

    export = await svc.get(f"/v1/customers/{customer}/export")

    assert export["customer_id"] == customer
    assert export["identities"] == ["email:walk-in@example.com"]
    times = [(entry["occurred_at"], entry["id"]) for entry in export["journey"]]
    assert len(times) == len(history)
    assert times == sorted(times)
