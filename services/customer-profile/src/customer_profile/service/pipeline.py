"""One batch of interactions from Kafka to journeys, profiles and the topics downstream reads.

Order of effects, so that a crash at any point is repaired by redelivery (offsets are committed
only after `process` returns):

1. open (sealed personal fields, `hilo.sealing`) and parse; what cannot be read goes to the
   dead-letter topic with the reason, except records sealed for a person erased since;
2. resolve identities (atomic claims and merges, see `resolver.py`); finish any merge of this
   batch's events that a crash left half-done;
3. store journey entries, once per event id, marked pending;
4. derive and save each touched profile at the version it was read at;
5. publish journey records (personal fields sealed), profile snapshots, merges and dead letters,
   waiting for Kafka's acks, then re-publish any snapshot another writer overtook, so the
   compacted topic ends on the latest (and derive again, save and publish any view whose save
   turned out to overtake nothing, or whose profile was merged away meanwhile, see
   `publish_overtaken`);
6. settle: clear the pending marks.

An event redelivered after a crash finds its entry stored but still pending: its customer's view
is re-derived from the journey (idempotent, never folded twice) and its records published again.
An entry that is not pending had every effect done and is skipped. Downstream therefore sees each
record at least once and dedupes by id, and MongoDB holds every effect exactly once.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pydantic_core
import structlog
from pydantic import ValidationError

from customer_profile.domain.identity import (
    MERGE_REQUEST_REASONS,
    Conflict,
    IdentityPolicy,
    conflict_ids,
)
from customer_profile.domain.journey import JourneyEntry, new_entry
from customer_profile.service.derivation import (
    CHECKPOINT_BEHIND,
    Recall,
    derived_views,
    fold_on_top,
    recall_forgotten_orders,
)
from customer_profile.service.ports import (
    CLAIM_CLOCK_SKEW,
    Contention,
    ErasedClaimsMet,
    MergeRecord,
    Publisher,
    Store,
    StoredProfile,
)
from customer_profile.service.prices import PriceCheck, facts_told
from customer_profile.service.prices import count as count_mismatches
from customer_profile.service.resolver import IdentityResolver, Merge, Pending, Resolution
from hilo.contract import (
    Interaction,
    UnsupportedSchemaVersion,
    bound_event_time,
    parse_interaction,
)
from hilo.contract.personal import JOURNEY_FIELDS
from hilo.dead_letters import dead_letter, publish_dead_letter
from hilo.kafka import Record, cloudevent_headers
from hilo.mongo import as_stored
from hilo.sealing import Sealer, Unreadable
from hilo.topics import Topic

log = structlog.get_logger(__name__)
MAX_SAVE_ATTEMPTS = 8
MAX_ERASURE_RECHECKS = 3
SNAPSHOT_ROUNDS = 5
DEFAULT_FUTURE_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class RawRecord:
    """A Kafka record as consumed, kept whole so a dead letter can carry it unchanged."""

    value: bytes | None
    key: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    topic: str
    partition: int
    offset: int


@dataclass
class BatchOutcome:
    accepted: int = 0
    duplicates: int = 0
    repaired: int = 0
    """Entries stored by an earlier, interrupted attempt whose effects were finished now."""
    dead_lettered: int = 0
    erased: int = 0
    """Events about an erased person that happened before the erasure: not stored again."""
    merges: list[Merge] = field(default_factory=list)
    merge_requests: list[tuple[str, Conflict, str]] = field(default_factory=list)
    """(request id, conflict, event id) of the merges this batch asked a person for."""
    profiles: dict[str, StoredProfile] = field(default_factory=dict)
    merged_by_dropped: set[str] = field(default_factory=set)
    """Events found erased once resolution began, which may have merged profiles: their merges
    stay, and are finished and published with the batch's (but not those that joined a profile
    an erasure names, see `_without_merges_of_erased`)."""
    aliases: dict[str, str] = field(default_factory=dict)
    """Absorbed profile -> survivor, for profiles of repaired entries merged away since: their
    alias is published again, since an interrupted attempt may have published a snapshot of
    theirs after it (see `publish_overtaken`)."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall time of each step of the attempt (`STEPS`, in order), for the operators' metrics:
    which step a slow batch waited in tells a slow database from a slow broker."""


STEPS = ("parse", "resolve", "journey", "views", "publish", "settle")
"""A batch's steps, as `BatchOutcome.seconds` names them: open, parse and check for erasures;
resolve identities and finish merges; store journey entries; derive and save profile views;
publish and check the snapshots are current; settle."""


class Laps:
    """Records into `seconds` the time since the previous lap (or since made), by step name."""

    def __init__(self, clock: Callable[[], float], seconds: dict[str, float]) -> None:
        self._clock = clock
        self._seconds = seconds
        self._last = clock()

    def __call__(self, step: str) -> None:
        now = self._clock()
        self._seconds[step] = now - self._last
        self._last = now


class Pipeline:
    def __init__(
        self,
        store: Store,
        publisher: Publisher | None,
        sealer: Sealer,
        policy: IdentityPolicy,
        conversation_window: timedelta,
        max_future_skew: timedelta = DEFAULT_FUTURE_SKEW,
        price_check: PriceCheck | None = None,
        clock: Callable[[], float] = time.perf_counter,
        checkpoint_behind: timedelta = CHECKPOINT_BEHIND,
    ) -> None:
        self._store = store
        self._checkpoint_behind = checkpoint_behind
        self._clock = clock
        self._price_check = price_check
        self._sealer = sealer
        self._max_future_skew = max_future_skew
        self._publisher = publisher
        self._policy = policy
        self._resolver = IdentityResolver(store, policy)
        self._window = conversation_window
        self.events_processed = 0
        self.events_of_erased = 0

    async def process(self, records: Sequence[RawRecord]) -> BatchOutcome:
        outcome = BatchOutcome()
        lap = Laps(self._clock, outcome.seconds)
        readable, dead, erased = await self._parse(records)
        subjects = {key: self._sealer.subject(key) for _, _, keys in readable for key in keys}
        checked_at = datetime.now(UTC)
        readable, outcome.erased = await self._without_erased(readable, subjects)
        outcome.erased += erased
        # A producer that does not seal (a tool, an older channel) made no keys: make them now,
        # so these events' journey records are sealed like every other.
        await self._sealer.keys.get_or_create(
            subjects[key] for _, _, keys in readable for key in keys
        )
        lap("parse")
        readable, resolution = await self._resolve(readable, subjects, outcome, checked_at)
        events = [event for _, event, _ in readable]
        unfinished = await self._store.unfinished_merges(
            [*(event.id for event in events), *outcome.merged_by_dropped]
        )
        unfinished = await self._without_merges_of_erased(unfinished, outcome.merged_by_dropped)
        merged_now = {absorbed for merge in resolution.merges for absorbed in merge.absorbed}
        await self._store.finish_merges([m for m in unfinished if m.absorbed not in merged_now])
        outcome.merges = _merges(unfinished)
        before = resolution.profiles
        if unfinished:  # the survivors' heads changed as their merges were finished
            before.update(await self._store.load({m.survivor for m in unfinished} & set(before)))
        lap("resolve")
        entries, repairs = await self._write_journey(events, resolution.customers, before, outcome)
        written = {entry.id for entry in [*entries, *repairs]}
        resolution.conflicts = [c for c in resolution.conflicts if c[1] in written]
        outcome.merge_requests = await self._record_conflicts(resolution.conflicts)
        late = _late_from(entries, before)
        repaired = await self._store.canonical({e.customer_id for e in repairs})
        rebuild = {m.survivor for m in outcome.merges} | set(repaired.values())
        late = {customer: since for customer, since in late.items() if customer not in rebuild}
        rebuild |= set(late)
        outcome.aliases = {c: survivor for c, survivor in repaired.items() if c != survivor}
        lap("journey")
        outcome.profiles = await self._update_profiles(before, entries, rebuild, late)
        lap("views")
        await self._publish([*entries, *repairs], outcome, dead)
        await self._forget_erased_meanwhile(entries, outcome, resolution.conflicts)
        lap("publish")
        await self._store.settle(
            [e.id for e in [*entries, *repairs]], [m.absorbed for m in unfinished]
        )
        lap("settle")
        outcome.accepted = len(events)
        outcome.repaired = len(repairs)
        outcome.dead_lettered = len(dead)
        self.events_processed += len(events)
        self.events_of_erased += outcome.erased
        return outcome

    async def _record_conflicts(
        self, conflicts: list[tuple[Conflict, str]]
    ) -> list[tuple[str, Conflict, str]]:
        """Record the conflicts of events written now (a settled duplicate's were recorded when
        it was first processed: resolved again after a split, it would ask agents to merge what
        a person just undid); the merge requests to publish, those nobody decided yet."""
        decided = await self._store.record_conflicts(conflicts)
        for conflict, event_id in conflicts:
            log.warning(
                "identity_conflict",
                reason=conflict.reason,
                identifier_kind=conflict.kind,
                customer_ids=list(conflict.customer_ids),
                event_id=event_id,
            )
        return [
            (request_id, conflict, event_id)
            for request_id, (conflict, event_id) in zip(
                conflict_ids(conflicts), conflicts, strict=True
            )
            if conflict.reason in MERGE_REQUEST_REASONS and request_id not in decided
        ]

    async def _resolve(
        self,
        readable: list[tuple[RawRecord, Interaction, list[str]]],
        subjects: dict[str, str],
        outcome: BatchOutcome,
        checked_at: datetime,
    ) -> tuple[list[tuple[RawRecord, Interaction, list[str]]], Resolution]:
        """Resolve the events' identities, against erasures that began after the batch checked
        its events (at `checked_at`) too. Such an erasure shows as a profile it holds, or
        claims of a profile it deleted, while it is under way (`ErasedClaimsMet`, raised when a
        round reads its owners: a later round's, after earlier rounds claimed, resolves again
        from the start, which finds those claims made); once it
        deleted the claims, the person's identifiers are unowned, or claimed again since
        (`IdentityState.fresh`): a profile would be created for them, or the event added to
        another profile it names. So the events resolved with such identifiers are checked
        again, all their identifiers: the erasure was recorded before it deleted a claim, so
        this check cannot miss one the resolution found free. What was claimed for an event
        found erased is released (a profile created for it erased), and the events left are
        resolved again; a merge such an event made stays, finished with the batch's."""
        for _ in range(MAX_ERASURE_RECHECKS):
            fresh_since = checked_at - CLAIM_CLOCK_SKEW
            try:
                resolution = await self._resolver.resolve(_pending(readable), fresh_since)
            except ErasedClaimsMet as exc:
                log.warning("identity_claims_of_erased_profile_met")
                await self._take_back_for_erased(readable, subjects, exc)
            else:
                if not await self._resolved_for_erased(readable, subjects, resolution):
                    return readable, resolution
            checked_at = datetime.now(UTC)
            # Every event resolved may have merged; the check below drops (again) those found
            # erased, since erasures only ever grow.
            resolved = {event.id for _, event, _ in readable}
            readable, erased = await self._without_erased(readable, subjects)
            outcome.merged_by_dropped |= resolved - {event.id for _, event, _ in readable}
            outcome.erased += erased
        try:
            return readable, await self._resolver.resolve(
                _pending(readable), checked_at - CLAIM_CLOCK_SKEW
            )
        except ErasedClaimsMet as exc:  # retried later: take back what was made for the erased
            await self._take_back_for_erased(readable, subjects, exc)
            raise

    async def _take_back_for_erased(
        self,
        readable: list[tuple[RawRecord, Interaction, list[str]]],
        subjects: dict[str, str],
        met: ErasedClaimsMet,
    ) -> None:
        """Met in a later round of resolution (`ErasedClaimsMet.partial`): what the earlier
        rounds claimed and made for events now found erased is released and erased."""
        if isinstance(met.partial, Resolution):
            await self._resolved_for_erased(readable, subjects, met.partial)

    async def _without_merges_of_erased(
        self, merges: list[MergeRecord], dropped: set[str]
    ) -> list[MergeRecord]:
        """The merges to finish, less those of events found erased that joined a profile an
        erasure names: finishing one would copy the erased person's identifiers onto the other
        profile and publish them. They stay unfinished (one read, only if there are any)."""
        involved = {c for m in merges if m.event_id in dropped for c in (m.absorbed, m.survivor)}
        if not involved or not (erased := await self._store.profiles_erased(involved)):
            return merges
        log.warning("merges_of_erased_profiles_left_unfinished", profiles=len(erased))
        return [
            m for m in merges if m.event_id not in dropped or not {m.absorbed, m.survivor} & erased
        ]

    async def _resolved_for_erased(
        self,
        readable: list[tuple[RawRecord, Interaction, list[str]]],
        subjects: dict[str, str],
        resolution: Resolution,
    ) -> set[str]:
        """The events resolved with an unowned or freshly claimed identifier (where an erasure
        since the batch's check shows) that are an erased person's; what was claimed for them
        is released and profiles made for them erased (one read, only in batches with such
        identifiers)."""
        items = [item for item in readable if resolution.recheck.intersection(item[2])]
        if not (dropped := await self._erased_events(items, subjects)):
            return set()
        claims = {
            key: owner for key, (owner, event) in resolution.claimed.items() if event in dropped
        }
        created = set(claims.values()) & resolution.created
        created |= {
            c for e, c in resolution.customers.items() if e in dropped and c in resolution.created
        }
        await self._store.release_claims(claims)  # first: it follows merges of the created
        await self._store.erase_created(created)
        log.warning("claims_for_erased_events_released", events=len(dropped), profiles=len(created))
        return dropped

    async def _forget_erased_meanwhile(
        self,
        entries: list[JourneyEntry],
        outcome: BatchOutcome,
        conflicts: list[tuple[Conflict, str]],
    ) -> None:
        """Erase again what this batch wrote for a customer whose profile had gone by the time
        it was loaded: erased after this batch's check of its events, its entries outlived the
        erasure (`ProfileStore.erase`). Saved profiles found gone are `publish_overtaken`'s.

        So do the profiles its conflicts name: a merge request recorded after their erasure
        listed them would otherwise stay, naming the erased person and holding their identifier
        (the entry is often another profile's: a newcomer the request keeps apart from them),
        and one the erasure withdrew before this batch published it is withdrawn again after.
        Only an erasure's profiles are touched (`Store.forget_erased`)."""
        gone = {entry.customer_id for entry in entries} - outcome.profiles.keys()
        named = {c for conflict, _ in conflicts for c in conflict.customer_ids}
        published = {r: list(conflict.customer_ids) for r, conflict, _ in outcome.merge_requests}
        await _forget_erased(self._store, gone | named, self._sealer.subject, published)

    async def _without_erased(
        self,
        readable: list[tuple[RawRecord, Interaction, list[str]]],
        subjects: dict[str, str],
    ) -> tuple[list[tuple[RawRecord, Interaction, list[str]]], int]:
        """Drop events that happened before an erasure of one of their identifiers.

        They are in flight, redelivered or replayed from before the person asked to be
        forgotten; storing them would bring the person back. Later events start a new profile.
        """
        dropped = await self._erased_events(readable, subjects)
        if not dropped:
            return readable, 0
        await self._forget_left_by_earlier_attempts(dropped)
        return [item for item in readable if item[1].id not in dropped], len(dropped)

    async def _erased_events(
        self, items: list[tuple[RawRecord, Interaction, list[str]]], subjects: dict[str, str]
    ) -> set[str]:
        """Ids of the events that happened before an erasure of one of their identifiers."""
        erased = await self._store.erased_at(
            {subjects[key] for _, _, keys in items for key in keys}
        )
        return {
            event.id
            for _, event, keys in items
            if any(
                (at := erased.get(subjects[key])) is not None and event.occurred_at <= at
                for key in keys
            )
        }

    async def _forget_left_by_earlier_attempts(self, dropped: set[str]) -> None:
        """An attempt that wrote for these events after their person's erasure began and
        stopped before its check after publishing left unsettled entries, or unfinished merges
        into the erased profile: erase them again."""
        customers = {e.customer_id for e in await self._store.unfinished_entries(dropped)}
        customers |= {m.survivor for m in await self._store.unfinished_merges(dropped)}
        # Its merge requests too: it may have published them, and they name the person.
        requests = await self._store.merge_requests_raised_by(dropped)
        customers |= {c for named in requests.values() for c in named}
        await _forget_erased(self._store, customers, self._sealer.subject, requests)

    async def dead_letter(self, record: RawRecord, reason: str, detail: str) -> None:
        """Put one record on the dead-letter topic unchanged, with why in its headers."""
        if self._publisher is not None:
            await publish_dead_letter(
                self._publisher, Topic.INTERACTIONS_DLQ, record, reason=reason, detail=detail
            )

    async def _parse(
        self, records: Sequence[RawRecord]
    ) -> tuple[list[tuple[RawRecord, Interaction, list[str]]], list[DeadLetter], int]:
        """Readable events with their usable identifier keys, the records to dead-letter, and
        how many were sealed for a person erased since (no key opens them: nothing to store)."""
        dead: list[DeadLetter] = []
        readable: list[tuple[RawRecord, Interaction, list[str]]] = []
        seen: set[str] = set()
        opened = await self._sealer.open_all([record.value for record in records])
        sealed_for_erased = set(
            await self._store.erased_at(
                s
                for document in opened
                if isinstance(document, Unreadable)
                for s in document.subjects
            )
        )
        erased = 0
        for record, document in zip(records, opened, strict=True):
            if (
                isinstance(document, Unreadable)
                and document.subjects
                and set(document.subjects) <= sealed_for_erased
            ):
                erased += 1
                continue
            try:
                event = self._readable(document)
            except _Unprocessable as exc:
                dead.append(DeadLetter(record, exc.reason, exc.detail))
                continue
            keys = self._policy.usable_keys(event.identifiers.pairs())
            if not keys:
                reason = "every identifier is a blocked value"
                dead.append(DeadLetter(record, "no_usable_identifier", reason))
            elif event.id not in seen:  # a provider retry inside one batch
                seen.add(event.id)
                readable.append((record, event, keys))
        return readable, dead, erased

    def _readable(self, document: dict[str, Any] | ValueError) -> Interaction:
        if isinstance(document, Unreadable):
            raise _Unprocessable("unreadable_sealed", document.reason)
        if isinstance(document, ValueError):
            raise _Unprocessable("not_json", str(document))
        try:
            event = parse_interaction(pydantic_core.to_json(document))
        except ValidationError as exc:
            detail = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in exc.errors()
            )
            raise _Unprocessable("invalid_interaction", detail) from None
        except UnsupportedSchemaVersion as exc:
            raise _Unprocessable("unsupported_schema_version", str(exc)) from None
        except ValueError as exc:
            raise _Unprocessable("not_json", str(exc)[:300]) from None
        # A producer other than Hilo's channels may send an impossible time: bound it here too,
        # or one far-future event would mark every later one late.
        return bound_event_time(event, max_future_skew=self._max_future_skew, now=datetime.now(UTC))

    async def _write_journey(
        self,
        events: list[Interaction],
        customers: dict[str, str],
        before: dict[str, StoredProfile],
        outcome: BatchOutcome,
    ) -> tuple[list[JourneyEntry], list[JourneyEntry]]:
        """Store the batch's entries, flagging those that happened before what is recorded.

        Returns the entries stored now, and those an interrupted earlier attempt stored but did
        not settle (their effects must be finished).
        """
        latest = {c: p.view.last_seen for c, p in before.items() if p.view and p.view.last_seen}
        recorded_at = datetime.now(UTC)
        told = _facts_told_by_customer(events, customers) if self._price_check else {}
        entries = []
        for event in events:
            customer = customers[event.id]
            at, previous = as_stored(event.occurred_at), latest.get(customer)
            late = previous is not None and at < previous
            alongside = told.get(customer, Counter()) - Counter(facts_told(event))
            mismatches = self._mismatches(
                event, customer, before.get(customer), frozenset(alongside)
            )
            entries.append(
                new_entry(
                    event,
                    customer,
                    recorded_at,
                    late=late,
                    price_mismatches=mismatches,
                    verified_only_traits=self._policy.verified_only_traits,
                )
            )
            latest[customer] = max(previous, at) if previous else at
        duplicates = await self._store.insert_entries(entries)
        repairs = await self._store.unfinished_entries(duplicates)
        outcome.duplicates = len(duplicates) - len(repairs)
        stored = [entry for entry in entries if entry.id not in duplicates]
        for entry in stored:
            count_mismatches(entry.channel, entry.identity_trust, entry.price_mismatches)
        return stored, repairs

    def _mismatches(
        self,
        event: Interaction,
        customer: str,
        profile: StoredProfile | None,
        told_alongside: frozenset[str],
    ) -> list[dict[str, Any]]:
        """What the event charged differently from the offers in force (none to check: [])."""
        if self._price_check is None:
            return []
        view = profile.view if profile else None
        return self._price_check.mismatches(event, customer, view, told_alongside)

    async def _update_profiles(
        self,
        before: dict[str, StoredProfile],
        entries: list[JourneyEntry],
        rebuild: set[str],
        late_from: Mapping[str, tuple[datetime, str]] | None = None,
    ) -> dict[str, StoredProfile]:
        """Save each touched profile at the version read before its entries were stored.

        Incremental when nothing is late and nothing merged; a lost race (another writer saved
        first) or a merge re-derives the profile from the stored journey, and entries that came
        late (`late_from`, see `derived_views`) from its checkpoint if they came after it. Not
        after a lost race: the winner's checkpoint may have been kept before our entries were
        stored.
        """
        by_customer: dict[str, list[JourneyEntry]] = defaultdict(list)
        for entry in entries:
            by_customer[entry.customer_id].append(entry)
        # A customer whose events were all duplicates has nothing new: leave its profile alone.
        profiles = {c: p for c, p in before.items() if c in by_customer or c in rebuild}
        rebuild = set(rebuild)
        recalls = {
            customer: Recall(profile.view, profile.aliases, by_customer.get(customer, []))
            for customer, profile in profiles.items()
            if customer not in rebuild and profile.view is not None
        }
        batch = {entry.id for entries in by_customer.values() for entry in entries}
        rebuild |= await recall_forgotten_orders(self._store, recalls, batch)
        profiles.update(await self._store.load(rebuild - set(profiles)))
        saved: dict[str, StoredProfile] = {}
        for _ in range(MAX_SAVE_ATTEMPTS):
            derived = await derived_views(
                self._store,
                (p for c, p in profiles.items() if c in rebuild),
                self._window,
                late_from,
                self._checkpoint_behind,
            )
            late_from = None
            for customer, profile in profiles.items():
                if customer not in derived:
                    derived[customer] = await fold_on_top(
                        self._store,
                        profile,
                        by_customer[customer],
                        self._window,
                        self._checkpoint_behind,
                    )
            views = {
                customer: derived[customer].save(profile) for customer, profile in profiles.items()
            }
            lost = await self._store.save_views(views)
            saved.update({customer: views[customer].saved() for customer in set(views) - lost})
            if not lost:
                return saved
            canonical = await self._store.canonical(lost)
            rebuild |= set(canonical.values())
            profiles = await self._store.load(set(canonical.values()))
        raise Contention(f"could not save {len(profiles)} profile(s): too many concurrent writers")

    async def _publish(
        self,
        entries: list[JourneyEntry],
        outcome: BatchOutcome,
        dead: list[DeadLetter],
    ) -> None:
        """Publish everything downstream reads and wait until Kafka has all of it.

        One call for the whole batch: records handed to the producer in a loop and acknowledged
        together cost a third of the CPU of one awaited publish (and task) per record.
        """
        if self._publisher is None:
            return
        records = [
            dead_letter(Topic.INTERACTIONS_DLQ, d.record, reason=d.reason, detail=d.detail)
            for d in dead
        ]
        records += await entry_records(self._sealer, entries)
        for merge in outcome.merges:
            records.append(
                Record(Topic.IDENTITY_MERGES, merge.survivor.encode(), merge_record(merge), JSON)
            )
            records += [alias(absorbed, merge.survivor) for absorbed in merge.absorbed]
        records += [alias(absorbed, survivor) for absorbed, survivor in outcome.aliases.items()]
        records += [
            Record(
                Topic.MERGE_REQUESTS,
                request_id.encode(),
                merge_request_record(request_id, conflict, event_id),
                JSON,
            )
            for request_id, conflict, event_id in outcome.merge_requests
        ]
        records += [snapshot(p) for p in outcome.profiles.values()]
        await self._publisher.publish_records(records)
        outcome.profiles.update(
            await publish_until_current(
                self._store,
                self._publisher,
                outcome.profiles,
                lambda stale: self._update_profiles({}, [], stale),
                self._sealer.subject,
            )
        )


