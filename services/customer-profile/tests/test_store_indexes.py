"""Every query on the hot path is served by an index: no collection scan as data grows.

The store filters hot-path reads on one indexed field and checks the rest in code: SecantusDB's
planner falls back to a scan when a second predicate joins an indexed one (MongoDB does not).
Asked of the real server with `explain`, so it holds for whichever MongoDB-wire server the tests
run on (the local SecantusDB, MongoDB in a container, or the one `MONGODB_URL` names).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.collection import AsyncCollection

from customer_profile.adapters.store import ProfileStore
from customer_profile.testing import stored_entry
from hilo.mongo import MongoDocument, create_mongo_client
from hilo.settings import HiloSettings
from hilo.testkit.query_plans import winning_stages

HOT_PATH_QUERIES: list[tuple[str, dict[str, Any]]] = [
    ("identities", {"_id": {"$in": ["email:a@example.com", "phone:+34612345678"]}}),
    ("profiles", {"_id": {"$in": ["c1", "c2"]}}),
    ("profiles", {"merged_into": {"$in": ["c1", "c2"]}}),
    ("profiles", {"merge_event": {"$in": ["e1", "e2"]}}),
    ("profile_views", {"customer_id": {"$in": ["c1", "c2"]}}),
    ("journey", {"_id": {"$in": ["e1", "e2"]}}),
    ("journey", {"customer_id": {"$in": ["c1", "c2"]}}),
    # Claims met without a profile (`ProfileStore.identity_state`): rare, but never a scan.
    ("identities", {"customer_id": {"$in": ["c1", "c2"]}}),
    ("erasures", {"aliases": {"$in": ["c1", "c2"]}}),
    # Not the consumer's path, but an agent's search by an order number must not scan either.
    ("journey", {"payload.order_id": "ORD-1001"}),
    ("journey", {"payload.receipt_id": "MAD-01:000123"}),
    # A frequent buyer's order the view let go (`derivation.recall_forgotten_orders`).
    ("journey", {"payload.order_id": {"$in": ["ORD-1", "ORD-2"]}}),
    # The agents' inbox and queue (`ProfileCollection.open_conversations`).
    ("profile_views", {"view.conversation.last_at": {"$gte": datetime(2026, 12, 1, tzinfo=UTC)}}),
    (
        "profile_views",
        {"view.conversation.awaiting_reply_since": {"$gte": datetime(2026, 12, 1, tzinfo=UTC)}},
    ),
]


QUERY_IDS = [f"{collection}-{'-'.join(query)}" for collection, query in HOT_PATH_QUERIES]


@pytest.mark.parametrize(
    ("collection", "query"),
    HOT_PATH_QUERIES,
    ids=[f"{c}-{'-'.join(q)}" for c, q in HOT_PATH_QUERIES],
)
async def test_hot_path_queries_use_an_index(
    mongo_client: AsyncMongoClient[MongoDocument],
    settings: HiloSettings,
    collection: str,
    query: dict[str, Any],
) -> None:
    await ProfileStore(mongo_client, settings.mongodb_database).create_indexes()
    target: AsyncCollection[MongoDocument] = mongo_client[settings.mongodb_database][collection]
    await target.insert_many(
        [{"_id": f"x{n}", "customer_id": f"c{n % 7}", "version": n} for n in range(50)]
    )

    plan = await target.find(query).explain()

    winning = winning_stages(plan)
    assert winning, f"no plan in {plan}"
    assert "COLLSCAN" not in winning, f"{collection} {query} scans: {winning}"


async def test_the_view_indexes_of_earlier_releases_are_dropped_at_start(
    mongo_client: AsyncMongoClient[MongoDocument], settings: HiloSettings
) -> None:
    """Deployments from before orders were found through the journey still have the index on the
    views' order ids, which cost every view save one entry per order the customer ever placed;
    and those from before the unique index on (customer, version) have one on the customer."""
    views = mongo_client[settings.mongodb_database]["profile_views"]
    await views.create_index([("view.orders.order_id", 1)], sparse=True)
    await views.create_index([("customer_id", 1)])

    await ProfileStore(mongo_client, settings.mongodb_database).create_indexes()

    names = {index["name"] async for index in await views.list_indexes()}
    assert not names & {"view.orders.order_id_1", "customer_id_1"}
    assert {"_id_", "customer_id_1_version_1"} <= names


async def test_instances_starting_together_both_start_when_one_drops_the_old_index_first(
    mongo_client: AsyncMongoClient[MongoDocument], settings: HiloSettings
) -> None:
    """The second instance listed the old index before the first dropped it: its drop finds none."""
    store = ProfileStore(mongo_client, settings.mongodb_database)
    await store.create_indexes()

    async def listed_before_the_drop() -> AsyncIterator[dict[str, Any]]:
        for name in ("_id_", "customer_id_1", "view.orders.order_id_1"):
            yield {"name": name}

    async def list_indexes() -> AsyncIterator[dict[str, Any]]:
        return listed_before_the_drop()

    store.views.list_indexes = list_indexes  # type: ignore[method-assign, assignment]
    await store.create_indexes()


class FindFilters(monitoring.CommandListener):
    """The filters of the `find` commands a client sends to one collection."""

    def __init__(self, collection: str) -> None:
        self.collection = collection
        self.filters: list[dict[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "find" and event.command["find"] == self.collection:
            self.filters.append(dict(event.command.get("filter", {})))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.mark.parametrize("newest_first", [False, True], ids=["oldest-first", "newest-first"])
async def test_every_page_of_a_journey_is_read_through_an_index(
    settings: HiloSettings, newest_first: bool
) -> None:
    """The agent desk's "older" pages pass a cursor: a top-level `$or` on it made SecantusDB
    scan the whole journey collection (7 s at 200,000 entries, holding up the consumer), and so
    did a channel or type filter, or an `$in` of aliases beside a time."""
    finds = FindFilters("journey")
    mongo = create_mongo_client(settings, listeners=[finds])
    try:
        store = ProfileStore(mongo, settings.mongodb_database)
        await store.create_indexes()
        at = datetime(2026, 12, 1, tzinfo=UTC)
        journey = mongo[settings.mongodb_database]["journey"]
        await journey.insert_many(
            [
                {"_id": f"e{n}", "customer_id": f"c{n % 7}", "occurred_at": at, "type": "x"}
                for n in range(50)
            ]
        )
        window = {"occurred_at": {"$gte": datetime(2026, 1, 1, tzinfo=UTC)}}
        # Filters none of these stand-ins match: every query runs to its end.
        for filters in (
            {"type": {"$in": ["order"]}},
            {**window, "channel": {"$in": ["web"]}},
        ):
            await store.page(
                ["c1", "c2"],
                after=(at, "e1"),
                limit=10,
                filters=filters,
                newest_first=newest_first,
            )

        assert finds.filters
        for query in finds.filters:
            winning = winning_stages(await journey.find(query).explain())
            assert "COLLSCAN" not in winning, f"{query} scans: {winning}"
    finally:
        await mongo.drop_database(settings.mongodb_database)
        await mongo.close()


@pytest.mark.parametrize("newest_first", [False, True], ids=["oldest-first", "newest-first"])
async def test_pages_of_merged_aliases_with_equal_times_give_every_entry_once_in_order(
    mongo_client: AsyncMongoClient[MongoDocument], settings: HiloSettings, newest_first: bool
) -> None:
    """Read an alias at a time and merged, with entries sharing a time across aliases and a
    filter checked in code, pages of two still give each entry once, in (time, id) order."""
    store = ProfileStore(mongo_client, settings.mongodb_database)
    await store.create_indexes()
    start = datetime(2026, 11, 1, 9, tzinfo=UTC)
    entries = [
        stored_entry(
            f"e{n:02}",
            ("c1", "c2", "c3")[n % 3],
            start + timedelta(minutes=n // 4),
            channel=("web", "sms")[n % 2],
        )
        for n in range(23)
    ]
    await store.insert_entries(entries)
    window = {"$gte": start + timedelta(minutes=1), "$lt": start + timedelta(minutes=5)}

    for filters in ({}, {"channel": {"$in": ["web"]}}, {"occurred_at": window}):
        expected = sorted(
            (
                e
                for e in entries
                if e.customer_id in ("c1", "c2")
                and ("channel" not in filters or e.channel == "web")
                and (
                    "occurred_at" not in filters or window["$gte"] <= e.occurred_at < window["$lt"]
                )
            ),
            key=lambda e: (e.occurred_at, e.id),
            reverse=newest_first,
        )
        seen: list[str] = []
        after = None
        while page := await store.page(
            ["c1", "c2"], after=after, limit=2, filters=filters, newest_first=newest_first
        ):
            seen += [e.id for e in page]
            after = (page[-1].occurred_at, page[-1].id)
        assert seen == [e.id for e in expected], filters


async def test_a_since_with_microseconds_still_pages_the_entries_of_its_millisecond(
    mongo_client: AsyncMongoClient[MongoDocument], settings: HiloSettings
) -> None:
    """MongoDB compares times to the millisecond: the entries tied at a page's last time were
    skipped when `since` carried microseconds (Python's `isoformat()` writes them)."""
    store = ProfileStore(mongo_client, settings.mongodb_database)
    await store.create_indexes()
    at = datetime(2026, 11, 1, 9, tzinfo=UTC)
    await store.insert_entries([stored_entry(f"e{n}", "c1", at) for n in range(3)])
    window = {"occurred_at": {"$gte": at + timedelta(microseconds=500)}}

    seen: list[str] = []
    after = None
    while page := await store.page(["c1"], after=after, limit=1, filters=window):
        seen += [e.id for e in page]
        after = (page[-1].occurred_at, page[-1].id)

    assert seen == ["e0", "e1", "e2"]
