"""Every offer in memory, as of one version, and the follower that keeps it current.

Each process that prices something holds all offers (`OffersBook`), filled from the compacted
`offers` topic by an `OffersFollower`; pricing reads one immutable `OffersSnapshot` at a time, so
a quote never mixes two versions.

How records become the book (`OfferRecord` explains versions and parts):

- A version is applied only once all its parts have arrived: a price change touching three
  SKUs is never seen with one of them changed.
- Catching up from the beginning of the compacted topic, some parts of old versions are gone:
  compaction kept only the later record of their key. A version still missing parts when a
  record of a higher version arrives, or when the reader reaches the end and a higher version
  was read, is applied as far as it arrived; its missing parts were superseded. The highest
  version read, if incomplete at the end, is being written right now and waits for the rest.
- Per key, a record applies only if its version is higher than the key's current one, so
  order, duplicates (a version published twice) and stray parts do not matter.
- Compaction, though, keeps a key's *last* record, not its highest. A publish that timed out
  can still land later (the idempotent producer retries it until Kafka takes it), after a
  higher version of the key another process published meanwhile. The book notes such keys
  (`overtaken_on_topic`) so the offers service puts their latest record on the topic again
  before compaction leaves the older one for every reader started later.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Iterable
from datetime import datetime
from types import MappingProxyType

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from prometheus_client import Gauge
from pydantic import ValidationError

from hilo.kafka_security import client_options
from hilo.offers.model import (
    OfferRecord,
    OffersSnapshot,
    PriceSchedule,
    Promotion,
    price_key,
    promotion_key,
)
from hilo.settings import HiloSettings
from hilo.topics import Topic, topic_name

log = structlog.get_logger(__name__)

APPLIED_KEPT = 10_000
"""Applied versions listed: a part of a version this far behind the latest, read for the first
time, is no longer a version that waits for its other parts; it is taken as a stray one."""
CONFIRM_TIMEOUT = 10.0
"""Seconds an end-offsets request may take before the check is left for the next one."""
UNCONFIRMED = Gauge(
    "hilo_offers_unconfirmed_seconds",
    "Seconds since Kafka last confirmed this process's offers are the topic's latest: about "
    "0-10 normally; growing while Kafka is away, when its quotes may miss a change.",
)
_FOLLOWING: weakref.WeakSet[OffersFollower] = weakref.WeakSet()
"""The followers running in this process: the gauge is read from them when scraped, so it goes
on growing while one is reconnecting (and not in its loop)."""
UNCONFIRMED.set_function(
    lambda: max((f.unconfirmed_seconds() for f in list(_FOLLOWING)), default=0.0)
)


class OffersBook:
    """The offers as the records read so far define them; see the module for the rules."""

    def __init__(self) -> None:
        self._records: dict[str, OfferRecord] = {}
        self._pending: dict[int, dict[int, OfferRecord]] = {}
        self._applied: set[int] = set()
        self._forgotten_below = 0
        """Versions below this were applied and are no longer listed in `_applied`."""
        self._version = 0
        self._highest_read = 0
        self._catching_up = True
        self._snapshot: OffersSnapshot | None = None
        self._highest_of_key: dict[str, int] = {}
        self._overtaken: set[str] = set()
        """Keys whose last record read is older than a record of theirs read before."""

    @property
    def version(self) -> int:
        """The highest version applied (0: none yet)."""
        return self._version

    @property
    def catching_up(self) -> bool:
        return self._catching_up

    @property
    def highest_read(self) -> int:
        """The highest version read, whole or not: a version Kafka took half of is on the topic
        although it never applies."""
        return max(self._version, self._highest_read)

    def records(self) -> list[OfferRecord]:
        """The latest record of every key read so far: what the topic holds once caught up."""
        return list(self._records.values())

    def overtaken_on_topic(self) -> list[OfferRecord]:
        """The latest record (applied) of each key whose last record on the topic is an older
        one: what compaction would lose for that key, to be published again."""
        return [
            record
            for key in sorted(self._overtaken)
            if (record := self._records.get(key)) is not None
            and record.version == self._highest_of_key[key]
        ]

    def apply(self, record: OfferRecord) -> None:
        """Take one record in; its version applies once whole (or superseded, catching up)."""
        self._note_order(record)
        if record.version in self._applied or record.version < self._forgotten_below:
            # A stray part of a version already applied (published twice, or read after a
            # higher version while catching up): per key it can only fill in, never go back.
            self._apply_records([record])
            return
        if self._catching_up:
            self._apply_pending(below=record.version)
        self._highest_read = max(self._highest_read, record.version)
        parts = self._pending.setdefault(record.version, {})
        parts[record.part] = record
        if len(parts) >= record.parts:
            del self._pending[record.version]
            self._apply_version(record.version, parts.values())

    def caught_up(self) -> None:
        """The reader reached the end of the topic: what compaction left is all read.

        Versions still incomplete below the highest one read lost parts to compaction and apply
        as they are; from now on only whole versions apply.
        """
        self._apply_pending(below=self._highest_read)
        self._catching_up = False

    def pending_versions(self) -> list[int]:
        """Versions waiting for parts (what a snapshot does not show yet)."""
        return sorted(self._pending)

    def snapshot(self) -> OffersSnapshot:
        """Every offer in force as of the highest applied version; retired promotions left out.

        The same object until the book changes: callers may hold it as long as they like.
        """
        if self._snapshot is None:
            prices: dict[tuple[str, str], PriceSchedule] = {}
            promotions: dict[str, Promotion] = {}
            changes: dict[str, tuple[datetime, Promotion]] = {}
            for record in self._records.values():
                if record.price is not None:
                    prices[(record.price.sku, record.price.currency)] = record.price
                elif record.promotion is not None:
                    changes[record.promotion.id] = (record.changed_at, record.promotion)
                    if record.promotion.active:
                        promotions[record.promotion.id] = record.promotion
            self._snapshot = OffersSnapshot(
                version=self._version,
                prices=MappingProxyType(prices),
                promotions=MappingProxyType(promotions),
                promotion_changes=MappingProxyType(changes),
            )
        return self._snapshot

    def _apply_pending(self, *, below: int) -> None:
        for version in sorted(v for v in self._pending if v < below):
            self._apply_version(version, self._pending.pop(version).values())

    def _apply_version(self, version: int, records: Iterable[OfferRecord]) -> None:
        self._apply_records(records)
        self._applied.add(version)
        self._version = max(self._version, version)
        if len(self._applied) > 2 * APPLIED_KEPT:
            # One number per version, for ever, in every process pricing (a price feed writes
            # one a minute): only the latest are kept, and anything older counts as applied.
            self._forgotten_below = sorted(self._applied)[-APPLIED_KEPT]
            self._applied = {v for v in self._applied if v >= self._forgotten_below}
        self._snapshot = None

    def _note_order(self, record: OfferRecord) -> None:
        """Whether the key's last record read (what compaction keeps) is its highest."""
        highest = self._highest_of_key.get(record.key, 0)
        if record.version < highest:
            self._overtaken.add(record.key)
        else:
            self._highest_of_key[record.key] = record.version
            self._overtaken.discard(record.key)

    def _apply_records(self, records: Iterable[OfferRecord]) -> None:
        for record in records:
            current = self._records.get(record.key)
            if current is None or record.version > current.version:
                self._records[record.key] = record
                self._snapshot = None


