"""Un-merge: which journey entries and identifiers go back to the profile being split off.

Entries keep the customer id they were stored under, so what was recorded before a merge still
says whose it was. What came after is decided by its identifiers, replayed in the order they
were recorded, the way identity resolution first decided them: an entry carrying only the
restored side's identifiers is theirs, and any new identifier it brought goes with it; one
carrying only the kept side's stays. An entry carrying both sides' identifiers (the event that
linked them, or a later one like it) stays on the kept profile and is reported as ambiguous: a
person decides, never a guess.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


class Replayed(Protocol):
    """What a split replays of a journey entry: a `JourneyEntry`, or an `EntryOutline`."""

    @property
    def id(self) -> str: ...
    @property
    def customer_id(self) -> str: ...
    @property
    def recorded_at(self) -> datetime: ...
    @property
    def occurred_at(self) -> datetime: ...
    @property
    def identifiers(self) -> Mapping[str, str]: ...


@dataclass(frozen=True, slots=True)
class EntryOutline:
    """A journey entry as far as a split reads it: whose it was stored as, when, and with which
    identifiers. Never its payload: a walk-in account's journey, whole, is hundreds of MB."""

    id: str
    customer_id: str
    recorded_at: datetime
    occurred_at: datetime
    identifiers: Mapping[str, str]


@dataclass(frozen=True)
class SplitSeeds:
    """What is known of each side before the entries are replayed."""

    restored_aliases: frozenset[str]
    """Profile ids whose entries are the restored side's (the absorbed profile and its aliases)."""
    restored_keys: frozenset[str]
    kept_keys: frozenset[str]
    owned: frozenset[str]
    """Identifier keys the merged profile holds: the only ones that can decide or move."""
    fixed_before: datetime | None = None
    """Entries recorded before this (the merge) are decided by the id they were stored under."""
    linking_event: str | None = None
    """The event that merged the two: it stays on the kept profile and teaches neither side."""


@dataclass
class SplitPlan:
    restored_entries: list[str] = field(default_factory=list)
    restored_keys: set[str] = field(default_factory=set)
    kept_keys: set[str] = field(default_factory=set)
    ambiguous: list[str] = field(default_factory=list)
    """Entries carrying identifiers of both sides: kept, listed for a person to look at."""


def plan_split(entries: Iterable[Replayed], seeds: SplitSeeds) -> SplitPlan:
    """Replay the merged journey in recorded order and say which entries and keys go back."""
    plan = SplitPlan(
        restored_keys=set(seeds.restored_keys & seeds.owned),
        kept_keys=set(seeds.kept_keys & seeds.owned) - seeds.restored_keys,
    )
    for entry in sorted(entries, key=lambda e: (e.recorded_at, e.occurred_at, e.id)):
        if entry.id == seeds.linking_event:
            continue
        keys = {f"{kind}:{value}" for kind, value in entry.identifiers.items()} & seeds.owned
        restored = _side(entry, keys, seeds, plan)
        if restored:
            plan.restored_entries.append(entry.id)
            plan.restored_keys |= keys - plan.kept_keys
        else:
            plan.kept_keys |= keys - plan.restored_keys
    return plan


def _side(entry: Replayed, keys: set[str], seeds: SplitSeeds, plan: SplitPlan) -> bool:
    """True when the entry is the restored side's."""
    if entry.customer_id in seeds.restored_aliases:
        return True
    if seeds.fixed_before is not None and entry.recorded_at < seeds.fixed_before:
        return False
    theirs, ours = keys & plan.restored_keys, keys & plan.kept_keys
    if theirs and ours:
        plan.ambiguous.append(entry.id)
        return False
    return bool(theirs)
