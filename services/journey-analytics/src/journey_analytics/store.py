"""The touches, stored once per entry id under the customer id they were recorded with.

Idempotent by construction: a touch is upserted by its entry id (a redelivery rewrites the same
document; an entry a split publishes again under the restored id replaces the first). Merges are
kept as published, one alias per absorbed id (absorbed -> survivor), and never applied to what is
stored: a touch reads as the customer it belongs to now by following its recorded id's aliases to
the end, when it is read. So:

- merges read in any order give the same customers (`identity.merges` is keyed by survivor, over
  several partitions: merge(s <- a) may be read before merge(a <- b)), and `journey` needs no
  order with `identity.merges`;
- a split deletes the restored id's alias: the touches recorded under it and under the ids merged
  into it are its own again (customer-profile publishes again only the entries that move out of
  the kept profile, those recorded under it after the merge);
- an erasure (`erasures`) deletes the touches of every id that reads as an erased one, and keeps
  those ids so that their entries, read again, are not stored again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, fields, replace
from datetime import datetime

from pymongo import ASCENDING, AsyncMongoClient, UpdateOne

from hilo.mongo import MongoDocument, bulk_write, delete_in, find_in
from journey_analytics.measures import Touch

TOUCHES = "analytics_touches"
ALIASES = "analytics_aliases"
ERASED = "analytics_erased"
STORED: MongoDocument = {field.name: 1 for field in fields(Touch) if field.name != "id"}
"""The fields a touch is read with (a document written by another version may hold more)."""


def owner_of(aliases: Mapping[str, str], customer: str) -> str:
    """The id `customer` answers to now: its aliases followed to the end. A cycle (a merge and
    its reverse read before the split between them) answers to its smallest id, for all in it."""
    path: list[str] = []
    while customer in aliases and customer not in path:
        path.append(customer)
        customer = aliases[customer]
    return min(path[path.index(customer) :]) if customer in path else customer


class TouchStore:
    def __init__(self, client: AsyncMongoClient[MongoDocument], database: str) -> None:
        db = client[database]
        self._touches = db[TOUCHES]
        self._aliases = db[ALIASES]
        self._erased = db[ERASED]

    async def create_indexes(self) -> None:
        await self._touches.create_index([("occurred_at", ASCENDING)])
        await self._touches.create_index([("customer_id", ASCENDING)])
        await self._aliases.create_index([("survivor", ASCENDING)])

    async def save(self, touches: Sequence[Touch]) -> None:
        """Upsert by entry id, under the id it was recorded with; none of an erased person."""
        if not touches:
            return
        recorded = {t.customer_id for t in touches}
        aliases = await self._aliases_from(recorded)
        erased = await self._erased_among(recorded | {owner_of(aliases, c) for c in recorded})
        operations = [
            UpdateOne({"_id": touch.id}, {"$set": _document(touch)}, upsert=True)
            for touch in touches
            if touch.customer_id not in erased
            and owner_of(aliases, touch.customer_id) not in erased
        ]
        if operations:
            await bulk_write(self._touches, operations)

    async def merge(self, survivor: str, absorbed: Sequence[str]) -> None:
        """The absorbed ids answer to the survivor from now on, and so do the ids merged into
        them before (their aliases lead to them, and stay: a split gives them back)."""
        await bulk_write(
            self._aliases,
            [
                UpdateOne({"_id": a}, {"$set": {"survivor": survivor}}, upsert=True)
                for a in absorbed
                if a != survivor
            ],
        )

    async def split(self, restored: str) -> None:
        """`restored` is a customer again, with the touches recorded under it and under the ids
        merged into it; those that move back from the kept profile come again on `journey`."""
        await self._aliases.delete_one({"_id": restored})

    async def erase(self, customers: Sequence[str]) -> None:
        """An erased person leaves the measures: the touches and aliases of every id that reads
        as theirs are deleted, and the ids are kept so that their entries, read again (a
        redelivery, a new instance reading `journey` from the start), are not stored again."""
        gone = sorted(await self._leading_to(set(customers)))
        await bulk_write(
            self._erased,
            [UpdateOne({"_id": c}, {"$setOnInsert": {"erased": True}}, upsert=True) for c in gone],
        )
        await delete_in(self._touches, "customer_id", gone)
        await delete_in(self._aliases, "_id", gone)
        await delete_in(self._aliases, "survivor", gone)

    async def touches(
        self, start: datetime, end: datetime, customer: str | None = None
    ) -> list[Touch]:
        """The touches in [start, end), each under the customer it belongs to now: everyone's,
        or one customer's (under any id they had)."""
        if customer is not None:
            return await self._touches_of(start, end, customer)
        found = await self._read({"occurred_at": {"$gte": start, "$lt": end}})
        # Everyone's touches name most customers: the aliases are read whole, in one query.
        aliases = {d["_id"]: d["survivor"] async for d in self._aliases.find({})}
        now = {c: owner_of(aliases, c) for c in {t.customer_id for t in found}}
        return [replace(t, customer_id=now[t.customer_id]) for t in found]

    async def _touches_of(self, start: datetime, end: datetime, customer: str) -> list[Touch]:
        owner = owner_of(await self._aliases_from({customer}), customer)
        ids = sorted(await self._leading_to({owner}))
        found = await self._read(
            {"occurred_at": {"$gte": start, "$lt": end}, "customer_id": {"$in": ids}}
        )
        return [replace(t, customer_id=owner) for t in found]

    async def _read(self, query: MongoDocument) -> list[Touch]:
        return [_touch(d) async for d in self._touches.find(query, projection=STORED)]

    async def _erased_among(self, customers: set[str]) -> set[str]:
        found = self._erased.find({"_id": {"$in": sorted(customers)}}, projection={"_id": 1})
        return {d["_id"] async for d in found}

    async def _aliases_from(self, customers: set[str]) -> dict[str, str]:
        """The aliases on the way from `customers` to whom they answer to now (one query a hop)."""
        aliases: dict[str, str] = {}
        asked: set[str] = set()
        while ahead := {*customers, *aliases.values()} - asked:
            asked |= ahead
            async for d in find_in(self._aliases, "_id", sorted(ahead)):
                aliases[d["_id"]] = d["survivor"]
        return aliases

    async def _leading_to(self, customers: set[str]) -> set[str]:
        """`customers` and every id whose aliases lead to one of them (one query a hop)."""
        found, ahead = set(customers), set(customers)
        while ahead:
            merged = find_in(self._aliases, "survivor", sorted(ahead), {"_id": 1})
            ahead = {d["_id"] async for d in merged} - found
            found |= ahead
        return found


def _document(touch: Touch) -> MongoDocument:
    document = asdict(touch)
    document.pop("id")
    return document


def _touch(document: MongoDocument) -> Touch:
    values = {k: v for k, v in document.items() if k != "_id"}
    return Touch(id=document["_id"], **values)
