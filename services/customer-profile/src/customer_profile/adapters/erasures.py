"""The `erasures` and `erased_identifiers` collections: erasures that hold.

An erasure is recorded before anything is deleted, so a failure half-way (Kafka down for the
tombstones, MongoDB gone mid-delete) leaves a durable "not done" record that is completed later,
however often the request is repeated. The erased identifiers are kept as SHA-256 digests with
the erasure time (never in clear): an event about them that happened before the erasure (in
flight, redelivered, replayed) is not stored again; one that happens after starts a new profile.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from pymongo import ASCENDING, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection

from hilo.mongo import MongoDocument, bulk_write, find_in


def identifier_digest(key: str) -> str:
    """What is kept of an erased identifier: enough to recognise it, not to read it."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Erasure:
    customer_id: str
    aliases: list[str]
    requested_at: datetime
    done: bool
    identifier_digests: list[str]
    subjects: list[str]
    """The subjects (`hilo.sealing`) of every identifier the person held or used: their keys are
    deleted, so their records on the topics cannot be opened any more."""


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
        keys: Iterable[str],
        subjects: Iterable[str],
        at: datetime,
    ) -> Erasure:
        """Record the erasure (once: a repeated request keeps the first) and its identifiers."""
        digests = sorted({identifier_digest(key) for key in keys})
        named = sorted(set(subjects))
        await self.erasures.update_one(
            {"_id": customer_id},
            {
                "$setOnInsert": {
                    "aliases": aliases,
                    "requested_at": at,
                    "done": False,
                    "identifier_digests": digests,
                    "subjects": named,
                }
            },
            upsert=True,
        )
        await self.suppress([*digests, *named], at)
        found = await self.of(customer_id)
        if found is None:
            raise RuntimeError(f"the erasure of {customer_id} was recorded but cannot be read")
        return found

    async def suppress(self, digests: Iterable[str], at: datetime) -> None:
        """Events about these identifiers (digests, or subjects) that happened up to `at` are not
        stored again."""
        await bulk_write(
            self.erased,
            [
                UpdateOne({"_id": digest}, {"$max": {"erased_at": at}}, upsert=True)
                for digest in digests
            ],
        )

    async def of(self, customer_id: str) -> Erasure | None:
        """The erasure of this customer or of the profile it was merged into."""
        doc = await self.erasures.find_one({"_id": customer_id})
        if doc is None:
            doc = await self.erasures.find_one({"aliases": customer_id})
        return _erasure(doc) if doc is not None else None

    async def unfinished(self) -> list[Erasure]:
        return [_erasure(doc) async for doc in self.erasures.find({"done": False})]

    async def finished(self, customer_id: str) -> None:
        await self.erasures.update_one({"_id": customer_id}, {"$set": {"done": True}})

    async def erased_at(self, keys: Iterable[str]) -> dict[str, datetime]:
        """Identifier key -> when it was last erased, for the keys that were."""
        by_digest = {identifier_digest(key): key for key in keys}
        return {
            by_digest[doc["_id"]]: doc["erased_at"]
            async for doc in find_in(self.erased, "_id", by_digest)
        }

    async def erased_subjects(self, subjects: Iterable[str]) -> set[str]:
        """Of these subjects, those an erasure named."""
        return {doc["_id"] async for doc in find_in(self.erased, "_id", subjects, {"_id": 1})}


def _erasure(doc: MongoDocument) -> Erasure:
    return Erasure(
        doc["_id"],
        list(doc.get("aliases", [])),
        doc["requested_at"],
        doc["done"],
        list(doc.get("identifier_digests", [])),
        list(doc.get("subjects", [])),
    )
