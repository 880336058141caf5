"""Identity resolution for a batch of events, made to stick with the store's atomic operations.

The common case costs a handful of round trips per batch, whatever its size: one read of the
identifiers' owners, one bulk claim of new identifiers, one insert of the new profiles holding
theirs, one bulk attach of the rest to known profiles. Decisions are taken in
memory in batch order (so an event can build on an earlier one in the same batch); only when a
claim is lost to another instance are the affected events decided again with fresh owners, which
then leads through the ordinary merge path. A merge that brings a value of a kind a person has
one of (a loyalty id) first reserves it on the survivor (`Store.reserve`): an instance that finds
another's merge under way there decides that event again, against the survivor as it is then.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import structlog
from prometheus_client import Counter

from customer_profile.domain.identity import (
    Conflict,
    IdentityPolicy,
    ProfileFacts,
    decide,
    split_key,
)
from customer_profile.service.ports import (
    Contention,
    ErasedClaimsMet,
    MergeRecord,
    Store,
    StoredProfile,
)
from hilo.contract import IdentifierKind

log = structlog.get_logger(__name__)
MAX_ROUNDS = 6
CONCURRENT_MERGE = "concurrent_merge"
CONCURRENT_MERGES = Counter(
    "hilo_profile_concurrent_merge_breaches_total",
    "Merges after which the survivor held two values of a unique kind (another instance merged "
    "into it at the same moment); each is an open conflict",
    ["kind"],
)


@dataclass(frozen=True)
class Pending:
    """An event waiting for its customer: its id, event time and usable identifier keys."""

    event_id: str
    occurred_at: datetime
    keys: list[str]
    verified: bool = True
    """Whether the source vouches for the identifiers (see `domain.identity`)."""


@dataclass(frozen=True)
class Merge:
    survivor: str
    absorbed: tuple[str, ...]
    event_id: str
    at: datetime


@dataclass
class Resolution:
    customers: dict[str, str] = field(default_factory=dict)
    """event id -> canonical customer id"""
    merges: list[Merge] = field(default_factory=list)
    conflicts: list[tuple[Conflict, str]] = field(default_factory=list)
    created: set[str] = field(default_factory=set)
    claimed: dict[str, tuple[str, str]] = field(default_factory=dict)
    """identifier key -> (the customer it was claimed for, event id) of every claim this
    resolution won and put on a profile; that customer may have been merged away since"""
    recheck: set[str] = field(default_factory=set)
    """The identifier keys events were resolved with while unowned or freshly claimed
    (`IdentityState.fresh`): where an erasure since the batch's check shows."""
    profiles: dict[str, StoredProfile] = field(default_factory=dict)
    """The customers' profiles as they stand once resolved (read with their canonical ids)."""


