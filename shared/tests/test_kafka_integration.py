"""Through the real broker: topics as registered, interactions published durably and read back."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    InvalidReplicationFactorError,
    KafkaConnectionError,
    RequestTimedOutError,
    TopicAuthorizationFailedError,
)
from aiokafka.partitioner import DefaultPartitioner
from faststream.kafka import KafkaBroker, KafkaMessage

from hilo import kafka as kafka_module
from hilo.contract import Identifiers, Interaction, parse_interaction
from hilo.kafka import (
    KafkaPublisher,
    PublishFailed,
    Record,
    create_broker,
    fetch_afresh,
    read_to_end,
    start_or_keep_trying,
    stream_to_end,
)
from hilo.settings import HiloSettings
from hilo.shutdown import cancelled
from hilo.testkit.probes import eventually, read_topic
from hilo.testkit.samples import sample_interaction, sample_payloads
from hilo.testkit.serving import free_port
from hilo.topics import REGISTRY, Topic, _created, ensure_topics, topic_name


async def describe(
    settings: HiloSettings, names: list[str]
) -> tuple[dict[str, int], dict[str, dict[str, str]]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        partitions = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(names)}
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
        )
        configs = {
            resource[3]: {entry[0]: entry[1] for entry in resource[4]}
            for response in responses
            for resource in response.resources
        }
        return partitions, configs
    finally:
        await admin.close()


async def test_topics_are_created_with_the_registry_settings(
    settings: HiloSettings, topics: list[str]
) -> None:
    names = [topic_name(spec.topic, settings) for spec in REGISTRY]
    assert sorted(topics) == sorted(names)

    partitions, configs = await describe(settings, names)

    assert partitions == {
        topic_name(spec.topic, settings): spec.partitions or settings.topic_partitions
        for spec in REGISTRY
    }
    assert partitions[topic_name(Topic.OFFERS, settings)] == 1, "one version stays in order"
    profiles = configs[topic_name(Topic.PROFILES, settings)]
    assert profiles["cleanup.policy"] == "compact"
    assert profiles["max.compaction.lag.ms"] == str(86_400_000), "old snapshots go within a day"
    assert configs[topic_name(Topic.INTERACTIONS, settings)]["cleanup.policy"] == "delete"
    assert configs[topic_name(Topic.INTERACTIONS, settings)]["retention.ms"] == str(
        365 * 86_400_000
    )


async def test_creating_topics_again_is_a_no_op(settings: HiloSettings, topics: list[str]) -> None:
    assert topics
    assert await ensure_topics(settings) == []


async def test_a_topic_the_cluster_cannot_create_is_an_error_naming_it(
    settings: HiloSettings,
) -> None:
    """Three replicas on a one-broker cluster: said at once, not waited for as if on its way."""
    with pytest.raises(InvalidReplicationFactorError, match=r"creating t\w+\.interactions"):
        await ensure_topics(settings.model_copy(update={"topic_replication_factor": 3}))


async def test_published_interactions_are_consumed_back_with_keys_and_headers(
    settings: HiloSettings, topics: list[str]
) -> None:
    sent = [
        sample_interaction(
            kind,
            provider_event_id=f"evt-{kind}",
            identifiers=Identifiers(email=f"{kind}@example.com"),
        )
        for kind in sample_payloads()
    ]
    received: list[tuple[Interaction, bytes | None, dict[str, str]]] = []
    done = asyncio.Event()

    consumer = KafkaBroker(settings.kafka_bootstrap_servers, logger=None)

    @consumer.subscriber(
        topic_name(Topic.INTERACTIONS, settings), group_id="test", auto_offset_reset="earliest"
    )
    async def on_interaction(body: bytes, message: KafkaMessage) -> None:
        received.append((parse_interaction(body), message.raw_message.key, dict(message.headers)))  # type: ignore[union-attr]
        if len(received) == len(sent):
            done.set()

    producer = create_broker(settings)
    async with producer, consumer:
        await producer.start()
        await consumer.start()
        publisher = KafkaPublisher(producer, settings)
        for interaction in sent:
            await publisher.publish_interaction(interaction)
        await asyncio.wait_for(done.wait(), timeout=30)

    by_id = {interaction.id: (interaction, key, headers) for interaction, key, headers in received}
    assert len(by_id) == len(sent)
    for interaction in sent:
        got, key, headers = by_id[interaction.id]
        assert got == interaction
        assert key == f"email:{interaction.payload.kind}@example.com".encode()
        assert headers["content-type"] == "application/cloudevents+json"
        assert headers["ce_type"] == interaction.type
        assert headers["ce_id"] == interaction.id
        assert headers["hilo_schema_version"] == "1"


async def test_events_of_one_key_stay_in_order_on_one_partition(
    settings: HiloSettings, topics: list[str]
) -> None:
    producer = create_broker(settings)
    async with producer:
        await producer.start()
        publisher = KafkaPublisher(producer, settings)
        for n in range(10):
            await publisher.publish_interaction(sample_interaction(provider_event_id=f"evt-{n}"))

    records = await read_topic(
        settings.kafka_bootstrap_servers, topic_name(Topic.INTERACTIONS, settings), expected=10
    )

    assert {record.partition for record in records} == {records[0].partition}
    assert [parse_interaction(r.value).id for r in records] == [
        sample_interaction(provider_event_id=f"evt-{n}").id for n in range(10)
    ]


async def test_a_key_lands_on_the_partition_every_kafka_client_picks_for_it(
    settings: HiloSettings, topics: list[str]
) -> None:
    """Downstream consumers (and Java producers) find a customer's records on murmur2(key) mod
    partitions: the remembered hashes must not change where a key goes, first time or again."""
    topic = topic_name(Topic.JOURNEY, settings)
    keys = [f"customer-{n}".encode() for n in range(40)]
    broker = create_broker(settings)
    async with broker:
        await broker.start()
        publisher = KafkaPublisher(broker, settings)
        for _ in range(2):
            await publisher.publish_records([Record(Topic.JOURNEY, k, b"{}", {}) for k in keys])

    records = await read_topic(settings.kafka_bootstrap_servers, topic, expected=80)

    partitions = list(range(settings.topic_partitions))
    expected = {k: DefaultPartitioner()(k, partitions, partitions) for k in keys}
    assert len(records) == 80
    assert len(set(expected.values())) == settings.topic_partitions > 1
    assert {(r.key, r.partition) for r in records} == set(expected.items())


async def test_reading_a_topic_to_its_end_never_returns_half_of_it(
    settings: HiloSettings, topics: list[str]
) -> None:
    servers = settings.kafka_bootstrap_servers
    broker = create_broker(settings)
    await broker.start()
    try:
        publisher = KafkaPublisher(broker, settings)
        for n in range(3):
            await publisher.publish(Topic.PROFILES, b"{}", key=f"c{n}".encode())
    finally:
        await broker.stop()

    records = await read_to_end(servers, topic_name(Topic.PROFILES, settings))
    assert sorted(r.key for r in records) == [b"c0", b"c1", b"c2"]
    with pytest.raises(TimeoutError, match="not to its end"):
        await read_to_end(servers, topic_name(Topic.PROFILES, settings), within_seconds=0)


async def test_after_a_fresh_fetch_the_next_batch_holds_all_that_arrived_while_one_ran(
    settings: HiloSettings, topics: list[str]
) -> None:
    """Without it, the record that answered the fetch made as the batch was handed out is all
    the next batch holds, even on a partition the batch had nothing from."""
    name = topic_name(Topic.JOURNEY, settings)
    mine, other = TopicPartition(name, 0), TopicPartition(name, 1)
    servers = settings.kafka_bootstrap_servers
    producer = AIOKafkaProducer(bootstrap_servers=servers)
    consumer = AIOKafkaConsumer(
        name,
        bootstrap_servers=servers,
        group_id=f"{name}.fresh",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=100,
    )
    await producer.start()
    await consumer.start()

    async def send(partition: TopicPartition, value: bytes) -> None:
        await producer.send_and_wait(name, value, key=value, partition=partition.partition)

    try:
        await send(mine, b"a")
        first = await consumer.getmany(timeout_ms=10_000)
        assert {p: [r.value for r in rs] for p, rs in first.items()} == {mine: [b"a"]}
        # While the batch runs: "b" answers the consumer's fetch, then "c" and "d" arrive.
        await send(other, b"b")

        async def b_fetched() -> bool:
            return bool(consumer.highwater(other) == 1)

        await eventually(b_fetched, interval=0.01)
        for value in (b"c", b"d"):
            await send(other, value)

        await fetch_afresh(consumer)

        second = await consumer.getmany(timeout_ms=10_000)
        assert {p: [r.value for r in rs] for p, rs in second.items()} == {other: [b"b", b"c", b"d"]}
        await consumer.commit()
        assert await consumer.committed(mine) == 1, "each record consumed once, none skipped"
        assert await consumer.committed(other) == 3
    finally:
        await consumer.stop()
        await producer.stop()


async def test_a_broker_that_cannot_connect_yet_keeps_trying_and_refuses_publishes_meanwhile(
    settings: HiloSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing listens: the start goes on in the background (tried again and again, counted:
    a task that hung after its first try passed too), a publish raises `PublishFailed` (what
    channels spool or answer 503 for), and no try leaves an unclosed client behind."""
    tries = [0]
    real_start = kafka_module._start

    async def counted(*args: Any) -> None:
        tries[0] += 1
        await real_start(*args)

    monkeypatch.setattr(kafka_module, "_start", counted)
    away = settings.model_copy(
        update={
            "kafka_bootstrap_servers": f"127.0.0.1:{free_port()}",
            "kafka_publish_timeout_seconds": 1.0,
        }
    )
    reported: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    broker = create_broker(away)
    still_connecting = await start_or_keep_trying(broker, away)
    assert still_connecting, "started although nothing listens"
    [connecting] = still_connecting
    try:
        with pytest.raises(PublishFailed):
            await KafkaPublisher(broker, away).publish_records(
                [Record(Topic.INTERACTIONS, b"key", b"{}", {})]
            )
        await eventually(lambda: _value(tries[0]), until=lambda n: n >= 3, timeout=20)
        assert not connecting.done()
    finally:
        await cancelled([connecting])
        await broker.stop()
    gc.collect()
    await asyncio.sleep(0)
    assert [context["message"] for context in reported] == []


