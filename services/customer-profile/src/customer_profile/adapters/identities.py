"""The `identities` collection: who owns each identifier, claimed atomically on its unique `_id`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

from pymongo import ASCENDING, DeleteOne, UpdateMany
from pymongo.asynchronous.collection import AsyncCollection

from hilo.mongo import MongoDocument, bulk_write, find_in, insert_once, update_in


class IdentityCollection:
    def __init__(self, collection: AsyncCollection[MongoDocument]) -> None:
        self.collection = collection

    async def create_indexes(self) -> None:
        await self.collection.create_index([("customer_id", ASCENDING)])

    async def owners(self, keys: Iterable[str]) -> dict[str, str]:
        """Identifier key -> the customer id it was claimed for (possibly merged away since)."""
        found = find_in(self.collection, "_id", keys, {"customer_id": 1})
        return {doc["_id"]: doc["customer_id"] async for doc in found}

    async def owners_and_fresh(
        self, keys: Iterable[str], since: datetime
    ) -> tuple[dict[str, str], set[str]]:
        """`owners`, and the keys claimed at or after `since` (claims moved by a merge keep
        their time; one stored without a time is old)."""
        owners: dict[str, str] = {}
        fresh: set[str] = set()
        async for doc in find_in(self.collection, "_id", keys, {"customer_id": 1, "claimed_at": 1}):
            owners[doc["_id"]] = doc["customer_id"]
            if (at := doc.get("claimed_at")) is not None and at >= since:
                fresh.add(doc["_id"])
        return owners, fresh

    async def claim(self, claims: Mapping[str, str]) -> dict[str, str]:
        """Atomically claim unowned identifiers; return the owner each key ended with.

        An insert per key: the unique `_id` lets one writer win, and only the keys that were
        taken already are read back. An insert costs the database a fraction of an upsert.
        """
        if not claims:
            return {}
        at = datetime.now(UTC)
        taken = await insert_once(
            self.collection,
            [
                {"_id": key, "customer_id": customer, "claimed_at": at}
                for key, customer in claims.items()
            ],
        )
        won = {key: customer for key, customer in claims.items() if key not in taken}
        return won | await self.owners(taken)

    async def release(self, key: str, customer_id: str) -> None:
        await self.collection.delete_one({"_id": key, "customer_id": customer_id})

    async def release_all(self, claims: Iterable[tuple[str, str]]) -> None:
        """`release` of each (key, owner), one command."""
        await bulk_write(
            self.collection,
            [DeleteOne({"_id": key, "customer_id": owner}) for key, owner in claims],
        )

    async def move(self, moves: Sequence[tuple[Iterable[str], str]]) -> None:
        """Point every identifier of each set of absorbed profiles at its survivor (idempotent).

        One ordered bulk write: of a chain merged in one batch (A into B, then B into C), A's
        identifiers end at C.
        """
        await bulk_write(
            self.collection,
            [
                UpdateMany(
                    {"customer_id": {"$in": sorted(aliases)}}, {"$set": {"customer_id": survivor}}
                )
                for aliases, survivor in moves
            ],
            ordered=True,
        )

    async def of(self, aliases: list[str]) -> list[str]:
        cursor = self.collection.find({"customer_id": {"$in": aliases}}, {"_id": 1})
        return sorted([doc["_id"] async for doc in cursor])

    async def claims_of(self, aliases: list[str]) -> dict[str, datetime]:
        """Identifier key -> when it was first claimed, for those these profiles hold."""
        found = find_in(self.collection, "customer_id", aliases, {"claimed_at": 1})
        return {doc["_id"]: doc["claimed_at"] async for doc in found}

    async def held_by(self, customer_ids: Iterable[str]) -> dict[str, list[tuple[str, datetime]]]:
        """Customer id -> (identifier key, claimed at) of every claim pointing at it as stored,
        merges not followed (the `customer_id` index)."""
        held: dict[str, list[tuple[str, datetime]]] = {}
        found = find_in(
            self.collection, "customer_id", customer_ids, {"customer_id": 1, "claimed_at": 1}
        )
        async for doc in found:
            held.setdefault(doc["customer_id"], []).append((doc["_id"], doc["claimed_at"]))
        return held

    async def reassign(self, keys: Iterable[str], customer_id: str) -> None:
        """Give these identifiers to `customer_id` (a split hands them back)."""
        await update_in(self.collection, "_id", keys, {"$set": {"customer_id": customer_id}})

    async def erase(self, aliases: list[str]) -> int:
        return (await self.collection.delete_many({"customer_id": {"$in": aliases}})).deleted_count

    async def count(self) -> int:
        return await self.collection.count_documents({})
