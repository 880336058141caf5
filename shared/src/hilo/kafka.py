"""Kafka clients set up for durability, and the one way interactions are put on the wire.

Producers wait for every in-sync replica (`acks=all`) and are idempotent, so a channel that
answers its provider with success knows the event is stored, and a producer retry never writes
it twice. A publish that cannot be confirmed in time raises `PublishFailed`: the caller answers
503 so the provider retries, and the deterministic event id keeps that retry harmless.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.structs import ConsumerRecord
from faststream.kafka import KafkaBroker
from faststream.security import BaseSecurity

from hilo.contract import Interaction
from hilo.settings import HiloSettings
from hilo.topics import Topic, topic_name

log = structlog.get_logger(__name__)

CLOUDEVENTS_JSON = "application/cloudevents+json"


CLIENT_HEADERS_ALLOWANCE = 256
"""Room for the headers the client adds to each record (FastStream's content type, correlation
id), which `record_size` cannot see."""


class PublishFailed(RuntimeError):
    """Kafka did not confirm the write; nothing may be acknowledged upstream."""


class RecordTooLarge(ValueError):
    """The producer would refuse the record whatever the broker's state: retrying cannot help."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"record of {size} bytes is larger than {limit} bytes")
        self.size = size
        self.limit = limit


@dataclass(frozen=True)
class Record:
    """One record as it goes on the wire, ready to publish."""

    topic: Topic
    key: bytes
    value: bytes | None
    headers: Mapping[str, str]


def record_size(record: Record) -> int:
    """What the producer counts against its max_request_size (aiokafka's own estimate)."""
    headers = [(name, value.encode()) for name, value in record.headers.items()]
    estimate: int = DefaultRecordBatchBuilder.estimate_size_in_bytes(
        record.key, record.value, headers
    )
    return estimate + CLIENT_HEADERS_ALLOWANCE


def create_broker(
    settings: HiloSettings,
    security: BaseSecurity | None = None,
    *,
    graceful_timeout: float = 15.0,
) -> KafkaBroker:
    """A FastStream Kafka broker whose producer is durable (acks=all, idempotent).

    `graceful_timeout` bounds how long `stop` waits for handlers in flight.
    """
    return KafkaBroker(
        settings.kafka_bootstrap_servers,
        client_id=settings.client_id,
        acks="all",
        enable_idempotence=True,
        compression_type=None if settings.kafka_compression == "none" else "gzip",
        max_request_size=settings.kafka_max_record_bytes,
        request_timeout_ms=int(settings.kafka_publish_timeout_seconds * 1000),
        allow_auto_create_topics=False,
        security=security,
        graceful_timeout=graceful_timeout,
        logger=None,
    )


def interaction_headers(interaction: Interaction) -> dict[str, str]:
    """Headers that let consumers route without parsing the value (CloudEvents Kafka binding)."""
    return {
        "content-type": CLOUDEVENTS_JSON,
        "ce_id": interaction.id,
        "ce_type": interaction.type,
        "ce_source": interaction.source,
        "hilo_schema_version": str(interaction.schema_version),
    }


class KafkaPublisher:
    """Publishes and waits for the broker's acknowledgement, within a deadline."""

    def __init__(self, broker: KafkaBroker, settings: HiloSettings) -> None:
        self._broker = broker
        self._settings = settings

    def topic(self, topic: Topic) -> str:
        return topic_name(topic, self._settings)

    async def publish(
        self,
        topic: Topic,
        value: bytes | None,
        *,
        key: bytes,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Write one record; raise `PublishFailed` unless Kafka confirmed it in time."""
        try:
            await asyncio.wait_for(
                self._broker.publish(
                    value, self.topic(topic), key=key, headers=dict(headers or {})
                ),
                timeout=self._settings.kafka_publish_timeout_seconds,
            )
        except (TimeoutError, KafkaError, ConnectionError) as exc:
            log.warning("kafka_publish_failed", topic=topic.value, error=type(exc).__name__)
            raise PublishFailed(f"Kafka did not confirm the write to {topic.value}") from exc

    def interaction_record(self, interaction: Interaction) -> Record:
        """The record of `interaction` on `interactions`, keyed by the strongest identifier.

        Raises `RecordTooLarge` when the producer would refuse it, so a caller can refuse the
        request before anything of it is published.
        """
        record = Record(
            Topic.INTERACTIONS,
            key=interaction.partition_key(),
            value=interaction.model_dump_json().encode(),
            headers=interaction_headers(interaction),
        )
        size, limit = record_size(record), self._settings.kafka_max_record_bytes
        if size > limit:
            raise RecordTooLarge(size, limit)
        return record

    async def publish_record(self, record: Record) -> None:
        await self.publish(record.topic, record.value, key=record.key, headers=record.headers)

    async def publish_interaction(self, interaction: Interaction) -> None:
        """Publish on `interactions`, keyed by the strongest identifier."""
        await self.publish_record(self.interaction_record(interaction))


def from_the_beginning(bootstrap_servers: str, topic: str) -> AIOKafkaConsumer:
    """A consumer outside any group that reads `topic` from its earliest offsets, committing
    nothing: for tools and tests that read what is there."""
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )


async def read_to_end(
    bootstrap_servers: str, topic: str, *, within_seconds: float = 30.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of `topic` up to its end offsets as of the first fetch (admin tools, tests)."""
    consumer = from_the_beginning(bootstrap_servers, topic)
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    deadline = time.monotonic() + within_seconds
    try:
        end: dict[TopicPartition, int] = {}
        while time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=300)).values():
                records.extend(batch)
            assigned = consumer.assignment()
            if assigned and not end:
                end = await consumer.end_offsets(list(assigned))
            if end and all([await consumer.position(tp) >= end[tp] for tp in end]):
                break
    finally:
        await consumer.stop()
    return records
