"""MongoDB persistence of the customer-profile service: the `service.ports.Store` port.

One class per collection (`identities`, `profiles` with `profile_views`, `journey`,
`identity_conflicts`, `profile_checkpoints`, ...) does that collection's queries; this facade
composes them and does what spans several (a merge moves identities; an erasure touches all).

Correctness under several consumer instances comes from the database, never from process-local
locks: an identifier is claimed by an insert on its unique `_id` (one writer wins), a merge marks
the absorbed profile with a conditional update that succeeds once, and a view version is inserted
once.

Every multi-step effect leaves a durable "not finished" mark until its last step is done, so a
redelivered batch can find and finish what a crash interrupted: a journey entry is stored with
no settled marker until its view is saved and its records are published, and an absorbed profile
carries `merge_pending: true` (with the merging event's id) until the merge's identities are moved
and its record published.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection

from customer_profile.adapters.checkpoints import Checkpoints
from customer_profile.adapters.conflicts import ConflictCollection
from customer_profile.adapters.erasures import Erasure, ErasureCollection
from customer_profile.adapters.identities import IdentityCollection
from customer_profile.adapters.journey import JourneyCollection
from customer_profile.adapters.profiles import ProfileCollection
from customer_profile.adapters.splits import Split, SplitCollection
from customer_profile.domain.identity import Conflict
from customer_profile.domain.journey import JourneyEntry
from customer_profile.domain.profile import ProfileView
from customer_profile.domain.split import EntryOutline
from customer_profile.service.ports import (
    HOLD_EXPIRY,
    Checkpoint,
    ErasedClaimsMet,
    ErasureUnderWay,
    HeadState,
    IdentityState,
    MergeRecord,
    StoredProfile,
    ViewSave,
    unnamed_checkpoints,
)
from hilo.mongo import MongoDocument

MAX_ERASURE_HOLDS = 5
"""Survivors an erasure follows in one completion: each is a merge that raced it."""


class ProfileStore:
    """All MongoDB access of the customer-profile service."""

    def __init__(self, client: AsyncMongoClient[MongoDocument], database: str) -> None:
        db = client[database]
        self.client = client
        self._identities = IdentityCollection(db["identities"])
        self._profiles = ProfileCollection(db["profiles"], db["profile_views"])
        self._journey = JourneyCollection(db["journey"], db["journey_settled"])
        self._conflicts = ConflictCollection(db["identity_conflicts"])
        self._erasures = ErasureCollection(db["erasures"], db["erased_identifiers"])
        self._splits = SplitCollection(db["splits"])
        self._checkpoints = Checkpoints(db["profile_checkpoints"])

    # The raw collections, for operations tooling and tests that inspect what is stored.
    @property
    def identities(self) -> AsyncCollection[MongoDocument]:
        return self._identities.collection

    @property
    def profiles(self) -> AsyncCollection[MongoDocument]:
        return self._profiles.profiles

    @property
    def views(self) -> AsyncCollection[MongoDocument]:
        return self._profiles.views

    @property
    def journey(self) -> AsyncCollection[MongoDocument]:
        return self._journey.collection

    @property
    def conflicts(self) -> AsyncCollection[MongoDocument]:
        return self._conflicts.collection

    async def create_indexes(self) -> None:
        """Idempotent: run at every start."""
        await self._identities.create_indexes()
        await self._profiles.create_indexes()
        await self._journey.create_indexes()
        await self._conflicts.create_indexes()
        await self._erasures.create_indexes()
        await self._splits.create_indexes()
        await self._checkpoints.create_indexes()

    async def ping(self) -> None:
        await self.client.admin.command("ping")

    # --- identities -------------------------------------------------------------------------

    async def owners(self, keys: Iterable[str]) -> dict[str, str]:
        """Identifier key -> canonical (non-merged) customer id, for the keys that have one."""
        raw = await self._identities.owners(keys)
        canonical = await self._profiles.canonical(raw.values())
        return {key: canonical[customer] for key, customer in raw.items()}

    async def identity_state(self, keys: Iterable[str], fresh_since: datetime) -> IdentityState:
        """Owners and their facts. A claim whose profile has no head yet (its creator crashed
        between claiming and creating it, or is there right now) gets its head here, from the
        claims that point at it. An owner whose erasure is under way (`hold_for_erasure`) raises
        `ErasedClaimsMet`: its events may be the erased person's. Claims left pointing at an
        erased profile (a crash between a claim and its release) are released instead: the
        erased profile stays gone and the identifier is free for a new one, and
        `ErasedClaimsMet` raised: the events that carry them may have happened before the
        erasure. An owner still without a profile is left out."""
        raw, fresh = await self._identities.owners_and_fresh(keys, fresh_since)
        canonical, facts, holds = await self._profiles.canonical_facts(raw.values())
        if holds:
            if live := await self._live_holds(holds):
                raise ErasureUnderWay(f"{len(live)} profile(s) being erased")
            canonical, facts, _ = await self._profiles.canonical_facts(raw.values())
        headless = {c for c in raw.values() if canonical[c] == c and c not in facts}
        if headless:
            if erased := await self._erasures.profiles_erased(headless):
                await self._identities.erase(sorted(erased))
                raise ErasedClaimsMet(f"claims of {len(erased)} erased profile(s) released")
            held = await self._identities.held_by(headless)
            await self._profiles.heads_for_claims(held)
            canonical, facts, _ = await self._profiles.canonical_facts(raw.values())
        owners = {key: canonical[customer] for key, customer in raw.items()}
        owned = {key: owner for key, owner in owners.items() if owner in facts}
        return IdentityState(owned, facts, frozenset(fresh & owned.keys()))

    async def _live_holds(self, holds: Mapping[str, list[ObjectId]]) -> set[str]:
        """Of these held profiles (profile -> its holds), those an erasure under way holds. A
        hold made more than `HOLD_EXPIRY` ago on a profile no recorded erasure names was left
        by a request that died before recording its erasure: it is taken back, from every
        profile it marked."""
        if not holds:
            return set()
        named = await self._erasures.profiles_erased(holds)
        expired = datetime.now(UTC) - HOLD_EXPIRY
        left = {
            hold
            for customer, held in holds.items()
            if customer not in named
            for hold in held
            if hold.generation_time < expired
        }
        for hold in left:
            await self._profiles.release_hold(hold)
        return {c for c, held in holds.items() if c in named or set(held) - left}

    async def canonical(self, customer_ids: Iterable[str]) -> dict[str, str]:
        return await self._profiles.canonical(customer_ids)

    async def claim(self, claims: Mapping[str, str]) -> dict[str, str]:
        return await self._identities.claim(claims)

    async def release(self, key: str, customer_id: str) -> None:
        await self._identities.release(key, customer_id)

    async def release_claims(self, claims: Mapping[str, str]) -> None:
        """Off the heads first (a profile never lists an identifier it does not own), of the
        profile claimed for and of its survivor: a merge may have moved the claim, and a merge
        finished again copies the absorbed head's identifiers to the survivor."""
        canonical = await self._profiles.canonical(set(claims.values()))
        pairs = {
            (key, customer)
            for key, owner in claims.items()
            for customer in (owner, canonical[owner])
        }
        by_customer: dict[str, list[str]] = {}
        for key, customer in sorted(pairs):
            by_customer.setdefault(customer, []).append(key)
        await self._profiles.drop_identifiers(by_customer)
        await self._identities.release_all(sorted(pairs))

    async def identities_of(self, aliases: list[str]) -> list[str]:
        return await self._identities.of(aliases)

    # --- profiles ---------------------------------------------------------------------------

    async def ensure_profiles(self, customer_ids: Iterable[str]) -> None:
        await self._profiles.ensure_profiles(customer_ids)

    async def create_profiles(self, identifiers: Mapping[str, Sequence[str]]) -> set[str]:
        return await self._profiles.create(identifiers)

    async def attach(self, attachments: Mapping[str, str], caps: Mapping[str, int]) -> set[str]:
        return await self._profiles.attach(attachments, caps)

    async def load(self, customer_ids: Iterable[str]) -> dict[str, StoredProfile]:
        return await self._profiles.load(customer_ids)

    async def identifiers_held(self, customer_ids: Iterable[str]) -> dict[str, list[str]]:
        """The identifier keys each profile holds (its head alone: no view, no alias)."""
        heads = await self._profiles.heads(customer_ids, {"identifiers": 1})
        return {customer: list(head.get("identifiers", [])) for customer, head in heads.items()}

    async def load_canonical(
        self, customer_ids: Iterable[str]
    ) -> tuple[dict[str, str], dict[str, StoredProfile]]:
        return await self._profiles.load_canonical(customer_ids)

    async def head_states(self, customer_ids: Iterable[str]) -> dict[str, HeadState]:
        return await self._profiles.head_states(customer_ids)

    async def get(self, customer_id: str) -> StoredProfile | None:
        """The profile answering for `customer_id`, following merges to the survivor."""
        canonical = (await self.canonical([customer_id]))[customer_id]
        return (await self.load([canonical])).get(canonical)

    async def reserve(self, survivor: str, keys: Sequence[str], event_id: str, token: str) -> bool:
        return await self._profiles.reserve(survivor, keys, event_id, token)

    async def release_reservations(self, survivors: Iterable[str], token: str) -> None:
        await self._profiles.release_reservations(survivors, token)

    async def merge(
        self,
        survivor: str,
        absorbed: list[str],
        event_id: str,
        at: datetime,
        lacking: Mapping[str, Iterable[str]] | None = None,
    ) -> list[str]:
        """Make `absorbed` aliases of `survivor`; return those taken (others merged elsewhere).

        The conditional update decides the merge once and records it on the absorbed head as
        pending; `finish_merges` (once for all merges of a round) then moves identities, and a
        crash in between is repaired when the merging event is redelivered (`unfinished_merges`).
        """
        taken = await self._profiles.mark_merged(survivor, absorbed, event_id, at, lacking)
        return [merge.absorbed for merge in taken]

    async def finish_merges(self, merges: list[MergeRecord]) -> None:
        """Move identities and aliases of absorbed profiles to their survivors (idempotent).

        A constant number of round trips for any number of merges: the absorbed heads and their
        aliases in one load, then one bulk write per collection.
        """
        if not merges:
            return
        absorbed = await self._profiles.load([m.absorbed for m in merges], views=False)
        moves: list[tuple[set[str], str]] = []
        for merge in merges:
            profile = absorbed.get(merge.absorbed)
            if profile is not None:
                moves.append((set(profile.aliases), merge.survivor))
        await self._identities.move(moves)
        # Their views are read no more (the survivor's is derived again), nor their checkpoints.
        await self._checkpoints.drop_kept_for([merge.absorbed for merge in merges])
        # Journey entries keep the id they were stored under: reads go through every alias.
        await self._profiles.add_merged(
            [
                (survivor, aliases, _identifiers(absorbed, aliases), _kept_apart(absorbed, aliases))
                for aliases, survivor in moves
            ],
            [(merge.survivor, merge.event_id) for merge in merges],
        )

    async def unfinished_merges(self, event_ids: Iterable[str]) -> list[MergeRecord]:
        return await self._profiles.unfinished_merges(event_ids)

    async def discard_views(self, views: Mapping[str, StoredProfile]) -> None:
        await self._profiles.discard_views(views)

    async def save_views(self, views: Mapping[str, ViewSave]) -> set[str]:
        """`ProfileCollection.save_views`, then the checkpoints no stored view names now: those
        the winners stopped naming and those the losers kept for themselves."""
        lost = await self._profiles.save_views(views)
        await self._checkpoints.drop(unnamed_checkpoints(views, lost))
        return lost

    async def checkpoint_view(
        self, checkpoint: Checkpoint, aliases: list[str]
    ) -> ProfileView | None:
        return await self._checkpoints.read(checkpoint, aliases)

    async def drop_checkpoints(self, ids: Iterable[str]) -> None:
        await self._checkpoints.drop(ids)

    async def checkpoints_kept_before(self, cutoff: datetime, at_most: int) -> dict[str, set[str]]:
        return await self._checkpoints.kept_before(cutoff, at_most)

    async def keep_checkpoint(
        self, customer_id: str, checkpoint: Checkpoint, aliases: list[str], view: ProfileView
    ) -> None:
        await self._checkpoints.keep(customer_id, checkpoint, aliases, view)

    # --- journey ----------------------------------------------------------------------------

    async def insert_entries(self, entries: list[JourneyEntry]) -> set[str]:
        return await self._journey.insert_entries(entries)

    async def unfinished_entries(self, event_ids: Iterable[str]) -> list[JourneyEntry]:
        return await self._journey.unfinished_entries(event_ids)

    async def settle(self, event_ids: Iterable[str], absorbed: Iterable[str]) -> None:
        """Mark entries and merges as having every effect done: redelivery skips them now."""
        await self._journey.settle(list(event_ids))
        await self._profiles.settle_merges(list(absorbed))

    async def settled_count(self) -> int:
        """Entries with every effect done (operations and tests)."""
        return await self._journey.settled.count_documents({})

    async def unsettled(self) -> list[str]:
        """Entries whose effects are not all done yet (a full scan: operations and tests)."""
        return await self._journey.unsettled()

    async def entries_of(self, profiles: Iterable[StoredProfile]) -> dict[str, list[JourneyEntry]]:
        return await self._journey.entries_of(profiles)

    async def entries_within(
        self, profiles: Iterable[StoredProfile], at_most: float
    ) -> dict[str, list[JourneyEntry]] | None:
        return await self._journey.entries_within(profiles, at_most)

    def in_order(self, aliases: list[str]) -> AsyncGenerator[JourneyEntry, None]:
        return self._journey.in_order(aliases)

    async def entries_after(
        self, aliases: list[str], after: tuple[datetime, str], at_most: int
    ) -> list[JourneyEntry] | None:
        return await self._journey.entries_after(aliases, after, at_most)

    async def entries(self, aliases: list[str]) -> list[JourneyEntry]:
        return await self._journey.entries(aliases)

    async def journey_ids(self, aliases: list[str]) -> list[str]:
        return await self._journey.ids_of(aliases)

    async def identifiers_used(self, aliases: list[str], until: datetime | None = None) -> set[str]:
        return await self._journey.identifiers_used(aliases, until)

    async def outlines_of(self, profiles: Iterable[StoredProfile]) -> dict[str, list[EntryOutline]]:
        return await self._journey.outlines_of(profiles)

    async def entries_by_id(self, event_ids: list[str]) -> list[JourneyEntry]:
        return await self._journey.entries_by_id(event_ids)

    async def order_entries(
        self, order_ids: Iterable[str], besides: set[str]
    ) -> list[JourneyEntry]:
        return await self._journey.order_entries(order_ids, besides)

    async def page(
        self,
        aliases: list[str],
        *,
        after: tuple[datetime, str] | None,
        limit: int,
        filters: Mapping[str, Any],
        newest_first: bool = False,
    ) -> list[JourneyEntry]:
        return await self._journey.page(
            aliases, after=after, limit=limit, filters=filters, newest_first=newest_first
        )

    async def mismatches(self, filters: Mapping[str, Any], limit: int) -> list[JourneyEntry]:
        return await self._journey.mismatches(filters, limit)

    async def open_conversations(self, since: datetime, limit: int) -> list[MongoDocument]:
        return await self._profiles.open_conversations(since, limit)

    async def waiting_conversations(self, since: datetime, limit: int) -> list[MongoDocument]:
        return await self._profiles.waiting_conversations(since, limit)

    async def customer_of_order(self, order_id: str) -> str | None:
        """The customer an order belongs to now (the survivor, after merges)."""
        customer = await self._journey.customer_of_order(order_id)
        if customer is None:
            return None
        return (await self._profiles.canonical([customer]))[customer]

    # --- conflicts, export, erasure ---------------------------------------------------------

    async def record_conflicts(self, conflicts: list[tuple[Conflict, str]]) -> set[str]:
        return await self._conflicts.record(conflicts)

    async def merge_requests_raised_by(self, event_ids: Iterable[str]) -> dict[str, list[str]]:
        return await self._conflicts.requests_raised_by(event_ids)

    async def conflicts_of(
        self, aliases: list[str], raised_by: Iterable[str] = ()
    ) -> list[MongoDocument]:
        return await self._conflicts.of(aliases, raised_by)

    async def merge_requests(self, status: str, limit: int) -> list[MongoDocument]:
        return await self._conflicts.merge_requests(status, limit)

    async def merge_request(self, request_id: str) -> MongoDocument | None:
        return await self._conflicts.merge_request(request_id)

    async def note_confirming(self, request_id: str, by: str) -> bool:
        return await self._conflicts.note_confirming(request_id, by)

    async def decide_merge_request(
        self,
        request_id: str,
        status: str,
        decision: MongoDocument,
        confirming: MongoDocument | None = None,
    ) -> bool:
        return await self._conflicts.decide(request_id, status, decision, confirming)

    async def record_erasure(
        self,
        customer_id: str,
        aliases: list[str],
        subjects: Iterable[str],
        at: datetime,
    ) -> Erasure:
        return await self._erasures.record(customer_id, aliases, subjects, at)

    async def suppress_erased(self, subjects: Iterable[str], at: datetime) -> None:
        await self._erasures.suppress(subjects, at)

    async def erasure_of(self, customer_id: str) -> Erasure | None:
        return await self._erasures.of(customer_id)

    async def unfinished_erasures(self) -> list[Erasure]:
        return await self._erasures.unfinished()

    async def erasure_finished(self, erasure: Erasure) -> bool:
        return await self._erasures.finished(erasure)

    async def erased_at(self, subjects: Iterable[str]) -> dict[str, datetime]:
        return await self._erasures.erased_at(subjects)

    async def existing_profiles(self, customer_ids: Iterable[str]) -> set[str]:
        """Of these ids, those with a profile document (merged away or not)."""
        return set(await self._profiles.heads(customer_ids))

    async def erase(self, aliases: list[str]) -> dict[str, int]:
        """Delete everything held about a customer and its aliases (idempotent).

        The heads go first. A batch that resolved its events before the erasure began may still
        write entries, views or claims for the customer: whatever it writes before the heads go
        is deleted by the steps after, and a batch that writes after finds the head gone when it
        checks, once it has written, and deletes what it wrote (`forget_erased`)."""
        profiles = await self._profiles.erase(aliases)
        # Before the entries that name the events behind its conflicts go.
        conflicts = await self._conflicts.erase(aliases, await self._journey.ids_of(aliases))
        return await self._erase_the_rest(aliases, profiles, conflicts)

    async def erase_for(
        self, erasure: Erasure, aliases: list[str]
    ) -> tuple[dict[str, int], Erasure]:
        """`erase` for an erasure, which withdraws the merge requests involved: each is noted on
        it (to be published as withdrawn) before it is deleted, and only those noted are deleted.
        One recorded after they were listed stays for whoever looks next (`forget_erased`, run
        by the completion after this and by a batch after its writes), never deleted unannounced.
        The erasure as the caller is to complete it (`ErasureCollection.note_withdrawn`)."""
        profiles = await self._profiles.erase(aliases)
        events = await self._journey.ids_of(aliases)
        keys = await self._identities.of(aliases)
        requests = await self._conflicts.requests_of(aliases, events, keys)
        erasure = await self._erasures.note_withdrawn(erasure, requests)
        conflicts = await self._conflicts.erase_noted(aliases, events, requests)
        return await self._erase_the_rest(aliases, profiles, conflicts), erasure

    async def _erase_the_rest(
        self, aliases: list[str], profiles: int, conflicts: int
    ) -> dict[str, int]:
        """After the heads and the conflicts: the entries, claims and splits."""
        return {
            "journey_entries": await self._journey.erase(aliases),
            "identities": await self._identities.erase(aliases),
            "conflicts": conflicts,
            "profiles": profiles,
            "splits": await self._splits.erase(aliases),
            "checkpoints": await self._checkpoints.erase(aliases),
        }

    async def erase_created(self, customer_ids: Iterable[str]) -> None:
        if ids := sorted(set(customer_ids)):
            await self.erase(ids)

    async def forget_erased(
        self,
        customer_ids: Iterable[str],
        subject: Callable[[str], str],
        published: Mapping[str, Sequence[str]] | None = None,
    ) -> set[str]:
        """Of these profiles (a writer wrote for them or named them in a merge request, an
        erasure deleted them), erase those an erasure names (`erase`), with every profile merged
        into them, and answer which. Anything else is left alone.

        `published`: merge request id -> the profiles it names, for requests the writer
        published: one naming an erased profile is withdrawn (again) after it.

        What the writer joined to the person goes as if it had been theirs when the erasure was
        asked for: a profile it merged into theirs, identifiers it claimed or used for them. The
        erasure is extended with them (`subject` names an identifier there, as `hilo.sealing`
        does) and left to be completed again, which deletes their keys and publishes the
        tombstones; then all of it is deleted here."""
        wanted = set(customer_ids)
        erased: set[str] = set()
        for erasure in await self._erasures.naming(wanted):
            found = wanted & set(erasure.aliases)
            merged_in = await self._profiles.aliases(found)
            gone = sorted(found.union(*merged_in.values()))
            heads = (await self._profiles.load(gone, views=False)).values()
            held = await self.identifiers_to_erase(
                gone,
                {key for profile in heads for key in profile.identifiers},
                until=erasure.requested_at,
            )
            joined = {subject(key) for key in held}
            joined -= set(erasure.subjects)
            if joined or not set(gone) <= set(erasure.aliases):
                await self._erasures.extend(erasure, gone, joined)
            ours = [r for r, named in (published or {}).items() if found & set(named)]
            noted = await self._erasures.note_withdrawn(erasure, ours, again=True)
            # Requests the writer raised for them: published as withdrawn by the completion.
            await self.erase_for(noted, gone)
            erased |= found
        return erased

    async def hold(self, aliases: Iterable[str]) -> tuple[ObjectId, dict[str, str]]:
        """Hold these profiles for their erasure (`ProfileCollection.hold_for_erasure`): the
        hold, and those merged into another profile before, with their survivors."""
        return await self._profiles.hold_for_erasure(aliases)

    async def held(self, customer_ids: Iterable[str]) -> set[str]:
        """Of these profiles, those an erasure under way holds (`hold`, `_live_holds`)."""
        return await self._live_holds(await self._profiles.holds(customer_ids))

    async def still_held(self, hold: ObjectId, customer_ids: Iterable[str]) -> bool:
        """Whether this hold is still on every one of these profiles that exists."""
        return await self._profiles.still_held(hold, customer_ids)

    async def release_hold(self, hold: ObjectId, customer_ids: Iterable[str] = ()) -> None:
        """Take back this hold (from these profiles only, if named)."""
        await self._profiles.release_hold(hold, customer_ids)

    async def hold_for_erasure(self, erasure: Erasure, subject: Callable[[str], str]) -> Erasure:
        """Hold the erasure's profiles again before anything of them is deleted (the request
        held them before recording it, `Privacy.erase`); the erasure as it is to be completed.

        One of them found merged into another profile was not held in time (an erasure recorded
        by a version without holds): the merge made it part of the survivor's customer, so the
        erasure is extended with the survivor, its aliases and what they hold (`subject` names
        an identifier, as `hilo.sealing` does), held in turn. Otherwise the survivor would keep
        the erased person's identifiers and merged journey for good."""
        for _ in range(MAX_ERASURE_HOLDS):
            _, elsewhere = await self._profiles.hold_for_erasure(erasure.aliases, erasure.hold)
            survivors = set((await self._profiles.canonical(elsewhere.values())).values())
            profiles = (await self._profiles.load(survivors, views=False)).values()
            if not profiles:  # none merged away, or into a profile erased since
                return await self._with_claimed_since(erasure, subject)
            aliases = sorted({alias for profile in profiles for alias in profile.aliases})
            held = {key for profile in profiles for key in profile.identifiers}
            keys = await self.identifiers_to_erase(aliases, held)
            erasure = await self._extended(erasure, aliases, {subject(key) for key in keys})
        raise RuntimeError(f"the profiles of erasure {erasure.customer_id} kept being merged")

    async def _with_claimed_since(self, erasure: Erasure, subject: Callable[[str], str]) -> Erasure:
        """The erasure with the identifiers its profiles claimed between the request reading
        them and recording it (a batch that resolved before the hold): their keys are deleted
        and their events kept out like the others'."""
        keys = await self.identifiers_to_erase(erasure.aliases, until=erasure.requested_at)
        if new := {subject(key) for key in keys} - set(erasure.subjects):
            return await self._extended(erasure, [], new)
        return erasure

    async def _extended(
        self, erasure: Erasure, aliases: Iterable[str], subjects: Iterable[str]
    ) -> Erasure:
        await self._erasures.extend(erasure, aliases, subjects)
        extended = await self._erasures.of(erasure.customer_id)
        if extended is None:
            raise RuntimeError(f"the erasure of {erasure.customer_id} cannot be read")
        return extended

    async def identifiers_to_erase(
        self,
        aliases: list[str],
        held: Iterable[str] = (),
        *,
        until: datetime | None = None,
        used: set[str] | None = None,
    ) -> set[str]:
        """The identifiers a person's erasure covers: those their profiles hold (`held`) or
        claimed, and those their journey used that belong to nobody else (placeholders,
        identifiers released over a cap); another customer's (a shared phone on an order) are
        that customer's to erase. With `until`, only claims made and events that happened up
        to then: what a person did after their erasure is not theirs to erase. `used`: those
        the journey used up to `until` (`identifiers_used`), when the caller has read them."""
        claims = await self._identities.claims_of(aliases)
        keys = {*held, *(key for key, at in claims.items() if until is None or at <= until)}
        if used is None:
            used = await self.identifiers_used(aliases, until)
        owners = await self.owners(used - keys)
        others = {key for key, owner in owners.items() if owner not in aliases}
        return keys | {key for key in used - keys if key not in others}

    # --- splits -----------------------------------------------------------------------------

    async def merge_of(self, absorbed: str) -> MongoDocument | None:
        """The head of a profile, with `merged_into`, `merge_event` and `merged_at` if merged."""
        return (await self._profiles.heads([absorbed])).get(absorbed)

    async def record_split(self, split: Split) -> Split:
        return await self._splits.record(split)

    async def split(self, split_id: str) -> Split | None:
        return await self._splits.of(split_id)

    async def splits_involving(self, customer_ids: list[str]) -> list[Split]:
        return await self._splits.involving(customer_ids)

    async def unfinished_splits(self) -> list[Split]:
        return await self._splits.unfinished()

    async def split_moves(self, split_id: str, entry_ids: list[str]) -> None:
        await self._splits.moves(split_id, entry_ids)

    async def drop_split(self, split_id: str) -> None:
        await self._splits.drop(split_id)

    async def profiles_erased(self, customer_ids: Iterable[str]) -> set[str]:
        """Of these profile ids, those an erasure named."""
        return await self._erasures.profiles_erased(customer_ids)

    async def split_completed(self, split_id: str, outcome: dict[str, Any], *, done: bool) -> None:
        await self._splits.completed(split_id, outcome, done=done)

    async def unmerge(self, absorbed: str, merge_event: str) -> None:
        await self._profiles.unmerge(absorbed, merge_event)

    async def claims_of(self, aliases: list[str]) -> dict[str, datetime]:
        return await self._identities.claims_of(aliases)

    async def hand_over(
        self, kept: StoredProfile, restored: StoredProfile, keys: set[str], entries: list[str]
    ) -> None:
        """Give the restored profile its identifiers and entries back (idempotent).

        Identities first: from then on, new events with these identifiers resolve to the restored
        profile; the journey and the heads follow.
        """
        await self._identities.reassign(keys, restored.customer_id)
        await self._journey.reassign(entries, restored.customer_id)
        await self._profiles.hand_over(restored.customer_id, keys, kept.aliases, restored.aliases)

    async def allow_merge(self, customer_ids: list[str]) -> None:
        """No longer keep these customers apart, as they are now: a request's ids may have been
        merged into another profile since, which took their kept-apart marks with it."""
        canonical, profiles = await self._profiles.load_canonical(customer_ids)
        ids = {*customer_ids, *canonical.values()}
        ids |= {alias for profile in profiles.values() for alias in profile.aliases}
        await self._profiles.allow_merge(sorted(ids))

    async def keep_apart(self, customer_ids: list[str]) -> None:
        await self._profiles.keep_apart(customer_ids)

    async def counts(self) -> dict[str, int]:
        return {
            **await self._profiles.counts(),
            "identities": await self._identities.count(),
            "journey_entries": await self._journey.count(),
        }


def _kept_apart(profiles: Mapping[str, StoredProfile], aliases: Iterable[str]) -> set[str]:
    """Profiles that whichever of these aliases were loaded are kept apart from."""
    return {other for alias in aliases if alias in profiles for other in profiles[alias].kept_apart}


def _identifiers(profiles: Mapping[str, StoredProfile], aliases: Iterable[str]) -> set[str]:
    """Identifiers recorded on whichever of these aliases were loaded."""
    return {key for alias in aliases if alias in profiles for key in profiles[alias].identifiers}
