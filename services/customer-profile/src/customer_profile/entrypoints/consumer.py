"""The Kafka side: consume `interactions` in batches, commit only after the batch is durable.

FastStream's default Kafka policy commits *before* the handler runs (at-most-once); this
subscriber uses NACK_ON_ERROR: the offsets of a batch are committed after `Pipeline.process`
returned, and a failure seeks back so the whole batch is delivered again. Bodies are not decoded
by FastStream: the pipeline reads the raw bytes, so a malformed record reaches the dead-letter
topic instead of failing the batch forever.
"""

from __future__ import annotations

import structlog
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage
from prometheus_client import Counter, Histogram

from customer_profile.service.batches import BatchRunner
from customer_profile.service.pipeline import RawRecord
from customer_profile.settings import ProfileSettings
from hilo.kafka import fetch_afresh, keep_bytes
from hilo.topics import Topic, topic_name

log = structlog.get_logger(__name__)
FETCH_MAX_WAIT_MS = 50
"""The broker's long poll: short, because a partition whose prefetched records `fetch_afresh`
dropped is fetched again only once a fetch of other partitions waiting on the broker returns."""

EVENTS = Counter("hilo_profile_events_total", "Interactions consumed, by outcome", ["outcome"])
for _outcome in ("accepted", "duplicate", "dead_lettered"):  # at 0: an alert sees the first one
    EVENTS.labels(_outcome)
MERGES = Counter("hilo_profile_merges_total", "Profile merges performed")
BATCH_SECONDS = Histogram("hilo_profile_batch_seconds", "Time to process one batch")
STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STEP_SECONDS = Histogram(
    "hilo_profile_batch_step_seconds",
    "Time a processed batch spent in each step (parse, resolve, journey, views, publish, settle)",
    ["step"],
    buckets=STEP_BUCKETS,
)
BATCH_RECORDS = Histogram(
    "hilo_profile_batch_records",
    "Records per consumed batch: small batches cost more per event",
    buckets=(1, 5, 10, 20, 50, 100, 200, 500, 1000, 2000),
)
REPAIRED = Counter(
    "hilo_profile_entries_repaired_total",
    "Entries whose effects an interrupted attempt left unfinished, finished on redelivery",
)


def records_of(message: KafkaMessage) -> list[RawRecord]:
    raw = message.raw_message
    batch = raw if isinstance(raw, tuple) else (raw,)
    return [
        RawRecord(
            value=record.value,
            key=record.key,
            headers=tuple(record.headers or ()),
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
        )
        for record in batch
    ]


def subscribe(broker: KafkaBroker, runner: BatchRunner, settings: ProfileSettings) -> None:
    """Register the `interactions` handler on the broker."""

    @broker.subscriber(
        topic_name(Topic.INTERACTIONS, settings),
        group_id=settings.consumer_group,
        batch=True,
        max_records=settings.batch_max_records,
        batch_timeout_ms=settings.batch_max_wait_ms,
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        decoder=keep_bytes,
        max_poll_interval_ms=max(300_000, int(settings.store_retry_seconds * 3000)),
    )
    async def on_interactions(message: KafkaMessage) -> None:
        records = records_of(message)
        with BATCH_SECONDS.time():
            outcome = await runner.run(records)
        if len(records) < settings.batch_max_records:  # a full batch: the rest is buffered
            await fetch_afresh(message.consumer)
        BATCH_RECORDS.observe(len(records))
        for step, seconds in outcome.seconds.items():
            STEP_SECONDS.labels(step).observe(seconds)
        EVENTS.labels("accepted").inc(outcome.accepted - outcome.duplicates)
        EVENTS.labels("duplicate").inc(outcome.duplicates)
        EVENTS.labels("dead_lettered").inc(outcome.dead_lettered)
        REPAIRED.inc(outcome.repaired)
        MERGES.inc(len(outcome.merges))
        log.debug(
            "batch_processed",
            records=len(records),
            accepted=outcome.accepted,
            duplicates=outcome.duplicates,
            repaired=outcome.repaired,
            dead_lettered=outcome.dead_lettered,
            merges=len(outcome.merges),
            erased=outcome.erased,
        )
