"""The `identity_conflicts` collection: merges refused by merge protection or caps, per event."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime

from pymongo import ASCENDING, ReplaceOne
from pymongo.asynchronous.collection import AsyncCollection

from customer_profile.domain.identity import Conflict
from hilo.mongo import MongoDocument, bulk_write


class ConflictCollection:
    def __init__(self, collection: AsyncCollection[MongoDocument]) -> None:
        self.collection = collection

    async def create_indexes(self) -> None:
        await self.collection.create_index([("customer_ids", ASCENDING), ("at", ASCENDING)])

    async def record(self, conflicts: list[tuple[Conflict, str]]) -> None:
        """Store each conflict once per event: a redelivered event overwrites its own record.

        The decision on redelivery may name more profiles (one created by the interrupted
        attempt), so the record is replaced rather than added to.
        """
        if not conflicts:
            return
        at = datetime.now(UTC)
        seen: Counter[tuple[str, str, str | None]] = Counter()
        operations = []
        for conflict, event_id in conflicts:
            identity = (event_id, conflict.reason, conflict.kind)
            seen[identity] += 1
            document = {
                "reason": conflict.reason,
                "kind": conflict.kind,
                "customer_ids": list(conflict.customer_ids),
                "event_id": event_id,
                "at": at,
            }
            conflict_id = _conflict_id(*identity, seen[identity])
            operations.append(ReplaceOne({"_id": conflict_id}, document, upsert=True))
        await bulk_write(self.collection, operations)

    async def of(self, aliases: list[str]) -> list[MongoDocument]:
        cursor = self.collection.find({"customer_ids": {"$in": aliases}}, {"_id": 0}).sort("at", 1)
        return [doc async for doc in cursor]

    async def erase(self, aliases: list[str]) -> int:
        found = await self.collection.delete_many({"customer_ids": {"$in": aliases}})
        return found.deleted_count


def _conflict_id(event_id: str, reason: str, kind: str | None, ordinal: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"{event_id}|{reason}|{kind or ''}|{ordinal}"))
