"""The storage port in a few dictionaries: fast unit tests of the resolver and the pipeline.

It keeps the promises of `service.ports.Store` (a claim succeeds once, a merge is decided once, a
view version is inserted once, entries are stored once and stay pending until settled), so tests
that pass here exercise the service layer's logic; the MongoDB adapter is tested against the real
server. Not for production: nothing is durable and nothing is shared between processes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from customer_profile.domain.identity import (
    MERGE_REQUEST_REASONS,
    Conflict,
    conflict_ids,
    split_key,
)
from customer_profile.domain.journey import JourneyEntry
from customer_profile.domain.profile import ORDER_KINDS, ProfileView
from customer_profile.service.ports import (
    MAX_ALIAS_DEPTH,
    AliasChainTooLong,
    Checkpoint,
    HeadState,
    IdentityState,
    MergeRecord,
    StoredProfile,
    ViewSave,
    unnamed_checkpoints,
)

NEVER = datetime.min.replace(tzinfo=UTC)
_Named = tuple[Checkpoint | None, Checkpoint | None, tuple[Checkpoint, ...]]
"""The checkpoint, the next one and the earlier ones a stored view names."""
NONE: _Named = (None, None, ())


@dataclass
class _Head:
    created_at: datetime
    identifiers: list[str] = field(default_factory=list)
    merged_from: list[str] = field(default_factory=list)
    merged_into: str | None = None
    merge: MergeRecord | None = None
    merge_pending: bool = False
    merging_in: _Reservation | None = None


@dataclass
class _Reservation:
    by: str
    events: set[str]
    keys: set[str]


def _holds_kind(head: _Head, kinds: Iterable[str]) -> bool:
    wanted = set(kinds)
    return any(split_key(key)[0].value in wanted for key in head.identifiers)


class InMemoryStore:
    """`service.ports.Store` in memory."""

    def __init__(self) -> None:
        self.identities: dict[str, str] = {}
        self.claimed_at: dict[str, datetime] = {}
        self.profiles: dict[str, _Head] = {}
        self.views: dict[tuple[str, int], ProfileView] = {}
        self.view_tokens: dict[tuple[str, int], str] = {}
        self.view_checkpoints: dict[tuple[str, int], _Named] = {}
        """(customer, version) -> the checkpoint and the next one its view names."""
        self.checkpoints: dict[str, tuple[str, list[str], ProfileView]] = {}
        """Checkpoint id -> (customer, sorted aliases, view)."""
        self.checkpoints_kept_at: dict[str, datetime] = {}
        self.journey: dict[str, JourneyEntry] = {}
        self.pending: set[str] = set()
        self.erased: dict[str, datetime] = {}
        """Subject -> erasure time."""
        self.conflicts: dict[str, dict[str, Any]] = {}
        self.calls: dict[str, int] = {}

    def _count(self, name: str, arguments: object) -> None:
        """Count a call that would be a round trip (the MongoDB adapter skips empty ones)."""
        if arguments:
            self.calls[name] = self.calls.get(name, 0) + 1

    # identities
    async def owners(self, keys: Iterable[str]) -> dict[str, str]:
        keys = list(keys)
        self._count("owners", keys)
        raw = {key: self.identities[key] for key in keys if key in self.identities}
        canonical = await self.canonical(raw.values())
        return {key: canonical[customer] for key, customer in raw.items()}

    async def identity_state(self, keys: Iterable[str], fresh_since: datetime) -> IdentityState:
        keys = list(keys)
        for key in keys:  # a claim whose profile was never created gets its head now
            customer = self.identities.get(key)
            if customer is not None and customer not in self.profiles:
                held = sorted(k for k, c in self.identities.items() if c == customer)
                self.profiles[customer] = _Head(created_at=datetime.now(UTC), identifiers=held)
        owners = await self.owners(keys)
        facts = {c: p.facts() for c, p in (await self.load(set(owners.values()))).items()}
        fresh = {key for key in owners if self.claimed_at.get(key, NEVER) >= fresh_since}
        return IdentityState(owners, facts, frozenset(fresh))

    async def canonical(self, customer_ids: Iterable[str]) -> dict[str, str]:
        result = {}
        for customer in customer_ids:
            current = customer
            for _ in range(MAX_ALIAS_DEPTH + 1):
                head = self.profiles.get(current)
                if head is None or head.merged_into is None:
                    break
                current = head.merged_into
            else:
                raise AliasChainTooLong(f"over {MAX_ALIAS_DEPTH} merges")
            result[customer] = current
        return result

    async def claim(self, claims: Mapping[str, str]) -> dict[str, str]:
        self._count("claim", claims)
        for key, customer in claims.items():
            if key not in self.identities:
                self.identities[key] = customer
                self.claimed_at[key] = datetime.now(UTC)
        return {key: self.identities[key] for key in claims}

    async def release(self, key: str, customer_id: str) -> None:
        if self.identities.get(key) == customer_id:
            del self.identities[key]

    async def release_claims(self, claims: Mapping[str, str]) -> None:
        self._count("release_claims", claims)
        canonical = await self.canonical(claims.values())
        for key, owner in claims.items():
            for customer in (owner, canonical[owner]):
                if (head := self.profiles.get(customer)) is not None and key in head.identifiers:
                    head.identifiers.remove(key)
                await self.release(key, customer)

    # profiles
    async def create_profiles(self, identifiers: Mapping[str, Sequence[str]]) -> set[str]:
        self._count("create_profiles", identifiers)
        existed = set(identifiers) & set(self.profiles)
        for customer, keys in identifiers.items():
            if customer not in existed:
                self.profiles[customer] = _Head(datetime.now(UTC), identifiers=list(keys))
        return existed

    async def attach(self, attachments: Mapping[str, str], caps: Mapping[str, int]) -> set[str]:
        self._count("attach", attachments)
        held: set[str] = set()
        for key, customer in attachments.items():
            head = self.profiles[customer]
            if head.merged_into:
                continue
            kind = split_key(key)[0].value
            reserved = head.merging_in.keys if head.merging_in else set()
            same_kind = [k for k in {*head.identifiers, *reserved} if k.startswith(kind + ":")]
            if key in head.identifiers:
                held.add(key)
            elif len(same_kind) < caps[kind]:
                head.identifiers.append(key)
                held.add(key)
        return held

    async def load_canonical(
        self, customer_ids: Iterable[str]
    ) -> tuple[dict[str, str], dict[str, StoredProfile]]:
        canonical = await self.canonical(customer_ids)
        return canonical, await self.load(set(canonical.values()))

    async def load(self, customer_ids: Iterable[str]) -> dict[str, StoredProfile]:
        ids = list(dict.fromkeys(customer_ids))
        self._count("load", ids)
        loaded = {}
        for customer in ids:
            head = self.profiles.get(customer)
            if head is None:
                continue
            version = self._version(customer)
            checkpoint, next_checkpoint, earlier = self.view_checkpoints.get(
                (customer, version), NONE
            )
            loaded[customer] = StoredProfile(
                customer_id=customer,
                version=version,
                created_at=head.created_at,
                identifiers=list(head.identifiers),
                merged_from=self._aliases(customer),
                view=_fresh(self.views.get((customer, version))),
                view_token=self.view_tokens.get((customer, version)),
                checkpoint=checkpoint,
                next_checkpoint=next_checkpoint,
                earlier_checkpoints=earlier,
            )
        return loaded

    def _version(self, customer: str) -> int:
        """A profile's version is its highest stored view's (0 before the first)."""
        return max((v for (c, v) in self.views if c == customer), default=0)

    def _aliases(self, customer: str) -> list[str]:
        found: list[str] = []
        frontier = [customer]
        while frontier:
            absorbed = [c for c, h in self.profiles.items() if h.merged_into in frontier]
            found += absorbed
            frontier = absorbed
        return sorted(found)

    async def head_states(self, customer_ids: Iterable[str]) -> dict[str, HeadState]:
        states = {}
        for c in customer_ids:
            if c in self.profiles:
                versions = [v for (owner, v) in self.views if owner == c]
                tokens = frozenset[str | None](self.view_tokens[(c, v)] for v in versions)
                merged_into = self.profiles[c].merged_into
                states[c] = HeadState(max(versions, default=0), merged_into, tokens)
        return states

    async def reserve(self, survivor: str, keys: Sequence[str], event_id: str, token: str) -> bool:
        self._count("reserve", keys)
        head = self.profiles[survivor]
        held = head.merging_in
        if head.merged_into or _holds_kind(head, (split_key(key)[0].value for key in keys)):
            return False
        if held and held.by != token and event_id not in held.events:
            return False
        if held is None:
            held = head.merging_in = _Reservation(token, set(), set())
        held.by = token
        held.events.add(event_id)
        held.keys.update(keys)
        return True

    async def release_reservations(self, survivors: Iterable[str], token: str) -> None:
        for survivor in set(survivors):
            head = self.profiles[survivor]
            if head.merging_in and head.merging_in.by == token:
                head.merging_in = None

    async def merge(
        self,
        survivor: str,
        absorbed: list[str],
        event_id: str,
        at: datetime,
        lacking: Mapping[str, Iterable[str]] | None = None,
    ) -> list[str]:
        self._count("merge", absorbed)
        taken = []
        for customer in absorbed:
            head = self.profiles.get(customer)
            if head is None or _holds_kind(head, (lacking or {}).get(customer, ())):
                continue
            if head.merging_in is not None:
                continue
            if head.merged_into is None:
                head.merged_into = survivor
                head.merge = MergeRecord(survivor, customer, event_id, at)
                head.merge_pending = True
                taken.append(head.merge)
        return [merge.absorbed for merge in taken]

    async def finish_merges(self, merges: list[MergeRecord]) -> None:
        absorbed = {merge.absorbed for merge in merges}
        for checkpoint in [i for i, kept in self.checkpoints.items() if kept[0] in absorbed]:
            del self.checkpoints[checkpoint]
        for merge in merges:
            aliases = {merge.absorbed, *self._aliases(merge.absorbed)}
            for key, owner in self.identities.items():
                if owner in aliases:
                    self.identities[key] = merge.survivor
            survivor = self.profiles[merge.survivor]
            if survivor.merging_in and merge.event_id in survivor.merging_in.events:
                survivor.merging_in = None
            for alias in sorted(aliases):
                if alias not in survivor.merged_from:
                    survivor.merged_from.append(alias)
                for key in self.profiles[alias].identifiers:
                    if key not in survivor.identifiers:
                        survivor.identifiers.append(key)

    async def unfinished_merges(self, event_ids: Iterable[str]) -> list[MergeRecord]:
        wanted = set(event_ids)
        return [
            head.merge
            for head in self.profiles.values()
            if head.merge_pending and head.merge and head.merge.event_id in wanted
        ]

    async def discard_views(self, views: Mapping[str, StoredProfile]) -> None:
        self._count("discard_views", views)
        for customer, view in views.items():
            self._discard_view(customer, view)

    def _discard_view(self, customer: str, view: StoredProfile) -> None:
        """Remove that very view (its version and token), as the MongoDB store's delete does."""
        slot = (customer, view.version)
        if slot in self.view_tokens and self.view_tokens[slot] == view.view_token:
            self.views.pop(slot, None)
            self.view_tokens.pop(slot, None)
            self.view_checkpoints.pop(slot, None)

    async def save_views(self, views: Mapping[str, ViewSave]) -> set[str]:
        self._count("save_views", views)
        lost = set()
        for customer, save in views.items():
            slot = (customer, save.base.version + 1)
            if slot in self.views:
                lost.add(customer)
                continue
            self.views[slot] = save.view.model_copy(deep=True)
            self.view_tokens[slot] = save.token
            if save.checkpoints():
                self.view_checkpoints[slot] = (
                    save.checkpoint,
                    save.next_checkpoint,
                    save.earlier_checkpoints,
                )
            self._discard_view(customer, save.base)  # the view it superseded
        for checkpoint in unnamed_checkpoints(views, lost):
            self.checkpoints.pop(checkpoint, None)
        return lost

    async def checkpoint_view(
        self, checkpoint: Checkpoint, aliases: list[str]
    ) -> ProfileView | None:
        self._count("checkpoint_view", [checkpoint])
        kept = self.checkpoints.get(checkpoint.id)
        return kept[2].model_copy(deep=True) if kept and kept[1] == sorted(aliases) else None

    async def drop_checkpoints(self, ids: Iterable[str]) -> None:
        ids = list(ids)
        self._count("drop_checkpoints", ids)
        for checkpoint in ids:
            self.checkpoints.pop(checkpoint, None)

    async def keep_checkpoint(
        self, customer_id: str, checkpoint: Checkpoint, aliases: list[str], view: ProfileView
    ) -> None:
        self._count("keep_checkpoint", [checkpoint])
        self.checkpoints[checkpoint.id] = (customer_id, sorted(aliases), view.model_copy(deep=True))
        self.checkpoints_kept_at[checkpoint.id] = datetime.now(UTC)

    async def checkpoints_kept_before(self, cutoff: datetime, at_most: int) -> dict[str, set[str]]:
        self._count("checkpoints_kept_before", [cutoff])
        old = [c for c in self.checkpoints if self.checkpoints_kept_at.get(c, NEVER) < cutoff]
        kept: dict[str, set[str]] = defaultdict(set)
        for checkpoint in old[:at_most]:  # as MongoDB's limit: of those matched
            kept[self.checkpoints[checkpoint][0]].add(checkpoint)
        return dict(kept)

    # journey
    async def insert_entries(self, entries: list[JourneyEntry]) -> set[str]:
        self._count("insert_entries", entries)
        duplicates = {entry.id for entry in entries if entry.id in self.journey}
        for entry in entries:
            if entry.id not in self.journey:
                self.journey[entry.id] = entry
                self.pending.add(entry.id)
        return duplicates

    async def unfinished_entries(self, event_ids: Iterable[str]) -> list[JourneyEntry]:
        return [self.journey[e] for e in dict.fromkeys(event_ids) if e in self.pending]

    async def entries_of(self, profiles: Iterable[StoredProfile]) -> dict[str, list[JourneyEntry]]:
        owner = {alias: p.customer_id for p in profiles for alias in p.aliases}
        self._count("entries_of", owner)
        return self._journeys(owner)

    async def entries_within(
        self, profiles: Iterable[StoredProfile], at_most: float
    ) -> dict[str, list[JourneyEntry]] | None:
        owner = {alias: p.customer_id for p in profiles for alias in p.aliases}
        self._count("entries_within", owner)
        journeys = self._journeys(owner)
        return journeys if sum(map(len, journeys.values())) <= at_most else None

    def _journeys(self, owner: Mapping[str, str]) -> dict[str, list[JourneyEntry]]:
        """Each owner's entries, its aliases' included (alias -> owner)."""
        journeys: dict[str, list[JourneyEntry]] = {c: [] for c in set(owner.values())}
        for entry in self.journey.values():
            if entry.customer_id in owner:
                journeys[owner[entry.customer_id]].append(entry)
        return journeys

    async def in_order(self, aliases: list[str]) -> AsyncGenerator[JourneyEntry, None]:
        self._count("in_order", aliases)
        wanted = set(aliases)
        journey = [entry for entry in self.journey.values() if entry.customer_id in wanted]
        for entry in sorted(journey, key=JourneyEntry.sort_key):
            yield entry

    async def entries_after(
        self, aliases: list[str], after: tuple[datetime, str], at_most: int
    ) -> list[JourneyEntry] | None:
        self._count("entries_after", aliases)
        wanted = set(aliases)
        found = [
            entry
            for entry in self.journey.values()
            if entry.customer_id in wanted and entry.sort_key() > after
        ]
        return sorted(found, key=JourneyEntry.sort_key) if len(found) <= at_most else None

    async def order_entries(
        self, order_ids: Iterable[str], besides: set[str]
    ) -> list[JourneyEntry]:
        wanted = set(order_ids)
        self._count("order_entries", wanted)
        return [
            entry
            for entry in self.journey.values()
            if entry.type in ORDER_KINDS
            and entry.payload["order_id"] in wanted
            and entry.id not in besides
        ]

    async def settle(self, event_ids: Iterable[str], absorbed: Iterable[str]) -> None:
        self.pending -= set(event_ids)
        for customer in absorbed:
            self.profiles[customer].merge_pending = False

    # erasures
    async def erased_at(self, subjects: Iterable[str]) -> dict[str, datetime]:
        return {subject: self.erased[subject] for subject in subjects if subject in self.erased}

    async def profiles_erased(self, customer_ids: Iterable[str]) -> set[str]:
        """None: the in-memory store records no erasures of profiles."""
        return set()

    async def erase_created(self, customer_ids: Iterable[str]) -> None:
        erased = set(customer_ids)
        self._count("erase_created", erased)
        for customer in erased:
            self.profiles.pop(customer, None)
        for checkpoint in [i for i, kept in self.checkpoints.items() if erased & set(kept[1])]:
            del self.checkpoints[checkpoint]
        for key in [key for key, owner in self.identities.items() if owner in erased]:
            del self.identities[key]

    async def forget_erased(
        self,
        customer_ids: Iterable[str],
        subject: Callable[[str], str],
        published: Mapping[str, Sequence[str]] | None = None,
    ) -> set[str]:
        """Nothing to erase again: the in-memory store records no erasures of profiles."""
        return set()

    # conflicts
    async def record_conflicts(self, conflicts: list[tuple[Conflict, str]]) -> set[str]:
        """Nothing here decides a merge request, so none is ever decided."""
        for conflict_id, (conflict, event_id) in zip(
            conflict_ids(conflicts), conflicts, strict=True
        ):
            self.conflicts[conflict_id] = {
                "reason": conflict.reason,
                "kind": conflict.kind,
                "customer_ids": list(conflict.customer_ids),
                "event_id": event_id,
            }
        return set()

    async def merge_requests_raised_by(self, event_ids: Iterable[str]) -> dict[str, list[str]]:
        raised_by = set(event_ids)
        return {
            conflict_id: list(conflict["customer_ids"])
            for conflict_id, conflict in self.conflicts.items()
            if conflict["event_id"] in raised_by and conflict["reason"] in MERGE_REQUEST_REASONS
        }


def _fresh(view: ProfileView | None) -> ProfileView | None:
    """A copy, as a database returns: callers may change what they loaded."""
    return view.model_copy(deep=True) if view is not None else None
