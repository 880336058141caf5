"""Identity resolution rules: which profile an event belongs to, and when two profiles are one.

Pure decisions over what the store already knows; `service/resolver.py` does the I/O and makes the
decisions stick with atomic operations. The rules, as users rely on them:

- Blocked placeholder values (`0`, `null`, `test@test.com`, all-zero phones, ...) are never
  identifiers, so one junk value cannot glue thousands of customers into one profile.
- An event whose identifiers belong to several profiles merges them; the profile created first
  survives (creation time never changes, so every instance picks the same survivor and merges
  can never form a cycle).
- Weak identifiers (anonymous and device ids) attach to a profile, and an anonymous profile joins
  a known one through them (the "identify" moment), but they never bridge two *known* profiles.
- Merge protection: profiles holding different values of a unique kind (two loyalty cards) are
  never merged; the conflict is recorded instead. Caps bound identifiers per kind and merges.
- Trust: an event from an unverified source (a public browser write key) never merges two known
  profiles. Anyone can send one, so it would let a stranger join two people's data; the event goes
  to the profile of its strongest identifier and an `unverified_merge` conflict records the
  merge it asked for, for a person to confirm. It may still join anonymous profiles to a known one,
  but it adds no new strong identifier to a known profile (`unverified_attach`, also a request).
- A `claimed` event (an authenticated till whose clerk typed what the customer said) is taken
  as an unverified one here: its source vouches for the sale, not for whose card number or
  phone it was told.
- Kept apart: profiles a person split (`service/splits.py`) are never merged again by an event,
  verified or not; the merge becomes a request for a person, like an unverified one.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from hilo.contract import WEAK_KINDS, IdentifierKind

DEFAULT_BLOCKED_VALUES = frozenset(
    {
        "0",
        "-1",
        "null",
        "none",
        "nil",
        "undefined",
        "nan",
        "n/a",
        "na",
        "-",
        "unknown",
        "anonymous",
        "anon",
        "guest",
        "test",
        "tbd",
        "default",
        "[object object]",
        "test@test.com",
        "test@example.com",
        "noreply@example.com",
        "a@a.com",
        "email@email.com",
        "no@email.com",
        "none@none.com",
        "null@null.com",
        "example@example.com",
    }
)
DEFAULT_MAX_PER_KIND: Mapping[IdentifierKind, int] = {
    IdentifierKind.CUSTOMER_ID: 1,
    IdentifierKind.LOYALTY_ID: 1,
    IdentifierKind.EMAIL: 5,
    IdentifierKind.PHONE: 5,
    IdentifierKind.WHATSAPP_ID: 3,
    IdentifierKind.WHATSAPP_USER_ID: 3,
    IdentifierKind.MESSENGER_PSID: 3,
    IdentifierKind.INSTAGRAM_SID: 3,
    IdentifierKind.ANONYMOUS_ID: 100,
    IdentifierKind.DEVICE_ID: 20,
}
_REPEATED_DIGITS = re.compile(r"^\+?\d{1,3}?(\d)\1{5,}$")
_SEQUENTIAL = ("1234567890", "0123456789")


def identity_key(kind: IdentifierKind, value: str) -> str:
    """Store key of an identifier: `kind:value` (values are already normalised)."""
    return f"{kind.value}:{value}"


def split_key(key: str) -> tuple[IdentifierKind, str]:
    kind, value = key.split(":", 1)
    return IdentifierKind(kind), value


@dataclass(frozen=True)
class IdentityPolicy:
    """Configurable merge protection, caps and blocked values."""

    unique_kinds: frozenset[IdentifierKind] = frozenset(
        {IdentifierKind.CUSTOMER_ID, IdentifierKind.LOYALTY_ID}
    )
    max_per_kind: Mapping[IdentifierKind, int] = field(default_factory=lambda: DEFAULT_MAX_PER_KIND)
    max_merges: int = 50
    blocked_values: frozenset[str] = DEFAULT_BLOCKED_VALUES
    verified_only_traits: frozenset[str] = frozenset({"loyalty_tier"})
    """Traits an unverified event may not set (`domain.journey.new_entry`)."""

    def cap(self, kind: IdentifierKind) -> int:
        return 1 if kind in self.unique_kinds else self.max_per_kind.get(kind, 10)

    def usable(self, kind: IdentifierKind, value: str) -> bool:
        """False for placeholders that many unrelated customers share."""
        lowered = value.strip().lower()
        if lowered in self.blocked_values:
            return False
        if kind is IdentifierKind.PHONE:
            digits = lowered.lstrip("+")
            return not (_REPEATED_DIGITS.match(lowered) or any(s in digits for s in _SEQUENTIAL))
        return True

    def usable_keys(self, pairs: Iterable[tuple[IdentifierKind, str]]) -> list[str]:
        """The event's identifiers worth resolving, strongest first."""
        return [identity_key(kind, value) for kind, value in pairs if self.usable(kind, value)]


