"""Reads `journey`, `identity.merges` and `erasures` into the touch store, in batches,
committing only what is stored (at least once; the store makes a repeat harmless). A record that
is not a journey entry, a merge or an erasure it can read (a newer schema, a broken one) goes to
`journey-analytics.dlq` with the reason, and the measures go on: they must not stop for one
record. A MongoDB or Kafka failure hands the batch back uncommitted instead."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import structlog
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage
from prometheus_client import Counter

from hilo.dead_letters import publish_dead_letter
from hilo.kafka import KafkaPublisher, keep_bytes
from hilo.logs import error_text
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


def subscribe(
    broker: KafkaBroker, store: TouchStore, settings: AnalyticsSettings, publisher: KafkaPublisher
) -> None:
    """Register the subscriber of `store` on `broker`: one consumer group for the instances, the
    three topics in one batch handler; unreadable records go out through `publisher`."""
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
                change = _read(topic, record.value)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                await _dead_letter(publisher, topic, record, exc)
                continue
            if isinstance(change, Touch):
                touches.append(replace(change, published_ms=record.timestamp))
            elif change is not None:
                await store.save(touches)  # what came before a merge or an erasure, first
                touches = []
                await _apply(store, change)
            READ.labels(topic.value, "read").inc()
        await store.save(touches)


@dataclass(frozen=True)
class Merge:
    survivor: str
    absorbed: list[str]
    event_id: str
    occurred_at: datetime


@dataclass(frozen=True)
class Split:
    restored: str
    undoes_event_id: str | None


@dataclass(frozen=True)
class Erasure:
    customers: list[str]


Change = Touch | Merge | Split | Erasure | None


def _read(topic: Topic, value: bytes | None) -> Change:
    """What a record asks of the store; raises ValueError, KeyError, TypeError or AttributeError
    for one it cannot read. None for a tombstone or a change the measures do not follow."""
    document = json.loads(value) if value is not None else None
    if document is None:
        return None
    if not isinstance(document, dict):
        raise TypeError(f"a record must be a JSON object, not {type(document).__name__}")
    if topic is Topic.JOURNEY:
        touch = touch_of(document)
        _text(touch.id)
        _text(touch.customer_id)
        for key in (touch.cart_id, touch.order_id, touch.status):
            _key(key)
        return touch
    if topic is Topic.ERASURES:
        return Erasure([_text(document["customer_id"]), *map(_text, document.get("aliases", []))])
    if document["type"] == "merge":
        absorbed = [*map(_text, document["absorbed"])]
        at = datetime.fromisoformat(_text(document["occurred_at"]))
        return Merge(_text(document["survivor"]), absorbed, _text(document["event_id"]), at)
    if document["type"] == "split":
        undoes = document.get("undoes_event_id")
        return Split(_text(document["restored"]), None if undoes is None else _text(undoes))
    return None


def _text(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"an id must be a non-empty string, not {type(value).__name__}")
    return value


def _key(value: object) -> None:
    """A cart id, order id or order status groups touches: a string, when there is one."""
    if value is not None and not isinstance(value, str):
        raise TypeError(
            f"a cart id, order id or status must be a string, not {type(value).__name__}"
        )


async def _apply(store: TouchStore, change: Merge | Split | Erasure) -> None:
    if isinstance(change, Merge):
        await store.merge(change.survivor, change.absorbed, change.event_id, change.occurred_at)
    elif isinstance(change, Split):
        await store.split(change.restored, change.undoes_event_id)
    else:
        await store.erase(change.customers)


async def _dead_letter(
    publisher: KafkaPublisher, topic: Topic, record: Any, error: Exception
) -> None:
    """Kafka must have it before the consumer moves past it (else the batch is handed back)."""
    await publish_dead_letter(
        publisher, Topic.ANALYTICS_DLQ, record, reason="unreadable", detail=error_text(error)
    )
    READ.labels(topic.value, "dead_lettered").inc()
    report = log.error if topic is Topic.ERASURES else log.warning
    report(
        "record_dead_lettered",
        topic=topic.value,
        offset=record.offset,
        error=type(error).__name__,
        erasure_not_applied=topic is Topic.ERASURES,
    )
