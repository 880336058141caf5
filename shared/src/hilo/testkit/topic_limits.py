"""Lowering a topic's record limit on the real broker, to make Kafka refuse a record for good."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import MessageSizeTooLargeError

from hilo.settings import HiloSettings
from hilo.testkit.probes import eventually
from hilo.topics import Topic, topic_name


async def limit_record_size(settings: HiloSettings, topic: Topic, limit: int) -> None:
    """Lower the topic's record limit, and return once the broker enforces it: the change is
    applied asynchronously, and a publish right after could still be let through."""
    name = topic_name(topic, settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        config = {"max.message.bytes": str(limit)}
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, name, configs=config)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        await eventually(lambda: _refused(producer, name, b"p" * (limit + 1)), interval=0.1)
    finally:
        await producer.stop()


async def _refused(producer: AIOKafkaProducer, topic: str, value: bytes) -> bool:
    """Whether the broker refuses `value` as too large (a probe it takes is left on the topic:
    read it with that in mind)."""
    try:
        await producer.send_and_wait(topic, value, key=b"probe")
    except MessageSizeTooLargeError:
        return True
    return False
