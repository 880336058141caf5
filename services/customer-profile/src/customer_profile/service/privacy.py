"""Right of access and right to be forgotten."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pydantic_core
import structlog
from aiokafka.errors import KafkaError
from bson import ObjectId

from customer_profile.adapters.conflicts import WITHDRAWN
from customer_profile.adapters.erasures import Erasure
from customer_profile.adapters.store import ProfileStore
from customer_profile.domain.journey import JourneyEntry
from customer_profile.service.background import keep_finishing
from customer_profile.service.merge_requests import decided_record
from customer_profile.service.ports import HOLD_EXPIRY, StoredProfile
from hilo.kafka import KafkaPublisher, PublishFailed, latest_values
from hilo.sealing import KeyStore, Sealer
from hilo.topics import Topic

log = structlog.get_logger(__name__)


EXPORT_CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True)
class Export:
    """A customer's export: `head` (profile, identities, conflicts, splits) and the journey,
    read from MongoDB as it is sent, so a walk-in account's 100,000 entries are never held
    together (they would take the service past its memory)."""

    head: dict[str, Any]
    journey: AsyncIterator[dict[str, Any]]

    async def json_chunks(self) -> AsyncIterator[bytes]:
        """One JSON document, `journey` its last field, sent `EXPORT_CHUNK_BYTES` at a time. A
        failure midway ends the body short of its closing brackets: never a valid export."""
        pending = bytearray(pydantic_core.to_json(self.head)[:-1] + b',"journey":[')
        first = True
        async for entry in self.journey:
            pending += (b"" if first else b",") + pydantic_core.to_json(entry)
            first = False
            if len(pending) >= EXPORT_CHUNK_BYTES:
                yield bytes(pending)
                pending.clear()
        yield bytes(pending + b"]}")


class Privacy:
    def __init__(
        self,
        store: ProfileStore,
        publisher: KafkaPublisher | None,
        sealer: Sealer,
        erasures_topic: tuple[Mapping[str, Any], str] | None = None,
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._sealer = sealer
        self._erasures_topic = erasures_topic
        """(Kafka client options, topic name) of `erasures`, re-applied once at start."""
        self._reapplied = erasures_topic is None

    @property
    def reapplied(self) -> bool:
        """Whether the erasures recorded on Kafka were applied again since start."""
        return self._reapplied

    async def export(self, profile: StoredProfile) -> Export:
        """Everything Hilo holds about the customer: the journey read as it is sent."""
        identities = await self._store.identities_of(profile.aliases)
        # With those its own events raised while naming only others: an erasure deletes them.
        conflicts = await self._store.conflicts_of(
            profile.aliases, await self._store.journey_ids(profile.aliases)
        )
        # Theirs as an erasure counts them: those they hold, and those their journey used that
        # nobody else holds (one past a cap, one an unverified source could not add).
        used = await self._store.identifiers_used(profile.aliases)
        own = await self._store.identifiers_to_erase(profile.aliases, identities, used=used)
        others = {key.partition(":")[2] for key in used - own}
        view = profile.view.model_dump(mode="json") if profile.view else None
        if view is not None:
            view["traits"] = _without(view["traits"], others, lambda t: t["value"])
        head = {
            "exported_at": datetime.now(UTC).isoformat(),
            "customer_id": profile.customer_id,
            "merged_from": profile.merged_from,
            "identities": identities,
            "profile": view,
            "conflicts": [_own_part(conflict, set(profile.aliases), own) for conflict in conflicts],
            # What agents split off or kept apart, with why: records an erasure deletes.
            "splits": [
                _own_split(split.public(), set(profile.aliases), own)
                for split in await self._store.splits_involving(profile.aliases)
            ],
        }
        journey = (
            _own_entry(entry, profile.customer_id, own, others)
            async for entry in self._store.in_order(profile.aliases)
        )
        return Export(head, journey)

    async def erase(self, profile: StoredProfile) -> dict[str, Any]:
        """Erase the customer and its aliases: recorded first, then completed (see `complete`).

        Later events with the same identifiers start a fresh profile; events that happened
        before the erasure (in flight, redelivered, replayed) are not stored again. The keys of
        every identifier the person held or used are deleted, so their records on `interactions`,
        `journey` and the dead-letter topic can no longer be opened (crypto-shredding).

        The profiles are held first (`_held`): from then on no merge takes them, so what the
        erasure records is all there is to erase.
        """
        holds: list[tuple[ObjectId, list[str]]] = []
        try:
            profile, keys = await self._read_held(profile, holds)
            erasure = await self._store.record_erasure(
                profile.customer_id,
                profile.aliases,
                [self._sealer.subject(key) for key in keys],
                datetime.now(UTC),
            )
        except BaseException:  # cancelled too
            for hold, _ in holds:  # nothing recorded: the customer is not being erased
                with suppress(Exception):
                    await self._store.release_hold(hold)
            raise
        return await self.complete(erasure)

    async def _read_held(
        self, profile: StoredProfile, holds: list[tuple[ObjectId, list[str]]]
    ) -> tuple[StoredProfile, set[str]]:
        """The customer's profiles held (`_held`) and the identifiers the erasure covers, read
        while the hold stands. A request slower than `HOLD_EXPIRY` may have seen its hold taken
        back as abandoned by a batch (and a merge take a profile since): it holds and reads
        again, so what it records is what it held. So does one whose hold is half-way to
        expiry, so a batch cannot take it back between the check and the record."""
        for _ in range(MAX_HOLDS):
            profile = await self._held(profile, holds)
            keys = await self._store.identifiers_to_erase(profile.aliases, profile.identifiers)
            hold = holds[-1][0]
            young = hold.generation_time > datetime.now(UTC) - HOLD_EXPIRY / 2
            if young and await self._store.still_held(hold, profile.aliases):
                return profile, keys
            log.warning("erasure_hold_lost", customer_id=profile.customer_id)
        raise RuntimeError(f"the hold on {profile.customer_id} kept being taken back")

    async def _held(
        self, profile: StoredProfile, holds: list[tuple[ObjectId, list[str]]]
    ) -> StoredProfile:
        """The customer's profiles held for the erasure, read again once held: a merge that took
        one of them first made it part of its survivor's customer (as if it had come before the
        request), and a profile merged into them meanwhile is theirs. One split off meanwhile
        is someone else's: its hold is taken back. Each hold made goes into `holds`."""
        for _ in range(MAX_HOLDS):
            hold, elsewhere = await self._store.hold(profile.aliases)
            holds.append((hold, profile.aliases))
            current = await self._store.get(profile.customer_id)
            if current is None:  # erased by another request meanwhile
                return profile
            if not elsewhere and set(current.aliases) <= set(profile.aliases):
                for made, ids in holds:
                    if stray := set(ids) - set(current.aliases):
                        await self._store.release_hold(made, stray)
                return current
            if elsewhere:
                log.warning(
                    "erasure_follows_merge",
                    customer_id=profile.customer_id,
                    survivor=current.customer_id,
                )
            profile = current
        raise RuntimeError(f"the profiles of {profile.customer_id} kept being merged")

    async def complete(self, erasure: Erasure) -> dict[str, Any]:
        """Held (again) from merges first (`ProfileStore.hold_for_erasure`), then MongoDB
        (agents stop seeing the person at once), then the tombstones on the compacted topic, then
        done; every step is safe to repeat. Still pending if a batch added to the erasure
        meanwhile (`ProfileStore.forget_erased`): it is completed again.

        Raises `PublishFailed` when Kafka does not take the tombstones: the erasure stays
        recorded as not done and `finish_unfinished` completes it.
        """
        held = await self._store.hold_for_erasure(erasure, self._sealer.subject)
        if added := sorted(set(held.aliases) - set(erasure.aliases)):
            log.warning(
                "erasure_extended_to_survivor", customer_id=erasure.customer_id, profiles=added
            )
        forgotten = await self._sealer.keys.forget(held.subjects, made_until=held.requested_at)
        deleted, erasure = await self._store.erase_for(held, held.aliases)
        # A profile merged into theirs after the hold (by a batch that read them unheld) is
        # theirs: added to the erasure, which is completed again, and deleted now.
        await self._store.forget_erased(erasure.aliases, self._sealer.subject)
        if self._publisher is not None:
            publish = self._publisher.publish
            await publish(Topic.ERASURES, erasure_record(erasure), key=erasure.customer_id.encode())
            await asyncio.gather(
                *(publish(Topic.PROFILES, None, key=alias.encode()) for alias in erasure.aliases),
                *(
                    publish(Topic.MERGE_REQUESTS, withdrawn, key=request_id.encode())
                    for request_id, withdrawn in withdrawn_records(erasure)
                ),
            )
        done = await self._store.erasure_finished(erasure)
        log.info(
            "customer_erased", customer_id=erasure.customer_id, keys=forgotten, done=done, **deleted
        )
        return {
            "customer_id": erasure.customer_id,
            "status": "done" if done else "pending",
            "erased": {**deleted, "keys": forgotten},
            "tombstoned": erasure.aliases,
        }

    async def status(self, customer_id: str) -> dict[str, Any] | None:
        """Where the erasure of this customer stands, or None if it was never asked for."""
        erasure = await self._store.erasure_of(customer_id)
        if erasure is None:
            return None
        return {
            "customer_id": erasure.customer_id,
            "status": "done" if erasure.done else "pending",
            "requested_at": erasure.requested_at.isoformat(),
        }

    async def finish_unfinished(self) -> int:
        """Complete every erasure a failure left half-done; how many are still unfinished.

        One asked for less than `LEFT_TO_ITS_REQUEST` ago is left to the request completing it
        (finishing it here as well would race it, and the request would report half the work).
        """
        left = 0
        recent = datetime.now(UTC) - LEFT_TO_ITS_REQUEST
        for erasure in await self._store.unfinished_erasures():
            if erasure.requested_at > recent:
                left += 1
                continue
            try:
                completed = await self.complete(erasure)
            except PublishFailed:
                left += 1
            except Exception as exc:  # one erasure that fails must not hold up the others
                log.warning(
                    "erasure_not_completed",
                    customer_id=erasure.customer_id,
                    error=type(exc).__name__,
                )
                left += 1
            else:
                left += completed["status"] != "done"
        return left

    async def keep_finishing(self, interval: float) -> None:
        """Run for the life of the service: erasures recorded on Kafka are applied again once
        (see `reapply_recorded`), and unfinished ones complete once Kafka or MongoDB are back."""
        await keep_finishing(self._reapply_then_finish, interval, "erasures")

    async def _reapply_then_finish(self) -> int:
        if not self._reapplied and self._erasures_topic is not None:
            try:
                await self.reapply_recorded(*self._erasures_topic)
                self._reapplied = True
            except (TimeoutError, KafkaError) as exc:
                log.warning("erasures_not_reapplied", error=type(exc).__name__)
                return 1
        return await self.finish_unfinished()

    async def reapply_recorded(self, kafka: str | Mapping[str, Any], topic: str) -> int:
        """Erase again everyone the `erasures` topic names whom MongoDB holds again, and delete
        their keys again: what restoring a backup taken before their erasure brought back.

        Run once at every start; how many were erased again.
        """
        erasures = await recorded_erasures(kafka, topic)
        back = await self._store.existing_profiles(
            alias for erasure in erasures for alias in _aliases(erasure)
        )
        again = 0
        for erasure in erasures:
            # Every time, not only for profiles that came back: the key store may have been
            # restored on its own (both are idempotent).
            if await honour_erasure(self._store, self._sealer.keys, erasure):
                log.warning("customer_keys_erased_again", customer_id=erasure["customer_id"])
            if back & set(_aliases(erasure)):
                await self._store.hold(_aliases(erasure))
                await self._store.erase(_aliases(erasure))
                again += 1
                log.warning("customer_erased_again", customer_id=erasure["customer_id"])
        return again


