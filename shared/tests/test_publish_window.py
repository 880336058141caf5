"""Publishes that linger together (`HILO_KAFKA_LINGER_MS`) still each wait for their own ack.

No broker needed: a stand-in producer hands out acknowledgements the test resolves itself.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from aiokafka import AIOKafkaProducer
from faststream.kafka import KafkaBroker

from hilo.kafka import KafkaPublisher, PublishFailed, Record
from hilo.settings import HiloSettings
from hilo.topics import Topic

LINGER = 0.05


class Producer:
    """Records what was handed over, and when; each record's ack is resolved by the test."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.acks: list[asyncio.Future[None]] = []

    async def send(
        self, topic: str, value: bytes | None, *, key: bytes, headers: Any
    ) -> asyncio.Future[None]:
        """As aiokafka's: the record is queued, the ack comes later (never awaited here)."""
        self.sent.append(key)
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.acks.append(ack)
        return ack


class StandInPublisher(KafkaPublisher):
    def __init__(self, producer: Producer, settings: HiloSettings) -> None:
        super().__init__(cast("KafkaBroker", None), settings, linger_seconds=LINGER)
        self.stand_in = producer

    def _producer(self) -> AIOKafkaProducer:
        return cast("AIOKafkaProducer", self.stand_in)


def publisher(producer: Producer, *, timeout: float = 10.0) -> KafkaPublisher:
    return StandInPublisher(
        producer, HiloSettings(environment="test", kafka_publish_timeout_seconds=timeout)
    )


def record(key: str) -> Record:
    return Record(Topic.INTERACTIONS, key.encode(), b"{}", {})


async def test_publishes_within_the_window_leave_together_and_wait_for_their_acks() -> None:
    producer = Producer()
    kafka = publisher(producer)

    first = asyncio.create_task(kafka.publish_records([record("a"), record("b")]))
    await asyncio.sleep(LINGER / 5)
    second = asyncio.create_task(kafka.publish_record(record("c")))
    await asyncio.sleep(LINGER / 5)
    assert producer.sent == [], "nothing is handed over before the window closes"

    await asyncio.sleep(LINGER)
    assert producer.sent == [b"a", b"b", b"c"]
    assert not first.done(), "no answer before Kafka acknowledged"
    assert not second.done(), "no answer before Kafka acknowledged"

    producer.acks[0].set_result(None)
    producer.acks[2].set_result(None)
    await second
    await asyncio.sleep(0)
    assert not first.done(), "a request waits for every one of its records"
    producer.acks[1].set_result(None)
    await first


async def test_a_publish_past_its_deadline_fails_alone_and_the_next_window_opens() -> None:
    producer = Producer()
    late = publisher(producer, timeout=LINGER / 2)

    with pytest.raises(PublishFailed):
        await late.publish_record(record("late"))
    assert producer.sent == [], "a record whose deadline passed while lingering is never sent"

    kafka = publisher(producer)
    pending = asyncio.create_task(kafka.publish_record(record("next")))
    await asyncio.sleep(LINGER * 2)
    assert producer.sent == [b"next"]
    producer.acks[0].set_result(None)
    await pending


async def test_a_refused_record_fails_the_request() -> None:
    producer = Producer()
    kafka = publisher(producer)

    pending = asyncio.create_task(kafka.publish_records([record("a"), record("b")]))
    await asyncio.sleep(LINGER * 2)
    producer.acks[0].set_result(None)
    producer.acks[1].set_exception(ConnectionError("broker gone"))

    with pytest.raises(PublishFailed):
        await pending
