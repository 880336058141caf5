"""The `erasures` and `erased_identifiers` collections: erasures that hold.

An erasure is recorded before anything is deleted, so a failure half-way (Kafka down for the
tombstones, MongoDB gone mid-delete) leaves a durable "not done" record that is completed later,
however often the request is repeated. The erased identifiers are kept as subjects (their
HMAC under the deployment's secret pepper, `hilo.sealing`; never in clear, and not guessable
from a phone number without the pepper) with the erasure time: an event about them that happened
before the erasure (in flight, redelivered, replayed) is not stored again; one that happens after
starts a new profile.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, ReturnDocument, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection

from hilo.mongo import MongoDocument, bulk_write, find_in


@dataclass(frozen=True)
class Erasure:
    customer_id: str
    aliases: list[str]
    requested_at: datetime
    done: bool
    subjects: list[str]
    """The subjects (`hilo.sealing`) of every identifier the person held or used: their keys are
    deleted, so their records on the topics cannot be opened any more."""
    generation: int = 0
    """How often it was extended (`ErasureCollection.extend`): it is done only once a completion
    of its latest generation finished."""
    withdrawn_requests: list[str] = field(default_factory=list)
    """The merge requests it withdrew, those that involved the person: noted before they are
    deleted, and published as withdrawn at every completion."""

    @property
    def hold(self) -> ObjectId:
        """The hold its completion puts on its profiles (`ProfileStore.hold_for_erasure`): the
        same at every retry, so retries do not pile holds up; dated by its request."""
        seconds = int(self.requested_at.timestamp()).to_bytes(4, "big")
        return ObjectId(seconds + hashlib.sha256(self.customer_id.encode()).digest()[:8])


class ErasureCollection:
    def __init__(
        self, erasures: AsyncCollection[MongoDocument], erased: AsyncCollection[MongoDocument]
    ) -> None:
        self.erasures = erasures
        self.erased = erased

    async def create_indexes(self) -> None:
        await self.erasures.create_index([("aliases", ASCENDING)])
        await self.erasures.create_index([("done", ASCENDING)])

    async def record(
        self,
        customer_id: str,
        aliases: list[str],
        subjects: Iterable[str],
        at: datetime,
    ) -> Erasure:
        """Record the erasure (once: a repeated request keeps the first) and its identifiers'
        subjects."""
        named = sorted(set(subjects))
        await self.erasures.update_one(
            {"_id": customer_id},
            {
                "$setOnInsert": {
                    "aliases": aliases,
                    "requested_at": at,
                    "done": False,
                    "subjects": named,
                }
            },
            upsert=True,
        )
        await self.suppress(named, at)
        found = await self.of(customer_id)
        if found is None:
            raise RuntimeError(f"the erasure of {customer_id} was recorded but cannot be read")
        return found

    async def suppress(self, subjects: Iterable[str], at: datetime) -> None:
        """Events about these identifiers (by subject) that happened up to `at` are not stored
        again."""
        await bulk_write(
            self.erased,
            [
                UpdateOne({"_id": subject}, {"$max": {"erased_at": at}}, upsert=True)
                for subject in subjects
            ],
        )

    async def of(self, customer_id: str) -> Erasure | None:
        """The erasure of this customer or of the profile it was merged into."""
        doc = await self.erasures.find_one({"_id": customer_id})
        if doc is None:
            doc = await self.erasures.find_one({"aliases": customer_id})
        return _erasure(doc) if doc is not None else None

    async def profiles_erased(self, customer_ids: Iterable[str]) -> set[str]:
        """Of these profile ids, those an erasure named (as the customer or an alias)."""
        wanted = set(customer_ids)
        found = find_in(self.erasures, "aliases", wanted, {"aliases": 1})
        return {alias async for doc in found for alias in doc["aliases"] if alias in wanted}

    async def naming(self, customer_ids: Iterable[str]) -> list[Erasure]:
        """The erasures that name any of these profile ids (as the customer or an alias)."""
        return [_erasure(doc) async for doc in find_in(self.erasures, "aliases", customer_ids)]

    async def extend(
        self, erasure: Erasure, aliases: Iterable[str], subjects: Iterable[str]
    ) -> None:
        """Add profiles and identifiers to an erasure, and leave it to be completed again (its
        keys deleted, its record and tombstones published); their events from before it are not
        stored again from now on."""
        named = sorted(set(subjects))
        await self.erasures.update_one(
            {"_id": erasure.customer_id},
            {
                "$addToSet": {
                    "aliases": {"$each": sorted(set(aliases))},
                    "subjects": {"$each": named},
                },
                "$set": {"done": False},
                "$inc": {"generation": 1},
            },
        )
        await self.suppress(named, erasure.requested_at)

    async def note_withdrawn(
        self, erasure: Erasure, request_ids: Iterable[str], *, again: bool = False
    ) -> Erasure:
        """Note merge requests the erasure withdraws, before they are deleted, and leave it to
        be completed again: noted, they are published by whichever completion finishes it, even
        if the one that noted them fails after deleting them.

        The erasure as the caller is to complete it: with every request noted so far (as
        stored), and the generation the note made when nobody changed the erasure since the
        caller read it (a completion that noted them publishes them itself); otherwise the
        generation read, so its completion ends pending and the next one publishes them. With
        nothing new to note, nothing changes, unless `again`: requests published as requested
        after their withdrawn was (by a batch racing the erasure) are withdrawn once more."""
        ids = sorted(set(request_ids))
        if not ids or (not again and set(ids) <= set(erasure.withdrawn_requests)):
            return erasure
        update: MongoDocument = {
            "$addToSet": {"withdrawn_requests": {"$each": ids}},
            "$set": {"done": False},
            "$inc": {"generation": 1},
        }
        stored = await self._noted(_as_read(erasure), update)
        if stored is not None:
            return replace(erasure, done=False, **stored)
        stored = await self._noted({"_id": erasure.customer_id}, update)
        if stored is None:
            return erasure
        return replace(erasure, withdrawn_requests=stored["withdrawn_requests"])

    async def _noted(self, where: MongoDocument, update: MongoDocument) -> dict[str, Any] | None:
        stored = await self.erasures.find_one_and_update(
            where,
            update,
            projection={"withdrawn_requests": 1, "generation": 1},
            return_document=ReturnDocument.AFTER,
        )
        if stored is None:
            return None
        return {
            "withdrawn_requests": list(stored.get("withdrawn_requests", [])),
            "generation": stored.get("generation", 0),
        }

    async def unfinished(self) -> list[Erasure]:
        return [_erasure(doc) async for doc in self.erasures.find({"done": False})]

    async def finished(self, erasure: Erasure) -> bool:
        """Done, unless it was extended since `erasure` was read (then it is completed again,
        and False)."""
        result = await self.erasures.update_one(_as_read(erasure), {"$set": {"done": True}})
        return result.matched_count == 1

    async def erased_at(self, subjects: Iterable[str]) -> dict[str, datetime]:
        """Subject -> when it was last erased, for the subjects that were."""
        found = find_in(self.erased, "_id", subjects, {"erased_at": 1})
        return {doc["_id"]: doc["erased_at"] async for doc in found}


def _as_read(erasure: Erasure) -> MongoDocument:
    """The erasure's document, as long as nobody extended or reopened it since it was read."""
    generation = erasure.generation or {"$in": [None, 0]}  # none stored before any extension
    return {"_id": erasure.customer_id, "generation": generation}


def _erasure(doc: MongoDocument) -> Erasure:
    return Erasure(
        doc["_id"],
        list(doc.get("aliases", [])),
        doc["requested_at"],
        doc["done"],
        list(doc.get("subjects", [])),
        doc.get("generation", 0),
        list(doc.get("withdrawn_requests", [])),
    )