async def publish_until_current(
    store: Store,
    publisher: Publisher,
    saved: Mapping[str, StoredProfile],
    rederive: Callable[[set[str]], Awaitable[dict[str, StoredProfile]]],
    subject: Callable[[str], str],
) -> dict[str, StoredProfile]:
    """Once `saved` is published: leave each profile's latest view last on the compacted topic,
    and make sure that view holds what ours did: a save that turned out to overtake nothing is
    derived again by `rederive`, then published (`publish_overtaken`). Returns those profiles
    as saved again."""
    again: dict[str, StoredProfile] = {}
    stale = await publish_overtaken(store, publisher, saved, subject)
    for _ in range(MAX_SAVE_ATTEMPTS):
        if not stale:
            return again
        log.warning("profile_views_rederived", customers=len(stale))
        saved = await rederive(stale)
        again.update(saved)
        await publisher.publish_records([snapshot(p) for p in saved.values()])
        stale = await publish_overtaken(store, publisher, saved, subject)
    raise Contention("profile views kept being overtaken: too many concurrent writers")


async def publish_overtaken(
    store: Store,
    publisher: Publisher,
    saved: Mapping[str, StoredProfile],
    subject: Callable[[str], str],
) -> set[str]:
    """Publish again whatever changed since our snapshots were read, until none did; return
    the profiles whose current view may lack what ours held.

    Two instances may save versions n and n+1 of one profile and have them land on the
    compacted topic in the opposite order. Each writer, once Kafka acknowledged its snapshot,
    reads the head again and publishes the current state if it moved on: the last writer to
    look always finds its own record current, so the topic's last record is the latest.

    A writer that read version n-1 can still store n after two others stored n and n+1 (n's
    slot was freed when n+1 superseded it): its save succeeded, but the current view n+1 was
    derived without it. That shows here as our version still stored below a higher one (which
    would have deleted it, had it been derived from ours; views are told apart by their
    token): we delete our view, by its token, and the caller re-derives the profile.

    A profile of ours erased meanwhile is gone: whatever we wrote for it is erased again, and
    what we joined to it added to its erasure (`Store.forget_erased`, `subject` names the
    identifiers there); its tombstone is published again.

    A profile of ours merged away meanwhile may have been merged (and its survivor derived)
    before our entries were stored under it: its survivor is returned to be derived again too.
    This read is the only check for that, which is why a save does not look for merges.
    """
    published = {customer: profile.version for customer, profile in saved.items()}
    stale: set[str] = set()
    for _ in range(SNAPSHOT_ROUNDS):
        heads = await store.head_states(published)
        gone = set(published) - set(heads)
        await _forget_erased(store, gone, subject)  # erased while we wrote: so is what we wrote
        moved = {
            customer
            for customer, head in heads.items()
            if head.merged_into or head.version != published[customer]
        }
        overtaken = {
            customer
            for customer in moved
            if customer in saved
            and not heads[customer].merged_into
            and heads[customer].version > saved[customer].version
            and saved[customer].view_token in heads[customer].stored
        }
        if overtaken:  # nothing reads below the current version: ours would stay for good
            await store.discard_views({customer: saved[customer] for customer in overtaken})
            stale |= overtaken
        merged = {c: m for c in moved if (m := heads[c].merged_into)}
        if absorbed := set(merged) & set(saved):
            stale |= set((await store.canonical(absorbed)).values())
        if not gone and not moved:
            return stale
        current = await store.load(moved - set(merged))
        await store.drop_checkpoints(_unnamed_now(overtaken, saved, current))
        await publisher.publish_records(
            [
                *[Record(Topic.PROFILES, c.encode(), None, {}) for c in gone],
                *[alias(c, survivor) for c, survivor in merged.items()],
                *[snapshot(profile) for profile in current.values()],
            ]
        )
        published = {c: p.version for c, p in current.items()}
    log.warning("profile_snapshots_still_moving", customers=len(published))
    return stale


