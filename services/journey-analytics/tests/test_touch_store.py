"""The touch store against a real MongoDB-wire server: stored once per entry id, merges and
erasures applied, and an erased person's entries read again are not stored again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from hilo.mongo import MongoDocument, find_in
from hilo.settings import HiloSettings
from hilo.testkit.query_plans import winning_stages
from journey_analytics import store as store_module
from journey_analytics.measures import Touch
from journey_analytics.retention import expire_touches
from journey_analytics.store import ALIASES, TOUCHES, UNDONE, TouchStore

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
RANGE = (T0 - timedelta(days=1), T0 + timedelta(days=1))


def touch(n: int, customer: str) -> Touch:
    return Touch(f"e{n}", customer, T0 + timedelta(minutes=n), "web", "page_view")


async def test_redelivery_merge_and_erasure(
    settings: HiloSettings, mongo_client: AsyncMongoClient[MongoDocument]
) -> None:
    store = TouchStore(mongo_client, settings.mongodb_database)
    await store.create_indexes()

    await store.save([touch(1, "ana"), touch(2, "ana-2")])
    await store.save([touch(1, "ana"), touch(2, "ana-2")])  # redelivered
    assert len(await store.touches(*RANGE)) == 2

    await store.merge("ana", ["ana-2"], "m1")
    await store.save([touch(3, "ana-2")])  # published before the merge, read after it
    assert {t.customer_id for t in await store.touches(*RANGE)} == {"ana"}
    assert len(await store.touches(*RANGE, customer="ana-2")) == 3, "an old id reads as hers"

    await store.erase(["ana", "ana-2"])
    assert await store.touches(*RANGE) == []
    await store.save([touch(1, "ana"), touch(4, "ana-2")])  # read again after the erasure
    assert await store.touches(*RANGE) == []


async def owners(store: TouchStore) -> dict[str, str]:
    """Entry id -> the customer it reads as now."""
    return {t.id: t.customer_id for t in await store.touches(*RANGE)}


async def test_a_split_gives_back_the_restored_customers_own_touches(
    settings: HiloSettings, mongo_client: AsyncMongoClient[MongoDocument]
) -> None:
    """customer-profile republishes on a split only the entries that move out of the kept
    profile: those recorded under the restored id (and ids merged into it) must come back by
    themselves, and erasing either person then takes exactly their touches."""
    store = TouchStore(mongo_client, settings.mongodb_database)
    await store.save([touch(1, "ana"), touch(2, "bo"), touch(3, "bo-old")])
    await store.merge("bo", ["bo-old"], "m1")
    await store.merge("ana", ["bo"], "m2")
    assert set((await owners(store)).values()) == {"ana"}

    await store.split("bo", "m2")
    assert await owners(store) == {"e1": "ana", "e2": "bo", "e3": "bo"}
    assert {t.id for t in await store.touches(*RANGE, customer="bo-old")} == {"e2", "e3"}

    await store.erase(["bo", "bo-old"])
    assert await owners(store) == {"e1": "ana"}


ORDERS = {
    "moved-erased-back": ["moved", "erase", "back"],
    "moved-back-erased": ["moved", "back", "erase"],
    "back-erased-moved": ["back", "erase", "moved"],
    "erased-back-moved": ["erase", "back", "moved"],
    "erased-moved-back": ["erase", "moved", "back"],
}


@pytest.mark.parametrize("order", list(ORDERS.values()), ids=list(ORDERS))
async def test_an_entry_a_split_gave_back_leaves_with_its_erased_person(
    settings: HiloSettings, mongo_client: AsyncMongoClient[MongoDocument], order: list[str]
) -> None:
    """a's entry moved to s by a merge, back to a by a split (published again under a), then a
    erased: in whichever order the copies and the erasure are read (partitions after a reset),
    s keeps none of a's entries."""
    store = TouchStore(mongo_client, settings.mongodb_database)
    await store.save([touch(0, "s")])
    steps = {
        "moved": lambda: store.save([replace(touch(1, "s"), published_ms=10)]),
        "back": lambda: store.save([replace(touch(1, "a"), published_ms=20)]),
        "erase": lambda: store.erase(["a"]),
    }
    for step in order:
        await steps[step]()
    await store.save([replace(touch(1, "a"), published_ms=5)])  # the original, read again

    assert await owners(store) == {"e0": "s"}


