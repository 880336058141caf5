"""Kafka clients set up for durability, and the one way interactions are put on the wire.

Producers wait for every in-sync replica (`acks=all`) and are idempotent, so a channel that
answers its provider with success knows the event is stored, and a producer retry never writes
it twice. A publish that cannot be confirmed in time raises `PublishFailed`: the caller answers
503 so the provider retries, and the deterministic event id keeps that retry harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import (
    CorruptRecordException,
    IllegalStateError,
    InvalidMessageError,
    KafkaConnectionError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)
from aiokafka.partitioner import murmur2
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.structs import ConsumerRecord
from faststream.exceptions import IncorrectState
from faststream.kafka import KafkaBroker
from faststream.kafka.message import ConsumerProtocol
from faststream.security import BaseSecurity
from pydantic_core import from_json, to_json
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential_jitter

from hilo.contract import Interaction
from hilo.contract.personal import INTERACTION_FIELDS
from hilo.kafka_security import kafka_security
from hilo.logs import error_text
from hilo.sealing import NoKeys, Sealer
from hilo.settings import HiloSettings
from hilo.shutdown import stop_this_process
from hilo.topics import Topic, topic_name

log = structlog.get_logger(__name__)

CLOUDEVENTS_JSON = "application/cloudevents+json"


CLIENT_HEADERS_ALLOWANCE = 256
"""A margin over aiokafka's estimate, so that a record `record_size` accepts is never refused by
the producer."""
DEAD_LETTER_HEADROOM = 2_048
"""Room an interaction leaves below the record limit for the headers a dead letter adds (reason,
detail, original topic, partition, offset, time: at most ~1.5 KB, `hilo.dead_letters`): a record
the profile cannot process must still fit on `interactions.dlq`, else the consumer could never
move past it."""
KEY_HASHES_REMEMBERED = 16_384


POSITION_WAIT_SECONDS = 1.0
"""How long `fetch_afresh` waits for a partition's position before leaving it alone."""


class PublishFailed(RuntimeError):
    """Kafka did not confirm the write; nothing may be acknowledged upstream."""

    @property
    def for_good(self) -> bool:
        """Kafka answered and refused these records themselves (too large, broken): sending
        them again cannot help. Otherwise it was away, too slow, or refused the topic."""
        return isinstance(self.__cause__, REFUSED_FOR_GOOD)


REFUSED_FOR_GOOD = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    CorruptRecordException,
    InvalidMessageError,
)
"""Refusals of the records themselves. A forbidden or unknown topic is the deployment's to fix
(ACLs, topic creation): the records wait for it like for an outage."""


class RecordTooLarge(ValueError):
    """The producer would refuse the record whatever the broker's state: retrying cannot help."""

    def __init__(self, size: int, limit: int, index: int = 0) -> None:
        super().__init__(f"record of {size} bytes is larger than {limit} bytes")
        self.size = size
        self.limit = limit
        self.index = index
        """Which of the records asked for at once it is."""


@dataclass(frozen=True)
class Record:
    """One record as it goes on the wire, ready to publish."""

    topic: Topic
    key: bytes
    value: bytes | None
    headers: Mapping[str, str]
    carried: tuple[tuple[str, bytes], ...] = ()
    """Headers passed on as they were read, before `headers`: a dead letter keeps its record's
    own, repeated names and bytes that are no UTF-8 included, for a replay to restore."""


class RecordPublisher(Protocol):
    """What writes records: returns once Kafka acknowledged every one (`KafkaPublisher`)."""

    async def publish_records(self, records: Sequence[Record]) -> None: ...


def wire_headers(record: Record) -> list[tuple[str, bytes]]:
    return [*record.carried, *((name, value.encode()) for name, value in record.headers.items())]


def record_size(record: Record) -> int:
    """What the producer counts against its max_request_size (aiokafka's own estimate)."""
    estimate: int = DefaultRecordBatchBuilder.estimate_size_in_bytes(
        record.key, record.value, wire_headers(record)
    )
    return estimate + CLIENT_HEADERS_ALLOWANCE