def _unnamed_now(
    overtaken: set[str], saved: Mapping[str, StoredProfile], current: Mapping[str, StoredProfile]
) -> set[str]:
    """The checkpoints our overtaken views named that the current ones do not: kept for ours
    alone (no writer reads a view below the current version, so none carries them on)."""
    return {
        checkpoint
        for customer in overtaken
        for checkpoint in saved[customer].checkpoints()
        - (current[customer].checkpoints() if customer in current else set())
    }


JSON = {"content-type": "application/json"}
JOURNEY_SOURCE = "/hilo/customer-profile"
"""CloudEvents source of journey entries: the service that accepted them into a journey."""


def _late_from(
    entries: list[JourneyEntry], before: Mapping[str, StoredProfile]
) -> dict[str, tuple[datetime, str]]:
    """Per customer, the earliest of the batch's entries a fold on top of its view cannot take
    (late, or tied with the view's last): where a derivation of it must start from."""
    late: dict[str, tuple[datetime, str]] = {}
    for entry in entries:
        if entry.late or _ties_with_view(entry, before):
            key, customer = entry.sort_key(), entry.customer_id
            late[customer] = min(late.get(customer, key), key)
    return late


def _ties_with_view(entry: JourneyEntry, before: Mapping[str, StoredProfile]) -> bool:
    """Whether the entry happened at the very instant of the last one its view holds, or no
    later than an agent's done mark it holds (which sets no time seen): not late, but a fold on
    top would put it after entries the journey orders after it (that instant's by id, or the
    mark), so the view is derived again (the batch's own entries are sorted before folding).
    Folded after the mark, a reply sent before it left the view unlike its derivation, and a
    checkpoint copied from the view as the journey grew carried that on."""
    profile = before.get(entry.customer_id)
    view = profile.view if profile is not None else None
    if view is None:
        return False
    marked = view.marked_through()
    return entry.occurred_at == view.last_seen or (
        marked is not None and entry.occurred_at <= marked
    )