class IdentityResolver:
    def __init__(self, store: Store, policy: IdentityPolicy) -> None:
        self._store = store
        self._policy = policy
        self._caps = {kind.value: policy.cap(kind) for kind in IdentifierKind}
        for kind in policy.unique_kinds:  # at 0 from the start: an alert sees the first breach
            CONCURRENT_MERGES.labels(kind.value)

    async def resolve(self, events: Sequence[Pending], fresh_since: datetime) -> Resolution:
        """Give every event a customer; merge and record conflicts as the rules say. Claims
        made since `fresh_since` are fresh (`IdentityState.fresh`)."""
        resolution = Resolution()
        pending = list(events)
        token = uuid.uuid4().hex
        batch = frozenset(event.event_id for event in events)
        for _ in range(MAX_ROUNDS):
            if not pending:
                break
            try:
                pending = await self._round(pending, resolution, fresh_since, token, batch)
            except ErasedClaimsMet as exc:
                exc.partial = resolution
                raise
        if pending:
            raise Contention(f"identity resolution did not settle for {len(pending)} event(s)")
        # Merges later in the batch (or by another instance) may have absorbed customers chosen
        # earlier: the one read that finds the survivors also loads their profiles.
        canonical, resolution.profiles = await self._store.load_canonical(
            set(resolution.customers.values())
        )
        resolution.customers = {e: canonical[c] for e, c in resolution.customers.items()}
        resolution.conflicts += self._breached_by_concurrent_merges(resolution, canonical)
        return resolution

    def _breached_by_concurrent_merges(
        self, resolution: Resolution, canonical: dict[str, str]
    ) -> list[tuple[Conflict, str]]:
        """Survivors of this resolution's merges that hold two values of a kind a person has one
        of (`HILO_IDENTITY_UNIQUE_KINDS`: two loyalty ids, say), which merge protection refuses:
        another instance merged or attached to the same survivor while this one was stopped or
        frozen past `RESERVATION_EXPIRY` in the middle of the merge (`Store.reserve` prevents
        it otherwise). Whoever reads the survivor last, this merge's writer or a later merge
        there, sees both values.

        It is not undone here: which of the two merges was wrong is a person's call (a split).
        It is recorded (and logged, as every conflict is) as a `concurrent_merge` conflict on
        the survivor, and counted in `hilo_profile_concurrent_merge_breaches_total`.
        """
        found: list[tuple[Conflict, str]] = []
        for merge in resolution.merges:
            profile = resolution.profiles.get(canonical.get(merge.survivor, merge.survivor))
            if profile is None:
                continue
            held: dict[str, int] = {}
            for key in profile.identifiers:
                if (of_kind := split_key(key)[0]) in self._policy.unique_kinds:
                    held[of_kind.value] = held.get(of_kind.value, 0) + 1
            for kind, count in sorted(held.items()):
                if count > 1:
                    CONCURRENT_MERGES.labels(kind).inc()
                    conflict = Conflict(
                        CONCURRENT_MERGE, kind, (profile.customer_id, *merge.absorbed)
                    )
                    found.append((conflict, merge.event_id))
        return found

    async def _round(
        self,
        events: list[Pending],
        resolution: Resolution,
        fresh_since: datetime,
        token: str,
        batch: frozenset[str],
    ) -> list[Pending]:
        """Decide every event, commit the claims; return the events that must be decided again."""
        keys = [key for event in events for key in event.keys]
        state = await self._store.identity_state(keys, fresh_since)
        resolution.recheck |= {
            key
            for event in events
            for key in event.keys
            if key not in state.owners or key in state.fresh
        }
        plan = _Plan(owners=state.owners, facts=state.facts, token=token, batch=batch)
        try:
            unsettled = [
                event for event in events if not await self._decide(event, plan, resolution)
            ]
        except BaseException:
            with contextlib.suppress(Exception):
                await self._release_unused(plan)
            raise
        await self._store.finish_merges(plan.merged)
        # A finished merge drops its survivor's reservation; these had none taken.
        await self._store.release_reservations(plan.unused_reservations, token)
        final = await self._store.claim(plan.claims)
        lost = {key for key, owner in plan.claims.items() if final.get(key) != owner}
        won = {key: owner for key, owner in plan.claims.items() if key not in lost}
        # Identifiers go on a profile only once claimed: a profile never lists one it does not
        # own, whatever crashes or concurrent merges happen in between.
        held = await self._hold(won, plan.tentative)
        moved = await self._merged_away({key: won[key] for key in set(won) - held})
        # The merge that took their profile may have moved their claims to its survivor.
        await self._store.release_claims({key: won[key] for key in moved})
        for key in set(won) - held - moved:
            await self._store.release(key, won[key])
            log.warning(
                "identifier_released", identifier_kind=split_key(key)[0].value, customer_id=won[key]
            )
            conflict = Conflict("identifier_cap", split_key(key)[0].value, (won[key],))
            resolution.conflicts.append((conflict, plan.claimed_by[key]))
        resolution.created |= plan.tentative & set(won.values())
        resolution.claimed.update({key: (won[key], plan.claimed_by[key]) for key in held})
        if lost:
            log.info("identity_claims_lost", count=len(lost))
        redo_ids = {plan.claimed_by[key] for key in lost | moved}
        redo_ids |= {
            e for e, target in plan.targets.items() if target in {plan.claims[k] for k in lost}
        }
        for event_id, target in plan.targets.items():
            if event_id not in redo_ids:
                resolution.customers[event_id] = target
        return unsettled + [event for event in events if event.event_id in redo_ids]

    async def _merged_away(self, unheld: dict[str, str]) -> set[str]:
        """Of identifiers not put on their profile, those whose profile another instance merged
        away meanwhile (`Store.attach` adds nothing there): their events are decided again,
        against the survivor."""
        if not unheld:
            return set()
        canonical = await self._store.canonical(set(unheld.values()))
        return {key for key, owner in unheld.items() if canonical.get(owner, owner) != owner}

    async def _hold(self, won: dict[str, str], tentative: set[str]) -> set[str]:
        """Put the claimed identifiers on their profiles; those held afterwards.

        A new profile is created holding its claims, in one insert. An event's claims for a new
        profile are within the caps; new profiles that a later event of the batch joined hold
        what both claimed, as a merge does. A profile that has a head already (an earlier
        attempt of the same event made it, or another instance met its claims first, see
        `Store.identity_state`) gets them added like any other, its caps checked.
        """
        new: dict[str, list[str]] = {}
        for key, owner in won.items():
            if owner in tentative:
                new.setdefault(owner, []).append(key)
        existed = await self._store.create_profiles(new)
        created = {key for key, owner in won.items() if owner in new and owner not in existed}
        added = {key: owner for key, owner in won.items() if key not in created}
        return created | await self._store.attach(added, self._caps)

    async def _decide(self, event: Pending, plan: _Plan, resolution: Resolution) -> bool:
        """Decide one event against the round's state, updating it as if its claims succeed.

        False when a profile it had to absorb was merged elsewhere meanwhile: the event is
        decided again next round, against the owners as they are then.
        """
        decision = decide(
            event.keys, plan.owners, plan.facts, self._policy, verified=event.verified
        )
        target = decision.target
        if target is None:
            target = new_customer_id(event.event_id)
            plan.tentative.add(target)
            plan.facts[target] = ProfileFacts(target, frozenset(), TENTATIVE, 0)
        committed = [c for c in decision.absorb if c not in plan.tentative]
        if committed:
            if not await self._reserve(target, committed, plan, event.event_id):
                return False
            taken = await self._store.merge(
                target,
                committed,
                event.event_id,
                event.occurred_at,
                self._lacking(committed, plan),
            )
            if taken:
                merge = Merge(target, tuple(taken), event.event_id, event.occurred_at)
                resolution.merges.append(merge)
                plan.merged += [
                    MergeRecord(target, absorbed, event.event_id, event.occurred_at)
                    for absorbed in taken
                ]
                log.info(
                    "profiles_merged", survivor=target, absorbed=taken, event_id=event.event_id
                )
            if len(taken) < len(committed):
                return False
        plan.fold(target, decision.absorb)
        plan.assign(event.event_id, target, decision.claim)
        resolution.conflicts.extend((conflict, event.event_id) for conflict in decision.conflicts)
        return True

    async def _reserve(self, target: str, committed: list[str], plan: _Plan, event_id: str) -> bool:
        """Reserve on the survivor the values of unique kinds (`HILO_IDENTITY_UNIQUE_KINDS`) it
        has none of and the merge brings; False when it cannot (it has since got one, or
        another instance's merge there is under way): the event is decided again next round,
        against the survivor as it is then. Without this, two instances could each merge a
        different loyalty id into one survivor, each deciding against it as it was."""
        has = self._unique_kinds(plan.facts[target].identifiers)
        brought = sorted(
            key
            for customer in committed
            for key in plan.facts[customer].identifiers
            if (kind := split_key(key)[0]) in self._policy.unique_kinds and kind.value not in has
        )
        if not brought:
            return True
        if await self._store.reserve(target, brought, event_id, plan.token):
            plan.reserved.add(target)
            plan.reserving.add(event_id)
            return True
        log.info("merge_deferred", survivor=target, event_id=event_id)
        # The reservation in the way may be an earlier attempt's of this very batch, stopped
        # between marking its merges and finishing them: finished now (as the pipeline would
        # after resolving, and idempotent), they drop it, and the next round sees what they
        # brought. Otherwise this batch would meet it on every delivery.
        await self._store.finish_merges(await self._store.unfinished_merges(plan.batch))
        return False

    async def _release_unused(self, plan: _Plan) -> None:
        """After a failure, take back the reservations no merge was marked for: they hold
        nothing coming, and left they would refuse attachments there until they expire. One
        whose merge may have been marked (the failure came from marking it) stays: its event
        is delivered again and finishes it."""
        candidates = plan.unused_reservations
        if not candidates:
            return
        marked = await self._store.unfinished_merges(plan.reserving)
        await self._store.release_reservations(
            candidates - {m.survivor for m in marked}, plan.token
        )

    def _lacking(self, committed: list[str], plan: _Plan) -> dict[str, set[str]]:
        """Per absorbed profile, the unique kinds it had none of when the merge was decided: it
        is taken only if that still holds (`Store.merge`). A value it got since was not
        reserved on the survivor, which another instance may be giving one of that kind."""
        unique = {kind.value for kind in self._policy.unique_kinds}
        return {
            c: lack
            for c in committed
            if (lack := unique - self._unique_kinds(plan.facts[c].identifiers))
        }

    def _unique_kinds(self, identifiers: frozenset[str]) -> set[str]:
        return {
            kind.value
            for key in identifiers
            if (kind := split_key(key)[0]) in self._policy.unique_kinds
        }