async def keep_bytes(_message: Any) -> Any:
    """A FastStream decoder that leaves bodies undecoded: the handler reads `raw_message`
    itself (it opens sealed records, parses and dead-letters what it cannot)."""
    return None


async def fetch_afresh(consumer: ConsumerProtocol) -> None:
    """After a batch that emptied the consumer's buffer, drop what was prefetched while it ran,
    so the next poll fetches everything that arrived meanwhile.

    aiokafka fetches again as soon as a batch is handed out. The first records to arrive answer
    that fetch, and their partitions are not fetched again until those are consumed: the next
    batch held them, and what arrived later waited one batch more (docs/benchmarks.md). Seeking
    every assigned partition to its own position discards those records and moves no position,
    so the commit that follows is the same. A partition never fetched has nothing to drop, and
    one taken away meanwhile is left to its new owner. (A fetch error waiting in the buffer, such
    as a record too large to fetch, is dropped with it: aiokafka has already moved past it.)
    Subscribers that call this should bound the broker's long poll (`fetch_max_wait_ms`): a
    partition cannot be fetched again while a fetch of others to the same broker is waiting.
    """
    if not isinstance(consumer, AIOKafkaConsumer):
        return
    for partition in consumer.assignment():
        if partition not in consumer.assignment() or consumer.highwater(partition) is None:
            continue
        with contextlib.suppress(IllegalStateError, TimeoutError):
            async with asyncio.timeout(POSITION_WAIT_SECONDS):
                position = await consumer.position(partition)
            consumer.seek(partition, position)


@functools.lru_cache(maxsize=KEY_HASHES_REMEMBERED)
def _key_hash(key: bytes) -> int:
    return int(murmur2(key)) & 0x7FFFFFFF


def partition_for(key: bytes | None, partitions: list[int], available: list[int]) -> int:
    """Kafka's default partitioning, as the Java client does it (murmur2 of the key), so every
    client puts a key on the same partition; a record without a key goes to any available one.

    The hashes of recent keys are remembered: aiokafka's murmur2 is pure Python (about 5 µs a
    key), and a service keys its records by the customers and senders it sees again and again.
    """
    if key is None:
        return random.choice(available or partitions)  # noqa: S311 (spreading load, not secrecy)
    return partitions[_key_hash(key) % len(partitions)]


def create_broker(
    settings: HiloSettings,
    security: BaseSecurity | None = None,
    *,
    graceful_timeout: float = 15.0,
) -> KafkaBroker:
    """A FastStream Kafka broker whose producer is durable (acks=all, idempotent), reaching
    the brokers as `settings` say (`hilo.kafka_security`) unless given another `security`.

    `graceful_timeout` bounds how long `stop` waits for handlers in flight.
    """
    compression = settings.kafka_compression
    return KafkaBroker(
        settings.kafka_bootstrap_servers,
        client_id=settings.client_id,
        acks="all",
        enable_idempotence=True,
        compression_type=None if compression == "none" else compression,
        max_request_size=settings.kafka_max_record_bytes,
        partitioner=partition_for,
        request_timeout_ms=int(settings.kafka_publish_timeout_seconds * 1000),
        allow_auto_create_topics=False,
        security=security or kafka_security(settings),
        graceful_timeout=graceful_timeout,
        logger=None,
    )


def cloudevent_headers(
    *, event_id: str, event_type: str, source: str, occurred: datetime
) -> dict[str, str]:
    """The CloudEvents attributes every event record carries as `ce_` headers (the Kafka
    binding's binary mode): all the required ones, so that a reader that goes by the headers
    (the CloudEvents SDKs do once it sees one `ce_` header) reads a whole event."""
    return {
        "ce_specversion": "1.0",
        "ce_id": event_id,
        "ce_source": source,
        "ce_type": event_type,
        "ce_time": occurred.isoformat(),
    }