async def test_a_start_that_fails_half_way_is_undone_and_the_next_try_starts_whole(
    settings: HiloSettings, topics: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kafka answers the producer, then the admin client fails: the next try must not find a
    producer already there (FastStream would start a second over it, the first never closed)
    nor an admin client that never started (readiness would fail for good)."""
    reported: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _l, c: reported.append(c))
    broker = create_broker(settings)
    admin = type(broker.config.admin)
    connect = admin.connect
    tries: list[int] = []

    async def fails_once(self: Any, **kwargs: Any) -> None:
        tries.append(1)
        if len(tries) == 1:
            raise KafkaConnectionError("the admin client's broker went away")
        await connect(self, **kwargs)

    monkeypatch.setattr(admin, "connect", fails_once)
    still_connecting = await start_or_keep_trying(broker, settings)
    assert still_connecting, "the first try failed"
    [connecting] = still_connecting
    try:
        await asyncio.wait_for(connecting, timeout=30)
        ready = await broker.ping(timeout=5)
        await KafkaPublisher(broker, settings).publish_records(
            [Record(Topic.INTERACTIONS, b"key", b"{}", {})]
        )
    finally:
        await broker.stop()
    gc.collect()
    await asyncio.sleep(0)
    assert len(tries) == 2
    assert ready, "readiness would say Kafka is failing"
    assert [context["message"] for context in reported] == [], "a producer left unclosed"


def test_a_create_answer_that_says_nothing_of_existence_waits_for_the_topics_to_show() -> None:
    """Timed out, or credentials that may not create: the topics may exist (or come) anyway."""
    created, unsure = _created(
        [("a", 0, None), ("b", 36, "exists"), ("c", 29, None), ("d", 7, "timed out")]
    )
    assert created == ["a"]
    assert [type(error) for error in unsure] == [
        TopicAuthorizationFailedError,
        RequestTimedOutError,
    ]
    assert str(unsure[0]).endswith("creating c: ")
    with pytest.raises(InvalidReplicationFactorError, match="creating e: too many"):
        _created([("e", 38, "too many")])


async def _value(value: int) -> int:
    return value


async def test_a_topic_streamed_to_its_end_waits_for_a_slow_reader(
    settings: HiloSettings, topics: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The idle limit counts Kafka's silence, not the time the reader takes with a batch (a
    dead-letter replay waiting for its deliveries): it stopped a replay half-way."""
    monkeypatch.setattr(kafka_module, "STREAM_BATCH", 1)
    topic = topic_name(Topic.INTERACTIONS_DLQ, settings)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        for n in range(3):
            await producer.send_and_wait(topic, f"letter-{n}".encode(), key=b"k")
    finally:
        await producer.stop()

    read: list[bytes] = []
    ends: dict[Any, int] = {}
    async for batch in stream_to_end(
        settings.kafka_bootstrap_servers, topic, ends, idle_seconds=0.5
    ):
        read += [record.value or b"" for record in batch]
        await asyncio.sleep(1.0)

    assert read == [b"letter-0", b"letter-1", b"letter-2"]
