"""The touches, stored once per entry id, under the customer they belong to now.

Idempotent by construction: a touch is upserted by its entry id (a redelivery rewrites the same
document), and merges are kept as aliases (absorbed id -> survivor), applied to what is stored
and to every touch that arrives later under an absorbed id (`journey` and `identity.merges` are
two topics: their records are not ordered with each other). A split removes the restored id's
alias; the profile service publishes its entries again under it, and the last record wins. An
erasure (`erasures`) deletes the person's touches: they leave the measures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime

from pymongo import ASCENDING, AsyncMongoClient, UpdateOne

from hilo.mongo import MongoDocument, bulk_write
from journey_analytics.measures import Touch

TOUCHES = "analytics_touches"
ALIASES = "analytics_aliases"
ERASED = "analytics_erased"


class TouchStore:
    def __init__(self, client: AsyncMongoClient[MongoDocument], database: str) -> None:
        db = client[database]
        self._touches = db[TOUCHES]
        self._aliases = db[ALIASES]
        self._erased = db[ERASED]

    async def create_indexes(self) -> None:
        await self._touches.create_index([("occurred_at", ASCENDING)])
        await self._touches.create_index([("customer_id", ASCENDING)])

    async def save(self, touches: Sequence[Touch]) -> None:
        """Upsert by entry id, each under its customer's current id."""
        if not touches:
            return
        survivors = await self._survivors({t.customer_id for t in touches})
        erased = await self._erased_among(
            {survivors.get(t.customer_id, t.customer_id) for t in touches}
        )
        touches = [t for t in touches if survivors.get(t.customer_id, t.customer_id) not in erased]
        operations = [
            UpdateOne(
                {"_id": touch.id},
                {
                    "$set": {
                        **_document(touch),
                        "customer_id": survivors.get(touch.customer_id, touch.customer_id),
                    }
                },
                upsert=True,
            )
            for touch in touches
        ]
        if operations:
            await bulk_write(self._touches, operations)

    async def merge(self, survivor: str, absorbed: Sequence[str]) -> None:
        """The absorbed ids are the survivor's from now on, and so is their history (and that
        of ids merged into them before)."""
        previously = [
            d["_id"] async for d in self._aliases.find({"survivor": {"$in": list(absorbed)}})
        ]
        moved = [*absorbed, *previously]
        await bulk_write(
            self._aliases,
            [UpdateOne({"_id": a}, {"$set": {"survivor": survivor}}, upsert=True) for a in moved],
        )
        await self._touches.update_many(
            {"customer_id": {"$in": moved}}, {"$set": {"customer_id": survivor}}
        )

    async def split(self, restored: str) -> None:
        """`restored` is a customer again: its entries come back under it on `journey`."""
        await self._aliases.delete_one({"_id": restored})

    async def erase(self, customers: Sequence[str]) -> None:
        """An erased person leaves the measures: their touches and aliases are deleted, and
        their ids are kept so that their entries, read again (a redelivery, a new instance
        reading `journey` from the start), are not stored again."""
        await bulk_write(
            self._erased,
            [
                UpdateOne({"_id": c}, {"$setOnInsert": {"erased": True}}, upsert=True)
                for c in customers
            ],
        )
        await self._touches.delete_many({"customer_id": {"$in": list(customers)}})
        await self._aliases.delete_many(
            {"$or": [{"_id": {"$in": list(customers)}}, {"survivor": {"$in": list(customers)}}]}
        )

    async def touches(
        self, start: datetime, end: datetime, customer: str | None = None
    ) -> list[Touch]:
        """The touches in [start, end): everyone's, or one customer's (under any id they had)."""
        query: MongoDocument = {"occurred_at": {"$gte": start, "$lt": end}}
        if customer is not None:
            query["customer_id"] = (await self._survivors({customer})).get(customer, customer)
        cursor = self._touches.find(query)
        return [_touch(document) async for document in cursor]

    async def _erased_among(self, customers: set[str]) -> set[str]:
        found = self._erased.find({"_id": {"$in": sorted(customers)}}, projection={"_id": 1})
        return {d["_id"] async for d in found}

    async def _survivors(self, customers: set[str]) -> dict[str, str]:
        found = self._aliases.find({"_id": {"$in": sorted(customers)}})
        return {d["_id"]: d["survivor"] async for d in found}


def _document(touch: Touch) -> MongoDocument:
    document = asdict(touch)
    document.pop("id")
    return document


def _touch(document: MongoDocument) -> Touch:
    fields = {k: v for k, v in document.items() if k != "_id"}
    return Touch(id=document["_id"], **fields)
