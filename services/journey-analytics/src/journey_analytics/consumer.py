"""Reads `journey`, `identity.merges` and `erasures` into the touch store, in batches,
committing only what is stored (at least once; the store makes a repeat harmless). A record that
is not a journey entry, a merge or an erasure it can read (a newer schema, a broken one) goes to
`journey-analytics.dlq` with the reason, and the measures go on: they must not stop for one
record. A MongoDB or Kafka failure hands the batch back uncommitted instead."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Any

import structlog
from aiokafka.errors import KafkaError
from bson.errors import InvalidDocument
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage
from prometheus_client import Counter
from pymongo.errors import PyMongoError

from hilo.contract import AGENT_MARKS
from hilo.dead_letters import publish_dead_letter
from hilo.kafka import KafkaPublisher, keep_bytes, latest_values
from hilo.kafka_security import client_options
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
    failing = _Failing()

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
        try:
            await _store_batch(message)
        except Exception as exc:
            # Handed back whole (nothing committed; every store write is idempotent), after a
            # pause that grows: FastStream logs nothing (`logger=None`) and would fetch the
            # batch again at once, in a loop nobody sees.
            await failing.pause(exc)
            raise
        failing.over()

    async def _store_batch(message: KafkaMessage) -> None:
        touches: list[tuple[Any, Touch]] = []
        for record in _records(message):
            topic = names[record.topic]
            try:
                change = _read(topic, record.value)
            except UNREADABLE as exc:
                await _dead_letter(publisher, topic, record, exc)
                continue
            if isinstance(change, Touch):
                touches.append((record, replace(change, published_ms=record.timestamp)))
            elif change is not None:
                await _save(touches)  # what came before a merge or an erasure, first
                touches = []
                await _apply(store, change)
            READ.labels(topic.value, "read").inc()
        await _save(touches)

    async def _save(touches: list[tuple[Any, Touch]]) -> None:
        """Store the touches; one MongoDB cannot encode (a check of `_touch` missed it) is
        dead-lettered alone, and the rest stored: the batch was handed back for ever."""
        try:
            await store.save([touch for _, touch in touches])
        except UNSTORABLE:
            for record, touch in touches:
                try:
                    await store.save([touch])
                except UNSTORABLE as exc:
                    await _dead_letter(publisher, Topic.JOURNEY, record, exc)


UNREADABLE = (ValueError, KeyError, TypeError, AttributeError, RecursionError)
"""What `_read` raises for a record it cannot read (`RecursionError`: JSON nested deeper than
Python reads)."""
UNSTORABLE = (InvalidDocument, OverflowError, UnicodeEncodeError)
"""What MongoDB's driver raises for a document it cannot encode: the record's, not an outage."""

FAILED = Counter(
    "hilo_analytics_batch_failures_total",
    "Batches journey-analytics handed back (MongoDB or Kafka failing), by error",
    ["error"],
)
FIRST_PAUSE_SECONDS = 0.5
LONGEST_PAUSE_SECONDS = 30.0


class _Failing:
    """How long the batches have been failing: each pause twice the last, up to 30 s."""

    def __init__(self) -> None:
        self.in_a_row = 0

    async def pause(self, exc: Exception) -> None:
        self.in_a_row += 1
        FAILED.labels(type(exc).__name__).inc()
        log.warning(
            "analytics_batch_failed",
            error=type(exc).__name__,
            detail=error_text(exc),
            in_a_row=self.in_a_row,
        )
        delay = FIRST_PAUSE_SECONDS * 2 ** min(self.in_a_row - 1, 10)
        await asyncio.sleep(min(delay, LONGEST_PAUSE_SECONDS))

    def over(self) -> None:
        if self.in_a_row:
            log.info("analytics_batches_stored_again", after_failures=self.in_a_row)
        self.in_a_row = 0


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
    exact: bool
    """The person's ids as customer-profile named them (`aliases`); an earlier version's record
    names one, whose aliases are followed (`TouchStore.erase`)."""


Change = Touch | Merge | Split | Erasure | None


def _touch(entry: dict[str, Any]) -> Touch | None:
    """A journey entry as a touch (checked as the store keeps it); None for an agent's mark
    (no entry of the measures, and no `desk` channel in the mix)."""
    if entry.get("type") in AGENT_MARKS:
        return None
    touch = touch_of(entry)
    _text(touch.id)
    _text(touch.customer_id)
    _checked(touch)
    return touch


SCORE_LIMIT = 2**53
"""A score the store and JSON both hold exactly (a survey's is 0 to 10)."""


def _checked(touch: Touch) -> None:
    """Every field of the type the measures and MongoDB take. A list where an id goes was
    stored, then broke every measure reading it (about 44 days of them); an integer past 8
    bytes or a lone surrogate was refused by MongoDB, and the batch handed back for ever."""
    if touch.occurred_at.tzinfo is None:
        raise ValueError("occurred_at has no time zone")
    for field in fields(Touch):
        value = getattr(touch, field.name)
        if field.name == "score":
            if value is not None and (type(value) is not int or abs(value) >= SCORE_LIMIT):
                raise TypeError(f"score must be a whole number, not {value!r:.40}")
        elif field.type in ("str", "str | None"):
            if value is None and field.type == "str":
                raise TypeError(f"{field.name} is missing")
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{field.name} must be a string, not {type(value).__name__}")
            if value is not None:
                value.encode()  # UnicodeEncodeError (a ValueError) for a lone surrogate


def _read(topic: Topic, value: bytes | None) -> Change:
    """What a record asks of the store; raises one of `UNREADABLE` for one it cannot read. None
    for a tombstone or a change the measures do not follow."""
    document = json.loads(value) if value is not None else None
    if document is None:
        return None
    if not isinstance(document, dict):
        raise TypeError(f"a record must be a JSON object, not {type(document).__name__}")
    if topic is Topic.JOURNEY:
        return _touch(document)
    if topic is Topic.ERASURES:
        exact = "aliases" in document
        ids = [_text(document["customer_id"]), *map(_text, document["aliases"] if exact else [])]
        return Erasure(ids, exact)
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


ERASURES_READ_SECONDS = 120.0
RETRY_SECONDS = 5.0


async def erase_recorded(store: TouchStore, settings: AnalyticsSettings) -> None:
    """Erase again everyone the `erasures` topic names, once, when the service starts, trying
    until Kafka and MongoDB answer: a restored backup of MongoDB brings back the touches of
    people erased since it was taken, and the consumer's offsets, kept in Kafka, are past their
    erasures. (The entries, merges and splits since the backup are read again only by resetting
    the consumer group: docs/operations.md.)"""
    topic = topic_name(Topic.ERASURES, settings)
    while True:
        try:
            values = await latest_values(
                client_options(settings), topic, within_seconds=ERASURES_READ_SECONDS
            )
            for value in values:
                try:
                    change = _read(Topic.ERASURES, value)
                except UNREADABLE:
                    continue  # dead-lettered when the consumer read it
                if isinstance(change, Erasure):
                    await _erase_again(store, change)
        except (TimeoutError, KafkaError, PyMongoError) as exc:
            log.warning("analytics_erasures_not_reapplied", error=type(exc).__name__)
            await asyncio.sleep(RETRY_SECONDS)
            continue
        log.info("analytics_erasures_reapplied", erasures=len(values))
        return


async def _erase_again(store: TouchStore, erasure: Erasure) -> None:
    """One erasure again; one that fails for anything but an outage is logged and the others
    go on (it ended the whole pass, and the erasures after it were not applied again)."""
    try:
        await store.erase(erasure.customers, exact=erasure.exact)
    except PyMongoError:
        raise
    except Exception:
        log.exception("analytics_erasure_not_reapplied", customers=len(erasure.customers))


async def _apply(store: TouchStore, change: Merge | Split | Erasure) -> None:
    if isinstance(change, Merge):
        await store.merge(change.survivor, change.absorbed, change.event_id, change.occurred_at)
    elif isinstance(change, Split):
        await store.split(change.restored, change.undoes_event_id)
    else:
        await store.erase(change.customers, exact=change.exact)


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
