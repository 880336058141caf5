"""The `journey` collection: one entry per accepted event, stored once, pending until settled.

An entry is settled (every effect done) when `journey_settled` holds its event id. A marker is
inserted rather than a flag updated: an insert of a tiny document costs a fifth of rewriting the
entry on the local server (500 entries: 30 ms against 200 ms), and settling is once per event.
Entries stored by earlier versions carry `pending: false` instead, which counts as settled.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import AsyncGenerator, Iterable, Mapping
from datetime import datetime
from itertools import islice
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.collection import AsyncCollection

from customer_profile.domain.journey import JourneyEntry
from customer_profile.domain.profile import ORDER_KINDS
from customer_profile.domain.split import EntryOutline
from customer_profile.service.ports import StoredProfile
from hilo.mongo import MongoDocument, delete_in, find_in, insert_once, update_in

READ_BATCH = 1000
"""Entries per batch of a journey read in order: about 2 MB held, whatever the journey's size."""


class JourneyCollection:
    def __init__(
        self, collection: AsyncCollection[MongoDocument], settled: AsyncCollection[MongoDocument]
    ) -> None:
        self.collection = collection
        self.settled = settled

    async def create_indexes(self) -> None:
        await self.collection.create_index(
            [("customer_id", ASCENDING), ("occurred_at", ASCENDING), ("_id", ASCENDING)]
        )
        await self.collection.create_index([("price_mismatches.sku", ASCENDING)], sparse=True)
        await self.collection.create_index([("payload.order_id", ASCENDING)], sparse=True)
        # Only store orders carry a receipt: a handful of entries indexed, none on the hot path.
        await self.collection.create_index([("payload.receipt_id", ASCENDING)], sparse=True)

    async def insert_entries(self, entries: list[JourneyEntry]) -> set[str]:
        """Store entries once per event id, pending until `settle`; return those already stored."""
        if not entries:
            return set()
        documents = [_entry_document(entry) for entry in entries]
        return await insert_once(self.collection, documents)

    async def unfinished_entries(self, event_ids: Iterable[str]) -> list[JourneyEntry]:
        """Stored entries among `event_ids` whose view or publication may not have happened."""
        stored = [doc async for doc in find_in(self.collection, "_id", event_ids)]
        settled = {doc["_id"] async for doc in find_in(self.settled, "_id", event_ids)}
        return [_entry(doc) for doc in stored if _unsettled(doc, settled)]

    async def settle(self, event_ids: list[str]) -> None:
        """Every effect of these entries is done: a redelivery skips them from now on."""
        await insert_once(self.settled, [{"_id": event_id} for event_id in event_ids])

    async def entries_of(self, profiles: Iterable[StoredProfile]) -> dict[str, list[JourneyEntry]]:
        """Whole journeys of several customers (aliases included), in bounded `$in` queries."""
        return await self.entries_within(profiles, math.inf) or {}

    async def entries_within(
        self, profiles: Iterable[StoredProfile], at_most: float
    ) -> dict[str, list[JourneyEntry]] | None:
        """Whole journeys of several customers, or None as soon as they hold more than
        `at_most` entries together: the read stops there, its cursor closed, and the caller
        folds them one at a time (`in_order`)."""
        owner = {alias: p.customer_id for p in profiles for alias in p.aliases}
        journeys: dict[str, list[JourneyEntry]] = {p: [] for p in set(owner.values())}
        found = find_in(self.collection, "customer_id", owner, batch_size=READ_BATCH)
        held = 0
        try:
            async for doc in found:
                if (held := held + 1) > at_most:
                    return None
                entry = _entry(doc)
                journeys[owner[entry.customer_id]].append(entry)
        finally:
            await found.aclose()
        return journeys

    async def in_order(self, aliases: list[str]) -> AsyncGenerator[JourneyEntry, None]:
        """A journey's entries in event-time order, ties by id, read as they are used: a house
        account's 100,000 entries are never held at once (`READ_BATCH` at a time).

        One query on the index (customer, time, id): MongoDB merges the aliases' ranges of it
        in order (with very many aliases it sorts instead, on disk past its memory limit)."""
        cursor = self.collection.find({"customer_id": {"$in": aliases}}, batch_size=READ_BATCH)
        cursor = cursor.sort([("occurred_at", ASCENDING), ("_id", ASCENDING)])
        async with cursor:
            async for doc in cursor:
                yield _entry(doc)

    async def entries_after(
        self, aliases: list[str], after: tuple[datetime, str], at_most: int
    ) -> list[JourneyEntry] | None:
        """A journey's entries after `after` (a `JourneyEntry.sort_key`) in order, or None as
        soon as there are more than `at_most` (the read stops there).

        One query per alias, on the index (customer, time, id): equality on the customer and a
        range on the time, which SecantusDB serves from the index (with `$in` on the customer,
        or the id in the filter too, it scans the whole collection). Entries of `after`'s very
        instant up to its id are skipped here."""
        found: list[JourneyEntry] = []
        for alias in aliases:
            query = {"customer_id": alias, "occurred_at": {"$gte": after[0]}}
            async with self.collection.find(query, batch_size=READ_BATCH) as cursor:
                async for doc in cursor:
                    if (doc["occurred_at"], doc["_id"]) <= after:
                        continue
                    if len(found) == at_most:
                        return None
                    found.append(_entry(doc))
        return sorted(found, key=JourneyEntry.sort_key)

    async def customer_of_order(self, order_id: str) -> str | None:
        """The customer of the first order entry with this id, the one who placed it (as stored:
        merges not followed). A store pick-up receipt carries the online order's id too, and
        whoever picks it up may be someone else.

        An order has a handful of entries (placed, paid, shipped, ...), each indexed once when
        stored, so finding it costs nothing on the hot path. Filtered on the indexed field alone
        and the type checked here (see `test_store_indexes`)."""
        return await self._first_customer("payload.order_id", order_id) or (
            await self._first_customer("payload.receipt_id", order_id)
        )

    async def _first_customer(self, field: str, value: str) -> str | None:
        """The customer of the first order entry whose `field` is `value`: by a store receipt's
        number (`<store>:<receipt>`), found when no order has that id, the customer at the till
        (a pickup's receipt carries the online order's id as its order).

        The order's placement comes before a pickup of it (the collector may be someone else),
        then a verified source's entry before others, whatever their time: anyone with the
        public web key can post an `Order Completed` with someone's order number, dated
        earlier, and the desk's search by order number sent the clerk to that stranger."""
        found = self.collection.find(
            {field: value},
            {
                "customer_id": 1,
                "occurred_at": 1,
                "type": 1,
                "identity_trust": 1,
                "payload.status": 1,
            },
        )
        orders = [doc async for doc in found if doc["type"] == "order"]
        first = min(orders, key=_vouched_first, default=None)
        return str(first["customer_id"]) if first else None

    async def order_entries(
        self, order_ids: Iterable[str], besides: set[str]
    ) -> list[JourneyEntry]:
        """The order entries (states and refunds) of these order ids except the events
        `besides`, found through the index on `payload.order_id` (filtered on it alone; the type
        checked here: a store receipt may carry an online order's id)."""
        found = find_in(self.collection, "payload.order_id", order_ids)
        return [
            _entry(doc)
            async for doc in found
            if doc["type"] in ORDER_KINDS and doc["_id"] not in besides
        ]

    async def outlines_of(self, profiles: Iterable[StoredProfile]) -> dict[str, list[EntryOutline]]:
        """Several customers' whole journeys (aliases included) as a split replays them: five
        fields an entry (12 against 82 MiB for 20,000 entries of short messages)."""
        owner = {alias: p.customer_id for p in profiles for alias in p.aliases}
        outlines: dict[str, list[EntryOutline]] = {p: [] for p in set(owner.values())}
        fields = {"customer_id": 1, "recorded_at": 1, "occurred_at": 1, "identifiers": 1}
        async for doc in find_in(
            self.collection, "customer_id", owner, fields, batch_size=READ_BATCH
        ):
            outlines[owner[doc["customer_id"]]].append(
                EntryOutline(
                    id=doc["_id"],
                    customer_id=doc["customer_id"],
                    recorded_at=doc["recorded_at"],
                    occurred_at=doc["occurred_at"],
                    identifiers=doc["identifiers"],
                )
            )
        return outlines

    async def entries_by_id(self, event_ids: list[str]) -> list[JourneyEntry]:
        """These entries, in the order of `event_ids` (those stored)."""
        stored = find_in(self.collection, "_id", event_ids)
        found = {doc["_id"]: _entry(doc) async for doc in stored}
        return [found[event_id] for event_id in event_ids if event_id in found]

    async def identifiers_used(self, aliases: list[str], until: datetime | None) -> set[str]:
        """`kind:value` of each identifier these customers' entries carry (those that happened
        up to `until`), read two fields an entry: never the whole journey at once."""
        found = find_in(
            self.collection,
            "customer_id",
            aliases,
            {"identifiers": 1, "occurred_at": 1},
            batch_size=READ_BATCH,
        )
        return {
            f"{kind}:{value}"
            async for doc in found
            if until is None or doc["occurred_at"] <= until
            for kind, value in doc["identifiers"].items()
        }

    async def entries(self, aliases: list[str]) -> list[JourneyEntry]:
        return [entry async for entry in self.in_order(aliases)]

    async def page(
        self,
        aliases: list[str],
        *,
        after: tuple[datetime, str] | None,
        limit: int,
        filters: Mapping[str, Any],
        newest_first: bool = False,
    ) -> list[JourneyEntry]:
        """A page of the journey in event-time order (or newest first), after a keyset cursor;
        `filters` holds `$in` conditions (channel, type) and a time window (`occurred_at`).

        Each alias is read on its own, its query on the index's fields alone (customer, then
        time and id past the cursor), and the other conditions checked in code: SecantusDB
        scans the whole collection for anything else (a top-level `$or`, an `$in` of customers
        beside a time, a channel): 7 s a page at 200,000 entries, holding up the consumer."""
        window = filters.get("occurred_at", {})
        wanted = {
            field: set(condition["$in"])
            for field, condition in filters.items()
            if field != "occurred_at"
        }
        direction = DESCENDING if newest_first else ASCENDING
        pages = []
        for alias in aliases:
            entries: list[JourneyEntry] = []
            for query in _past_cursor(alias, window, after, newest_first):
                entries += await self._matching(query, wanted, direction, limit - len(entries))
                if len(entries) == limit:
                    break
            pages.append(entries)
        merged = heapq.merge(*pages, key=_position, reverse=newest_first)
        return list(islice(merged, limit))

    async def _matching(
        self,
        query: Mapping[str, Any],
        wanted: Mapping[str, set[Any]],
        direction: int,
        limit: int,
    ) -> list[JourneyEntry]:
        """The first `limit` entries of `query` in time order whose fields are all `wanted`."""
        found: list[JourneyEntry] = []
        cursor = self.collection.find(query).sort([("occurred_at", direction), ("_id", direction)])
        if not wanted:  # every entry the query finds is on the page: the server stops there
            cursor = cursor.limit(limit)
        async for document in cursor:
            if all(document.get(field) in values for field, values in wanted.items()):
                found.append(_entry(document))
                if len(found) == limit:
                    break
        await cursor.close()
        return found

    async def mismatches(self, filters: Mapping[str, Any], limit: int) -> list[JourneyEntry]:
        """Entries with a price mismatch, newest first, narrowed by `filters` (channel, time,
        `price_mismatches.sku`)."""
        query = {"price_mismatches.sku": {"$exists": True}, **filters}
        cursor = self.collection.find(query).sort([("occurred_at", DESCENDING)]).limit(limit)
        return [_entry(doc) async for doc in cursor]

    async def reassign(self, event_ids: Iterable[str], customer_id: str) -> None:
        """Store these entries under `customer_id` (a split gives them back)."""
        await update_in(self.collection, "_id", event_ids, {"$set": {"customer_id": customer_id}})

    async def ids_of(self, aliases: list[str]) -> list[str]:
        """The ids of these customers' entries (their events' ids). The projection names `_id`:
        an empty one returns whole documents (99 MiB read for 20,000 entries)."""
        found = find_in(self.collection, "customer_id", aliases, {"_id": 1}, batch_size=READ_BATCH)
        return [doc["_id"] async for doc in found]

    async def erase(self, aliases: list[str]) -> int:
        """Entries first, then their settled markers: an entry is never left without its marker,
        which would count it as unfinished (a marker left alone by a crash is an id, nothing
        personal, and harmless)."""
        ids = await self.ids_of(aliases)
        deleted = (
            await self.collection.delete_many({"customer_id": {"$in": aliases}})
        ).deleted_count
        await delete_in(self.settled, "_id", ids)
        return deleted

    async def unsettled(self) -> list[str]:
        """Ids of entries whose effects are not all done (operations and tests).

        The entries are read before the markers: an entry settled between the two reads then
        counts as settled, where the other order counted it as unfinished."""
        found = [doc async for doc in self.collection.find({}, {"_id": 1, "pending": 1})]
        settled = {doc["_id"] async for doc in self.settled.find({}, {"_id": 1})}
        return [doc["_id"] for doc in found if _unsettled(doc, settled)]

    async def count(self) -> int:
        return await self.collection.count_documents({})