def interaction_headers(interaction: Interaction) -> dict[str, str]:
    """Headers that let consumers route without parsing the value (CloudEvents Kafka binding:
    the value is the whole event, structured mode, and the headers repeat its attributes)."""
    return {
        "content-type": CLOUDEVENTS_JSON,
        **cloudevent_headers(
            event_id=interaction.id,
            event_type=interaction.type,
            source=interaction.source,
            occurred=interaction.occurred_at,
        ),
        "hilo_schema_version": str(interaction.schema_version),
    }


def aiokafka_producer(broker: KafkaBroker) -> AIOKafkaProducer:
    """The aiokafka producer the FastStream broker started (durable, see `create_broker`).

    Records are handed to it directly: they are bytes with their headers already, and
    FastStream's publish (a command object, a correlation id, its codec) cost 13 µs of CPU per
    record on top of aiokafka's 35. Reached through FastStream 0.7's internals, hence pinned.
    """
    try:
        producer: AIOKafkaProducer = broker.config.producer._producer.producer  # type: ignore[attr-defined]
    except IncorrectState as exc:  # not connected yet (`start_or_keep_trying`)
        raise KafkaConnectionError("the broker has not connected to Kafka yet") from exc
    return producer


def producer_stalled(broker: KafkaBroker) -> bool:
    """Whether the broker's producer is open but its sender task has ended: a bug in aiokafka's
    sender routine (aiokafka #907) or a cancelled task (#1039) leaves a producer that takes every
    record into its buffer and sends none, while the broker still answers pings. Only a new
    producer (a restart) sends again. Reached through aiokafka's internals, hence pinned."""
    try:
        producer = aiokafka_producer(broker)
    except KafkaConnectionError:
        return False  # not connected yet: `start_or_keep_trying` says so
    sender = producer._sender
    task = sender.sender_task if sender is not None else None
    return not producer._closed and task is not None and task.done()


PRODUCER_WATCH_SECONDS = 5.0
"""How often a service checks that its producer still sends (`watch_producer`)."""


async def watch_producer(broker: KafkaBroker, service: str) -> None:
    """Check `producer_stalled` every `PRODUCER_WATCH_SECONDS`; once it is, log it and stop this
    process (`hilo.shutdown.stop_this_process`), so that its orchestrator starts a new one."""
    while True:
        await asyncio.sleep(PRODUCER_WATCH_SECONDS)
        if producer_stalled(broker):
            break
    log.error("kafka_producer_stalled", service=service, action="stopping the service")
    stop_this_process()


KAFKA_AWAY = (KafkaError, OSError)
"""What connecting raises while Kafka does not answer (`TimeoutError` is an `OSError`)."""
START_SECONDS = 30.0
"""How long one try to start a broker may take: a consumer group joining waits for its
coordinator without a deadline of its own, and a cluster with too few brokers has none."""


Prepare = Callable[[], Awaitable[object]]


async def start_or_keep_trying(
    broker: KafkaBroker, settings: HiloSettings, prepare: Prepare | None = None
) -> list[asyncio.Task[None]]:
    """Start `broker` now if Kafka answers (no task left); otherwise log it and return the task
    that keeps trying (0.5 s, doubling to 10 s, jittered) until it does, for the caller's
    background tasks. `prepare` runs once Kafka answers, before the broker starts (creating
    topics its consumers need, say).

    For a service that can serve without Kafka, so must not fail its start-up while Kafka is
    away (a channel that spools, the APIs that read MongoDB): until the task is done, its
    publishes raise `PublishFailed` and its consumers wait.
    """
    try:
        await _start(broker, settings, prepare)
    except KAFKA_AWAY as exc:
        log.warning("kafka_unavailable", tries=1, error=type(exc).__name__)
        return [asyncio.create_task(_start_when_kafka_answers(broker, settings, prepare))]
    return []


