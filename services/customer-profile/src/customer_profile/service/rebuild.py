"""Rebuild profiles and journeys from the `interactions` topic into empty collections.

The topic is the source of truth: replaying it from the earliest offset through the same
pipeline gives the same profiles (same identifiers, journeys and derived views; customer ids are
derived from the event that created each profile, so they are the same unless partitions arrive
in another order). Nothing is published while rebuilding, so downstream sees no duplicates.
A record that cannot be processed (the live consumer dead-lettered it: it is still on the topic)
is left out, counted and logged, as the live consumer isolates it, instead of stopping the
rebuild for good at it.
The `erasures` topic is read first: events about erased people from before their erasure are
not rebuilt (the pipeline drops them as it does live), and their keys are deleted again (their
sealed records cannot be opened anyway once the keys are gone).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from customer_profile.adapters.store import ProfileStore
from customer_profile.service.batches import BatchRunner, ConsumerHealth
from customer_profile.service.pipeline import Pipeline, RawRecord
from customer_profile.service.privacy import honour_erasure, recorded_erasures
from customer_profile.settings import ProfileSettings
from hilo.kafka_security import client_options
from hilo.sealing import Sealer, create_sealer
from hilo.topics import Topic, ensure_topics, topic_name

log = structlog.get_logger(__name__)


class NotEmpty(RuntimeError):
    """Rebuilding into collections that hold data would mix two histories."""


@dataclass(frozen=True)
class RebuildReport:
    records: int
    seconds: float
    left_out: int = 0
    """Records that could not be processed (unreadable, or failing on their own)."""


async def rebuild(
    settings: ProfileSettings, store: ProfileStore, *, batch_size: int = 1000
) -> RebuildReport:
    """Replay every partition from its earliest offset to the end offset seen at start."""
    counts = await store.counts()
    if any(counts.values()):
        raise NotEmpty(f"target database {settings.mongodb_database!r} is not empty: {counts}")
    await store.create_indexes()
    await ensure_topics(settings)
    sealer = create_sealer(settings, store.client)
    erasures = await restore_erasures(settings, store, sealer)
    log.info("rebuild_erasures_restored", erasures=erasures)
    pipeline = Pipeline(
        store,
        None,
        sealer,
        settings.identity_policy(),
        settings.conversation_window,
        settings.max_future_skew,
        checkpoint_behind=settings.checkpoint_behind,
    )
    runner = BatchRunner(
        pipeline, settings.retry_policy(), ConsumerHealth(settings.stuck_after_seconds)
    )
    topic = topic_name(Topic.INTERACTIONS, settings)
    consumer = AIOKafkaConsumer(
        **client_options(settings),
        enable_auto_commit=False,
        group_id=None,
        client_id=f"{settings.client_id}-rebuild",
    )
    await consumer.start()
    started = time.monotonic()
    total = left_out = 0
    try:
        partitions = [TopicPartition(topic, p) for p in await _partitions(settings, topic)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        while await _behind(consumer, partitions, end):
            fetched = await consumer.getmany(timeout_ms=1000, max_records=batch_size)
            records = [
                RawRecord(r.value, r.key, tuple(r.headers or ()), r.topic, r.partition, r.offset)
                for tp, batch in fetched.items()
                for r in batch
                if r.offset < end[tp]
            ]
            if records:
                left_out += (await runner.run(records)).dead_lettered
                total += len(records)
                log.info("rebuild_progress", records=total, left_out=left_out)
    finally:
        await consumer.stop()
    return RebuildReport(records=total, seconds=time.monotonic() - started, left_out=left_out)


async def restore_erasures(settings: ProfileSettings, store: ProfileStore, sealer: Sealer) -> int:
    """Mark every identifier the `erasures` topic names as erased, and delete its key again (a
    key store restored from a backup may hold it); how many erasures."""
    erasures = await recorded_erasures(
        client_options(settings), topic_name(Topic.ERASURES, settings)
    )
    for erasure in erasures:
        await honour_erasure(store, sealer.keys, erasure)
    return len(erasures)


async def _partitions(settings: ProfileSettings, topic: str) -> list[int]:
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        [description] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(p["partition"] for p in description["partitions"])


async def _behind(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition], end: dict[TopicPartition, int]
) -> bool:
    """Some partition has not yet been read up to the end offset seen at start."""
    for partition in partitions:
        if await consumer.position(partition) < end[partition]:
            return True
    return False