@dataclass(frozen=True)
class ProfileFacts:
    """What resolution needs to know about an existing profile."""

    customer_id: str
    identifiers: frozenset[str]
    created_at: datetime
    merge_count: int
    kept_apart: frozenset[str] = frozenset()
    """Profiles a person split from this one: never merged with it again without a person."""

    @property
    def known(self) -> bool:
        """Holds at least one identifier that is not weak."""
        return any(split_key(key)[0] not in WEAK_KINDS for key in self.identifiers)

    def values_of(self, kind: IdentifierKind) -> set[str]:
        return {key for key in self.identifiers if key.startswith(kind.value + ":")}


@dataclass(frozen=True)
class Conflict:
    reason: str
    kind: str | None
    customer_ids: tuple[str, ...]
    keys: tuple[str, ...] = ()
    """For a merge request (`unverified_merge`, `kept_apart`): the identifiers that asked for it
    (what confirming merges by)."""


def conflict_ids(conflicts: Iterable[tuple[Conflict, str]]) -> list[str]:
    """The stored id of each (conflict, event id): the same on every redelivery of the event,
    so a conflict is recorded (and a merge request opened) once."""
    seen: Counter[tuple[str, str, str | None]] = Counter()
    ids = []
    for conflict, event_id in conflicts:
        identity = (event_id, conflict.reason, conflict.kind)
        seen[identity] += 1
        name = f"{event_id}|{conflict.reason}|{conflict.kind or ''}|{seen[identity]}"
        ids.append(str(uuid.uuid5(uuid.NAMESPACE_OID, name)))
    return ids


KEPT_APART = "kept_apart"
"""A merge of profiles a person split: it waits for a person again, whatever the source."""
UNVERIFIED_MERGE = "unverified_merge"
UNVERIFIED_ATTACH = "unverified_attach"
"""A new strong identifier an unverified event named for a known profile: held for a person."""
MERGE_REQUEST_REASONS = frozenset({UNVERIFIED_MERGE, UNVERIFIED_ATTACH, KEPT_APART})


@dataclass
class Decision:
    """Where an event goes: an existing profile (possibly absorbing others) or a new one."""

    target: str | None
    absorb: list[str] = field(default_factory=list)
    claim: list[str] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)


def decide(
    keys: list[str],
    owners: Mapping[str, str],
    facts: Mapping[str, ProfileFacts],
    policy: IdentityPolicy,
    *,
    verified: bool = True,
) -> Decision:
    """Decide for one event with usable `keys` (strongest first), given current owners."""
    linked = _mergeable(keys, owners, facts)
    conflict = _merge_conflict(keys, linked, facts, policy) if linked else None
    if conflict is None and not verified:
        conflict = _unverified_merge(keys, linked, facts)
    if conflict is not None:
        # Different people share something: the strongest identifier says whose event it is.
        target = _strongest_owner(keys, owners, linked)
        profiles = [facts[target]] if target is not None else []
        claim, more = _claims(keys, owners, profiles, policy, target)
        decision = Decision(target=target, claim=claim, conflicts=[conflict, *more])
    else:
        survivor = min(linked, key=lambda c: (facts[c].created_at, c)) if linked else None
        claim, conflicts = _claims(keys, owners, [facts[c] for c in linked], policy, survivor)
        absorb = sorted(c for c in linked if c != survivor)
        decision = Decision(target=survivor, absorb=absorb, claim=claim, conflicts=conflicts)
    return decision if verified else _withhold_strong_claims(decision, keys, facts)