async def _start_when_kafka_answers(
    broker: KafkaBroker, settings: HiloSettings, prepare: Prepare | None
) -> None:
    """Try until the broker starts. Any failure is tried again, not only Kafka being away: a
    task that ended would leave the service degraded for good, and say nothing."""
    retrying = AsyncRetrying(
        retry=retry_if_exception_type(Exception),
        wait=wait_exponential_jitter(multiplier=0.5, max=10, jitter=0.5),
        before_sleep=_log_failed_try,
    )
    async for attempt in retrying:
        with attempt:
            await _start(broker, settings, prepare)
    log.info("kafka_connected", tries=retrying.statistics.get("attempt_number", 0) + 1)


async def _start(broker: KafkaBroker, settings: HiloSettings, prepare: Prepare | None) -> None:
    """Start `broker` once a producer of our own could connect, within `START_SECONDS`.

    FastStream drops a producer whose start failed without closing it, and aiokafka reports
    every such producer as an unclosed client: the probe is closed whatever happens. A start
    that fails half-way is stopped, else the next try would connect a second producer over the
    first and keep an admin client that never started (readiness failing for good).
    """
    async with asyncio.timeout(settings.kafka_publish_timeout_seconds):
        await _probe(broker)
    if prepare is not None:
        await prepare()
    try:
        async with asyncio.timeout(START_SECONDS):
            await broker.start()
    except BaseException:
        await asyncio.shield(_stop_quietly(broker))
        raise


async def _stop_quietly(broker: KafkaBroker) -> None:
    try:
        await broker.stop()
    except Exception as exc:  # the failure being handled is the one to report
        log.warning("kafka_half_start_not_stopped", error=type(exc).__name__)


async def _probe(broker: KafkaBroker) -> None:
    """Raise unless a producer with the broker's connection settings can start."""
    producer = AIOKafkaProducer(**broker._connection_kwargs)  # FastStream 0.7's, hence pinned
    try:
        await producer.start()
    finally:
        await asyncio.shield(producer.stop())


def _log_failed_try(state: RetryCallState) -> None:
    """Log an unexpected failure each time; Kafka being away at the tenth try and every
    hundredth: an outage of hours is not a line per try."""
    tries = state.attempt_number + 1  # the first was `start_or_keep_trying`'s
    error = state.outcome.exception() if state.outcome else None
    if error is not None and not isinstance(error, KAFKA_AWAY):
        log.error("kafka_start_failed", tries=tries, error=error_text(error))
    elif tries == 10 or tries % 100 == 0:
        log.warning("kafka_unavailable", tries=tries, error=type(error).__name__)


