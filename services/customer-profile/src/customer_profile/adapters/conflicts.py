"""The `identity_conflicts` collection: merges refused by merge protection or caps, per event.

A merge asked for by an unverified source (`unverified_merge`), or by any source for profiles a
person split (`kept_apart`), is also a merge request: it carries the identifiers that asked and a
`status` (pending, confirmed, rejected) that a person decides once, recorded with who, when and
why.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from pymongo import ASCENDING, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection

from customer_profile.domain.identity import MERGE_REQUEST_REASONS, Conflict, conflict_ids
from hilo.mongo import MongoDocument, bulk_write, delete_in, find_in


class ConflictCollection:
    def __init__(self, collection: AsyncCollection[MongoDocument]) -> None:
        self.collection = collection

    async def create_indexes(self) -> None:
        await self.collection.create_index([("customer_ids", ASCENDING), ("at", ASCENDING)])
        await self.collection.create_index([("status", ASCENDING), ("at", ASCENDING)])
        await self.collection.create_index("event_id")
        await self.collection.create_index("keys")

    async def record(self, conflicts: list[tuple[Conflict, str]]) -> set[str]:
        """Store each conflict once per event: a redelivered event overwrites its own record.
        Returns the ids of the merge requests among them that a person has decided already
        (a redelivery of the event that raised them): those are not opened again.

        The decision on redelivery may name more profiles (one created by the interrupted
        attempt), so the record is replaced rather than added to.
        """
        if not conflicts:
            return set()
        at = datetime.now(UTC)
        operations = []
        requests = []
        for conflict_id, (conflict, event_id) in zip(
            conflict_ids(conflicts), conflicts, strict=True
        ):
            document = {
                "reason": conflict.reason,
                "kind": conflict.kind,
                "customer_ids": list(conflict.customer_ids),
                "event_id": event_id,
                "at": at,
            }
            update: MongoDocument = {"$set": document}
            if conflict.reason in MERGE_REQUEST_REASONS:
                # A redelivered event must not reopen a request a person already decided.
                document["keys"] = list(conflict.keys)
                update["$setOnInsert"] = {"status": PENDING}
                requests.append(conflict_id)
            operations.append(UpdateOne({"_id": conflict_id}, update, upsert=True))
        await bulk_write(self.collection, operations)
        if not requests:
            return set()
        decided = self.collection.find(
            {"_id": {"$in": requests}, "status": {"$ne": PENDING}}, {"_id": 1}
        )
        return {str(doc["_id"]) async for doc in decided}

    async def of(self, aliases: list[str], raised_by: Iterable[str] = ()) -> list[MongoDocument]:
        """The conflicts naming these customers, and those that the events `raised_by` raised
        (see `erase`), oldest first."""
        found = {
            doc["_id"]: doc
            async for doc in self.collection.find({"customer_ids": {"$in": aliases}})
        }
        async for doc in find_in(self.collection, "event_id", raised_by):
            found.setdefault(doc["_id"], doc)
        ordered = sorted(found.values(), key=lambda doc: (doc["at"], doc["_id"]))
        return [{"id": doc.pop("_id"), **doc} for doc in ordered]

    async def requests_of(
        self, aliases: list[str], raised_by: Iterable[str] = (), keys: Iterable[str] = ()
    ) -> list[str]:
        """The ids of the merge requests among `of`, and of those asking to attach one of
        `keys` (the erased person's identifiers) to someone else: what an erasure of them
        withdraws. Confirmed later, such a request would give another customer the erased
        person's number."""
        found = [str(doc["id"]) for doc in await self.of(aliases, raised_by) if _request(doc)]
        async for doc in find_in(self.collection, "keys", keys, {"reason": 1}):
            if _request(doc) and str(doc["_id"]) not in found:
                found.append(str(doc["_id"]))
        return found

    async def requests_raised_by(self, event_ids: Iterable[str]) -> dict[str, list[str]]:
        """Merge request id -> the customers it names, of those these events raised."""
        found = find_in(self.collection, "event_id", event_ids, {"reason": 1, "customer_ids": 1})
        return {str(doc["_id"]): list(doc["customer_ids"]) async for doc in found if _request(doc)}

    async def merge_requests(self, status: str, limit: int) -> list[MongoDocument]:
        """Merge requests in this status, oldest first."""
        cursor = self.collection.find({"status": status}).sort("at", ASCENDING).limit(limit)
        return [doc async for doc in cursor if _request(doc)]

    async def merge_request(self, request_id: str) -> MongoDocument | None:
        found = await self.collection.find_one({"_id": request_id})
        return found if found is not None and _request(found) else None

    async def note_confirming(self, request_id: str, by: str) -> bool:
        """Mark a pending request as having had a confirmation sent (it may land any time);
        False when it was decided meanwhile."""
        result = await self.collection.update_one(
            {"_id": request_id, "status": PENDING},
            {"$set": {"confirming": {"by": by, "at": datetime.now(UTC)}}},
        )
        return result.matched_count == 1

    async def decide(
        self,
        request_id: str,
        status: str,
        decision: MongoDocument,
        confirming: MongoDocument | None = None,
    ) -> bool:
        """Record a person's decision once; False when the request was decided already. A
        rejection (`status` rejected) also requires the confirmation state it was judged
        against (`confirming`, None for none): a confirmation sent since makes it False."""
        condition: MongoDocument = {"_id": request_id, "status": PENDING}
        if status != CONFIRMED:
            condition["confirming"] = confirming if confirming else {"$exists": False}
        result = await self.collection.update_one(
            condition, {"$set": {"status": status, "decision": decision}}
        )
        return result.modified_count == 1

    async def erase(self, aliases: list[str], event_ids: list[str]) -> int:
        """The conflicts that name these customers, and those their own events raised: an event
        that made a new profile rather than join others (unverified, kept apart) names only the
        others, but its identifiers, the erased person's, are among the conflict's keys."""
        return await self._erase_where(aliases, event_ids, {})

    async def erase_noted(self, aliases: list[str], event_ids: list[str], noted: list[str]) -> int:
        """What `erase` deletes, except merge requests an erasure has not `noted` as withdrawn:
        one recorded since it listed them stays, to be noted and deleted in turn."""
        others = await self._erase_where(aliases, event_ids, _OTHERS)
        return others + await delete_in(self.collection, "_id", noted)

    async def _erase_where(
        self, aliases: list[str], event_ids: list[str], where: MongoDocument
    ) -> int:
        """`erase`'s conflicts that also match `where`."""
        found = await self.collection.delete_many({"customer_ids": {"$in": aliases}, **where})
        return found.deleted_count + await delete_in(self.collection, "event_id", event_ids, where)


def _request(conflict: MongoDocument) -> bool:
    """Whether a stored conflict is a merge request (a person decides it)."""
    return conflict.get("reason") in MERGE_REQUEST_REASONS


_OTHERS: MongoDocument = {"reason": {"$nin": sorted(MERGE_REQUEST_REASONS)}}
"""The conflicts that are not merge requests (as a filter)."""


PENDING = "pending"
CONFIRMED, REJECTED = "confirmed", "rejected"
WITHDRAWN = "withdrawn"
"""Not a stored status: what `identity.merge_requests` says of a request an erasure deleted
(it involved the erased person), whatever was decided of it before."""
