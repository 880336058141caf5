"""Kafka clients set up for durability, and the one way interactions are put on the wire.

Producers wait for every in-sync replica (`acks=all`) and are idempotent, so a channel that
answers its provider with success knows the event is stored, and a producer retry never writes
it twice. A publish that cannot be confirmed in time raises `PublishFailed`: the caller answers
503 so the provider retries, and the deterministic event id keeps that retry harmless.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import structlog
from aiokafka.errors import KafkaError
from faststream.kafka import KafkaBroker
from faststream.security import BaseSecurity

from hilo.contract import Interaction
from hilo.settings import HiloSettings
from hilo.topics import Topic, topic_name

log = structlog.get_logger(__name__)

CLOUDEVENTS_JSON = "application/cloudevents+json"


class PublishFailed(RuntimeError):
    """Kafka did not confirm the write; nothing may be acknowledged upstream."""


def create_broker(settings: HiloSettings, security: BaseSecurity | None = None) -> KafkaBroker:
    """A FastStream Kafka broker whose producer is durable (acks=all, idempotent)."""
    return KafkaBroker(
        settings.kafka_bootstrap_servers,
        client_id=settings.client_id,
        acks="all",
        enable_idempotence=True,
        compression_type=None if settings.kafka_compression == "none" else "gzip",
        request_timeout_ms=int(settings.kafka_publish_timeout_seconds * 1000),
        allow_auto_create_topics=False,
        security=security,
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

    async def publish_interaction(self, interaction: Interaction) -> None:
        """Publish on `interactions`, keyed by the strongest identifier."""
        await self.publish(
            Topic.INTERACTIONS,
            interaction.model_dump_json().encode(),
            key=interaction.partition_key(),
            headers=interaction_headers(interaction),
        )
