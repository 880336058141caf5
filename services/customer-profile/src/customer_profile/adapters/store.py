"""MongoDB persistence of profiles, identities, journeys and identity conflicts.

Correctness under several consumer instances comes from the database, never from process-local
locks: an identifier is claimed by an atomic upsert on its unique `_id`, a merge marks the absorbed
profile with a conditional update that succeeds once, and a profile's derived view is versioned by
a unique `_id` (`<customer>:<version>`): whoever inserts version n+1 first wins, the others
re-derive from the journey and try n+2 (optimistic concurrency without a conditional update).

Collections: `profiles` (one small head document per customer: identifiers, aliases, current view
version), `profile_views` (the derived views), `identities`, `journey`, `identity_conflicts`.
Hot-path writes filter on `_id` only, the one filter FerretDB 1.x pushes down to SQLite.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, AsyncMongoClient, DeleteOne, InsertOne, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError

from customer_profile.domain.identity import Conflict, ProfileFacts, split_key
from customer_profile.domain.journey import JourneyEntry
from customer_profile.domain.profile import ProfileView
from hilo.mongo import MongoDocument, bulk_write

DUPLICATE_KEY = 11000
MAX_ALIAS_DEPTH = 20
ATTACH_ATTEMPTS = 5


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class StoredProfile:
    customer_id: str
    version: int
    created_at: datetime
    identifiers: list[str]
    merged_from: list[str]
    view: ProfileView | None

    def facts(self) -> ProfileFacts:
        return ProfileFacts(
            customer_id=self.customer_id,
            identifiers=frozenset(self.identifiers),
            created_at=self.created_at,
            merge_count=len(self.merged_from),
        )

    @property
    def aliases(self) -> list[str]:
        return [self.customer_id, *self.merged_from]


def _stored(head: MongoDocument, view: MongoDocument | None) -> StoredProfile:
    return StoredProfile(
        customer_id=head["_id"],
        version=head.get("version", 0),
        created_at=head["created_at"],
        identifiers=list(head.get("identifiers", [])),
        merged_from=list(head.get("merged_from", [])),
        view=ProfileView.model_validate(view["view"]) if view else None,
    )


def view_id(customer_id: str, version: int) -> str:
    return f"{customer_id}:{version}"


class ProfileStore:
    """All MongoDB access of the customer-profile service."""

    def __init__(self, client: AsyncMongoClient[MongoDocument], database: str) -> None:
        db = client[database]
        self.client = client
        self.profiles: AsyncCollection[MongoDocument] = db["profiles"]
        self.views: AsyncCollection[MongoDocument] = db["profile_views"]
        self.identities: AsyncCollection[MongoDocument] = db["identities"]
        self.journey: AsyncCollection[MongoDocument] = db["journey"]
        self.conflicts: AsyncCollection[MongoDocument] = db["identity_conflicts"]

    async def create_indexes(self) -> None:
        """Idempotent: run at every start."""
        await self.identities.create_index([("customer_id", ASCENDING)])
        await self.profiles.create_index([("merged_into", ASCENDING)])
        await self.journey.create_index(
            [("customer_id", ASCENDING), ("occurred_at", ASCENDING), ("_id", ASCENDING)]
        )
        await self.conflicts.create_index([("customer_ids", ASCENDING), ("at", ASCENDING)])
        await self.views.create_index([("customer_id", ASCENDING)])

    async def ping(self) -> None:
        await self.client.admin.command("ping")

    # --- identities -------------------------------------------------------------------------

    async def owners(self, keys: Iterable[str]) -> dict[str, str]:
        """Identifier key -> canonical (non-merged) customer id, for the keys that have one."""
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        raw = {
            doc["_id"]: doc["customer_id"]
            async for doc in self.identities.find({"_id": {"$in": wanted}}, {"customer_id": 1})
        }
        canonical = await self.canonical(raw.values())
        return {key: canonical[customer] for key, customer in raw.items()}

    async def canonical(self, customer_ids: Iterable[str]) -> dict[str, str]:
        """Follow `merged_into` chains to the surviving profile."""
        mapping = {c: c for c in customer_ids}
        frontier = set(mapping.values())
        for _ in range(MAX_ALIAS_DEPTH):
            if not frontier:
                break
            moved = {
                doc["_id"]: doc["merged_into"]
                async for doc in self.profiles.find(
                    {"_id": {"$in": list(frontier)}, "merged_into": {"$ne": None}},
                    {"merged_into": 1},
                )
            }
            for original, current in mapping.items():
                if current in moved:
                    mapping[original] = moved[current]
            frontier = set(moved.values())
        return mapping

    async def claim(self, claims: Mapping[str, str]) -> dict[str, str]:
        """Atomically claim unowned identifiers; return the owner each key ended with."""
        if not claims:
            return {}
        at = now()
        await bulk_write(
            self.identities,
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
        return {
            doc["_id"]: doc["customer_id"]
            async for doc in self.identities.find({"_id": {"$in": list(claims)}})
        }

    async def release(self, key: str, customer_id: str) -> None:
        await self.identities.delete_one({"_id": key, "customer_id": customer_id})

    # --- profiles ---------------------------------------------------------------------------

    async def ensure_profiles(self, customer_ids: Iterable[str]) -> None:
        """Create empty profiles for new customers (no-op for existing ones)."""
        ids = list(dict.fromkeys(customer_ids))
        if not ids:
            return
        at = now()
        await bulk_write(
            self.profiles,
            [
                UpdateOne(
                    {"_id": customer},
                    {
                        # Absent means null/empty: FerretDB 1.x drops null and [] in $setOnInsert.
                        "$setOnInsert": {"created_at": at, "version": 0}
                    },
                    upsert=True,
                )
                for customer in ids
            ],
            ordered=False,
        )

    async def discard_empty(self, customer_ids: Iterable[str]) -> None:
        """Remove profiles created for claims that were all lost (nothing points to them)."""
        ids = list(customer_ids)
        if ids:
            await self.profiles.delete_many(
                {
                    "_id": {"$in": ids},
                    "$or": [{"identifiers": {"$exists": False}}, {"identifiers": {"$size": 0}}],
                }
            )

    async def attach(self, attachments: Mapping[str, str], caps: Mapping[str, int]) -> set[str]:
        """Add claimed identifiers to their profiles, never beyond the per-kind cap.

        Added with `_id`-only updates (the only filter FerretDB 1.x pushes down to SQLite), then
        checked: where a concurrent writer pushed a kind over its cap, this batch's additions of
        that kind are taken back. Returns the identifiers held afterwards.
        """
        if not attachments:
            return set()
        by_customer: dict[str, list[str]] = {}
        for key, customer in attachments.items():
            by_customer.setdefault(customer, []).append(key)
        current: dict[str, list[str]] = {}
        pending = dict(by_customer)
        # FerretDB 1.x applies concurrent updates of one document read-modify-write, so an
        # addition can be overwritten by another instance's: add again until it shows.
        for _ in range(ATTACH_ATTEMPTS):
            await bulk_write(
                self.profiles,
                [
                    UpdateOne({"_id": customer}, {"$addToSet": {"identifiers": {"$each": keys}}})
                    for customer, keys in pending.items()
                ],
            )
            async for doc in self.profiles.find(
                {"_id": {"$in": list(pending)}}, {"identifiers": 1}
            ):
                current[doc["_id"]] = doc.get("identifiers", [])
            pending = {
                customer: missing
                for customer, keys in pending.items()
                if customer in current
                and (missing := [k for k in keys if k not in current[customer]])
            }
            if not pending:
                break
        held: set[str] = set()
        undo: dict[str, list[str]] = {}
        for customer, identifiers in current.items():
            ours = set(by_customer[customer])
            for kind in {split_key(key)[0].value for key in ours}:
                of_kind = [key for key in identifiers if key.startswith(kind + ":")]
                if len(of_kind) > caps[kind]:
                    undo.setdefault(customer, []).extend(k for k in of_kind if k in ours)
            held |= (ours & set(identifiers)) - set(undo.get(customer, []))
        if undo:
            await bulk_write(
                self.profiles,
                [
                    UpdateOne({"_id": customer}, {"$pull": {"identifiers": {"$in": keys}}})
                    for customer, keys in undo.items()
                ],
            )
        return held

    async def heads(self, customer_ids: Iterable[str]) -> dict[str, MongoDocument]:
        ids = list(dict.fromkeys(customer_ids))
        if not ids:
            return {}
        return {doc["_id"]: doc async for doc in self.profiles.find({"_id": {"$in": ids}})}

    async def load(self, customer_ids: Iterable[str]) -> dict[str, StoredProfile]:
        """Profiles with their current views (each view read by `_id`) and all their aliases."""
        heads = await self.heads(customer_ids)
        views = await asyncio.gather(*(self._view_of(head) for head in heads.values()))
        aliases = await self.aliases(heads)
        return {
            head["_id"]: replace(_stored(head, view), merged_from=aliases[head["_id"]])
            for head, view in zip(heads.values(), views, strict=True)
        }

    async def aliases(self, customer_ids: Iterable[str]) -> dict[str, list[str]]:
        """Every profile merged into each customer, directly or through a chain.

        Computed from `merged_into` rather than trusted from `merged_from`: two merges racing on
        different instances can absorb a profile into one that was itself absorbed a moment
        before, and its journey must still be found.
        """
        result: dict[str, list[str]] = {c: [] for c in customer_ids}
        root = {c: c for c in result}
        frontier = set(result)
        for _ in range(MAX_ALIAS_DEPTH):
            if not frontier:
                break
            found = self.profiles.find({"merged_into": {"$in": list(frontier)}}, {"merged_into": 1})
            frontier = set()
            async for doc in found:
                if doc["_id"] not in root:
                    root[doc["_id"]] = root[doc["merged_into"]]
                    result[root[doc["_id"]]].append(doc["_id"])
                    frontier.add(doc["_id"])
        return {customer: sorted(found) for customer, found in result.items()}

    async def facts(self, customer_ids: Iterable[str]) -> dict[str, ProfileFacts]:
        """What identity resolution needs: heads only, no views."""
        return {
            c: _stored(head, None).facts() for c, head in (await self.heads(customer_ids)).items()
        }

    async def _view_of(self, head: MongoDocument) -> MongoDocument | None:
        version = head.get("version", 0)
        if version == 0:
            return None
        return await self.views.find_one({"_id": view_id(head["_id"], version)})

    async def get(self, customer_id: str) -> StoredProfile | None:
        """The profile answering for `customer_id`, following merges to the survivor."""
        canonical = (await self.canonical([customer_id]))[customer_id]
        return (await self.load([canonical])).get(canonical)

    async def merge(self, survivor: str, absorbed: list[str]) -> list[str]:
        """Make `absorbed` aliases of `survivor`; return those taken (others merged elsewhere)."""
        at = now()
        taken: list[str] = []
        for customer in absorbed:
            result = await self.profiles.update_one(
                {"_id": customer, "merged_into": None},
                {"$set": {"merged_into": survivor, "merged_at": at}},
            )
            if result.modified_count == 1:
                taken.append(customer)
        if not taken:
            return taken
        absorbed_docs = await self.load(taken)
        aliases = {a for p in absorbed_docs.values() for a in p.aliases}
        identifiers = {key for p in absorbed_docs.values() for key in p.identifiers}
        await self.identities.update_many(
            {"customer_id": {"$in": sorted(aliases)}}, {"$set": {"customer_id": survivor}}
        )
        # Journey entries keep the id they were stored under: reads go through every alias.
        await self.profiles.update_one(
            {"_id": survivor},
            {
                "$addToSet": {
                    "merged_from": {"$each": sorted(aliases)},
                    "identifiers": {"$each": sorted(identifiers)},
                }
            },
        )
        return taken

    async def save_views(self, views: Mapping[str, tuple[int, ProfileView]]) -> set[str]:
        """Store each view as the next version of its profile; return the customers that lost.

        Inserting `<customer>:<version + 1>` succeeds for exactly one writer. A loser first moves
        the head to the version that beat it (the winner may have stopped before doing so), then
        re-derives and tries the version after.
        """
        if not views:
            return set()
        at = now()
        documents = [
            {
                "_id": view_id(customer, version + 1),
                "customer_id": customer,
                "version": version + 1,
                "view": view.model_dump(mode="python"),
                "written_at": at,
            }
            for customer, (version, view) in views.items()
        ]
        lost = {str(documents[i]["customer_id"]) for i in await _insert_once(self.views, documents)}
        heads = [
            UpdateOne(
                {"_id": customer},
                {
                    "$max": {"version": version + 1},
                    "$set": {"updated_at": at},
                },
            )
            for customer, (version, _) in views.items()
        ]
        await bulk_write(self.profiles, heads)
        superseded = [
            DeleteOne({"_id": view_id(customer, version)})
            for customer, (version, _) in views.items()
            if customer not in lost and version
        ]
        await bulk_write(self.views, superseded)
        # A profile merged away meanwhile: its survivor must be re-derived to include these entries.
        merged = self.profiles.find(
            {"_id": {"$in": list(views)}, "merged_into": {"$ne": None}}, {"_id": 1}
        )
        return lost | {str(doc["_id"]) async for doc in merged}

    # --- journey ----------------------------------------------------------------------------

    async def insert_entries(self, entries: list[JourneyEntry]) -> set[str]:
        """Store entries once per event id; return the ids that were already stored."""
        if not entries:
            return set()
        documents = [_entry_document(entry) for entry in entries]
        return {str(documents[i]["_id"]) for i in await _insert_once(self.journey, documents)}

    async def entries_of(self, profiles: Iterable[StoredProfile]) -> dict[str, list[JourneyEntry]]:
        """Whole journeys of several customers (aliases included) in one query."""
        owner = {alias: p.customer_id for p in profiles for alias in p.aliases}
        journeys: dict[str, list[JourneyEntry]] = {p: [] for p in set(owner.values())}
        if owner:
            async for doc in self.journey.find({"customer_id": {"$in": list(owner)}}):
                entry = _entry(doc)
                journeys[owner[entry.customer_id]].append(entry)
        return journeys

    async def entries(self, aliases: list[str]) -> list[JourneyEntry]:
        cursor = self.journey.find({"customer_id": {"$in": aliases}}).sort(
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
            self.journey.find(query)
            .sort([("occurred_at", ASCENDING), ("_id", ASCENDING)])
            .limit(limit)
        )
        return [_entry(doc) async for doc in cursor]

    # --- conflicts, export, erasure ---------------------------------------------------------

    async def record_conflicts(self, conflicts: list[tuple[Conflict, str]]) -> None:
        if not conflicts:
            return
        at = now()
        await self.conflicts.insert_many(
            [
                {
                    "_id": uuid.uuid4().hex,
                    "reason": conflict.reason,
                    "kind": conflict.kind,
                    "customer_ids": list(conflict.customer_ids),
                    "event_id": event_id,
                    "at": at,
                }
                for conflict, event_id in conflicts
            ]
        )

    async def conflicts_of(self, aliases: list[str]) -> list[MongoDocument]:
        cursor = self.conflicts.find({"customer_ids": {"$in": aliases}}, {"_id": 0}).sort("at", 1)
        return [doc async for doc in cursor]

    async def identities_of(self, aliases: list[str]) -> list[str]:
        cursor = self.identities.find({"customer_id": {"$in": aliases}}, {"_id": 1})
        return sorted([doc["_id"] async for doc in cursor])

    async def erase(self, profile: StoredProfile) -> dict[str, int]:
        """Delete everything held about a customer and its aliases."""
        aliases = profile.aliases
        await self.views.delete_many({"customer_id": {"$in": aliases}})
        journey = await self.journey.delete_many({"customer_id": {"$in": aliases}})
        identities = await self.identities.delete_many({"customer_id": {"$in": aliases}})
        conflicts = await self.conflicts.delete_many({"customer_ids": {"$in": aliases}})
        profiles = await self.profiles.delete_many({"_id": {"$in": aliases}})
        return {
            "journey_entries": journey.deleted_count,
            "identities": identities.deleted_count,
            "conflicts": conflicts.deleted_count,
            "profiles": profiles.deleted_count,
        }

    async def counts(self) -> dict[str, int]:
        return {
            "profiles": await self.profiles.count_documents({"merged_into": None}),
            "aliases": await self.profiles.count_documents({"merged_into": {"$ne": None}}),
            "identities": await self.identities.count_documents({}),
            "journey_entries": await self.journey.count_documents({}),
        }


async def _insert_once(
    collection: AsyncCollection[MongoDocument], documents: list[MongoDocument]
) -> set[int]:
    """Insert documents whose `_id` may exist already; return the indexes that did."""
    try:
        await bulk_write(collection, [InsertOne(doc) for doc in documents])
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(error.get("code") != DUPLICATE_KEY for error in errors):
            raise
        return {error["index"] for error in errors}
    return set()


def _entry_document(entry: JourneyEntry) -> MongoDocument:
    document = entry.model_dump(mode="python")
    document["_id"] = document.pop("id")
    return document


def _entry(doc: MongoDocument) -> JourneyEntry:
    doc = dict(doc)
    doc["id"] = doc.pop("_id")
    return JourneyEntry.model_validate(doc)