class KafkaPublisher:
    """Publishes and waits for the broker's acknowledgement, within a deadline.

    With `linger_seconds`, publishes that start within that time of the first one are handed to
    the producer together when it has passed, so they travel in one produce request (the
    producer sends one at a time per broker, carrying every partition's batch). The Python client
    pays about a quarter of a millisecond of CPU per request; at a few hundred events per second
    each event would otherwise go alone. aiokafka's own `linger_ms` lingers per partition and does
    not group them. Each publish still waits for its acknowledgement.
    """

    def __init__(
        self,
        broker: KafkaBroker,
        settings: HiloSettings,
        *,
        linger_seconds: float = 0.0,
        sealer: Sealer | None = None,
    ) -> None:
        self._broker = broker
        self._settings = settings
        self._sealer = sealer
        self._linger = linger_seconds
        self._window: list[asyncio.Future[None]] = []

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
        await self.publish_records([Record(topic, key, value, headers or {})])

    async def publish_records(self, records: Sequence[Record]) -> None:
        """Write `records`; raise `PublishFailed` unless Kafka confirmed every one in time.

        All are handed to the producer first and their acknowledgements awaited together, under
        one deadline: the records of one request travel in the same produce requests, and no
        task is spawned per record.
        """
        if not records:
            return
        topic = records[0].topic
        try:
            async with asyncio.timeout(self._settings.kafka_publish_timeout_seconds):
                if self._linger:
                    await self._linger_with_others()
                producer = self._producer()
                acks = []
                for record in records:
                    topic = record.topic
                    acks.append(
                        await producer.send(
                            self.topic(record.topic),
                            record.value,
                            key=record.key,
                            headers=wire_headers(record),
                        )
                    )
                await (acks[0] if len(acks) == 1 else asyncio.gather(*acks))
        except (TimeoutError, KafkaError, ConnectionError) as exc:
            log.warning("kafka_publish_failed", topic=topic.value, error=type(exc).__name__)
            raise PublishFailed(f"Kafka did not confirm the write to {topic.value}") from exc

    def _producer(self) -> AIOKafkaProducer:
        """The broker's producer, asked for at each publish: it exists once the broker started."""
        return aiokafka_producer(self._broker)

    async def _linger_with_others(self) -> None:
        """Wait until the current window closes; the first publish of a window opens it."""
        loop = asyncio.get_running_loop()
        window = self._window
        if not window or window[0].get_loop() is not loop:
            window = self._window = []
            loop.call_later(self._linger, self._close, window)
        waiter = loop.create_future()
        window.append(waiter)
        await waiter

    def _close(self, window: list[asyncio.Future[None]]) -> None:
        """Wake every publish of the window in one loop turn: their records are all queued
        before the producer's sender runs, so they leave in the same produce request."""
        if self._window is window:
            self._window = []
        for waiter in window:
            if not waiter.done():  # a cancelled publish (its deadline) is simply left out
                waiter.set_result(None)

    def interaction_record(self, interaction: Interaction) -> Record:
        """The record of `interaction` on `interactions` as it is, unsealed, keyed by the
        strongest identifier: what a producer without the key store sends (tools, benchmarks).

        Raises `RecordTooLarge` when the producer would refuse it.
        """
        return self._within_limit(_plain_record(interaction))

    async def interaction_records(
        self, interactions: Sequence[Interaction], *, create: bool = True
    ) -> list[Record]:
        """The records of `interactions`, their personal fields sealed (`hilo.sealing`) and each
        keyed by the subject of its strongest identifier, so neither the value nor the key shows
        who it is about.

        Raises `RecordTooLarge` when the producer would refuse one, so a caller can refuse the
        request before anything of it is published. Without `create`, sealed only with keys
        that exist (a record about someone Hilo knows already, made by Hilo: it must not outlive
        an erasure under way by making their key again): `NoKeys` when one has none.
        """
        if self._sealer is None:
            records = [_plain_record(interaction) for interaction in interactions]
        else:
            documents = await self._sealer.seal_all(
                [from_json(interaction.model_dump_json()) for interaction in interactions],
                INTERACTION_FIELDS,
                create=create,
            )
            sealed = [document for document in documents if document is not None]
            if len(sealed) < len(documents):
                raise NoKeys("no key for an interaction's identifiers")
            records = [
                Record(
                    Topic.INTERACTIONS,
                    key=self._sealer.subject(interaction.partition_key().decode()).encode(),
                    value=to_json(document),
                    headers=interaction_headers(interaction),
                )
                for interaction, document in zip(interactions, sealed, strict=True)
            ]
        return [self._within_limit(record, index) for index, record in enumerate(records)]

    def _within_limit(self, record: Record, index: int = 0) -> Record:
        """The interaction's record, if it and a dead letter of it both fit the limit (the size
        refused is counted with that room); `index` names it among those asked for at once."""
        size = record_size(record) + DEAD_LETTER_HEADROOM
        limit = self._settings.kafka_max_record_bytes
        if size > limit:
            raise RecordTooLarge(size, limit, index)
        return record

    async def publish_record(self, record: Record) -> None:
        await self.publish_records([record])

    async def publish_interaction(self, interaction: Interaction) -> None:
        """Publish on `interactions` (sealed when this publisher has a sealer)."""
        await self.publish_records(await self.interaction_records([interaction]))


def _plain_record(interaction: Interaction) -> Record:
    """The interaction's record as it is, keyed by its strongest identifier."""
    return Record(
        Topic.INTERACTIONS,
        key=interaction.partition_key(),
        value=interaction.model_dump_json().encode(),
        headers=interaction_headers(interaction),
    )


