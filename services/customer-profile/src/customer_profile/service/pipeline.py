"""One batch of interactions from Kafka to journeys, profiles and the topics downstream reads.

Order of effects, so that a crash at any point is repaired by redelivery (offsets are committed
only after `process` returns):

1. parse; what cannot be read goes to the dead-letter topic with the reason;
2. resolve identities (atomic claims and merges, see `resolver.py`);
3. store journey entries, once per event id (a redelivered event is a no-op);
4. derive and save each touched profile at the version it was read at;
5. publish journey records, profile snapshots, merges and dead letters, waiting for Kafka's acks.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from pydantic import ValidationError

from customer_profile.adapters.store import ProfileStore, StoredProfile
from customer_profile.domain.identity import IdentityPolicy
from customer_profile.domain.journey import JourneyEntry, new_entry
from customer_profile.domain.profile import ProfileView, derive_view
from customer_profile.service.resolver import IdentityResolver, Merge, Pending
from hilo.contract import Interaction, UnsupportedSchemaVersion, parse_interaction
from hilo.kafka import KafkaPublisher
from hilo.topics import Topic

log = structlog.get_logger(__name__)
MAX_SAVE_ATTEMPTS = 8


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
    dead_lettered: int = 0
    merges: list[Merge] = field(default_factory=list)
    profiles: dict[str, StoredProfile] = field(default_factory=dict)


class Pipeline:
    def __init__(
        self,
        store: ProfileStore,
        publisher: KafkaPublisher | None,
        policy: IdentityPolicy,
        conversation_window: timedelta,
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._policy = policy
        self._resolver = IdentityResolver(store, policy)
        self._window = conversation_window
        self.events_processed = 0

    async def process(self, records: Sequence[RawRecord]) -> BatchOutcome:
        outcome = BatchOutcome()
        dead: list[tuple[RawRecord, str, str]] = []
        readable: list[tuple[RawRecord, Interaction, list[str]]] = []
        seen: set[str] = set()
        for record in records:
            try:
                event = self._readable(record)
            except _Unprocessable as exc:
                dead.append((record, exc.reason, exc.detail))
                continue
            keys = self._policy.usable_keys(event.identifiers.pairs())
            if not keys:
                dead.append((record, "no_usable_identifier", "every identifier is a blocked value"))
            elif event.id not in seen:  # a provider retry inside one batch
                seen.add(event.id)
                readable.append((record, event, keys))
        events = [event for _, event, _ in readable]
        resolution = await self._resolver.resolve(
            [Pending(event.id, event.occurred_at, keys) for _, event, keys in readable]
        )
        await self._store.record_conflicts(resolution.conflicts)
        for conflict, event_id in resolution.conflicts:
            log.warning(
                "identity_conflict",
                reason=conflict.reason,
                identifier_kind=conflict.kind,
                customer_ids=list(conflict.customer_ids),
                event_id=event_id,
            )
        outcome.merges = resolution.merges
        before = await self._store.load(set(resolution.customers.values()))
        entries = await self._write_journey(events, resolution.customers, before, outcome)
        rebuild = {m.survivor for m in resolution.merges}
        rebuild |= {e.customer_id for e in entries if e.late}
        outcome.profiles = await self._update_profiles(before, entries, rebuild)
        await self._publish(entries, outcome, dead)
        outcome.accepted = len(events)
        outcome.dead_lettered = len(dead)
        self.events_processed += len(events)
        return outcome

    def _readable(self, record: RawRecord) -> Interaction:
        if record.value is None:
            raise _Unprocessable("empty_value", "the record has no value")
        try:
            return parse_interaction(record.value)
        except ValidationError as exc:
            detail = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in exc.errors()
            )
            raise _Unprocessable("invalid_interaction", detail) from None
        except UnsupportedSchemaVersion as exc:
            raise _Unprocessable("unsupported_schema_version", str(exc)) from None
        except ValueError as exc:
            raise _Unprocessable("not_json", str(exc)[:300]) from None

    async def _write_journey(
        self,
        events: list[Interaction],
        customers: dict[str, str],
        before: dict[str, StoredProfile],
        outcome: BatchOutcome,
    ) -> list[JourneyEntry]:
        """Store the batch's entries, flagging those that happened before what is recorded."""
        latest = {c: p.view.last_seen for c, p in before.items() if p.view and p.view.last_seen}
        recorded_at = datetime.now(UTC)
        entries = []
        for event in events:
            customer = customers[event.id]
            previous = latest.get(customer)
            late = previous is not None and event.occurred_at < previous
            entries.append(new_entry(event, customer, recorded_at, late=late))
            latest[customer] = max(previous, event.occurred_at) if previous else event.occurred_at
        duplicates = await self._store.insert_entries(entries)
        outcome.duplicates = len(duplicates)
        return [entry for entry in entries if entry.id not in duplicates]

    async def _update_profiles(
        self,
        before: dict[str, StoredProfile],
        entries: list[JourneyEntry],
        rebuild: set[str],
    ) -> dict[str, StoredProfile]:
        """Save each touched profile at the version read before its entries were stored.

        Incremental when nothing is late and nothing merged; a lost race (another writer saved
        first) or a merge re-derives the profile from the stored journey.
        """
        by_customer: dict[str, list[JourneyEntry]] = defaultdict(list)
        for entry in entries:
            by_customer[entry.customer_id].append(entry)
        # A customer whose events were all duplicates has nothing new: leave its profile alone.
        profiles = {c: p for c, p in before.items() if c in by_customer or c in rebuild}
        rebuild = set(rebuild)
        profiles.update(await self._store.load(rebuild - set(profiles)))
        saved: dict[str, StoredProfile] = {}
        for _ in range(MAX_SAVE_ATTEMPTS):
            journeys = await self._store.entries_of(p for c, p in profiles.items() if c in rebuild)
            views = {
                customer: (
                    profile.version,
                    derive_view(journeys[customer], self._window)
                    if customer in journeys
                    else _fold(profile.view, by_customer[customer], self._window),
                )
                for customer, profile in profiles.items()
            }
            lost = await self._store.save_views(views)
            for customer in set(views) - lost:
                version, view = views[customer]
                saved[customer] = replace(profiles[customer], version=version + 1, view=view)
            if not lost:
                return saved
            canonical = await self._store.canonical(lost)
            rebuild |= set(canonical.values())
            profiles = await self._store.load(set(canonical.values()))
        raise RuntimeError(
            f"could not save {len(profiles)} profile(s): too many concurrent writers"
        )

    async def _publish(
        self,
        entries: list[JourneyEntry],
        outcome: BatchOutcome,
        dead: list[tuple[RawRecord, str, str]],
    ) -> None:
        """Publish everything downstream reads and wait until Kafka has all of it."""
        if self._publisher is None:
            return
        publish = self._publisher.publish
        sends = [
            publish(
                Topic.INTERACTIONS_DLQ,
                record.value,
                key=record.key or b"",
                headers=_dead_letter_headers(record, reason, detail),
            )
            for record, reason, detail in dead
        ]
        sends += [
            publish(
                Topic.JOURNEY,
                entry.model_dump_json().encode(),
                key=entry.customer_id.encode(),
                headers={**JSON, "ce_id": entry.id, "ce_type": f"dev.hilo.journey.{entry.type}"},
            )
            for entry in entries
        ]
        for merge in outcome.merges:
            sends.append(
                publish(
                    Topic.IDENTITY_MERGES,
                    merge_record(merge),
                    key=merge.survivor.encode(),
                    headers=JSON,
                )
            )
            sends += [
                publish(
                    Topic.PROFILES,
                    alias_record(absorbed, merge.survivor),
                    key=absorbed.encode(),
                    headers=JSON,
                )
                for absorbed in merge.absorbed
            ]
        sends += [
            publish(
                Topic.PROFILES,
                profile_snapshot(profile),
                key=profile.customer_id.encode(),
                headers=JSON,
            )
            for profile in outcome.profiles.values()
        ]
        await asyncio.gather(*sends)


