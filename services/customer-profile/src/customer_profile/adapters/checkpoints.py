"""The `profile_checkpoints` collection: long journeys' views as they stood a while ago.

A late event derives its customer's view again. For a walk-in account of 100,000 entries that
read and folded the whole journey (33 s); with a checkpoint kept an hour behind the journey's
end, a late event of the last hour folds only the entries after it (`service.derivation`). A
stored view names the checkpoint it may start from (`Checkpoint`); this collection only keeps
them. One is written before the view that names it, so a view is never saved naming one not
there; the save that stops naming one deletes it, and an erasure deletes every one folded from
any of the person's ids. One kept by a batch that failed before its save, or left unnamed by an
earlier release's save, is deleted by a sweep (`service.checkpoint_sweep`) once it is old
enough that no batch can still be on its way to saving a view that names it (`kept_at`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection

from customer_profile.domain.profile import ProfileView
from customer_profile.service.ports import Checkpoint
from hilo.mongo import MongoDocument, delete_in


class Checkpoints:
    def __init__(self, collection: AsyncCollection[MongoDocument]) -> None:
        self.collection = collection

    async def create_indexes(self) -> None:
        await self.collection.create_index([("aliases", ASCENDING)])
        await self.collection.create_index([("customer_id", ASCENDING)])
        await self.collection.create_index([("kept_at", ASCENDING)])

    async def read(self, checkpoint: Checkpoint, aliases: list[str]) -> ProfileView | None:
        """The view kept as `checkpoint`, if still kept and folded from these very aliases."""
        doc = await self.collection.find_one({"_id": checkpoint.id})
        if doc is None or doc["aliases"] != sorted(aliases):
            return None
        return ProfileView.model_validate(doc["view"])

    async def keep(
        self, customer_id: str, checkpoint: Checkpoint, aliases: list[str], view: ProfileView
    ) -> None:
        await self.collection.insert_one(
            {
                "_id": checkpoint.id,
                "customer_id": customer_id,
                "aliases": sorted(aliases),
                "at": checkpoint.at,
                "entry_id": checkpoint.entry_id,
                "view": view.model_dump(mode="python"),
                "kept_at": datetime.now(UTC),
            }
        )

    async def kept_before(self, cutoff: datetime, at_most: int) -> dict[str, set[str]]:
        """The ids of at most `at_most` checkpoints kept before `cutoff`, or by a release that
        did not date them, by the profile each was kept for."""
        kept: dict[str, set[str]] = defaultdict(set)
        cursor = self.collection.find(
            {"$or": [{"kept_at": {"$lt": cutoff}}, {"kept_at": {"$exists": False}}]},
            {"customer_id": 1},
            limit=at_most,
        )
        async for doc in cursor:
            kept[doc["customer_id"]].add(doc["_id"])
        return dict(kept)

    async def drop(self, ids: Iterable[str]) -> None:
        """Delete checkpoints no stored view names any more."""
        await delete_in(self.collection, "_id", ids)

    async def drop_kept_for(self, customers: list[str]) -> None:
        """Delete the checkpoints kept for these profiles' own views (merged away: a merge's
        survivor derives its view from the whole journey, and reads no checkpoint of theirs)."""
        await delete_in(self.collection, "customer_id", customers)

    async def erase(self, aliases: list[str]) -> int:
        """Every checkpoint folded from any of these ids' journeys: personal data, as their
        views are. By the ids it was folded from, not its customer alone: one a failed batch
        left under a profile a split has since taken this person out of holds them too."""
        return await delete_in(self.collection, "aliases", aliases)