def new_customer_id(event_id: str) -> str:
    """The id of the profile an event creates: the same on every retry and redelivery. Its
    identifiers are claimed for it first and its head created holding them: an attempt
    interrupted in between leaves claims without a head, which the next attempt (or any event
    with one of those identifiers) completes (`Store.identity_state`)."""
    return uuid.uuid5(_CUSTOMER_NAMESPACE, event_id).hex


_CUSTOMER_NAMESPACE = uuid.UUID("3f9a4c1e-8d2b-5e7f-a1c3-9b8d7e6f5a40")

TENTATIVE = datetime.max.replace(tzinfo=UTC)
"""Creation time of a profile not yet stored: any stored profile is older and survives a merge."""


@dataclass
class _Plan:
    """One round's view of who owns what, including claims not yet committed."""

    owners: dict[str, str]
    facts: dict[str, ProfileFacts]
    token: str
    """The resolution's: its reservations (`Store.reserve`) add up and are released together."""
    batch: frozenset[str]
    """The ids of every event the resolution was given."""
    tentative: set[str] = field(default_factory=set)
    reserved: set[str] = field(default_factory=set)
    """Survivors this round reserved unique-kind values on, released once its merges finish."""
    reserving: set[str] = field(default_factory=set)
    """The events that made those reservations."""
    claims: dict[str, str] = field(default_factory=dict)
    claimed_by: dict[str, str] = field(default_factory=dict)
    merged: list[MergeRecord] = field(default_factory=list)
    """Merges decided this round, finished together once every event is decided."""
    targets: dict[str, str] = field(default_factory=dict)

    @property
    def unused_reservations(self) -> set[str]:
        """Survivors reserved on that no merge of this round was taken into."""
        return self.reserved - {merge.survivor for merge in self.merged}

    def fold(self, survivor: str, absorbed: list[str]) -> None:
        """Re-point everything of the absorbed profiles (stored or tentative) to the survivor."""
        if not absorbed:
            return
        gone = set(absorbed)
        identifiers = set(self.facts[survivor].identifiers)
        apart = set(self.facts[survivor].kept_apart)
        merges = self.facts[survivor].merge_count
        for customer in gone:
            identifiers |= self.facts[customer].identifiers
            apart |= self.facts[customer].kept_apart
            merges += self.facts[customer].merge_count + 1
            del self.facts[customer]
        survivor_facts = self.facts[survivor]
        self.facts[survivor] = ProfileFacts(
            survivor, frozenset(identifiers), survivor_facts.created_at, merges, frozenset(apart)
        )
        for mapping in (self.owners, self.claims, self.targets):
            for key, owner in mapping.items():
                if owner in gone:
                    mapping[key] = survivor
        self.tentative -= gone

    def assign(self, event_id: str, target: str, claim: list[str]) -> None:
        self.targets[event_id] = target
        for key in claim:
            self.claims[key] = target
            self.claimed_by[key] = event_id
            self.owners[key] = target
        if claim:
            current = self.facts[target]
            self.facts[target] = replace(current, identifiers=current.identifiers | set(claim))
