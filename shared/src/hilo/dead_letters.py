"""Dead letters: records a consumer could not process, kept unchanged with the reason.

A dead letter is the original record (value, key and headers untouched) on `<topic>.dlq`, plus
headers saying why and where it came from. Once the cause is fixed (a bug, a configuration, a
missing upcaster), `replay` puts the chosen dead letters back on the original topic; event ids
are deterministic, so an event that was in fact processed is stored once however often it is
replayed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from hilo.kafka import PublishFailed, Record, RecordPublisher, stream_to_end
from hilo.kafka_security import client_options
from hilo.settings import HiloSettings
from hilo.topics import Topic, topic_name

log = structlog.get_logger(__name__)

REASON = "hilo_error_reason"
DETAIL = "hilo_error_detail"
ORIGINAL_TOPIC = "hilo_original_topic"
ORIGINAL_PARTITION = "hilo_original_partition"
ORIGINAL_OFFSET = "hilo_original_offset"
FAILED_AT = "hilo_failed_at"
REPLAYED_FROM = "hilo_replayed_from"
WITHOUT_VALUE = "hilo_original_value_bytes"
"""On a letter whose value the topic could not take: the value's size. Its headers say where
the record is (`ORIGINAL_TOPIC`, `_PARTITION`, `_OFFSET`) while that topic keeps it."""
DEAD_LETTER_HEADERS = (
    REASON,
    DETAIL,
    ORIGINAL_TOPIC,
    ORIGINAL_PARTITION,
    ORIGINAL_OFFSET,
    FAILED_AT,
)
DETAIL_LIMIT = 1000
"""Bytes of detail at most: with the other headers, within `hilo.kafka.DEAD_LETTER_HEADROOM`."""


def dead_letter_headers(
    *, reason: str, detail: str, topic: str, partition: int, offset: int
) -> dict[str, str]:
    """Why a record failed and where it was read: what a dead letter adds to its headers."""
    return {
        REASON: reason,
        DETAIL: detail.encode()[:DETAIL_LIMIT].decode(errors="ignore"),
        ORIGINAL_TOPIC: topic,
        ORIGINAL_PARTITION: str(partition),
        ORIGINAL_OFFSET: str(offset),
        FAILED_AT: datetime.now(UTC).isoformat(),
    }


def carried_headers(original: Iterable[tuple[str, bytes]]) -> tuple[tuple[str, bytes], ...]:
    """A record's own headers, as they were (repeated names and any bytes), but for those a
    dead letter sets itself: what it says of this failure is the one to read."""
    return tuple(
        (name, bytes(value or b""))
        for name, value in original
        if name not in (*DEAD_LETTER_HEADERS, WITHOUT_VALUE)
    )


class ConsumedRecord(Protocol):
    """A record as consumed (aiokafka's `ConsumerRecord`, or a copy kept whole)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


def dead_letter(topic: Topic, record: ConsumedRecord, *, reason: str, detail: str) -> Record:
    """`record` for the dead-letter `topic`, unchanged, with why and where from in its headers."""
    return Record(
        topic,
        record.key or b"",
        record.value,
        dead_letter_headers(
            reason=reason,
            detail=detail,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
        ),
        carried_headers(record.headers or ()),
    )


def without_value(letter: Record) -> Record:
    """`letter` without its value: what the dead-letter topic can take of a record too large
    for it, with the value's size (`replay` leaves such letters out)."""
    headers = {**letter.headers, WITHOUT_VALUE: str(len(letter.value or b""))}
    return Record(letter.topic, letter.key, None, headers, letter.carried)


async def publish_dead_letter(
    publisher: RecordPublisher, topic: Topic, record: ConsumedRecord, *, reason: str, detail: str
) -> None:
    """Put a consumed `record` on the dead-letter `topic` as it was, with why and where it was
    read in its headers; raises `PublishFailed` unless Kafka has it, so the consumer does not
    move past it.

    A letter Kafka refuses for good (a record near the size limit, from a producer that kept no
    room for the headers) would stop the partition for ever: its headers go instead, without
    the value, and the record stays readable where it was while its topic keeps it.
    """
    letter = dead_letter(topic, record, reason=reason, detail=detail)
    try:
        await publisher.publish_records([letter])
    except PublishFailed as exc:
        if not exc.for_good:
            raise
        log.warning(
            "dead_letter_without_its_value",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            value_bytes=len(record.value or b""),
        )
        await publisher.publish_records([without_value(letter)])


@dataclass(frozen=True)
class ReplayFilter:
    """Which dead letters to replay: all by default."""

    reasons: frozenset[str] = frozenset()
    since: datetime | None = None
    until: datetime | None = None

    def admits(self, headers: dict[str, str]) -> bool:
        if self.reasons and headers.get(REASON) not in self.reasons:
            return False
        failed_at = _time(headers.get(FAILED_AT))
        if self.since and (failed_at is None or failed_at < self.since):
            return False
        return not (self.until and (failed_at is None or failed_at >= self.until))


@dataclass(frozen=True)
class ReplayReport:
    read: int
    replayed: int
    by_reason: dict[str, int]
    superseded: int = 0
    """Letters left out because a replay of them failed again: their newer copy stands for them."""
    without_value: list[str] = field(default_factory=list)
    """Letters the topic could not take whole (`WITHOUT_VALUE`): where their records are
    (`topic/partition/offset`), to publish again from there while that topic keeps them."""


class ReplayIncomplete(RuntimeError):
    """Kafka refused some of the replayed records: they are still dead letters (a replay never
    deletes them), so running it again after the cause is fixed sends them."""


async def replay(
    settings: HiloSettings,
    chosen: ReplayFilter,
    *,
    source: Topic = Topic.INTERACTIONS_DLQ,
    target: Topic = Topic.INTERACTIONS,
    dry_run: bool = False,
) -> ReplayReport:
    """Re-publish the dead letters on `source` that `chosen` admits, as they were, to `target`.

    Reads up to the end offsets seen at start (letters arriving meanwhile wait for the next run)
    and waits for Kafka's acknowledgement of every record before reporting. A letter replayed
    before that failed again is on `source` twice, the newer copy naming the older
    (`REPLAYED_FROM`): only the newer one is replayed, so letters that keep failing are not
    doubled by every run.

    Two passes, a batch at a time (`stream_to_end`): the first notes which letters were
    replayed before, the second replays; held whole, a topic a bug filled (100,000 letters in
    minutes) took more memory than a service's container has.
    """
    source_topic = topic_name(source, settings)
    ends: dict[TopicPartition, int] = {}
    replayed_before: set[str] = set()
    async for batch in stream_to_end(client_options(settings), source_topic, ends):
        replayed_before.update(
            value.decode(errors="replace")
            for record in batch
            for name, value in record.headers or ()
            if name == REPLAYED_FROM
        )
    producer = AIOKafkaProducer(
        **client_options(settings),
        acks="all",
        enable_idempotence=True,
        max_request_size=settings.kafka_max_record_bytes,
    )
    tally = _Tally()
    if not dry_run:
        await producer.start()
    try:
        async for batch in stream_to_end(client_options(settings), source_topic, ends):
            letters = [r for r in batch if _replayed(r, chosen, replayed_before, tally)]
            if dry_run:
                continue
            sent = [await _send(producer, topic_name(target, settings), r) for r in letters]
            outcomes = await asyncio.gather(*sent, return_exceptions=True)
            tally.refused += [o for o in outcomes if isinstance(o, BaseException)]
    finally:
        if not dry_run:
            await producer.stop()
    if tally.refused:
        raise ReplayIncomplete(
            f"Kafka refused {len(tally.refused)} of {tally.replayed} dead letters "
            f"({type(tally.refused[0]).__name__}); they are still on {source_topic}"
        )
    log.info("dead_letters_replayed", read=tally.read, replayed=tally.replayed, dry_run=dry_run)
    return ReplayReport(
        read=tally.read,
        replayed=tally.replayed,
        by_reason=tally.by_reason,
        superseded=tally.superseded,
        without_value=tally.without_value,
    )


@dataclass
class _Tally:
    """What a replay read and did, counted as it goes."""

    read: int = 0
    replayed: int = 0
    superseded: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    without_value: list[str] = field(default_factory=list)
    refused: list[BaseException] = field(default_factory=list)


def _replayed(
    record: ConsumerRecord[bytes, bytes],
    chosen: ReplayFilter,
    replayed_before: set[str],
    tally: _Tally,
) -> bool:
    """Whether the letter is to be replayed; counted as what it is either way."""
    tally.read += 1
    if f"{record.topic}/{record.partition}/{record.offset}" in replayed_before:
        tally.superseded += 1
        return False
    headers = {k: v.decode(errors="replace") for k, v in record.headers or ()}
    if not chosen.admits(headers):
        return False
    if WITHOUT_VALUE in headers:  # nothing to replay: where the record is, told
        original = (ORIGINAL_TOPIC, ORIGINAL_PARTITION, ORIGINAL_OFFSET)
        tally.without_value.append("/".join(headers.get(name, "?") for name in original))
        return False
    reason = headers.get(REASON, "unknown")
    tally.by_reason[reason] = tally.by_reason.get(reason, 0) + 1
    tally.replayed += 1
    return True


async def _send(
    producer: AIOKafkaProducer, target: str, record: ConsumerRecord[bytes, bytes]
) -> asyncio.Future[Any]:
    """The letter as it was, to `target`, naming where it was (`REPLAYED_FROM`); its delivery."""
    marker = f"{record.topic}/{record.partition}/{record.offset}"
    dropped = (*DEAD_LETTER_HEADERS, REPLAYED_FROM)
    kept = [(k, v) for k, v in record.headers or () if k not in dropped]
    try:
        delivery: asyncio.Future[Any] = await producer.send(
            target,
            record.value,
            key=record.key or None,
            headers=[*kept, (REPLAYED_FROM, marker.encode())],
        )
    except KafkaError as exc:  # refused before sending (too large for the producer)
        delivery = asyncio.get_running_loop().create_future()
        delivery.set_exception(exc)
    return delivery


def _time(value: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if value else None
    except ValueError:
        return None