async def test_erasing_the_survivor_takes_the_touches_of_every_id_merged_into_it(
    settings: HiloSettings, mongo_client: AsyncMongoClient[MongoDocument]
) -> None:
    store = TouchStore(mongo_client, settings.mongodb_database)
    await store.save([touch(1, "ana"), touch(2, "bo"), touch(3, "bo-old"), touch(4, "cy")])
    await store.merge("bo", ["bo-old"], "m1")
    await store.merge("ana", ["bo"], "m2")

    await store.erase(["ana"], exact=False)  # an earlier version's record: the survivor alone
    assert await owners(store) == {"e4": "cy"}
    await store.save([touch(5, "bo-old")])  # read again after the erasure
    assert await owners(store) == {"e4": "cy"}


async def test_an_erasure_read_between_a_merge_and_its_split_leaves_the_restored_customer(
    settings: HiloSettings, mongo_client: AsyncMongoClient[MongoDocument]
) -> None:
    """ana was merged into bo, split off again, and bo erased months later: customer-profile's
    record names bo's ids then, not ana. Read after the merge and before the split (a reset
    reads the small `erasures` topic first), the erasure followed the merge and erased ana for
    good: her touches, those given back by the split, and everything she did after."""
    store = TouchStore(mongo_client, settings.mongodb_database)
    await store.save([replace(touch(1, "ana"), published_ms=1), touch(2, "bo")])
    await store.merge("bo", ["ana"], "m1")
    await store.save([replace(touch(3, "bo"), published_ms=10)])  # ana's, while merged

    await store.erase(["bo"])
    await store.save([replace(touch(1, "ana"), published_ms=1)])  # read again meanwhile
    await store.split("ana", "m1")
    await store.save([replace(touch(3, "ana"), published_ms=20)])  # given back by the split
    await store.save([touch(4, "ana")])  # after

    assert await owners(store) == {"e1": "ana", "e3": "ana", "e4": "ana"}


async def test_an_erased_copy_read_after_a_later_one_leaves_the_later_one(
    settings: HiloSettings, mongo_client: AsyncMongoClient[MongoDocument]
) -> None:
    """bo is erased; the entry a split gave ana (published again at 20) is read before bo's
    copy of it (published at 10, before the split): bo's copy deleted ana's."""
    store = TouchStore(mongo_client, settings.mongodb_database)
    await store.erase(["bo"])
    await store.save([replace(touch(3, "ana"), published_ms=20)])
    await store.save([replace(touch(3, "bo"), published_ms=10)])

    assert await owners(store) == {"e3": "ana"}


async def test_an_erasure_takes_the_touches_stored_before_copies_had_a_time(
    settings: HiloSettings, mongo_client: AsyncMongoClient[MongoDocument]
) -> None:
    """Touches stored before 2026-12-05 hold no `published_ms`: erasing their customer failed
    on them, and the consumer was handed the batch back for ever. Every copy is taken."""
    store = TouchStore(mongo_client, settings.mongodb_database)
    await store.save([touch(1, "cy")])
    await mongo_client[settings.mongodb_database][TOUCHES].update_many(
        {}, {"$unset": {"published_ms": ""}}
    )

    await store.erase(["cy"])
    await store.save([replace(touch(1, "cy-copy"), published_ms=99)])  # any later copy

    assert await owners(store) == {}