_TRUST_ORDER = {"verified": 0, "claimed": 1, "unverified": 2}


def _vouched_first(doc: MongoDocument) -> tuple[bool, int, Any, Any]:
    """Placements before pickups; then verified entries (those stored before the field, too),
    claimed, unverified; the earliest first within each."""
    pickup = (doc.get("payload") or {}).get("status") == "picked_up"
    trust = _TRUST_ORDER.get(doc.get("identity_trust", "verified"), 2)
    return pickup, trust, doc["occurred_at"], doc["_id"]


def _unsettled(doc: MongoDocument, settled: set[str]) -> bool:
    """No settled marker, and not marked settled the earlier way (`pending: false`)."""
    return doc["_id"] not in settled and doc.get("pending") is not False


def _entry_document(entry: JourneyEntry) -> MongoDocument:
    document = entry.model_dump(mode="python")
    document["_id"] = document.pop("id")
    return document


def _entry(doc: MongoDocument) -> JourneyEntry:
    doc = dict(doc)
    doc["id"] = doc.pop("_id")
    doc.pop("pending", None)
    return JourneyEntry.model_validate(doc)


def _past_cursor(
    alias: str,
    window: Mapping[str, Any],
    after: tuple[datetime, str] | None,
    newest_first: bool,
) -> list[dict[str, Any]]:
    """The queries of one alias's entries past the cursor, in page order: those at the
    cursor's time with a later id, then those at a later time (within the time window)."""
    if after is None:
        return [{"customer_id": alias, **({"occurred_at": dict(window)} if window else {})}]
    at, event_id = after
    beyond = "$lt" if newest_first else "$gt"
    later = dict(window)
    later[beyond] = min(later[beyond], at) if beyond in later else at
    queries: list[dict[str, Any]] = [{"customer_id": alias, "occurred_at": later}]
    if _within(window, at):
        queries.insert(0, {"customer_id": alias, "occurred_at": at, "_id": {beyond: event_id}})
    return queries


def _within(window: Mapping[str, Any], at: datetime) -> bool:
    """Whether `at` is in the window as MongoDB compares them: to the millisecond, the bounds'
    microseconds cut off (a `since` with microseconds still takes the entries of its
    millisecond)."""
    since, until = (_millisecond(window.get(bound)) for bound in ("$gte", "$lt"))
    return (since is None or at >= since) and (until is None or at < until)


def _millisecond(at: datetime | None) -> datetime | None:
    return None if at is None else at.replace(microsecond=at.microsecond // 1000 * 1000)


def _position(entry: JourneyEntry) -> tuple[datetime, str]:
    return entry.occurred_at, entry.id
