"""The `journey` collection: one entry per accepted event, stored once, pending until settled."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection

from customer_profile.domain.journey import JourneyEntry
from customer_profile.service.ports import StoredProfile
from hilo.mongo import MongoDocument, find_in, insert_once, update_in


class JourneyCollection:
    def __init__(self, collection: AsyncCollection[MongoDocument]) -> None:
        self.collection = collection

    async def create_indexes(self) -> None:
        await self.collection.create_index(
            [("customer_id", ASCENDING), ("occurred_at", ASCENDING), ("_id", ASCENDING)]
        )

    async def insert_entries(self, entries: list[JourneyEntry]) -> set[str]:
        """Store entries once per event id, pending until `settle`; return those already stored."""
        if not entries:
            return set()
        documents = [{**_entry_document(entry), "pending": True} for entry in entries]
        return {str(documents[i]["_id"]) for i in await insert_once(self.collection, documents)}

    async def unfinished_entries(self, event_ids: Iterable[str]) -> list[JourneyEntry]:
        """Stored entries among `event_ids` whose view or publication may not have happened."""
        # `_id` alone, `pending` checked here: see ProfileCollection._merged_into.
        found = find_in(self.collection, "_id", event_ids)
        return [_entry(doc) async for doc in found if doc.get("pending")]

    async def settle(self, event_ids: list[str]) -> None:
        """Every effect of these entries is done: a redelivery skips them from now on."""
        await update_in(self.collection, "_id", event_ids, {"$set": {"pending": False}})

    async def entries_of(self, profiles: Iterable[StoredProfile]) -> dict[str, list[JourneyEntry]]:
        """Whole journeys of several customers (aliases included), in bounded `$in` queries."""
        owner = {alias: p.customer_id for p in profiles for alias in p.aliases}
        journeys: dict[str, list[JourneyEntry]] = {p: [] for p in set(owner.values())}
        async for doc in find_in(self.collection, "customer_id", owner):
            entry = _entry(doc)
            journeys[owner[entry.customer_id]].append(entry)
        return journeys

    async def entries(self, aliases: list[str]) -> list[JourneyEntry]:
        cursor = self.collection.find({"customer_id": {"$in": aliases}}).sort(
            [("occurred_at", ASCENDING), ("_id", ASCENDING)]
        )
        return [_entry(doc) async for doc in cursor]

    async def page(
        self,
        aliases: list[str],
        *,
        after: tuple[datetime, str] | None,
        limit: int,
        filters: Mapping[str, Any],
    ) -> list[JourneyEntry]:
        """A page of the journey in event-time order, after a keyset cursor."""
        query: dict[str, Any] = {"customer_id": {"$in": aliases}, **filters}
        if after is not None:
            at, event_id = after
            query["$or"] = [
                {"occurred_at": {"$gt": at}},
                {"occurred_at": at, "_id": {"$gt": event_id}},
            ]
        cursor = (
            self.collection.find(query)
            .sort([("occurred_at", ASCENDING), ("_id", ASCENDING)])
            .limit(limit)
        )
        return [_entry(doc) async for doc in cursor]

    async def erase(self, aliases: list[str]) -> int:
        return (await self.collection.delete_many({"customer_id": {"$in": aliases}})).deleted_count

    async def count(self) -> int:
        return await self.collection.count_documents({})


def _entry_document(entry: JourneyEntry) -> MongoDocument:
    document = entry.model_dump(mode="python")
    document["_id"] = document.pop("id")
    return document


def _entry(doc: MongoDocument) -> JourneyEntry:
    doc = dict(doc)
    doc["id"] = doc.pop("_id")
    doc.pop("pending", None)
    return JourneyEntry.model_validate(doc)
