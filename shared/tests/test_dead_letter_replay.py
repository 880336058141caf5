"""Replaying dead letters against the real broker: a refusal is reported, never counted."""

from __future__ import annotations

import asyncio
import tracemalloc

import pytest
from aiokafka import AIOKafkaProducer

from hilo import kafka as kafka_module
from hilo.dead_letters import (
    REASON,
    REPLAYED_FROM,
    ReplayFilter,
    ReplayIncomplete,
    publish_dead_letter,
    replay,
)
from hilo.kafka import KafkaPublisher, create_broker, read_to_end
from hilo.settings import HiloSettings
from hilo.testkit.topic_limits import limit_record_size
from hilo.topics import Topic, topic_name


async def test_dead_letters_kafka_refuses_to_take_back_are_reported_not_counted(
    settings: HiloSettings, topics: list[str]
) -> None:
    letters = [b"small dead letter", b"x" * 20_000]
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        for value in letters:
            await producer.send_and_wait(
                topic_name(Topic.INTERACTIONS_DLQ, settings),
                value,
                key=b"k",
                headers=[("hilo_error_reason", b"not_json")],
            )
    finally:
        await producer.stop()
    await limit_record_size(settings, Topic.INTERACTIONS, 10_000)

    with pytest.raises(ReplayIncomplete, match="refused 1 of 2 dead letters"):
        await replay(settings, ReplayFilter())

    kept = await read_to_end(
        settings.kafka_bootstrap_servers, topic_name(Topic.INTERACTIONS_DLQ, settings)
    )
    assert [record.value for record in kept] == letters, "a replay never deletes dead letters"


async def test_a_dead_letter_larger_than_the_producer_takes_is_reported_too(
    settings: HiloSettings, topics: list[str]
) -> None:
    """Refused by the producer before it is sent, not by the broker: reported all the same."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(
            topic_name(Topic.INTERACTIONS_DLQ, settings), b"y" * 8_000, key=b"k"
        )
    finally:
        await producer.stop()
    small = settings.model_copy(update={"kafka_max_record_bytes": 4_096})

    with pytest.raises(ReplayIncomplete, match="refused 1 of 1 dead letters"):
        await replay(small, ReplayFilter())


async def test_a_letter_that_failed_again_is_replayed_once_through_its_newer_copy(
    settings: HiloSettings, topics: list[str]
) -> None:
    """A replay that failed again put a newer copy on the dead-letter topic naming the first:
    the next replay sends the newer one only, so what keeps failing does not double."""
    dlq = topic_name(Topic.INTERACTIONS_DLQ, settings)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        first = await producer.send_and_wait(
            dlq, b"first", key=b"k", headers=[("hilo_error_reason", b"processing_failed")]
        )
        marker = f"{dlq}/{first.partition}/{first.offset}".encode()
        await producer.send_and_wait(
            dlq,
            b"again",
            key=b"k",
            headers=[("hilo_error_reason", b"processing_failed"), ("hilo_replayed_from", marker)],
        )
    finally:
        await producer.stop()

    report = await replay(settings, ReplayFilter())

    assert (report.read, report.replayed, report.superseded) == (2, 1, 1)
    sent = await read_to_end(
        settings.kafka_bootstrap_servers, topic_name(Topic.INTERACTIONS, settings)
    )
    assert [record.value for record in sent] == [b"again"]
    [value] = [v for k, v in sent[0].headers if k == "hilo_replayed_from"]
    assert value != marker, "one marker: the copy it was replayed from"


async def test_a_dead_letter_keeps_its_records_headers_as_they_were_and_a_replay_restores_them(
    settings: HiloSettings, topics: list[str]
) -> None:
    """A record's headers may repeat a name, or hold bytes that are no UTF-8 (a trace id, a
    producer's own binary header): the dead letter keeps them as they were (it kept one value
    per name, text with `�` for the bytes), and its replay puts them back on the topic."""
    own = [("trace", b"\xff\x00\x9c"), ("tag", b"a"), ("tag", b"b"), ("hilo_error_reason", b"x")]
    interactions = topic_name(Topic.INTERACTIONS, settings)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(interactions, b"not json", key=b"k", headers=own)
    finally:
        await producer.stop()
    [failed] = await read_to_end(settings.kafka_bootstrap_servers, interactions)
    broker = create_broker(settings)
    await broker.start()
    try:
        await publish_dead_letter(
            KafkaPublisher(broker, settings),
            Topic.INTERACTIONS_DLQ,
            failed,
            reason="not_json",
            detail="expected value",
        )
    finally:
        await broker.stop()

    [letter] = await read_to_end(
        settings.kafka_bootstrap_servers, topic_name(Topic.INTERACTIONS_DLQ, settings)
    )
    assert list(letter.headers)[:3] == own[:3]
    assert [value for name, value in letter.headers if name == REASON] == [b"not_json"]
    report = await replay(settings, ReplayFilter())
    assert report.replayed == 1
    back = (await read_to_end(settings.kafka_bootstrap_servers, interactions))[-1]
    assert back.value == b"not json"
    assert list(back.headers)[:3] == own[:3]
    assert [name for name, _ in back.headers][3:] == [REPLAYED_FROM]


async def test_a_replay_holds_a_batch_of_letters_at_a_time_not_the_whole_topic(
    settings: HiloSettings, topics: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug dead-letters everything for minutes: 100,000 letters held at once took more than
    the 512 MB a container has. 2,000 letters of 16 KB (32 MB) replay within a few MB."""
    monkeypatch.setattr(kafka_module, "STREAM_BATCH", 100)
    dlq = topic_name(Topic.INTERACTIONS_DLQ, settings)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, max_batch_size=1_000_000
    )
    await producer.start()
    try:
        sent = [
            await producer.send(
                dlq, bytes([65 + n % 26]) * 16_000, key=str(n).encode(),
                headers=[("hilo_error_reason", b"processing_failed")],
            )
            for n in range(2_000)
        ]  # fmt: skip
        await asyncio.gather(*sent)
    finally:
        await producer.stop()

    tracemalloc.start()
    try:
        report = await replay(settings, ReplayFilter())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert (report.read, report.replayed) == (2_000, 2_000)
    assert peak < 12_000_000, f"{peak / 1e6:.1f} MB held at once"