def parse_record(value: bytes | None) -> OfferRecord | None:
    """The record in a message value, or None (logged, type only) when it is not a consistent
    offer record: one bad record must not stop every price in the process."""
    if value is None:
        return None
    try:
        record = OfferRecord.model_validate_json(value)
    except ValidationError:
        log.warning("offer_record_unreadable")
        return None
    if record.key != _subject_key(record):
        log.warning("offer_record_key_mismatch", version=record.version)
        return None
    return record


def _subject_key(record: OfferRecord) -> str | None:
    """The key the record's content belongs under (the model holds exactly one subject)."""
    if record.price is not None:
        return price_key(record.price.sku, record.price.currency)
    if record.promotion is not None:
        return promotion_key(record.promotion.id)
    return None


class TopicMissing(RuntimeError):
    """The `offers` topic does not exist (yet): its creator has not run."""


class PartitionsAdded(RuntimeError):
    """The topic has more partitions than the follower took (it learns of them with its
    metadata, within a minute): it takes them all again, the new ones from the beginning."""

    def __init__(self, count: int) -> None:
        super().__init__(f"more partitions than the {count} followed")
        self.count = count


class OffersFollower:
    """Follows `offers` from the beginning, outside any consumer group, into `book`.

    Every process holds all offers, so no group shares the partitions out and no offset is
    committed: each start reads the compacted topic from the beginning. `ready` is set once the
    reader has reached the end of the topic as it was at start; it keeps following afterwards,
    and reconnects from where it was on errors.
    """

    def __init__(
        self,
        settings: HiloSettings,
        book: OffersBook | None = None,
        *,
        retry_seconds: float = 2.0,
        poll_ms: int = 500,
        metadata_seconds: float = 60.0,
        confirm_seconds: float = 10.0,
    ) -> None:
        self.book = book or OffersBook()
        self.ready = asyncio.Event()
        self._settings = settings
        self._topic = topic_name(Topic.OFFERS, settings)
        self._retry_seconds = retry_seconds
        self._poll_ms = poll_ms
        self._metadata_ms = int(metadata_seconds * 1000)
        self._positions: dict[TopicPartition, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._confirm_seconds = confirm_seconds
        self.confirmed_at: float | None = None
        """When (monotonic) Kafka last confirmed that this book is the topic's latest."""
        self._checked_at = 0.0

    async def start(self) -> None:
        """Start following in the background; `ready` tells when the book is complete."""
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="offers-follower")
            _FOLLOWING.add(self)

    async def stop(self) -> None:
        _FOLLOWING.discard(self)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def run(self) -> None:
        """Follow forever; an error (broker gone, topic missing) waits and reconnects."""
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except PartitionsAdded as added:
                log.info("offers_partitions_added", partitions=added.count)
            except Exception as exc:
                log.warning("offers_follower_failed", error=type(exc).__name__)
                await asyncio.sleep(self._retry_seconds)

    async def _follow(self) -> None:
        consumer = AIOKafkaConsumer(
            **client_options(self._settings),
            client_id=f"{self._settings.client_id}-offers",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            metadata_max_age_ms=self._metadata_ms,
        )
        await consumer.start()
        try:
            partitions = await self._partitions()
            end = await self._assign(consumer, partitions)
            while True:
                if len(consumer.partitions_for_topic(self._topic) or ()) > len(partitions):
                    raise PartitionsAdded(len(partitions))
                if end is not None and await _reached(consumer, end):
                    self.book.caught_up()
                    self.ready.set()
                    self.confirmed_at = time.monotonic()
                    log.info("offers_book_ready", version=self.book.version)
                    end = None
                elif end is None and self._due_to_confirm():
                    await self._confirm(consumer, partitions)
                batches = await consumer.getmany(timeout_ms=self._poll_ms)
                for partition, records in batches.items():
                    for message in records:
                        record = parse_record(message.value)
                        if record is not None:
                            self.book.apply(record)
                    self._positions[partition] = await consumer.position(partition)
        finally:
            await consumer.stop()

    def unconfirmed_seconds(self) -> float:
        """How long since Kafka last confirmed this book is the topic's latest (0 before the
        first read ends: `ready` says that). It grows while Kafka is away: quotes go on from
        the book, and may miss a change published meanwhile."""
        if self.confirmed_at is None:
            return 0.0
        return time.monotonic() - self.confirmed_at

    def _due_to_confirm(self) -> bool:
        return time.monotonic() - self._checked_at >= self._confirm_seconds

    async def _confirm(self, consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> None:
        """Ask the topic's end offsets: reached, the book is confirmed the latest. Kafka away,
        the time since the last confirmation grows (`hilo_offers_unconfirmed_seconds`)."""
        self._checked_at = time.monotonic()
        try:
            end = await asyncio.wait_for(consumer.end_offsets(partitions), CONFIRM_TIMEOUT)
        except (KafkaError, TimeoutError) as exc:
            log.warning("offers_not_confirmed", error=type(exc).__name__)
            return
        if await _reached(consumer, end):
            self.confirmed_at = time.monotonic()

    async def _partitions(self) -> list[TopicPartition]:
        """Every partition of the topic, as the cluster describes it now."""
        admin = AIOKafkaAdminClient(
            **client_options(self._settings),
            client_id=f"{self._settings.client_id}-offers",
        )
        await admin.start()
        try:
            # Asked by name, a missing topic may be created with the broker's defaults (not
            # compacted) where `auto.create.topics.enable` is on: ask for the list first.
            if self._topic not in await admin.list_topics():
                raise TopicMissing(self._topic)
            [described] = await admin.describe_topics([self._topic])
        finally:
            await admin.close()
        if described["error_code"] != 0 or not described["partitions"]:
            raise TopicMissing(self._topic)
        numbers = sorted(partition["partition"] for partition in described["partitions"])
        return [TopicPartition(self._topic, number) for number in numbers]

    async def _assign(
        self, consumer: AIOKafkaConsumer, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, int] | None:
        """Take `partitions` from where this follower was (else the beginning); the end offsets
        to reach before `ready`, unless it is already.

        Offsets are asked before the partitions are assigned: once they are, the consumer keeps
        a fetch waiting at the broker (up to 500 ms) and every offset request waits behind it;
        the book took 1.2 s to load from an empty topic.
        """
        end = None if self.ready.is_set() else await consumer.end_offsets(partitions)
        beginning = await consumer.beginning_offsets(partitions)
        consumer.assign(partitions)
        for partition in partitions:
            consumer.seek(partition, self._positions.get(partition, beginning[partition]))
        return end


async def _reached(consumer: AIOKafkaConsumer, end: dict[TopicPartition, int]) -> bool:
    return all([await consumer.position(partition) >= offset for partition, offset in end.items()])