STREAM_BATCH = 1_000
"""Records `stream_to_end` yields at most at once."""


def from_the_beginning(kafka: str | Mapping[str, Any], topic: str) -> AIOKafkaConsumer:
    """A consumer outside any group that reads `topic` from its earliest offsets, committing
    nothing: for tools and tests that read what is there. `kafka` is the bootstrap servers, or
    a service's `client_options` (its brokers and how it reaches them)."""
    return AIOKafkaConsumer(
        topic,
        **({"bootstrap_servers": kafka} if isinstance(kafka, str) else kafka),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )


async def read_on_to_end(
    consumer: AIOKafkaConsumer, records: list[ConsumerRecord[bytes, bytes]], deadline: float
) -> bool:
    """Add to `records` what `consumer` reads (one poll at least) until every partition it is
    assigned is at the end offset it had when first assigned; whether it got there before
    `deadline` (`time.monotonic()`)."""
    end: dict[TopicPartition, int] = {}
    while time.monotonic() < deadline:
        for batch in (await consumer.getmany(timeout_ms=300)).values():
            records.extend(batch)
        assigned = consumer.assignment()
        if assigned and not end:
            end = await consumer.end_offsets(list(assigned))
        if end and all([await consumer.position(tp) >= end[tp] for tp in end]):
            return True
    return False


async def stream_to_end(
    kafka: str | Mapping[str, Any],
    topic: str,
    ends: dict[TopicPartition, int],
    *,
    idle_seconds: float = 30.0,
) -> AsyncIterator[list[ConsumerRecord[bytes, bytes]]]:
    """The records of `topic` a batch at a time, up to `ends` (empty: the end offsets of the
    first fetch, filled in): for a topic too large to hold at once (a dead-letter replay after
    a bug dead-lettered everything). Raises `TimeoutError` when `idle_seconds` pass with no
    record before the end: never part of the topic as if it were all."""
    consumer = from_the_beginning(kafka, topic)
    await consumer.start()
    try:
        moved_at = time.monotonic()
        while True:
            fetched = await consumer.getmany(timeout_ms=300, max_records=STREAM_BATCH)
            if not ends and (assigned := consumer.assignment()):
                ends.update(await consumer.end_offsets(list(assigned)))
            batch = [r for part, rs in fetched.items() for r in rs if r.offset < ends.get(part, 0)]
            if fetched:
                moved_at = time.monotonic()
            if batch:
                yield batch
                moved_at = time.monotonic()  # the caller's time with a batch is not idle
            if ends and all([await consumer.position(tp) >= end for tp, end in ends.items()]):
                return
            if time.monotonic() - moved_at > idle_seconds:
                raise TimeoutError(f"no record of {topic} for {idle_seconds:g}s before its end")
    finally:
        await consumer.stop()


async def latest_values(
    kafka: str | Mapping[str, Any], topic: str, *, within_seconds: float = 30.0
) -> list[bytes]:
    """The latest value of each key of a compacted topic (`read_to_end`), deleted keys left out:
    what it says now, as the `erasures` topic says who is erased."""
    records = await read_to_end(kafka, topic, within_seconds=within_seconds)
    latest = {record.key: record.value for record in records}
    return [value for value in latest.values() if value is not None]


async def read_to_end(
    kafka: str | Mapping[str, Any], topic: str, *, within_seconds: float = 30.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of `topic` up to its end offsets as of the first fetch (admin tools, tests).

    Raises `TimeoutError` rather than return part of the topic: a dead-letter replay or a rebuild
    reading `erasures` must not act on half of it as if it were all.
    """
    consumer = from_the_beginning(kafka, topic)
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        if await read_on_to_end(consumer, records, time.monotonic() + within_seconds):
            return records
    finally:
        await consumer.stop()
    raise TimeoutError(
        f"read {len(records)} records of {topic} but not to its end within {within_seconds}s"
    )