def _withhold_strong_claims(
    decision: Decision, keys: list[str], facts: Mapping[str, ProfileFacts]
) -> Decision:
    """An unverified event adds no email, phone or other strong identifier to a known profile.

    Otherwise a stranger with the public write key could put their own phone on someone's
    profile by naming that person's email, and their later messages would land there. The new
    identifiers wait in an `unverified_attach` merge request; weak ones (anonymous and device
    ids) still attach, which is what joins browsing history at sign-in.
    """
    target = decision.target
    joined = [c for c in (target, *decision.absorb) if c is not None]
    if target is None or not any(facts[c].known for c in joined):
        return decision
    strong = [key for key in decision.claim if split_key(key)[0] not in WEAK_KINDS]
    if not strong:
        return decision
    decision.claim = [key for key in decision.claim if key not in strong]
    decision.conflicts.append(Conflict(UNVERIFIED_ATTACH, None, (target,), tuple(keys)))
    return decision


def _mergeable(
    keys: list[str], owners: Mapping[str, str], facts: Mapping[str, ProfileFacts]
) -> list[str]:
    """Profiles this event may bind together: weak links never bridge two known profiles, nor
    give a known one a second identifier of a kind it holds (a new email seen on a known
    person's tablet is someone else's as likely as theirs: it starts a profile, whoever was seen
    first, and the tablet stays shared). A kind it lacks attaches: the account id of a sign-in
    on the browser a newsletter form made known."""
    strong = _unique(owners[k] for k in keys if k in owners and split_key(k)[0] not in WEAK_KINDS)
    weak = _unique(owners[k] for k in keys if k in owners and split_key(k)[0] in WEAK_KINDS)
    new_kinds = {
        split_key(k)[0] for k in keys if k not in owners and split_key(k)[0] not in WEAK_KINDS
    }
    welcoming = [c for c in weak if facts[c].known and not _holds_any(facts[c], new_kinds)]
    anchors = strong or welcoming[:1]
    unknown = [c for c in weak if not facts[c].known and c not in anchors]
    if not anchors:
        return unknown
    return _unique([*anchors, *unknown])


def _holds_any(facts: ProfileFacts, kinds: set[IdentifierKind]) -> bool:
    return any(facts.values_of(kind) for kind in kinds)


def _merge_conflict(
    keys: list[str], linked: list[str], facts: Mapping[str, ProfileFacts], policy: IdentityPolicy
) -> Conflict | None:
    if any(facts[customer].kept_apart & set(linked) for customer in linked):
        return Conflict(KEPT_APART, None, tuple(sorted(linked)), tuple(keys))
    for kind in sorted(policy.unique_kinds):
        values = {k for k in keys if split_key(k)[0] is kind}
        for customer in linked:
            values |= facts[customer].values_of(kind)
        if len(values) > 1:
            return Conflict("unique_identifier", kind.value, tuple(sorted(linked)))
    merges = sum(facts[c].merge_count + 1 for c in linked) - 1
    if len(linked) > 1 and merges > policy.max_merges:
        return Conflict("merge_cap", None, tuple(sorted(linked)))
    return None


def _unverified_merge(
    keys: list[str], linked: list[str], facts: Mapping[str, ProfileFacts]
) -> Conflict | None:
    """The merge an unverified event asks for, when it would join two known profiles."""
    known = [c for c in linked if facts[c].known]
    if len(known) < 2:
        return None
    return Conflict(UNVERIFIED_MERGE, None, tuple(sorted(linked)), tuple(keys))


def _strongest_owner(keys: list[str], owners: Mapping[str, str], linked: list[str]) -> str | None:
    """Owner of the event's strongest identifier; None (a new profile) when nobody owns it."""
    for key in keys:
        if key not in owners:
            return None
        if owners[key] in linked:
            return owners[key]
    return None


def _claims(
    keys: list[str],
    owners: Mapping[str, str],
    profiles: list[ProfileFacts],
    policy: IdentityPolicy,
    target: str | None,
) -> tuple[list[str], list[Conflict]]:
    """Unowned identifiers the target takes, within caps and unique kinds."""
    held: dict[IdentifierKind, set[str]] = {}
    for profile in profiles:
        for key in profile.identifiers:
            held.setdefault(split_key(key)[0], set()).add(key)
    claim: list[str] = []
    conflicts: list[Conflict] = []
    for key in keys:
        if key in owners:
            continue
        kind = split_key(key)[0]
        current = held.setdefault(kind, set())
        if len(current) >= policy.cap(kind):
            reason = "unique_identifier" if kind in policy.unique_kinds else "identifier_cap"
            conflicts.append(Conflict(reason, kind.value, (target,) if target else ()))
            continue
        current.add(key)
        claim.append(key)
    return claim, conflicts


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