async def entry_records(
    sealer: Sealer, entries: Sequence[JourneyEntry], *, moved_by: str | None = None
) -> list[Record]:
    """Journey entries for `journey`, keyed by their customer, personal fields sealed with the
    keys of their identifiers. An entry whose keys are all gone (its person was erased while it
    was on its way) has no record: nothing could read it.

    `moved_by` names the split that moved these entries to another customer: the record is a
    new event about the entry (its CloudEvents id `<entry id>:split:<split id>`), which a reader
    that drops repeated CloudEvents ids must not take for the first copy again."""
    documents = await sealer.seal_all(
        [pydantic_core.from_json(entry.model_dump_json()) for entry in entries],
        JOURNEY_FIELDS,
        create=False,
    )
    return [
        Record(
            Topic.JOURNEY,
            entry.customer_id.encode(),
            pydantic_core.to_json(document),
            {
                **JSON,
                **cloudevent_headers(
                    event_id=entry.id if moved_by is None else f"{entry.id}:split:{moved_by}",
                    event_type=f"dev.hilo.journey.{entry.type}",
                    source=JOURNEY_SOURCE,
                    occurred=entry.occurred_at,
                ),
            },
        )
        for entry, document in zip(entries, documents, strict=True)
        if document is not None
    ]


def snapshot(profile: StoredProfile) -> Record:
    """A profile's record on the compacted `profiles` topic."""
    return Record(Topic.PROFILES, profile.customer_id.encode(), profile_snapshot(profile), JSON)