ERASURES_READ_SECONDS = 120.0
LEFT_TO_ITS_REQUEST = timedelta(seconds=5)
MAX_HOLDS = 5
"""Times an erasure request holds a customer's profiles again because merges kept changing them."""


async def recorded_erasures(kafka: str | Mapping[str, Any], topic: str) -> list[dict[str, Any]]:
    """Every erasure on the compacted `erasures` topic, its latest record per customer
    (`kafka`: as `hilo.kafka.read_to_end` takes it)."""
    values = await latest_values(kafka, topic, within_seconds=ERASURES_READ_SECONDS)
    return [json.loads(value) for value in values]


async def honour_erasure(store: ProfileStore, keys: KeyStore, erasure: dict[str, Any]) -> int:
    """Mark the identifiers an `erasures` record names as erased and delete their keys made up
    to it (both idempotent); how many keys were still there."""
    erased_at = datetime.fromisoformat(erasure["erased_at"])
    subjects = erasure.get("subjects", [])
    await store.suppress_erased(subjects, erased_at)
    return await keys.forget(subjects, made_until=erased_at)


def _aliases(erasure: dict[str, Any]) -> list[str]:
    """The profile ids an erasure record names (records before aliases were kept: the one id)."""
    return list(erasure.get("aliases") or [erasure["customer_id"]])


