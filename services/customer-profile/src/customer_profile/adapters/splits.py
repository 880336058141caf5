"""The `splits` collection: each un-merge, recorded before it is done and kept as its audit trail.

A split is recorded first (who asked, when, why, what), then completed; completion is safe to
repeat, so a failure half-way (Kafka down for the corrections, MongoDB gone mid-way) leaves a
record that is completed later. It stays pending until `settle_after`: another instance may have
resolved an event against the merged profile just before the split moved the identifiers, and
the sweep after that moment puts such an entry where it belongs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection

from customer_profile.domain.identity import split_key
from hilo.mongo import MongoDocument


@dataclass(frozen=True)
class Split:
    id: str
    kept: str
    """The profile the split was asked of (the survivor of the merge, or the one holding the
    identifiers)."""
    restored: str
    """The profile given back its entries: the absorbed one, or a new one for named identifiers."""
    merge_event: str | None
    """Undoing a merge: the event that made it. None for a split by identifiers."""
    merged_at: datetime | None
    """When the undone merge was made: entries recorded before it keep the profile they were
    stored under."""
    keys: list[str]
    """Split by identifiers: the identifier keys named. Empty when undoing a merge."""
    by: str
    reason: str
    requested_at: datetime
    settle_after: datetime
    done: bool
    outcome: dict[str, Any] | None
    moved: list[str] = field(default_factory=list)
    """Ids of the entries handed to the restored profile so far."""

    def public(self) -> dict[str, Any]:
        """The split as the API and the export show it: `pending` until applied once, `done`
        after the last sweep."""
        status = "done" if self.done else "applied" if self.outcome is not None else "pending"
        return {
            "split_id": self.id,
            "status": status,
            "kept": self.kept,
            "restored": self.restored,
            "undoes_event_id": self.merge_event,
            "identifiers": [
                {"kind": split_key(key)[0].value, "value": split_key(key)[1]} for key in self.keys
            ],
            "by": self.by,
            "reason": self.reason,
            "requested_at": self.requested_at,
            "outcome": self.outcome,
        }


class SplitCollection:
    def __init__(self, collection: AsyncCollection[MongoDocument]) -> None:
        self.collection = collection

    async def create_indexes(self) -> None:
        await self.collection.create_index([("done", ASCENDING)])
        await self.collection.create_index([("kept", ASCENDING)])
        await self.collection.create_index([("restored", ASCENDING)])

    async def record(self, split: Split) -> Split:
        """Record the split once (a repeated request keeps the first); the record as stored."""
        await self.collection.update_one(
            {"_id": split.id},
            {
                "$setOnInsert": {
                    "kept": split.kept,
                    "restored": split.restored,
                    "merge_event": split.merge_event,
                    "merged_at": split.merged_at,
                    "keys": split.keys,
                    "by": split.by,
                    "reason": split.reason,
                    "requested_at": split.requested_at,
                    "settle_after": split.settle_after,
                    "done": False,
                }
            },
            upsert=True,
        )
        found = await self.of(split.id)
        if found is None:
            raise RuntimeError(f"the split {split.id} was recorded but cannot be read")
        return found

    async def of(self, split_id: str) -> Split | None:
        doc = await self.collection.find_one({"_id": split_id})
        return _split(doc) if doc is not None else None

    async def involving(self, customer_ids: list[str]) -> list[Split]:
        """Splits that kept or restored any of these profiles, oldest first."""
        cursor = self.collection.find(
            {"$or": [{"kept": {"$in": customer_ids}}, {"restored": {"$in": customer_ids}}]}
        ).sort([("requested_at", ASCENDING)])
        return [_split(doc) async for doc in cursor]

    async def erase(self, aliases: list[str]) -> int:
        """An erased person's splits go too: their records name the person's identifiers."""
        found = await self.collection.delete_many(
            {"$or": [{"kept": {"$in": aliases}}, {"restored": {"$in": aliases}}]}
        )
        return found.deleted_count

    async def drop(self, split_id: str) -> None:
        await self.collection.delete_one({"_id": split_id})

    async def unfinished(self) -> list[Split]:
        return [_split(doc) async for doc in self.collection.find({"done": False})]

    async def moves(self, split_id: str, entry_ids: list[str]) -> None:
        if entry_ids:
            await self.collection.update_one(
                {"_id": split_id}, {"$addToSet": {"moved": {"$each": entry_ids}}}
            )

    async def completed(self, split_id: str, outcome: dict[str, Any], *, done: bool) -> None:
        """What the latest completion did; `done` once the settle time has passed."""
        await self.collection.update_one(
            {"_id": split_id}, {"$set": {"outcome": outcome, "done": done}}
        )


def _split(doc: MongoDocument) -> Split:
    return Split(
        id=doc["_id"],
        kept=doc["kept"],
        restored=doc["restored"],
        merge_event=doc.get("merge_event"),
        merged_at=doc.get("merged_at"),
        keys=list(doc.get("keys", [])),
        by=doc["by"],
        reason=doc["reason"],
        requested_at=doc["requested_at"],
        settle_after=doc["settle_after"],
        done=doc["done"],
        outcome=doc.get("outcome"),
        moved=list(doc.get("moved", [])),
    )
