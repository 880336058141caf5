"""Un-merge: undo a merge, or split identifiers that are someone else's off into their own profile.

A split is recorded first (who, when, why: the audit trail), then completed; completion re-derives
both profiles from their journey entries (`domain.split` says which entry and identifier is
whose), hands identifiers and entries back, saves both views at the version read, and publishes
the corrections: the moved entries on `journey` under their customer, a `split` record on
`identity.merges`, both snapshots on `profiles`. Every step is safe to repeat, so a split that
Kafka or MongoDB interrupted is completed in the background, and one more sweep after
`split_settle_seconds` catches an event another instance resolved against the merged profile
just before the identifiers moved.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from customer_profile.adapters.splits import Split
from customer_profile.adapters.store import ProfileStore
from customer_profile.domain.identity import split_key
from customer_profile.domain.journey import JourneyEntry
from customer_profile.domain.split import (
    EntryOutline,
    Replayed,
    SplitPlan,
    SplitSeeds,
    plan_split,
)
from customer_profile.service.background import keep_finishing
from customer_profile.service.derivation import CHECKPOINT_BEHIND, derived_views
from customer_profile.service.pipeline import (
    JSON,
    MAX_SAVE_ATTEMPTS,
    entry_records,
    publish_until_current,
    snapshot,
)
from customer_profile.service.ports import Contention, StoredProfile
from customer_profile.service.privacy import LEFT_TO_ITS_REQUEST
from hilo.kafka import KafkaPublisher, PublishFailed, Record
from hilo.sealing import Sealer
from hilo.topics import Topic

log = structlog.get_logger(__name__)
_SPLIT_NAMESPACE = uuid.UUID("8b1d2f3e-6c4a-5d7b-9e0f-1a2b3c4d5e6f")


class CustomerNotFound(LookupError):
    pass


class SplitRefused(ValueError):
    """The split asked for does not fit the customer (answered 409 with this message)."""


@dataclass(frozen=True)
class Requester:
    """Who asked for the split, and why: kept on the record for the audit trail."""

    by: str
    reason: str


class Splits:
    def __init__(
        self,
        store: ProfileStore,
        publisher: KafkaPublisher | None,
        sealer: Sealer,
        window: timedelta,
        settle: timedelta,
        checkpoint_behind: timedelta = CHECKPOINT_BEHIND,
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._sealer = sealer
        self._window = window
        self._settle = settle
        self._checkpoint_behind = checkpoint_behind

    async def undo_merge(self, customer_id: str, absorbed: str, who: Requester) -> dict[str, Any]:
        """Give `absorbed` back what it had before it was merged into this customer."""
        profile = await self._profile(customer_id)
        head = await self._store.merge_of(absorbed)
        if head is None or not head.get("merged_into"):
            earlier = [s for s in await self._store.splits_involving([absorbed]) if s.merge_event]
            if earlier and earlier[-1].restored == absorbed:
                if earlier[-1].kept not in profile.aliases:  # another customer's split
                    raise SplitRefused(f"{absorbed} was not merged into {profile.customer_id}")
                return await self._run(earlier[-1])
            raise SplitRefused(f"{absorbed} is not merged into another profile")
        if absorbed not in profile.merged_from:
            raise SplitRefused(f"{absorbed} was not merged into {profile.customer_id}")
        split = self._new(
            f"merge:{absorbed}:{head['merge_event']}",
            profile.customer_id,
            absorbed,
            who,
            merge_event=head["merge_event"],
            merged_at=head["merged_at"],
        )
        return await self._run(await self._store.record_split(split))

    async def split_identifiers(
        self, customer_id: str, keys: Sequence[str], who: Requester
    ) -> dict[str, Any]:
        """Move these identifiers, and the entries only they explain, to a new profile."""
        profile = await self._profile(customer_id)
        named = (
            "identifiers:"
            + hashlib.sha256(
                "\n".join([profile.customer_id, *sorted(set(keys))]).encode()
            ).hexdigest()[:32]
        )
        split_id, earlier = named, await self._store.split(named)
        # A retried request is the split it made; the same identifiers split off again after
        # the profile it made was merged back (a person confirmed them one) are a new split.
        for again in itertools.count(2):
            if earlier is None or not await self._merged_back(earlier):
                break
            split_id = f"{named}:{again}"
            earlier = await self._store.split(split_id)
        if earlier is not None:
            return await self._run(earlier)
        held = await self._store.claims_of(profile.aliases)
        if foreign := sorted({split_key(key)[0].value for key in keys if key not in held}):
            raise SplitRefused(f"this customer holds no such identifier ({', '.join(foreign)})")
        if set(held) <= set(keys):
            raise SplitRefused("the customer would keep no identifier: nothing to split from")
        restored = uuid.uuid5(_SPLIT_NAMESPACE, split_id).hex
        split = self._new(split_id, profile.customer_id, restored, who, keys=sorted(set(keys)))
        return await self._run(await self._store.record_split(split))

    async def _merged_back(self, split: Split) -> bool:
        """Whether the profile this split restored has been merged into another since."""
        head = await self._store.merge_of(split.restored)
        return bool(head and head.get("merged_into"))

    def _new(
        self,
        split_id: str,
        kept: str,
        restored: str,
        who: Requester,
        *,
        merge_event: str | None = None,
        merged_at: datetime | None = None,
        keys: list[str] | None = None,
    ) -> Split:
        """A split as first recorded: not applied yet, swept again after the settle time."""
        now = datetime.now(UTC)
        return Split(
            id=split_id,
            kept=kept,
            restored=restored,
            merge_event=merge_event,
            merged_at=merged_at,
            keys=keys or [],
            by=who.by,
            reason=who.reason,
            requested_at=now,
            settle_after=now + self._settle,
            done=False,
            outcome=None,
        )

    async def of(self, customer_id: str) -> list[dict[str, Any]]:
        """Every split that kept or restored this customer or one of its aliases."""
        profile = await self._profile(customer_id)
        return [s.public() for s in await self._store.splits_involving(profile.aliases)]

    async def _profile(self, customer_id: str) -> StoredProfile:
        profile = await self._store.get(customer_id)
        if profile is None:
            raise CustomerNotFound(customer_id)
        return profile

    async def _run(self, split: Split) -> dict[str, Any]:
        """Complete the split now if Kafka and MongoDB allow; pending (done later) if not."""
        if split.outcome is None or not split.done:
            try:
                if not await self.complete(split):
                    raise CustomerNotFound(split.kept)
            except PublishFailed:
                log.warning("split_pending", split_id=split.id, reason="kafka_unavailable")
            except Contention:
                log.warning("split_pending", split_id=split.id, reason="concurrent_writers")
        current = await self._store.split(split.id)
        return (current or split).public()

    async def complete(self, split: Split) -> bool:
        """Apply the split (again): re-derive both sides, hand back, save, publish, record.

        A later sweep that finds nothing left to move only records the split as done: the views
        and the corrections of the first application stand. A split of a customer erased since
        it was asked for is deleted instead (it names their identifiers): False. One whose
        profiles an erasure holds waits (pending) for the erasure, which deletes it.
        """
        if await self._store.profiles_erased([split.kept, split.restored]):
            await self._store.drop_split(split.id)
            log.info("split_dropped", split_id=split.id, reason="customer_erased")
            return False
        if await self._store.held([split.kept, split.restored]):
            # An erasure under way holds them: the next sweep drops the split once it is done.
            log.info("split_waits", split_id=split.id, reason="customer_being_erased")
            return True
        if split.merge_event is not None:
            await self._store.unmerge(split.restored, split.merge_event)
        else:
            await self._store.ensure_profiles([split.restored])
        canonical = await self._store.canonical([split.kept, split.restored])
        if canonical[split.restored] != split.restored:
            log.info("split_superseded", split_id=split.id, reason="merged again since")
            await self._store.split_completed(split.id, {"superseded": True}, done=True)
            return True
        kept_id = canonical[split.kept]
        loaded = await self._store.load([kept_id, split.restored])
        kept, restored = loaded[kept_id], loaded[split.restored]
        journeys = await self._store.outlines_of([kept, restored])
        plan = await self._plan(
            split, kept, restored, [*journeys[kept_id], *journeys[restored.customer_id]]
        )
        back = set(plan.restored_entries)
        moving = [e.id for e in journeys[kept_id] if e.id in back]
        # Recorded first: a retry after a failed publish must publish these again, and by then
        # they are already stored under the restored profile.
        await self._store.split_moves(split.id, moving)
        await self._store.hand_over(kept, restored, plan.restored_keys, moving)
        if split.outcome is None or moving:
            saved = await self._save_views([kept_id, split.restored])
            earlier = set(split.moved) if split.outcome is None else set()
            moved_before = [e.id for e in journeys[split.restored] if e.id in earlier]
            corrected = await self._store.entries_by_id([*moved_before, *moving])
            await self._publish(split, kept_id, saved, corrected)
        outcome = {
            "kept": kept_id,
            "restored": split.restored,
            "journey_entries": {
                "kept": len(journeys[kept_id]) + len(journeys[split.restored]) - len(back),
                "restored": len(back),
            },
            "identifiers": {"kept": len(plan.kept_keys), "restored": len(plan.restored_keys)},
            "ambiguous_entries": plan.ambiguous,
            "applied_at": datetime.now(UTC),
        }
        done = datetime.now(UTC) >= split.settle_after
        await self._store.split_completed(split.id, outcome, done=done)
        log.info(
            "customer_split",
            split_id=split.id,
            kept=kept_id,
            restored=split.restored,
            entries_moved=len(moving),
            identifiers_restored=len(plan.restored_keys),
            ambiguous=len(plan.ambiguous),
            done=done,
        )
        return True

    async def _plan(
        self,
        split: Split,
        kept: StoredProfile,
        restored: StoredProfile,
        entries: list[EntryOutline],
    ) -> SplitPlan:
        kept_claims = await self._store.claims_of(kept.aliases)
        restored_claims = await self._store.claims_of(restored.aliases)
        seeds = SplitSeeds(
            restored_aliases=frozenset(restored.aliases),
            restored_keys=frozenset({*split.keys, *restored.identifiers, *restored_claims}),
            kept_keys=frozenset(_kept_from_the_start(split, kept_claims, entries)),
            owned=frozenset({*kept_claims, *restored_claims}),
            fixed_before=split.merged_at,
            linking_event=split.merge_event,
        )
        return plan_split(entries, seeds)

    async def _save_views(self, customer_ids: list[str]) -> dict[str, StoredProfile]:
        """Both views re-derived from their journeys, saved at the version read (retried when
        an instance's batch saved first)."""
        for _ in range(MAX_SAVE_ATTEMPTS):
            profiles = await self._store.load(customer_ids)
            derived = await derived_views(
                self._store, profiles.values(), self._window, behind=self._checkpoint_behind
            )
            views = {customer: derived[customer].save(p) for customer, p in profiles.items()}
            lost = await self._store.save_views(views)
            if not lost:
                return {customer: save.saved() for customer, save in views.items()}
        raise Contention("could not save the split profiles: too many concurrent writers")

    async def _publish(
        self,
        split: Split,
        kept_id: str,
        saved: dict[str, StoredProfile],
        moving: list[JourneyEntry],
    ) -> None:
        """The corrections downstream needs, acknowledged by Kafka before the split is recorded
        as applied."""
        if self._publisher is None:
            return
        publisher = self._publisher
        moved = [entry.model_copy(update={"customer_id": split.restored}) for entry in moving]
        await publisher.publish_records(
            [
                *await entry_records(self._sealer, moved, moved_by=split.id),
                Record(Topic.IDENTITY_MERGES, kept_id.encode(), split_record(split, kept_id), JSON),
                *(snapshot(profile) for profile in saved.values()),
            ]
        )
        await publish_until_current(
            self._store,
            publisher,
            saved,
            lambda stale: self._save_views(sorted(stale)),
            self._sealer.subject,
        )

    async def finish_unfinished(self) -> int:
        """Complete splits a failure interrupted, and sweep those whose settle time has come;
        how many are still unfinished."""
        left = 0
        now = datetime.now(UTC)
        for split in await self._store.unfinished_splits():
            settling = split.outcome is not None and now < split.settle_after
            if settling or now - split.requested_at < LEFT_TO_ITS_REQUEST:
                left += 1
                continue
            try:
                await self.complete(split)
            except PublishFailed:
                left += 1
        return left

    async def keep_finishing(self, interval: float) -> None:
        """Run for the life of the service: splits complete once Kafka or MongoDB are back."""
        await keep_finishing(self.finish_unfinished, interval, "splits")


def split_record(split: Split, kept_id: str) -> bytes:
    """What `identity.merges` says of a split: customer ids and the audit facts, no personal
    data (the identifiers stay in MongoDB)."""
    return json.dumps(
        {
            "type": "split",
            "split_id": split.id,
            "kept": kept_id,
            "restored": split.restored,
            "undoes_event_id": split.merge_event,
            "by": split.by,
            "requested_at": split.requested_at.isoformat(),
        }
    ).encode()


def _kept_from_the_start(
    split: Split, kept_claims: Mapping[str, datetime], entries: Sequence[Replayed]
) -> set[str]:
    """The identifiers the kept profile keeps whatever the replay finds: those it held before
    the merge being undone; for identifiers split off, those its entries carried before the
    first entry with a named one, and that entry's others (the customer's own email on the
    sign-up that brought a mistyped phone is hers: without it she would lose the email and all
    it explains). An identifier first seen later goes with the side of the entry it came on."""
    if split.merge_event is not None:
        merged_at = split.merged_at
        return {key for key, at in kept_claims.items() if merged_at is not None and at < merged_at}
    named, seen = set(split.keys), set[str]()
    for entry in sorted(entries, key=lambda e: (e.recorded_at, e.occurred_at, e.id)):
        keys = {f"{kind}:{value}" for kind, value in entry.identifiers.items()}
        seen |= keys - named
        if keys & named:
            return seen & set(kept_claims)
    return set()