def erasure_record(erasure: Erasure) -> bytes:
    """What the `erasures` topic keeps: no personal data, enough to keep the person erased."""
    return json.dumps(
        {
            "customer_id": erasure.customer_id,
            "aliases": erasure.aliases,
            "subjects": erasure.subjects,
            "erased_at": erasure.requested_at.isoformat(),
        }
    ).encode()


def _own_entry(
    entry: JourneyEntry, customer_id: str, identities: set[str], others: set[str]
) -> dict[str, Any]:
    """A journey entry as far as it is this customer's: an event can carry someone else's
    identifier too (one that named two people a split told apart), as an identifier or as a
    trait, which an export leaves out."""
    own = {k: v for k, v in entry.identifiers.items() if f"{k}:{v}" in identities}
    payload = dict(entry.payload)
    if isinstance(payload.get("traits"), dict):
        payload["traits"] = _without(payload["traits"], others, lambda value: value)
    update = {"customer_id": customer_id, "identifiers": own, "payload": payload}
    return entry.model_copy(update=update).model_dump(mode="json")


def _without(
    traits: dict[str, Any], values: set[str], value_of: Callable[[Any], Any]
) -> dict[str, Any]:
    """The traits whose value is none of `values` (someone else's identifiers)."""
    return {name: trait for name, trait in traits.items() if value_of(trait) not in values}