def alias(absorbed: str, survivor: str) -> Record:
    """The record on `profiles` that says `absorbed` now answers as `survivor`."""
    return Record(Topic.PROFILES, absorbed.encode(), alias_record(absorbed, survivor), JSON)


def _merges(records: list[MergeRecord]) -> list[Merge]:
    """One merge per survivor and event, as published on `identity.merges`."""
    grouped: dict[tuple[str, str], list[MergeRecord]] = defaultdict(list)
    for record in records:
        grouped[(record.survivor, record.event_id)].append(record)
    return [
        Merge(survivor, tuple(sorted(r.absorbed for r in group)), event_id, group[0].at)
        for (survivor, event_id), group in grouped.items()
    ]


def merge_record(merge: Merge) -> bytes:
    return json.dumps(
        {
            "type": "merge",
            "survivor": merge.survivor,
            "absorbed": list(merge.absorbed),
            "event_id": merge.event_id,
            "occurred_at": merge.at.isoformat(),
        }
    ).encode()


def merge_request_record(request_id: str, conflict: Conflict, event_id: str) -> bytes:
    """A merge waiting for a person, on `identity.merge_requests`: ids only, no identifiers."""
    return json.dumps(
        {
            "type": "requested",
            "request_id": request_id,
            "reason": conflict.reason,
            "customer_ids": list(conflict.customer_ids),
            "event_id": event_id,
        }
    ).encode()


