"""Reads `journey`, `identity.merges` and `erasures` into the touch store, in batches,
committing only what is stored (at least once; the store makes a repeat harmless). A record that
is not a journey entry, a merge or an erasure (a newer schema it cannot read, a broken one) is
skipped with a warning: the measures must not stop for one record, and the topic keeps it for a
fixed version to re-read."""

from __future__ import annotations

import json
from typing import Any

import structlog
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage
from prometheus_client import Counter

from hilo.topics import Topic, topic_name
from journey_analytics.measures import Touch, touch_of
from journey_analytics.settings import AnalyticsSettings
from journey_analytics.store import TouchStore

log = structlog.get_logger(__name__)
READ = Counter(
    "hilo_analytics_records_total", "Records read by journey-analytics, by topic and outcome.",
    ["topic", "outcome"],
)  # fmt: skip


async def _keep_bytes(_message: Any) -> Any:
    return None


def _records(message: KafkaMessage) -> tuple[Any, ...]:
    raw = message.raw_message
    return raw if isinstance(raw, tuple) else (raw,)


def subscribe(broker: KafkaBroker, store: TouchStore, settings: AnalyticsSettings) -> None:
    """Register both subscribers of `store` on `broker` (one consumer group for the instances)."""

    @broker.subscriber(
        topic_name(Topic.JOURNEY, settings),
        group_id=settings.consumer_group,
        batch=True,
        max_records=500,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        decoder=_keep_bytes,
    )
    async def on_journey(message: KafkaMessage) -> None:
        touches: list[Touch] = []
        for record in _records(message):
            try:
                touches.append(touch_of(json.loads(record.value)))
            except (ValueError, KeyError, TypeError) as exc:
                READ.labels("journey", "skipped").inc()
                log.warning(
                    "journey_record_skipped", offset=record.offset, error=type(exc).__name__
                )
        await store.save(touches)
        READ.labels("journey", "stored").inc(len(touches))

    @broker.subscriber(
        topic_name(Topic.IDENTITY_MERGES, settings),
        group_id=settings.consumer_group,
        batch=True,
        max_records=500,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        decoder=_keep_bytes,
    )
    async def on_merges(message: KafkaMessage) -> None:
        for record in _records(message):
            try:
                change = json.loads(record.value)
                kind = change["type"]
            except (ValueError, KeyError, TypeError) as exc:
                READ.labels("identity.merges", "skipped").inc()
                log.warning("merge_record_skipped", offset=record.offset, error=type(exc).__name__)
                continue
            if kind == "merge":
                await store.merge(change["survivor"], change["absorbed"])
            elif kind == "split":
                await store.split(change["restored"])
            READ.labels("identity.merges", kind).inc()

    @broker.subscriber(
        topic_name(Topic.ERASURES, settings),
        group_id=settings.consumer_group,
        batch=True,
        max_records=500,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        decoder=_keep_bytes,
    )
    async def on_erasures(message: KafkaMessage) -> None:
        for record in _records(message):
            if record.value is None:
                continue
            try:
                erasure = json.loads(record.value)
                customers = [erasure["customer_id"], *erasure.get("aliases", [])]
            except (ValueError, KeyError, TypeError) as exc:
                READ.labels("erasures", "skipped").inc()
                log.warning(
                    "erasure_record_skipped", offset=record.offset, error=type(exc).__name__
                )
                continue
            await store.erase(customers)
            READ.labels("erasures", "erased").inc()