def _own_part(conflict: dict[str, Any], aliases: set[str], identities: set[str]) -> dict[str, Any]:
    """A conflict as far as it is this customer's: the other profiles it names, and the
    identifiers the event carried that are not this customer's, are someone else's data (a
    person who was told apart from them by a split, say), so an export leaves them out."""
    own = {**conflict, "customer_ids": [c for c in conflict["customer_ids"] if c in aliases]}
    if "keys" in conflict:
        own["keys"] = [key for key in conflict["keys"] if key in identities]
    return own


def _own_split(split: dict[str, Any], aliases: set[str], identities: set[str]) -> dict[str, Any]:
    """A split as far as it is this customer's, as `_own_part` keeps a conflict: the profile on
    the other side and identifiers this customer does not hold (split off to someone else) are
    that person's data."""
    return {
        "side": "kept" if split["kept"] in aliases else "restored",
        "status": split["status"],
        "undoes_event_id": split["undoes_event_id"],
        "identifiers": [
            named
            for named in split["identifiers"]
            if f"{named['kind']}:{named['value']}" in identities
        ],
        "by": split["by"],
        "reason": split["reason"],
        "requested_at": split["requested_at"],
    }


def withdrawn_records(erasure: Erasure) -> list[tuple[str, bytes]]:
    """(request id, record) on `identity.merge_requests` for each request the erasure withdrew:
    readers following the queue close it, as they would a rejected one."""
    decision = {"by": None, "at": erasure.requested_at}
    return [
        (request_id, decided_record(request_id, WITHDRAWN, decision))
        for request_id in erasure.withdrawn_requests
    ]