async def test_an_erasure_recorded_while_a_batch_is_written_takes_its_touches(
    settings: HiloSettings,
    mongo_client: AsyncMongoClient[MongoDocument],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another instance records ana's erasure and deletes her touches after this one checked
    the batch and before it wrote: the touch stayed, in the measures for good."""
    store = TouchStore(mongo_client, settings.mongodb_database)
    other = TouchStore(mongo_client, settings.mongodb_database)
    checked = store._of_erased
    erased_meanwhile: list[str] = []

    async def erased_after_the_check(touches: Any) -> set[str]:
        found = await checked(touches)
        if not erased_meanwhile:
            erased_meanwhile.append("ana")
            await other.erase(["ana"])
        return found

    monkeypatch.setattr(store, "_of_erased", erased_after_the_check)
    await store.save([touch(1, "ana"), touch(2, "bo")])

    assert erased_meanwhile == ["ana"]
    assert await owners(store) == {"e2": "bo"}


async def test_chained_merges_read_out_of_order_follow_every_hop(
    settings: HiloSettings, mongo_client: AsyncMongoClient[MongoDocument]
) -> None:
    """`identity.merges` is keyed by survivor: merge(a <- b) may be read after merge(s <- a)."""
    store = TouchStore(mongo_client, settings.mongodb_database)
    await store.save([touch(1, "s"), touch(2, "a"), touch(3, "b")])
    await store.merge("s", ["a"], "m2")
    await store.merge("a", ["b"], "m1")
    await store.save([touch(4, "b")])  # arrives after both

    assert await owners(store) == {"e1": "s", "e2": "s", "e3": "s", "e4": "s"}
    assert len(await store.touches(*RANGE, customer="b")) == 4
    assert len(await store.touches(*RANGE, customer="s")) == 4


async def test_a_merge_and_its_reverse_read_before_the_split_between_them(
    settings: HiloSettings, mongo_client: AsyncMongoClient[MongoDocument]
) -> None:
    """customer-profile merged s into a, split s off, then merged a into s; read as merge(s <- a),
    merge(a <- s), split(s): the cycle in between reads as one customer, and the end as s."""
    store = TouchStore(mongo_client, settings.mongodb_database)
    await store.save([touch(1, "s"), touch(2, "a")])
    await store.merge("s", ["a"], "m2")
    await store.merge("a", ["s"], "m1")
    assert len(set((await owners(store)).values())) == 1, "a cycle reads as one customer"
    assert len(await store.touches(*RANGE, customer="a")) == 2

    await store.split("s", "m1")
    assert await owners(store) == {"e1": "s", "e2": "s"}


async def test_a_split_read_before_the_merge_it_undoes_keeps_them_apart(
    settings: HiloSettings, mongo_client: AsyncMongoClient[MongoDocument]
) -> None:
    """a merged into b (m1, keyed b), b into c (m2, keyed c), then a split off c (keyed c, undoing
    m1): after a reset the split and m2 can be read before m1, whose record sits on b's partition.
    Read then, m1 must not bring a's touches back to c."""
    store = TouchStore(mongo_client, settings.mongodb_database)
    await store.save([touch(1, "a"), touch(2, "b"), touch(3, "c")])
    await store.merge("c", ["b"], "m2")
    await store.split("a", "m1")
    await store.merge("b", ["a"], "m1")

    assert await owners(store) == {"e1": "a", "e2": "c", "e3": "c"}


async def test_a_split_read_late_does_not_undo_a_later_merge_of_the_same_id(
    settings: HiloSettings, mongo_client: AsyncMongoClient[MongoDocument]
) -> None:
    """a merged into b (m1), split off (undoing m1), then merged into d (m3): read as m1, m3,
    split, a belongs to d; read as m3, then m1 again (a redelivery), then the split, too."""
    for order in (["m1", "m3", "split"], ["m3", "m1", "split"], ["split", "m3", "m1"]):
        database = f"{settings.mongodb_database}_{'_'.join(order)}"
        store = TouchStore(mongo_client, database)
        await store.create_indexes()
        await store.save([touch(1, "a"), touch(2, "b"), touch(3, "d")])
        for change in order:
            if change == "m1":
                await store.merge("b", ["a"], "m1")
            elif change == "m3":
                await store.merge("d", ["a"], "m3")
            else:
                await store.split("a", "m1")

        assert await owners(store) == {"e1": "d", "e2": "b", "e3": "d"}, order
        await mongo_client.drop_database(database)


async def test_a_merge_and_the_split_undoing_it_read_at_once_by_two_instances(
    settings: HiloSettings,
    mongo_client: AsyncMongoClient[MongoDocument],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The merge and its split sit on two partitions, which two instances may read at the same
    moment: here the other instance's split runs whole between the merge's write and its read
    of the undoings, and a's touches must still end up a's."""
    store = TouchStore(mongo_client, settings.mongodb_database)
    other = TouchStore(mongo_client, settings.mongodb_database)
    await store.save([touch(1, "a"), touch(2, "b")])
    real_find_in = find_in

    def split_meanwhile(
        collection: Any, field: str, values: Any, projection: Any = None
    ) -> AsyncIterator[MongoDocument]:
        async def found() -> AsyncIterator[MongoDocument]:
            if collection.name == UNDONE:
                await other.split("a", "m1")
            async for document in real_find_in(collection, field, values, projection):
                yield document

        return found()

    monkeypatch.setattr(store_module, "find_in", split_meanwhile)
    await store.merge("b", ["a"], "m1")

    assert await owners(store) == {"e1": "a", "e2": "b"}


async def test_while_a_split_is_unread_the_later_merge_of_an_id_decides(
    settings: HiloSettings, mongo_client: AsyncMongoClient[MongoDocument]
) -> None:
    """a merged into b, split off, merged into d; the split not read yet: a reads as d's, the
    later merge by its event's time (event ids are random and tell nothing of time)."""
    store = TouchStore(mongo_client, settings.mongodb_database)
    await store.save([touch(1, "a")])
    await store.merge("d", ["a"], "m1-later", T0 + timedelta(hours=2))
    await store.merge("b", ["a"], "m9-earlier", T0)

    assert await owners(store) == {"e1": "d"}


async def test_aliases_stored_by_the_previous_version_still_lead_and_split(
    settings: HiloSettings, mongo_client: AsyncMongoClient[MongoDocument]
) -> None:
    """Before merges were told apart an alias was `{_id: absorbed, survivor}`: read at start as
    one of no merge in particular, which any split of its id undoes."""
    aliases = mongo_client[settings.mongodb_database][ALIASES]
    await aliases.insert_many([{"_id": "bo", "survivor": "ana"}, {"_id": "cy", "survivor": "ana"}])
    store = TouchStore(mongo_client, settings.mongodb_database)
    await store.create_indexes()
    await store.save([touch(1, "ana"), touch(2, "bo"), touch(3, "cy")])
    assert set((await owners(store)).values()) == {"ana"}

    await store.split("bo", "an-old-merge")
    assert await owners(store) == {"e1": "ana", "e2": "bo", "e3": "ana"}


async def test_of_two_copies_of_an_entry_the_one_published_later_stays_in_any_order(
    settings: HiloSettings, mongo_client: AsyncMongoClient[MongoDocument]
) -> None:
    """A split publishes e1 again under the restored id bo, on bo's partition: read from the
    start (a reset), the first copy may come second, and must not take it back to ana."""
    store = TouchStore(mongo_client, settings.mongodb_database)
    first = replace(touch(1, "ana"), published_ms=1_000)
    moved = replace(touch(1, "bo"), published_ms=2_000)

    await store.save([moved])
    await store.save([first])
    assert await owners(store) == {"e1": "bo"}
    await store.save([first, moved, first])  # one batch, both partitions
    assert await owners(store) == {"e1": "bo"}
    await store.save([moved])  # redelivered
    assert await owners(store) == {"e1": "bo"}


async def test_a_touch_stored_before_copies_were_told_apart_is_replaced(
    settings: HiloSettings, mongo_client: AsyncMongoClient[MongoDocument]
) -> None:
    store = TouchStore(mongo_client, settings.mongodb_database)
    await store.save([touch(1, "ana")])
    touches = mongo_client[settings.mongodb_database][TOUCHES]
    await touches.update_one({"_id": "e1"}, {"$unset": {"published_ms": ""}})

    await store.save([replace(touch(1, "bo"), published_ms=5)])
    assert await owners(store) == {"e1": "bo"}


async def test_touches_are_read_with_their_fields_only(
    settings: HiloSettings, mongo_client: AsyncMongoClient[MongoDocument]
) -> None:
    """A document another version wrote with a field this one does not know still reads."""
    store = TouchStore(mongo_client, settings.mongodb_database)
    await store.save([touch(1, "ana")])
    touches = mongo_client[settings.mongodb_database][TOUCHES]
    await touches.update_one({"_id": "e1"}, {"$set": {"revenue": 12.5}})

    assert await store.touches(*RANGE) == [touch(1, "ana")]


async def test_touches_past_retention_are_deleted_in_steps_and_merges_still_lead(
    settings: HiloSettings, mongo_client: AsyncMongoClient[MongoDocument]
) -> None:
    """Seven touches before the horizon, three after it, two steps of three at a time and a
    last of one: only the later ones stay, the merge still makes them Ana's, and the deletes
    ran on the `occurred_at` index."""
    store = TouchStore(mongo_client, settings.mongodb_database)
    await store.create_indexes()
    await store.save([touch(n, "ana-2" if n % 2 else "ana") for n in range(10)])
    await store.merge("ana", ["ana-2"], "m1")
    horizon = T0 + timedelta(minutes=7)

    assert await store.expire(horizon, at_most=3) == 3
    assert await expire_touches(store, horizon, at_most=3) == 4
    assert await expire_touches(store, horizon, at_most=3) == 0

    assert await owners(store) == {"e7": "ana", "e8": "ana", "e9": "ana"}
    plan = await (
        mongo_client[settings.mongodb_database][TOUCHES]
        .find({"occurred_at": {"$lt": horizon}}, {"_id": 1})
        .sort("occurred_at", 1)
        .explain()
    )
    assert "COLLSCAN" not in winning_stages(plan), plan
