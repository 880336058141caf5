"""What the service layer needs from storage, and nothing about how it is stored.

`adapters.store.ProfileStore` implements it on MongoDB; `adapters.memory.InMemoryStore` implements
it in a few dictionaries so the resolver and the pipeline can be unit-tested in milliseconds. The
promises each method makes under concurrency (claims succeed once, a merge is decided once, a
view version is inserted once) are the port's contract: both implementations keep them.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Protocol

from customer_profile.domain.identity import Conflict, ProfileFacts
from customer_profile.domain.journey import JourneyEntry
from customer_profile.domain.profile import ProfileView
from hilo.kafka import RecordPublisher


class Contention(Exception):
    """Other writers won the same race (claims, merges, view versions) on every attempt a batch
    makes: they are busy with these customers right now. Retried later, as an outage is, and
    never a reason to dead-letter a record, whose entry may already be stored."""


class ErasedClaimsMet(Exception):
    """Identifiers were still claimed for a profile an erasure deleted (the erasure is under way,
    or a crash left the claims): they are released, and the events that carry them must be
    checked against erasures again before anything is decided for them."""

    partial: object = None
    """Met in a later round of a resolution: what the earlier rounds decided and claimed (the
    resolver's `Resolution`), so what they made for an event found erased can be taken back."""


class ErasureUnderWay(ErasedClaimsMet):
    """An owner's profile is held by an erasure that has not deleted it yet (milliseconds, unless
    the erasure stopped in between: a recorded one is completed in the background, a hold no
    recorded erasure names is taken back after `HOLD_EXPIRY`). Nothing is released; the batch's
    events are checked against erasures again, and a batch that still meets the hold is
    retried like one that met a database outage, never dead-lettered."""


class AliasChainTooLong(Exception):
    """A `merged_into` chain longer than `MAX_ALIAS_DEPTH`: a cycle, which no merge makes. The
    records that met it are dead-lettered saying so, not written to a profile merged away."""


MAX_ALIAS_DEPTH = 1_000
"""Profiles a `merged_into` chain is followed through. A merge into an older profile adds one,
so real chains stay short; 20, as it was, could be outgrown by a customer merged often, whose
events then went to a profile merged away."""


HOLD_EXPIRY = timedelta(seconds=120)
"""A hold on a profile that no recorded erasure names after this long was left by an erasure
request that died between holding the profile and recording the erasure: it is taken back."""


RESERVATION_EXPIRY = timedelta(seconds=120)
"""A survivor's reservation (`Store.reserve`) lives milliseconds, from before its merge is
decided until the merge is finished; one this old was left by an instance that stopped in
between. It stops counting against attachments, and another merge may take it over once no
unfinished merge of its events needs it."""


CLAIM_CLOCK_SKEW = timedelta(seconds=30)
"""How far apart the clocks of instances may be: a claim stamped up to this long before a
batch's check of erasures may have been made after it (`IdentityState.fresh`)."""


@dataclass(frozen=True)
class IdentityState:
    """What identity resolution reads of a batch's identifiers."""

    owners: dict[str, str]
    """identifier key -> canonical customer id, for the keys a profile owns"""
    facts: dict[str, ProfileFacts]
    fresh: frozenset[str] = frozenset()
    """Owned keys claimed since the batch's check of erasures (`CLAIM_CLOCK_SKEW` before it). An
    erasure the check did not see frees the person's keys; one claimed again since is fresh. So
    the events with unowned or fresh keys are checked against erasures again once resolved
    (`Resolution.recheck`)."""


@dataclass(frozen=True)
class Checkpoint:
    """A long journey's view as the journey implied it through one entry, kept
    (`Store.keep_checkpoint`) so that a late event after that entry folds only what came since
    (`service.derivation`). Named by the stored view it serves: a view saved without one (a
    merge, a split, any other writer) leaves the next derivation to start from the beginning."""

    id: str
    at: datetime
    entry_id: str

    def key(self) -> tuple[datetime, str]:
        """The last entry folded into it, as `JourneyEntry.sort_key` orders entries."""
        return (self.at, self.entry_id)


@dataclass(frozen=True)
class StoredProfile:
    customer_id: str
    version: int
    created_at: datetime
    identifiers: list[str]
    merged_from: list[str]
    view: ProfileView | None
    kept_apart: list[str] = field(default_factory=list)
    view_token: str | None = None
    """The stored view's own token: which of the views ever stored at this version it is."""
    view_key: str | None = None
    """Where the store keeps the view, when not where it keeps the views it stores now (one
    stored by an earlier release); None otherwise."""
    checkpoint: Checkpoint | None = None
    """The checkpoint the stored view names: one is kept for long journeys only."""
    next_checkpoint: Checkpoint | None = None
    """A younger checkpoint the stored view names, kept as the journey grew, that takes the
    first one's place once it is far enough behind the view's last entry
    (`service.derivation.fold_on_top`)."""
    earlier_checkpoints: tuple[Checkpoint, ...] = ()
    """Older checkpoints the stored view names, oldest first, about one per doubling of the
    time back (`service.derivation.ladder`): those `checkpoint` took the place of."""

    def checkpoints(self) -> set[str]:
        """The ids of the checkpoints its stored view names."""
        return _named(self.checkpoint, self.next_checkpoint, *self.earlier_checkpoints)

    def facts(self) -> ProfileFacts:
        return ProfileFacts(
            customer_id=self.customer_id,
            identifiers=frozenset(self.identifiers),
            created_at=self.created_at,
            merge_count=len(self.merged_from),
            kept_apart=frozenset(self.kept_apart),
        )

    @property
    def aliases(self) -> list[str]:
        return [self.customer_id, *self.merged_from]


@dataclass(frozen=True)
class MergeRecord:
    """A merge as stored on the absorbed profile: enough to finish and publish it again."""

    survivor: str
    absorbed: str
    event_id: str
    at: datetime


def new_view_token() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class ViewSave:
    """A view to store as the version after `base`'s, superseding `base`'s stored view.

    The token tells this view apart from any other ever stored at the same version: a version's
    slot is free again once the view in it is superseded, so a superseded view is deleted by its
    token, never by its version alone (which could remove a later writer's view in that slot).
    """

    base: StoredProfile
    view: ProfileView
    token: str = field(default_factory=new_view_token)
    checkpoint: Checkpoint | None = None
    """The checkpoint this view names: `base`'s when the view folded only later entries on
    top of it, a new one a derivation kept, or none (whoever saves without saying starts the
    next derivation from the beginning, which is always right)."""
    next_checkpoint: Checkpoint | None = None
    """The younger checkpoint this view names (see `StoredProfile.next_checkpoint`)."""
    earlier_checkpoints: tuple[Checkpoint, ...] = ()
    """The older ones it names (see `StoredProfile.earlier_checkpoints`)."""

    def saved(self) -> StoredProfile:
        """The profile as it stands once this save succeeded."""
        return replace(
            self.base,
            version=self.base.version + 1,
            view=self.view,
            view_token=self.token,
            view_key=None,
            checkpoint=self.checkpoint,
            next_checkpoint=self.next_checkpoint,
            earlier_checkpoints=self.earlier_checkpoints,
        )

    def checkpoints(self) -> set[str]:
        """The ids of the checkpoints this view names (`StoredProfile.checkpoints` once saved)."""
        return _named(self.checkpoint, self.next_checkpoint, *self.earlier_checkpoints)

    def checkpoints_superseded(self) -> set[str]:
        """The checkpoints only `base` named, which this save leaves unnamed (once it won)."""
        return self.base.checkpoints() - self.checkpoints()

    def checkpoints_of_its_own(self) -> set[str]:
        """The checkpoints this save names and `base` did not: kept for it alone, and unnamed
        when the save lost."""
        return self.checkpoints() - self.base.checkpoints()


def _named(*checkpoints: Checkpoint | None) -> set[str]:
    return {checkpoint.id for checkpoint in checkpoints if checkpoint is not None}


def unnamed_checkpoints(views: Mapping[str, ViewSave], lost: set[str]) -> list[str]:
    """The checkpoints no stored view names once these saves are done (`lost`: those that lost),
    for the store to delete: those a winner stopped naming, those a loser kept for itself."""
    return sorted(
        checkpoint
        for customer, save in views.items()
        for checkpoint in (
            save.checkpoints_of_its_own() if customer in lost else save.checkpoints_superseded()
        )
    )


@dataclass(frozen=True)
class HeadState:
    """Where a profile stands now: its view version, or the profile it was merged into."""

    version: int
    merged_into: str | None
    stored: frozenset[str | None] = frozenset()
    """The tokens of every view stored: normally the current one alone (and, for a moment, the
    one it superseded). A lower view still stored beside a higher one that did not supersede it
    is how a save that overtook nothing shows (`publish_overtaken`)."""


Publisher = RecordPublisher
"""Writes records; returns once Kafka acknowledged every one (`hilo.kafka.KafkaPublisher`)."""


class Store(Protocol):
    # identities
    async def owners(self, keys: Iterable[str]) -> dict[str, str]:
        """Identifier key -> canonical (non-merged) customer id, for the keys that have one."""

    async def identity_state(self, keys: Iterable[str], fresh_since: datetime) -> IdentityState:
        """`owners` of these keys and the facts of those owners, read together (one read of
        the owners' heads serves both). A profile is created after its claims: an owner found
        without one gets it made from its claims here, unless an erasure deleted it: then its
        claims are released and `ErasedClaimsMet` raised. An owner an erasure holds (about to be
        deleted) raises `ErasureUnderWay`."""

    async def canonical(self, customer_ids: Iterable[str]) -> dict[str, str]:
        """Each id mapped to the profile that answers for it after merges."""

    async def claim(self, claims: Mapping[str, str]) -> dict[str, str]:
        """Atomically claim unowned identifiers; the owner each key ended with."""

    async def release(self, key: str, customer_id: str) -> None: ...

    async def release_claims(self, claims: Mapping[str, str]) -> None:
        """Take these identifiers (key -> the profile they were claimed for) off that profile
        and the one it was merged into since, then release their claims: they were claimed for
        an event found to be an erased person's, or for a profile merged away before they were
        put on it."""

    # profiles
    async def create_profiles(self, identifiers: Mapping[str, Sequence[str]]) -> set[str]:
        """Create each new profile holding its claimed identifiers; the ids that existed
        already (their identifiers are then attached)."""

    async def attach(self, attachments: Mapping[str, str], caps: Mapping[str, int]) -> set[str]:
        """Add claimed identifiers within per-kind caps, never to a profile merged away; the
        identifiers held afterwards."""

    async def load(self, customer_ids: Iterable[str]) -> dict[str, StoredProfile]: ...

    async def load_canonical(
        self, customer_ids: Iterable[str]
    ) -> tuple[dict[str, str], dict[str, StoredProfile]]:
        """`canonical` of these ids, and the survivors' profiles, from one read of the heads
        when none was merged away."""

    async def head_states(self, customer_ids: Iterable[str]) -> dict[str, HeadState]: ...

    async def reserve(self, survivor: str, keys: Sequence[str], event_id: str, token: str) -> bool:
        """Reserve on the survivor the values of kinds a person has one of (`keys`) that a merge
        into it is about to bring, if it still holds none of their kinds and no other merge has
        a reservation there; whether it did. Until released, `attach` counts them as held: two
        instances can no longer each give one survivor a different loyalty id. Reservations of
        one `token` (one resolution) add up; one of an earlier attempt of `event_id` is taken
        over."""

    async def release_reservations(self, survivors: Iterable[str], token: str) -> None:
        """Drop `token`'s reservations on survivors no merge of it was taken into (a finished
        merge drops its survivor's: `finish_merges`)."""

    async def merge(
        self,
        survivor: str,
        absorbed: list[str],
        event_id: str,
        at: datetime,
        lacking: Mapping[str, Iterable[str]] | None = None,
    ) -> list[str]:
        """Decide each merge once, recorded as unfinished; the absorbed profiles this call took
        (never one an erasure holds, nor one that has since got a value of a kind `lacking`
        says it had none of)."""

    async def finish_merges(self, merges: list[MergeRecord]) -> None:
        """Move identities and aliases to the survivors, in the order the merges were made, and
        drop the survivors' reservations their events made (`reserve`)."""

    async def unfinished_merges(self, event_ids: Iterable[str]) -> list[MergeRecord]: ...

    async def discard_views(self, views: Mapping[str, StoredProfile]) -> None:
        """Delete these profiles' views, each only while that very view (its token) is stored:
        a writer removes its own view once it found it overtaken, never another's."""

    async def save_views(self, views: Mapping[str, ViewSave]) -> set[str]:
        """Store each view as the next version; the customers whose save lost (another writer
        stored that version first). A profile merged away meanwhile is saved all the same: the
        read after publishing finds it (`pipeline.publish_overtaken`); a rebuild, which publishes
        nothing, is the only writer of its database."""

    # journey
    async def insert_entries(self, entries: list[JourneyEntry]) -> set[str]:
        """Store entries once, pending; the ids that were stored already."""

    async def unfinished_entries(self, event_ids: Iterable[str]) -> list[JourneyEntry]: ...

    async def entries_of(self, profiles: Iterable[StoredProfile]) -> dict[str, list[JourneyEntry]]:
        """Whole journeys of several customers, aliases included."""

    async def entries_within(
        self, profiles: Iterable[StoredProfile], at_most: float
    ) -> dict[str, list[JourneyEntry]] | None:
        """Whole journeys of several customers, or None if they hold more than `at_most`
        entries together (read no further than that)."""

    def in_order(self, aliases: list[str]) -> AsyncGenerator[JourneyEntry, None]:
        """A journey's entries (all of these aliases') in event-time order, ties by id, read a
        bounded batch at a time."""

    async def entries_after(
        self, aliases: list[str], after: tuple[datetime, str], at_most: int
    ) -> list[JourneyEntry] | None:
        """A journey's entries after `after` (a `JourneyEntry.sort_key`), in that order; None if
        there are more than `at_most` (read no further)."""

    async def checkpoint_view(
        self, checkpoint: Checkpoint, aliases: list[str]
    ) -> ProfileView | None:
        """The view kept as `checkpoint`, if it is still kept and was folded from exactly these
        aliases' journeys."""

    async def keep_checkpoint(
        self, customer_id: str, checkpoint: Checkpoint, aliases: list[str], view: ProfileView
    ) -> None:
        """Keep `view`, the journey of these aliases folded through `checkpoint`'s entry:
        personal data, as the view is, which an erasure of the customer deletes."""

    async def drop_checkpoints(self, ids: Iterable[str]) -> None:
        """Delete these checkpoints: no stored view names them any more."""

    async def checkpoints_kept_before(self, cutoff: datetime, at_most: int) -> dict[str, set[str]]:
        """The ids of at most `at_most` checkpoints kept before `cutoff` (or by a release that
        did not say when), by the profile each was kept for."""

    async def order_entries(
        self, order_ids: Iterable[str], besides: set[str]
    ) -> list[JourneyEntry]:
        """The order entries of these order ids, any customer's, except the events `besides`."""

    async def settle(self, event_ids: Iterable[str], absorbed: Iterable[str]) -> None: ...

    # erasures
    async def erased_at(self, subjects: Iterable[str]) -> dict[str, datetime]:
        """Subject (`hilo.sealing`) -> when it was last erased, for the subjects that were."""

    async def profiles_erased(self, customer_ids: Iterable[str]) -> set[str]:
        """Of these profile ids, those an erasure named."""

    async def erase_created(self, customer_ids: Iterable[str]) -> None:
        """Erase profiles a batch has just created for events it then found erased: the
        person's erasure deleted their claims after the batch's first check."""

    async def forget_erased(
        self,
        customer_ids: Iterable[str],
        subject: Callable[[str], str],
        published: Mapping[str, Sequence[str]] | None = None,
    ) -> set[str]:
        """Erase again, whole and with every profile merged into them, those of these profiles
        an erasure names: a writer wrote for them (or named them in a merge request) after the
        erasure began, so what it wrote outlived the erasure. A profile or identifier it joined
        to the person is added to their erasure (identifiers by `subject`, `hilo.sealing`), and
        a merge request it published naming them (`published`: request id -> profiles named)
        is withdrawn again after it; the erasure is completed again. Those erased."""

    # conflicts
    async def record_conflicts(self, conflicts: list[tuple[Conflict, str]]) -> set[str]:
        """Store them; the ids of the merge requests among them already decided by a person."""

    async def merge_requests_raised_by(self, event_ids: Iterable[str]) -> dict[str, list[str]]:
        """Merge request id -> the profiles it names, of the requests these events raised."""
