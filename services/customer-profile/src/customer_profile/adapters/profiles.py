"""The `profiles` and `profile_views` collections: one small head per customer, versioned views.

A head holds identifiers and, once absorbed, `merged_into`; the profile's version is its highest
stored view's. A merge is decided by
a conditional update that succeeds once and is recorded on the absorbed head as pending (with the
merging event) until its identities are moved and its record published. A view is stored under
`<customer>:<version>:<token>`, and a unique index on (customer, version) lets whoever inserts
version n+1 first win; the others re-derive and try n+2. The token is the view's own, so the save
that supersedes it deletes exactly that view by `_id`.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, DeleteOne, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import OperationFailure

from customer_profile.domain.identity import ProfileFacts, split_key
from customer_profile.domain.profile import ProfileView
from customer_profile.service.ports import (
    MAX_ALIAS_DEPTH,
    RESERVATION_EXPIRY,
    AliasChainTooLong,
    Checkpoint,
    HeadState,
    MergeRecord,
    StoredProfile,
    ViewSave,
)
from hilo.mongo import (
    INDEX_NOT_FOUND,
    MongoDocument,
    bulk_write,
    chunked,
    find_in,
    insert_once,
    update_in,
)

NOT_HELD: MongoDocument = {"erasing": {"$in": [None, []]}}
"""A head no erasure holds: no hold ever made, or every hold taken back (`hold_for_erasure`)."""
OBSOLETE_VIEW_INDEXES = frozenset({"view.orders.order_id_1", "customer_id_1"})
ATTACH_ATTEMPTS = 5
LAST_AT = "view.conversation.last_at"
AWAITING = "view.conversation.awaiting_reply_since"
ATTACH_FIELDS: MongoDocument = {"identifiers": 1, "merging_in": 1, "merged_into": 1}


def now() -> datetime:
    return datetime.now(UTC)


def held_by_head(head: MongoDocument) -> list[ObjectId]:
    """The holds on a head; a hold of the previous release (a time, `_convert_single_holds`)
    written by one of its instances still running, as one hold of that time."""
    value = head.get("erasing")
    if isinstance(value, datetime):
        return [ObjectId.from_datetime(value)]
    return list(value or [])


def view_id(customer_id: str, version: int, token: str | None) -> str:
    """A view's `_id`. Views stored before this release are `<customer>:<version>` (with the
    token in a field, or none): `StoredProfile.view_key` names those."""
    return f"{customer_id}:{version}:{token}"


class ProfileCollection:
    def __init__(
        self,
        profiles: AsyncCollection[MongoDocument],
        views: AsyncCollection[MongoDocument],
    ) -> None:
        self.profiles = profiles
        self.views = views

    async def create_indexes(self) -> None:
        await self.profiles.create_index([("merged_into", ASCENDING)])
        await self.profiles.create_index([("merge_event", ASCENDING)], sparse=True)
        await self.profiles.create_index([("erasing", ASCENDING)], sparse=True)
        await self.views.create_index(
            [("customer_id", ASCENDING), ("version", ASCENDING)], unique=True
        )
        await self.views.create_index([(LAST_AT, DESCENDING)], sparse=True)
        await self.views.create_index([(AWAITING, ASCENDING)], sparse=True)
        await self._drop_obsolete_indexes()
        await self._convert_single_holds()

    async def _drop_obsolete_indexes(self) -> None:
        """Indexes earlier releases made and this one does not use.

        - `view.orders.order_id`: every save of a view wrote (and the next save deleted) one entry
          per order the customer ever placed; the journey's index on `payload.order_id` answers
          now, written once per order event.
        - `customer_id`: the unique index on (customer, version) serves the same reads.
        """
        names = [index["name"] async for index in await self.views.list_indexes()]
        for name in set(names) & OBSOLETE_VIEW_INDEXES:
            try:
                await self.views.drop_index(name)
            except OperationFailure as exc:  # another instance starting dropped it first
                if exc.code != INDEX_NOT_FOUND:
                    raise

    async def _convert_single_holds(self) -> None:
        """A hold the previous release made is one time on the head, which `$addToSet` cannot
        add to: each becomes a list holding an ObjectId of that time, so the hold stands and
        expires as it would have. A head changed meanwhile is left to the reading side
        (`held_by_head`)."""
        single = self.profiles.find({"erasing": {"$type": "date"}}, {"erasing": 1})
        async for head in single:
            await self.profiles.update_one(
                {"_id": head["_id"], "erasing": head["erasing"]},
                {"$set": {"erasing": [ObjectId.from_datetime(head["erasing"])]}},
            )

    async def canonical(self, customer_ids: Iterable[str]) -> dict[str, str]:
        """Follow `merged_into` chains to the surviving profile."""
        mapping = {c: c for c in customer_ids}
        frontier = set(mapping.values())
        for _ in range(MAX_ALIAS_DEPTH + 1):
            if not frontier:
                return mapping
            moved = await self._merged_into(frontier)
            for original, current in mapping.items():
                if current in moved:
                    mapping[original] = moved[current]
            frontier = set(moved.values())
        raise AliasChainTooLong(f"over {MAX_ALIAS_DEPTH} merges")

    async def _merged_into(self, customer_ids: Iterable[str]) -> dict[str, str]:
        """Of these profiles, those merged away, with their survivor.

        Filtered on `_id` alone and the rest checked here: a filter that is only `_id` is served
        by the primary index on every MongoDB-wire server (SecantusDB scans when another
        predicate is added), and it returns at most the ids asked for.
        """
        found = find_in(self.profiles, "_id", customer_ids, {"merged_into": 1})
        return {doc["_id"]: doc["merged_into"] async for doc in found if doc.get("merged_into")}

    async def ensure_profiles(self, customer_ids: Iterable[str]) -> None:
        """Create empty profiles (no-op for existing ones): a split's restored profile."""
        await self.create({customer: [] for customer in customer_ids})

    async def create(self, identifiers: Mapping[str, Sequence[str]]) -> set[str]:
        """Create each profile holding its identifiers; return those that existed already.

        One insert per profile, where an empty head, an update adding the identifiers and a read
        checking the caps cost several times as much on the local database (docs/benchmarks.md,
        ninth session). Its id is new to all but a retry of the same event, or a head
        `heads_for_claims` made from its claims meanwhile.
        """
        if not identifiers:
            return set()
        at = now()
        return await insert_once(
            self.profiles,
            [_new_head(customer, at, keys) for customer, keys in identifiers.items()],
        )

    async def heads_for_claims(self, claims: Mapping[str, Sequence[tuple[str, datetime]]]) -> None:
        """Create the missing heads of profiles that hold claims (identifier, claimed at): made
        as their first event would have, as old as their first claim."""
        await insert_once(
            self.profiles,
            [
                _new_head(customer, min(at for _, at in held), sorted(key for key, _ in held))
                for customer, held in claims.items()
                if held
            ],
        )

    async def attach(self, attachments: Mapping[str, str], caps: Mapping[str, int]) -> set[str]:
        """Add claimed identifiers to their profiles, never beyond the per-kind cap.

        Added, then checked: where a concurrent writer pushed a kind over its cap, or a merge
        under way has reserved a value of it (`reserve`), this batch's additions of that kind
        are taken back. Nothing is added to a profile merged away meanwhile: its merge has
        copied (or is about to copy) the identifiers it had, and would miss these. Returns the
        identifiers held afterwards.
        """
        if not attachments:
            return set()
        by_customer: dict[str, list[str]] = {}
        for key, customer in attachments.items():
            by_customer.setdefault(customer, []).append(key)
        current: dict[str, list[str]] = {}
        reserved: dict[str, list[str]] = {}
        merged_away: set[str] = set()
        pending = dict(by_customer)
        # FerretDB 1.x applies concurrent updates of one document read-modify-write, so an
        # addition can be overwritten by another instance's: add again until it shows.
        for _ in range(ATTACH_ATTEMPTS):
            await bulk_write(
                self.profiles,
                [
                    UpdateOne(
                        {"_id": customer, "merged_into": None},
                        {"$addToSet": {"identifiers": {"$each": keys}}},
                    )
                    for customer, keys in pending.items()
                ],
            )
            async for doc in find_in(self.profiles, "_id", pending, ATTACH_FIELDS):
                current[doc["_id"]] = doc.get("identifiers", [])
                reserved[doc["_id"]] = _reserved(doc)
                if doc.get("merged_into"):
                    merged_away.add(doc["_id"])
            pending = {
                customer: missing
                for customer, keys in pending.items()
                if customer in current
                and customer not in merged_away
                and (missing := [k for k in keys if k not in current[customer]])
            }
            if not pending:
                break
        held: set[str] = set()
        undo: dict[str, list[str]] = {}
        for customer, identifiers in current.items():
            ours = set(by_customer[customer])
            counted = {*identifiers, *reserved.get(customer, [])}
            for kind in {split_key(key)[0].value for key in ours}:
                of_kind = [key for key in counted if key.startswith(kind + ":")]
                if len(of_kind) > caps[kind]:
                    undo.setdefault(customer, []).extend(k for k in of_kind if k in ours)
            held |= (ours & set(identifiers)) - set(undo.get(customer, []))
        await self.drop_identifiers(undo)
        return held

    async def drop_identifiers(self, identifiers: Mapping[str, Sequence[str]]) -> None:
        """Take these identifiers off each customer's head, one command."""
        await bulk_write(
            self.profiles,
            [
                UpdateOne({"_id": customer}, {"$pull": {"identifiers": {"$in": list(keys)}}})
                for customer, keys in identifiers.items()
            ],
        )

    async def heads(
        self, customer_ids: Iterable[str], projection: MongoDocument | None = None
    ) -> dict[str, MongoDocument]:
        found = find_in(self.profiles, "_id", customer_ids, projection)
        return {doc["_id"]: doc async for doc in found}

    async def load(
        self, customer_ids: Iterable[str], *, views: bool = True
    ) -> dict[str, StoredProfile]:
        """Profiles with their current views (unless not wanted) and all their aliases.

        A bounded number of queries for any count: heads, views, one per level of aliases.
        """
        return await self._complete(await self.heads(customer_ids), views=views)

    async def load_canonical(
        self, customer_ids: Iterable[str]
    ) -> tuple[dict[str, str], dict[str, StoredProfile]]:
        mapping, heads = await self._canonical_heads(customer_ids)
        survivors = {c: heads[c] for c in set(mapping.values()) if c in heads}
        return mapping, await self._complete(survivors)

    async def _complete(
        self, heads: dict[str, MongoDocument], *, views: bool = True
    ) -> dict[str, StoredProfile]:
        views_of = await self._views_of(heads) if views else {}
        aliases = await self.aliases(heads)
        return {
            customer: replace(_stored(head, views_of.get(customer)), merged_from=aliases[customer])
            for customer, head in heads.items()
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
        for _ in range(MAX_ALIAS_DEPTH + 1):
            if not frontier:
                return {customer: sorted(found) for customer, found in result.items()}
            found = find_in(self.profiles, "merged_into", frontier, {"merged_into": 1})
            frontier = set()
            async for doc in found:
                if doc["_id"] not in root:
                    root[doc["_id"]] = root[doc["merged_into"]]
                    result[root[doc["_id"]]].append(doc["_id"])
                    frontier.add(doc["_id"])
        raise AliasChainTooLong(f"over {MAX_ALIAS_DEPTH} merges")

    async def head_states(self, customer_ids: Iterable[str]) -> dict[str, HeadState]:
        heads = await self.heads(customer_ids, {"merged_into": 1})
        versions: dict[str, set[int]] = {customer: set() for customer in heads}
        tokens: dict[str, set[str | None]] = {customer: set() for customer in heads}
        views = find_in(
            self.views, "customer_id", heads, {"customer_id": 1, "version": 1, "token": 1}
        )
        async for view in views:
            versions[view["customer_id"]].add(int(view["version"]))
            tokens[view["customer_id"]].add(view.get("token"))
        return {
            customer: HeadState(
                max(versions[customer], default=0),
                head.get("merged_into"),
                frozenset(tokens[customer]),
            )
            for customer, head in heads.items()
        }

    async def canonical_facts(
        self, customer_ids: Iterable[str]
    ) -> tuple[dict[str, str], dict[str, ProfileFacts], dict[str, list[ObjectId]]]:
        """`canonical` of these ids, the facts identity resolution needs of the survivors, and
        the survivors an erasure holds, with their holds (`hold_for_erasure`)."""
        mapping, heads = await self._canonical_heads(customer_ids)
        survivors = {c: heads[c] for c in set(mapping.values()) if c in heads}
        facts = {c: _stored(head, None).facts() for c, head in survivors.items()}
        held = {c: holds for c, head in survivors.items() if (holds := held_by_head(head))}
        return mapping, facts, held

    async def _canonical_heads(
        self, customer_ids: Iterable[str]
    ) -> tuple[dict[str, str], dict[str, MongoDocument]]:
        """`canonical` of these ids, with the heads read on the way (the survivors' included).

        One read of the heads serves both when none was merged away (the common case); merged
        ones are followed to their survivors, whose heads are then read too.
        """
        ids = list(customer_ids)
        heads = await self.heads(ids)
        mapping = {c: c for c in ids}
        mapping.update(await self.canonical(c for c, h in heads.items() if h.get("merged_into")))
        heads.update(await self.heads(set(mapping.values()) - heads.keys()))
        return mapping, heads

    async def open_conversations(self, since: datetime, limit: int) -> list[MongoDocument]:
        """Current views whose conversation moved at or after `since`, latest first (the agent
        desk's inbox). See `_current_views` for what is skipped."""
        cursor = self.views.find({LAST_AT: {"$gte": since}}).sort(LAST_AT, DESCENDING)
        return await self._current_views(cursor, limit, waiting=False)

    async def waiting_conversations(self, since: datetime, limit: int) -> list[MongoDocument]:
        """Current views whose customer has waited for a reply since `since` or later, the
        longest waiting first (the agents' queue), however long ago they last wrote: the
        customers nobody answered are the ones to find. One indexed field: SecantusDB scans
        when a second one joins it."""
        cursor = self.views.find({AWAITING: {"$gte": since}}).sort(AWAITING, ASCENDING)
        found = await self._current_views(cursor, limit, waiting=True)
        return sorted(found, key=lambda doc: doc["view"]["conversation"]["awaiting_reply_since"])

    async def _current_views(
        self, cursor: AsyncIterable[MongoDocument], limit: int, *, waiting: bool
    ) -> list[MongoDocument]:
        """The first `limit` customers' current views a query of views finds, in its order.

        A view superseded a moment ago may still be listed next to its successor: only each
        customer's highest version is kept, and with `waiting`, only when that one still waits
        (a version from before the answer matches the query; the answer does not). The views
        of profiles merged away stay (their conversations live on in the survivor's): they are
        skipped, reading on by pages until `limit` customers are found."""
        current: dict[str, MongoDocument] = {}
        merged_away: set[str] = set()
        async for page in _pages(cursor, limit * 2):
            unseen = {doc["customer_id"] for doc in page} - current.keys()
            for doc in page:
                _keep_highest(current, doc)
            survivors = await self.canonical(unseen)
            merged_away |= {c for c, survivor in survivors.items() if survivor != c}
            if waiting:
                await self._keep_waiting(current, unseen)
            if len(current.keys() - merged_away) >= limit:
                break
        return [doc for customer, doc in current.items() if customer not in merged_away][:limit]

    async def _keep_waiting(self, found: dict[str, MongoDocument], customers: set[str]) -> None:
        """Keep only the customers whose current view still waits, since the time the query
        matched (a view that waits since another time is in the index at its own place, and
        is found there: the queue's order, and a reader paging on by it, stay true)."""
        views = await self._views_of(customers & found.keys())
        for customer in customers & found.keys():
            if _waiting_since(views.get(customer)) != _waiting_since(found[customer]):
                del found[customer]
            else:
                found[customer] = views[customer]

    async def _views_of(self, customer_ids: Iterable[str]) -> dict[str, MongoDocument]:
        """The current (highest) view of each customer, in bounded queries on `customer_id`.

        A customer has one view, or two for the moment between a save and the delete of the view
        it superseded (or after a crash in between): the highest version is current.
        """
        return await _highest_per_customer(find_in(self.views, "customer_id", customer_ids))

    async def reserve(self, survivor: str, keys: Sequence[str], event_id: str, token: str) -> bool:
        """`Store.reserve`: one conditional update; when refused by a reservation left by a
        stopped instance (`_take_over_stale`), once more."""
        update = {
            "$set": {"merging_in.by": token, "merging_in.at": now()},
            "$addToSet": {
                "merging_in.events": event_id,
                "merging_in.keys": {"$each": sorted(keys)},
            },
        }
        condition = {
            "_id": survivor,
            "merged_into": None,
            **_lacks(split_key(key)[0].value for key in keys),
        }
        # Free, or this resolution's, or an earlier attempt's of this event: tried one after
        # the other (each atomic), not as one `$or`, which SecantusDB answers by scanning the
        # whole collection. Free is the common case, one command.
        free: list[MongoDocument] = [
            {"merging_in": None},
            {"merging_in.by": token},
            {"merging_in.events": event_id},
        ]
        for _ in range(2):
            for held in free:
                if (await self.profiles.update_one({**condition, **held}, update)).matched_count:
                    return True
            if not await self._take_over_stale(survivor):
                return False
        return False

    async def _take_over_stale(self, survivor: str) -> bool:
        """Drop the survivor's reservation if an instance that stopped left it: older than
        `RESERVATION_EXPIRY`, and its values already held or no merge of its events there
        (a merge marked but not finished still needs it: its event is delivered again)."""
        head = await self.profiles.find_one({"_id": survivor}, ATTACH_FIELDS) or {}
        held = head.get("merging_in")
        if not held or _live(held):
            return False
        if not set(held["keys"]) <= set(head.get("identifiers", [])):
            unfinished = {
                "merge_event": {"$in": held["events"]},
                "merged_into": survivor,
                "merge_pending": True,
            }
            if await self.profiles.find_one(unfinished, {"_id": 1}):
                return False
        await self.profiles.update_one(
            {"_id": survivor, "merging_in.by": held["by"], "merging_in.at": held["at"]},
            {"$unset": {"merging_in": ""}},
        )
        return True

    async def release_reservations(self, survivors: Iterable[str], token: str) -> None:
        """`Store.release_reservations`, one command."""
        await bulk_write(
            self.profiles,
            [
                UpdateOne({"_id": survivor, "merging_in.by": token}, {"$unset": {"merging_in": ""}})
                for survivor in sorted(set(survivors))
            ],
        )

    async def mark_merged(
        self,
        survivor: str,
        absorbed: list[str],
        event_id: str,
        at: datetime,
        lacking: Mapping[str, Iterable[str]] | None = None,
    ) -> list[MergeRecord]:
        """Decide each merge once, recorded as pending on the absorbed head; those taken. A
        profile held for its erasure (`hold_for_erasure`) is never taken, nor one that has got
        a value of a kind `lacking` says it had none of when the merge was decided, nor one
        another merge into it has a live reservation on (`reserve`): what that merge brings
        would land on a profile merged away, unseen by the survivor's checks."""
        merged_at = now()
        taken: list[str] = []
        for customer in absorbed:
            result = await self.profiles.update_one(
                {
                    "_id": customer,
                    "merged_into": None,
                    **NOT_HELD,
                    **_lacks((lacking or {}).get(customer, ())),
                    **_not_reserved(),
                },
                {
                    "$set": {
                        "merged_into": survivor,
                        "merged_at": merged_at,
                        "merge_event": event_id,
                        "merge_occurred_at": at,
                        "merge_pending": True,
                    }
                },
            )
            if result.modified_count == 1:
                taken.append(customer)
        return [MergeRecord(survivor, customer, event_id, at) for customer in taken]

    async def add_merged(
        self,
        merges: Sequence[tuple[str, set[str], set[str], set[str]]],
        finished: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Record absorbed aliases, identifiers and kept-apart profiles on each survivor
        (idempotent), and drop the reservations (`reserve`) of the merges `finished` (survivor,
        event), one command: from then on the survivor holds what was reserved."""
        released = [
            UpdateOne(
                {"_id": survivor, "merging_in.events": event_id}, {"$unset": {"merging_in": ""}}
            )
            for survivor, event_id in sorted(set(finished))
        ]
        await bulk_write(
            self.profiles,
            [
                UpdateOne(
                    {"_id": survivor},
                    {
                        "$addToSet": {
                            "merged_from": {"$each": sorted(aliases)},
                            "identifiers": {"$each": sorted(identifiers)},
                            "kept_apart": {"$each": sorted(apart)},
                        }
                    },
                )
                for survivor, aliases, identifiers, apart in merges
            ]
            + released,
            ordered=True,
        )

    async def unfinished_merges(self, event_ids: Iterable[str]) -> list[MergeRecord]:
        """Merges decided by these events whose effects were not all done (or not published)."""
        found = find_in(
            self.profiles,
            "merge_event",
            event_ids,
            {"merged_into": 1, "merge_event": 1, "merge_occurred_at": 1, "merge_pending": 1},
        )
        return [
            MergeRecord(
                doc["merged_into"], doc["_id"], doc["merge_event"], doc["merge_occurred_at"]
            )
            async for doc in found
            if doc.get("merge_pending")
        ]

    async def unmerge(self, absorbed: str, merge_event: str) -> None:
        """Make `absorbed` a profile of its own again, if that merge still stands and no erasure
        holds it (idempotent)."""
        await self.profiles.update_one(
            {"_id": absorbed, "merge_event": merge_event, **NOT_HELD},
            {
                "$unset": {
                    "merged_into": "",
                    "merged_at": "",
                    "merge_event": "",
                    "merge_occurred_at": "",
                    "merge_pending": "",
                }
            },
        )

    async def hand_over(
        self, restored: str, keys: Iterable[str], kept: Sequence[str], aliases: Iterable[str]
    ) -> None:
        """Record a split on the heads: the identifiers on `restored`, gone from the `kept` heads
        (the first is the canonical one) together with the restored profile's aliases; the two
        kept apart from now on."""
        moved = sorted(keys)
        gone = sorted(aliases)
        await bulk_write(
            self.profiles,
            [
                UpdateOne(
                    {"_id": restored},
                    {"$addToSet": {"identifiers": {"$each": moved}, "kept_apart": kept[0]}},
                ),
                UpdateOne({"_id": kept[0]}, {"$addToSet": {"kept_apart": restored}}),
                *(
                    UpdateOne(
                        {"_id": customer},
                        {"$pull": {"identifiers": {"$in": moved}, "merged_from": {"$in": gone}}},
                    )
                    for customer in kept
                ),
            ],
            ordered=True,
        )

    async def keep_apart(self, customer_ids: Sequence[str]) -> None:
        """These profiles are merged again only when a person confirms it."""
        await bulk_write(
            self.profiles,
            [
                UpdateOne(
                    {"_id": customer},
                    {
                        "$addToSet": {
                            "kept_apart": {"$each": [c for c in customer_ids if c != customer]}
                        }
                    },
                )
                for customer in customer_ids
            ],
        )

    async def allow_merge(self, customer_ids: Sequence[str]) -> None:
        """A person confirmed these profiles are one: they are no longer kept apart."""
        await update_in(
            self.profiles,
            "_id",
            customer_ids,
            {"$pull": {"kept_apart": {"$in": list(customer_ids)}}},
        )

    async def settle_merges(self, absorbed: list[str]) -> None:
        await update_in(self.profiles, "_id", absorbed, {"$set": {"merge_pending": False}})

    async def save_views(self, views: Mapping[str, ViewSave]) -> set[str]:
        """Store each view as the next version of its profile; return the customers that lost.

        Inserting version n+1 succeeds for exactly one writer (the unique index on customer and
        version), and that insert is the whole save: the current version is the highest view
        stored, so no head is updated (an update cost the database five times an insert). The
        winner then deletes the view it superseded; a loser re-derives and tries the version
        after.

        A version's slot is free again once its view is superseded, so two views may be stored
        at one version over time: the token in the `_id` tells them apart, and the delete by
        `_id` alone removes only the one superseded. (In `make bench`'s stream of 10,000 events
        on SecantusDB, a delete by `_id` and a token field took 0.64 ms per view, by `_id` alone
        0.36 ms; the unique index made each insert 0.22 -> 0.28 ms.)
        """
        if not views:
            return set()
        at = now()
        documents = [
            {
                "_id": view_id(customer, save.base.version + 1, save.token),
                "customer_id": customer,
                "version": save.base.version + 1,
                "token": save.token,
                "view": save.view.model_dump(mode="python"),
                "written_at": at,
                **_checkpoint_field("checkpoint", save.checkpoint),
                **_checkpoint_field("next_checkpoint", save.next_checkpoint),
                **_earlier_field(save.earlier_checkpoints),
            }
            for customer, save in views.items()
        ]
        taken = await insert_once(self.views, documents)
        lost = {str(doc["customer_id"]) for doc in documents if doc["_id"] in taken}
        await self.discard_views(
            {c: save.base for c, save in views.items() if c not in lost and save.base.version}
        )
        return lost

    async def discard_views(self, views: Mapping[str, StoredProfile]) -> None:
        """Delete each of these views: only that very view, never another writer's stored at
        the same version since."""
        await bulk_write(
            self.views,
            [DeleteOne(_view_filter(customer, view)) for customer, view in views.items()],
        )

    async def hold_for_erasure(
        self, aliases: Iterable[str], hold: ObjectId | None = None
    ) -> tuple[ObjectId, dict[str, str]]:
        """Hold the heads of these profiles for an erasure, so no merge takes them (`mark_merged`)
        and no split frees one (`unmerge`) from now on; the hold, and those of them merged into
        a profile outside `aliases` before, with their survivors. The hold and a merge each
        change the head in one atomic update, so one of them comes first.

        Each hold is its own: an ObjectId (unique, and it carries the time it was made) added
        to the head's list. Two requests for one customer, even in one millisecond, hold it
        twice, and one of them taking its hold back leaves the other's standing. A recorded
        erasure holds again under its own `hold` (`Erasure.hold`), which adding again leaves
        as it is, however often its completion is retried."""
        held = sorted(set(aliases))
        hold = hold or ObjectId()
        await update_in(self.profiles, "_id", held, {"$addToSet": {"erasing": hold}})
        elsewhere = {
            doc["_id"]: doc["merged_into"]
            async for doc in find_in(self.profiles, "_id", held, {"merged_into": 1})
            if doc.get("merged_into") and doc["merged_into"] not in held
        }
        return hold, elsewhere

    async def release_hold(self, hold: ObjectId, customer_ids: Iterable[str] = ()) -> None:
        """Take back this hold: from every head it marked, or from these only."""
        query: MongoDocument = {"erasing": hold}
        if ids := sorted(set(customer_ids)):
            query["_id"] = {"$in": ids}
        await self.profiles.update_many(query, {"$pull": {"erasing": hold}})

    async def still_held(self, hold: ObjectId, customer_ids: Iterable[str]) -> bool:
        """Whether this hold is on every one of these heads that exists (a batch takes a hold
        back once it is older than `HOLD_EXPIRY` and no erasure names it)."""
        for chunk in chunked(customer_ids):
            lacking = {"_id": {"$in": chunk}, "erasing": {"$ne": hold}}
            if await self.profiles.count_documents(lacking):
                return False
        return True

    async def holds(self, customer_ids: Iterable[str]) -> dict[str, list[ObjectId]]:
        """Of these profiles, those held for an erasure, with their holds."""
        heads = find_in(self.profiles, "_id", customer_ids, {"erasing": 1})
        return {doc["_id"]: holds async for doc in heads if (holds := held_by_head(doc))}

    async def erase(self, aliases: list[str]) -> int:
        """Heads, then views: see `ProfileStore.erase` for why the heads go first."""
        deleted = (await self.profiles.delete_many({"_id": {"$in": aliases}})).deleted_count
        await self.views.delete_many({"customer_id": {"$in": aliases}})
        return deleted

    async def counts(self) -> dict[str, int]:
        return {
            "profiles": await self.profiles.count_documents({"merged_into": None}),
            "aliases": await self.profiles.count_documents({"merged_into": {"$ne": None}}),
        }


def _lacks(kinds: Iterable[str]) -> MongoDocument:
    """A filter for a head holding no identifier of these kinds (none: any head)."""
    if not (names := sorted(set(kinds))):
        return {}
    return {"identifiers": {"$not": re.compile(f"^({'|'.join(map(re.escape, names))}):")}}


def _not_reserved() -> MongoDocument:
    """A filter for a head without a live reservation (`reserve`): none, or one made longer
    ago than `RESERVATION_EXPIRY`. (Not a top-level `$or`: SecantusDB scans the whole
    collection for one, `_id` or not.)"""
    return {"merging_in.at": {"$not": {"$gt": _expired_before()}}}


def _reserved(head: MongoDocument) -> list[str]:
    """The values a merge under way reserved on this head (`reserve`), unless left so long ago
    that the instance that made it has stopped."""
    held = head.get("merging_in")
    if not held or not _live(held):
        return []
    return list(held.get("keys", []))


def _live(held: MongoDocument) -> bool:
    """Whether a reservation is younger than `RESERVATION_EXPIRY` (`_not_reserved` says the
    same as a filter)."""
    return bool(held["at"] > _expired_before())


def _expired_before() -> datetime:
    """Reservations made before this were left by an instance that has stopped."""
    return now() - RESERVATION_EXPIRY


def _new_head(customer: str, created_at: datetime, identifiers: Sequence[str]) -> MongoDocument:
    """A profile's head as first stored: the identifiers it claimed, nothing merged yet."""
    return {"_id": customer, "created_at": created_at, "identifiers": list(identifiers)}


def _stored(head: MongoDocument, view: MongoDocument | None) -> StoredProfile:
    return StoredProfile(
        customer_id=head["_id"],
        version=_version(view),
        created_at=head["created_at"],
        identifiers=list(head.get("identifiers", [])),
        merged_from=list(head.get("merged_from", [])),
        view=ProfileView.model_validate(view["view"]) if view else None,
        kept_apart=list(head.get("kept_apart", [])),
        view_token=view.get("token") if view else None,
        view_key=_earlier_key(view),
        checkpoint=_checkpoint(view, "checkpoint"),
        next_checkpoint=_checkpoint(view, "next_checkpoint"),
        earlier_checkpoints=tuple(
            _named_checkpoint(named) for named in (view or {}).get("earlier_checkpoints", [])
        ),
    )


def _checkpoint_field(field: str, checkpoint: Checkpoint | None) -> MongoDocument:
    """What a view document says of a checkpoint it names: nothing when it names none (most
    views: checkpoints are kept for long journeys only)."""
    if checkpoint is None:
        return {}
    return {field: _naming(checkpoint)}


def _earlier_field(checkpoints: tuple[Checkpoint, ...]) -> MongoDocument:
    """The older checkpoints a view document names, oldest first: nothing when none."""
    return {"earlier_checkpoints": [_naming(c) for c in checkpoints]} if checkpoints else {}


def _naming(checkpoint: Checkpoint) -> MongoDocument:
    return {"id": checkpoint.id, "at": checkpoint.at, "entry": checkpoint.entry_id}


def _checkpoint(view: MongoDocument | None, field: str) -> Checkpoint | None:
    named = view.get(field) if view else None
    return _named_checkpoint(named) if named else None


def _named_checkpoint(named: MongoDocument) -> Checkpoint:
    return Checkpoint(named["id"], named["at"], named["entry"])


def _earlier_key(view: MongoDocument | None) -> str | None:
    """The `_id` of a view stored by an earlier release (not `view_id`'s), else None."""
    if view is None or view["_id"] == view_id(
        view["customer_id"], view["version"], view.get("token")
    ):
        return None
    return str(view["_id"])


def _view_filter(customer: str, view: StoredProfile) -> MongoDocument:
    """That very view: by `_id`, which holds its token; one stored by an earlier release (under
    `<customer>:<version>`, whose slot such a release may fill again) by `_id` and token."""
    if view.view_key is not None:
        return {"_id": view.view_key, "token": view.view_token}
    return {"_id": view_id(customer, view.version, view.view_token)}


def _version(view: MongoDocument | None) -> int:
    """A profile's version is its current view's; 0 before its first view."""
    return int(view["version"]) if view else 0


def _waiting_since(view: MongoDocument | None) -> object:
    return (((view or {}).get("view") or {}).get("conversation") or {}).get("awaiting_reply_since")


async def _pages(
    cursor: AsyncIterable[MongoDocument], size: int
) -> AsyncIterator[list[MongoDocument]]:
    page: list[MongoDocument] = []
    async for doc in cursor:
        page.append(doc)
        if len(page) == size:
            yield page
            page = []
    if page:
        yield page


async def _highest_per_customer(views: AsyncIterable[MongoDocument]) -> dict[str, MongoDocument]:
    """Of view documents, each customer's highest version: the current one."""
    current: dict[str, MongoDocument] = {}
    async for doc in views:
        _keep_highest(current, doc)
    return current


def _keep_highest(current: dict[str, MongoDocument], view: MongoDocument) -> None:
    kept = current.get(view["customer_id"])
    if kept is None or view["version"] > kept["version"]:
        current[view["customer_id"]] = view