JSON = {"content-type": "application/json"}


def _fold(view: ProfileView | None, new: list[JourneyEntry], window: timedelta) -> ProfileView:
    """The stored view with the batch's (non-late) entries applied on top."""
    result = view.model_copy(deep=True) if view else ProfileView()
    for entry in sorted(new, key=JourneyEntry.sort_key):
        result.apply(entry, window)
    return result.finish()


def merge_record(merge: Merge) -> bytes:
    return json.dumps(
        {
            "survivor": merge.survivor,
            "absorbed": list(merge.absorbed),
            "event_id": merge.event_id,
            "occurred_at": merge.at.isoformat(),
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
        "view": profile.view.model_dump(mode="json") if profile.view else None,
    }
    return json.dumps(document).encode()


def _dead_letter_headers(record: RawRecord, reason: str, detail: str) -> dict[str, str]:
    headers = {name: value.decode(errors="replace") for name, value in record.headers}
    headers.update(
        {
            "hilo_error_reason": reason,
            "hilo_error_detail": detail[:1000],
            "hilo_original_topic": record.topic,
            "hilo_original_partition": str(record.partition),
            "hilo_original_offset": str(record.offset),
            "hilo_failed_at": datetime.now(UTC).isoformat(),
        }
    )
    return headers


class _Unprocessable(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail
