"""The `identities` collection: who owns each identifier, claimed atomically on its unique `_id`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from pymongo import ASCENDING, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection

from hilo.mongo import MongoDocument, bulk_write


class IdentityCollection:
    def __init__(self, collection: AsyncCollection[MongoDocument]) -> None:
        self.collection = collection

    async def create_indexes(self) -> None:
        await self.collection.create_index([("customer_id", ASCENDING)])

    async def owners(self, keys: Iterable[str]) -> dict[str, str]:
        """Identifier key -> the customer id it was claimed for (possibly merged away since)."""
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        return {
            doc["_id"]: doc["customer_id"]
            async for doc in self.collection.find({"_id": {"$in": wanted}}, {"customer_id": 1})
        }

    async def claim(self, claims: Mapping[str, str]) -> dict[str, str]:
        """Atomically claim unowned identifiers; return the owner each key ended with."""
        if not claims:
            return {}
        at = datetime.now(UTC)
        await bulk_write(
            self.collection,
            [
                UpdateOne(
                    {"_id": key},
                    {"$setOnInsert": {"customer_id": customer, "claimed_at": at}},
                    upsert=True,
                )
                for key, customer in claims.items()
            ],
            ordered=False,
        )
        return await self.owners(claims)

    async def release(self, key: str, customer_id: str) -> None:
        await self.collection.delete_one({"_id": key, "customer_id": customer_id})

    async def move(self, aliases: Iterable[str], survivor: str) -> None:
        """Point every identifier of the absorbed profiles at the survivor (idempotent)."""
        await self.collection.update_many(
            {"customer_id": {"$in": sorted(aliases)}}, {"$set": {"customer_id": survivor}}
        )

    async def of(self, aliases: list[str]) -> list[str]:
        cursor = self.collection.find({"customer_id": {"$in": aliases}}, {"_id": 1})
        return sorted([doc["_id"] async for doc in cursor])

    async def erase(self, aliases: list[str]) -> int:
        return (await self.collection.delete_many({"customer_id": {"$in": aliases}})).deleted_count

    async def count(self) -> int:
        return await self.collection.count_documents({})
