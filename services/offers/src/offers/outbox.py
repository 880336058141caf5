"""Putting stored versions on the `offers` topic: right after each change, and again every few
seconds for any that Kafka did not take (the process stopped, or Kafka failed, between MongoDB
and Kafka), so nothing stored is lost.

Versions go out strictly in version order and one process at a time (a lease in MongoDB): the
topic is compacted, and compaction keeps the *last* record of a key, so a later version
overtaken by an earlier one would lose the later price for every new reader. Publishing a
version twice is harmless: readers apply by version.

A publish that timed out may still land later: the idempotent producer retries it until Kafka
takes it. A process whose lease ran out meanwhile (MongoDB and Kafka both out of its reach for
longer than the lease) can so put an older version of a key after the next holder's later one.
Every round, the holder puts each such key's latest record on the topic again
(`republish_overtaken`), so its last record is its latest before compaction runs.
"""

from __future__ import annotations

import asyncio

import structlog
from prometheus_client import Counter
from pymongo.errors import PyMongoError

from hilo.kafka import KafkaPublisher, PublishFailed
from hilo.offers.model import OfferRecord
from offers.changes import kafka_record
from offers.store import OffersStore

log = structlog.get_logger(__name__)

PUBLISHED = Counter("hilo_offers_versions_published_total", "Offers versions put on the topic")
REPUBLISHED = Counter(
    "hilo_offers_overtaken_records_republished_total",
    "Records published again because an older version of their key landed after them (a "
    "publish that timed out, retried by the producer): compaction would have kept the older",
)
DEFERRED = Counter(
    "hilo_offers_publish_failures_total",
    "Publishes of an offers version Kafka did not confirm (the outbox tries again)",
)

PUBLISHER_LEASE = "offers-publisher"
RESTORE_CHUNK = 500
"""Records per publish when the topic is filled again (`Outbox.restore_topic`)."""
LEASE_SECONDS = 30.0
"""Longer than one version's publish may take (`HILO_KAFKA_PUBLISH_TIMEOUT_SECONDS`); the lease
is renewed before each version."""


class Outbox:
    def __init__(
        self,
        store: OffersStore,
        publisher: KafkaPublisher,
        *,
        holder: str,
        lease_seconds: float = LEASE_SECONDS,
    ) -> None:
        self.store = store
        self.publisher = publisher
        self._holder = holder
        self._lease_seconds = lease_seconds
        self._lock = asyncio.Lock()

    async def publish_pending(self) -> int:
        """Publish every stored version not yet on the topic, oldest first; answer how many.

        Stops at the first version Kafka does not confirm: the next run starts again from it.
        Raises nothing for Kafka; MongoDB errors propagate.
        """
        published = 0
        async with self._lock:
            await self.store.settle()
            while pending := await self.store.unpublished():
                for change in pending:
                    if self.store.overtaken(change.version):
                        # A backup restored under a running service holds it as unpublished.
                        log.warning("offers_version_overtaken_on_topic", version=change.version)
                        await self.store.mark_published(change.version)
                        continue
                    if not await self.store.lease(
                        PUBLISHER_LEASE, self._holder, self._lease_seconds
                    ):
                        return published
                    try:
                        await self.publisher.publish_records(change.kafka_records())
                    except PublishFailed:
                        DEFERRED.inc()
                        log.warning("offers_version_unpublished", version=change.version)
                        return published
                    await self.store.mark_published(change.version)
                    PUBLISHED.inc()
                    published += 1
        return published

    async def restore_topic(self) -> bool:
        """Put each key's latest published record on the topic again where the topic lacks it
        or holds an older one (its data lost, a new cluster): readers started since would quote
        nothing, and those running quoted what they held. Compared key by key, not by the
        highest version: a change published to the emptied topic before this ran would hide
        the loss of every other key. Whether the topic is whole now (or was); False to try
        again (Kafka, the lease or MongoDB away).

        In version order, so compaction keeps each key's latest; publishing a record twice is
        harmless (readers apply by version)."""
        async with self._lock:
            topic = self.store.topic_state()
            if topic is None:
                return False
            await self.store.settle()
            catalogue = await self.store.highest_published()
            on_topic = {record.key: record.version for record in topic.records()}
            records = [
                head
                for head in await self.store.head_records()
                if head.version <= catalogue and on_topic.get(head.key, 0) < head.version
            ]
            if not records:
                return True
            log.warning(
                "offers_topic_behind_catalogue_republishing",
                topic_version=topic.version,
                catalogue_version=catalogue,
                records=len(records),
            )
            for start in range(0, len(records), RESTORE_CHUNK):
                if not await self.store.lease(PUBLISHER_LEASE, self._holder, self._lease_seconds):
                    return False
                chunk = records[start : start + RESTORE_CHUNK]
                try:
                    await self.publisher.publish_records([kafka_record(r) for r in chunk])
                except PublishFailed:
                    DEFERRED.inc()
                    log.warning("offers_topic_restore_unfinished", published=start)
                    return False
            log.info("offers_topic_restored", records=len(records))
            return True

    async def republish_overtaken(self) -> int:
        """Publish again the latest record of each key whose last record on the topic is an
        older version (see the module); how many. Nothing while another process holds the
        lease or Kafka does not confirm: the next round tries again."""
        async with self._lock:
            topic = self.store.topic_state()
            overtaken = [] if topic is None else topic.overtaken()
            if not overtaken:
                return 0
            # The lease before the catalogue is read: a holder publishing a later version
            # between the two would otherwise be followed by the record it replaced.
            if not await self.store.lease(PUBLISHER_LEASE, self._holder, self._lease_seconds):
                return 0
            records = await self._still_latest(overtaken)
            if not records:
                return 0
            ordered = sorted(records, key=lambda record: (record.version, record.part))
            try:
                await self.publisher.publish_records([kafka_record(r) for r in ordered])
            except PublishFailed:
                DEFERRED.inc()
                log.warning("offers_overtaken_records_not_republished", records=len(ordered))
                return 0
            REPUBLISHED.inc(len(ordered))
            log.warning(
                "offers_overtaken_records_republished",
                records=len(ordered),
                versions=sorted({record.version for record in ordered}),
            )
            return len(ordered)

    async def _still_latest(self, records: list[OfferRecord]) -> list[OfferRecord]:
        """Those still their key's latest in the catalogue. A later version of the key, on its
        way to the topic or to be published, will be its last record by itself; the older one
        put after it would be the loss this repairs."""
        await self.store.settle()
        heads = await self.store.current(record.key for record in records)
        return [r for r in records if r.key in heads and heads[r.key].version == r.version]

    async def run(self, interval_seconds: float) -> None:
        """Publish what is pending now and every `interval_seconds`, and again what an older
        record overtook on the topic, until cancelled."""
        while True:
            try:
                if published := await self.publish_pending():
                    log.info("offers_outbox_published", versions=published)
                await self.republish_overtaken()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("offers_outbox_failed", error=type(exc).__name__)
            await asyncio.sleep(interval_seconds)

    async def try_publish(self) -> None:
        """Publish now if MongoDB and Kafka let us; the loop catches up otherwise."""
        try:
            await self.publish_pending()
        except PyMongoError as exc:
            log.warning("offers_publish_deferred", error=type(exc).__name__)

    async def release(self) -> None:
        try:
            await self.store.release(PUBLISHER_LEASE, self._holder)
        except PyMongoError as exc:
            log.warning("offers_lease_not_released", error=type(exc).__name__)
