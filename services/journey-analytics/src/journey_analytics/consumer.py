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

from hilo.kafka import keep_bytes
from hilo.topics import Topic, topic_name
from journey_analytics.measures import Touch, touch_of
from journey_analytics.settings import AnalyticsSettings
from journey_analytics.store import TouchStore

log = structlog.get_logger(__name__)
READ = Counter(
    "hilo_analytics_records_total", "Records read by journey-analytics, by topic and outcome.",
    ["topic", "outcome"],
)  # fmt: skip


TOPICS = (Topic.JOURNEY, Topic.IDENTITY_MERGES, Topic.ERASURES)


def _records(message: KafkaMessage) -> tuple[Any, ...]:
    raw = message.raw_message
    return raw if isinstance(raw, tuple) else (raw,)


def subscribe(broker: KafkaBroker, store: TouchStore, settings: AnalyticsSettings) -> None:
    """Register the subscriber of `store` on `broker`: one consumer group for the instances, the
    three topics in one batch handler."""
    names = {topic_name(topic, settings): topic for topic in TOPICS}

    @broker.subscriber(
        *names,
        group_id=settings.consumer_group,
        batch=True,
        max_records=500,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        decoder=keep_bytes,
    )
    async def on_records(message: KafkaMessage) -> None:
        touches: list[Touch] = []
        for record in _records(message):
            topic = names[record.topic]
            try:
                document = json.loads(record.value) if record.value is not None else None
                if topic is Topic.JOURNEY and document is not None:
                    touches.append(touch_of(document))
                    READ.labels(topic.value, "read").inc()
                    continue
                await store.save(touches)  # what came before a merge or an erasure, first
                touches = []
                if topic is Topic.IDENTITY_MERGES:
                    await _apply_merge(store, document)
                elif topic is Topic.ERASURES and document is not None:
                    await store.erase([document["customer_id"], *document.get("aliases", [])])
            except (ValueError, KeyError, TypeError) as exc:
                READ.labels(topic.value, "skipped").inc()
                log.warning("record_skipped", topic=topic.value, error=type(exc).__name__)
                continue
            READ.labels(topic.value, "read").inc()
        await store.save(touches)


async def _apply_merge(store: TouchStore, change: dict[str, Any] | None) -> None:
    if change is None:
        return
    if change["type"] == "merge":
        await store.merge(change["survivor"], change["absorbed"])
    elif change["type"] == "split":
        await store.split(change["restored"])