def alias_record(absorbed: str, survivor: str) -> bytes:
    """What the compacted `profiles` topic says of a profile that was merged away."""
    return json.dumps({"customer_id": absorbed, "merged_into": survivor}).encode()


def profile_snapshot(profile: StoredProfile) -> bytes:
    """The record on the compacted `profiles` topic: everything an analytics consumer needs."""
    document: dict[str, Any] = {
        "customer_id": profile.customer_id,
        "version": profile.version,
        "identifiers": profile.identifiers,
        "merged_from": profile.merged_from,
        "view": profile.view,
    }
    return pydantic_core.to_json(document)


async def _forget_erased(
    store: Store,
    customers: set[str],
    subject: Callable[[str], str],
    published: Mapping[str, Sequence[str]] | None = None,
) -> None:
    """`Store.forget_erased` for the profiles a writer wrote for or named, if any."""
    if customers and (erased := await store.forget_erased(customers, subject, published)):
        log.warning("writes_for_erased_profiles_deleted", customers=len(erased))


def _pending(readable: list[tuple[RawRecord, Interaction, list[str]]]) -> list[Pending]:
    """What the resolver takes of each event: only a `verified` one vouches for its identifiers
    (a `claimed` one's were typed from what the customer said)."""
    return [
        Pending(event.id, event.occurred_at, keys, event.identity_trust == "verified")
        for _, event, keys in readable
    ]


@dataclass(frozen=True)
class DeadLetter:
    record: RawRecord
    reason: str
    detail: str


class _Unprocessable(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


def _facts_told_by_customer(
    events: list[Interaction], customers: dict[str, str]
) -> dict[str, Counter[str]]:
    """Per customer, how many of the batch's events tell each fact promotions follow
    (`facts_told`): a sale is checked against the profile as it was before the batch."""
    told: dict[str, Counter[str]] = {}
    for event in events:
        if facts := facts_told(event):
            told.setdefault(customers[event.id], Counter()).update(facts)
    return told
