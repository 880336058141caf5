"""The live side of the desk: every journey entry as it is recorded, to the pages that show its
customer, within a second, and again after a reconnect without gaps or duplicates.

`JourneyFeed` reads the `journey` topic (every partition, outside any consumer group: each desk
instance sees everything) from its end as of start-up, opens the sealed entries, and numbers
them in arrival order. A page remembers the number it was rendered at; its Server-Sent Events
stream sends what came after that number for its customer, each event carrying
`<feed epoch>:<number>` as its id, which the browser sends back as `Last-Event-ID` when it
reconnects. A number the feed no longer holds (older than `HILO_DESK_LIVE_BUFFER` entries, or
from another desk process) makes the page reload its timeline instead of silently missing
entries. The page also drops an entry it already shows (the same event id), so an entry both in
the first render and in the stream appears once.

When reading stops (Kafka gone, MongoDB not opening the entries), the feed starts a new
consumer a moment later and seeks every partition to the offset after the last record it took
in, so what was recorded meanwhile still arrives, in order, and the numbers pages hold stay
valid.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import time
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection, Sequence
from contextlib import suppress
from dataclasses import dataclass
from itertools import islice
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from hilo.kafka_security import client_options
from hilo.sealing import Sealer
from hilo.settings import HiloSettings
from hilo.topics import Topic, topic_name

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class LiveEntry:
    number: int
    customer_id: str
    entry: dict[str, Any]


class Gap(Exception):
    """The page missed entries the feed no longer holds: it must reload its timeline."""


ERASURE_LISTENER_SECONDS = 5.0
"""How long the feed waits for what the desk does on an erasure (deleting notes) before it
reads on: every open page's timeline waits for it."""


class JourneyFeed:
    def __init__(
        self,
        settings: HiloSettings,
        sealer: Sealer,
        capacity: int,
        *,
        retry_seconds: float = 2.0,
        on_entries: Callable[[Sequence[dict[str, Any]]], Awaitable[None]] | None = None,
        on_erasures: Callable[[set[str]], Awaitable[object]] | None = None,
    ) -> None:
        self.epoch = secrets.token_hex(4)
        self._on_entries = on_entries
        """Told every batch of entries read (the desk forgets the pending replies recorded)."""
        self._on_erasures = on_erasures
        """Told the customers (and aliases) each batch of erasures names (the desk deletes
        their notes)."""
        self._settings = settings
        self._sealer = sealer
        self._retry_seconds = retry_seconds
        self._entries: deque[LiveEntry] = deque(maxlen=capacity)
        self._erased: dict[str, None] = {}
        """Customers erased lately, oldest first (at most `capacity`): an entry of theirs read
        after the erasure (the topics are not ordered with each other, and the keys stay in
        memory a while) is not held either."""
        self._number = 0
        self._next_offsets: dict[TopicPartition, int] = {}
        self._arrived = asyncio.Condition()
        self._consumer: AIOKafkaConsumer | None = None
        self.ready = asyncio.Event()

    @property
    def position(self) -> str:
        """The cursor of a page rendered now: it is sent everything that arrives after."""
        return f"{self.epoch}:{self._number}"

    async def run(self) -> None:
        """Follow `journey` until cancelled. Any failure (Kafka, MongoDB behind the sealer, a
        bug on one record) only pauses the feed: pages stay open and get what was missed once
        it reads again, so nothing but cancellation may end this loop."""
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # see the docstring: the feed must go on
                # The type only: a message may quote a record, and records hold personal data.
                log.warning("journey_feed_interrupted", error=type(exc).__name__)
                await asyncio.sleep(self._retry_seconds)

    async def _follow(self) -> None:
        consumer = AIOKafkaConsumer(
            topic_name(Topic.JOURNEY, self._settings),
            topic_name(Topic.ERASURES, self._settings),
            **client_options(self._settings),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            client_id=f"{self._settings.client_id}-live",
        )
        self._consumer = consumer
        await consumer.start()
        try:
            await self._positioned(consumer)
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=500)
                for records in batches.values():
                    await self._add(records)
        finally:
            self._consumer = None
            await consumer.stop()

    async def _positioned(self, consumer: AIOKafkaConsumer) -> None:
        """Wait until every partition is assigned and positioned: where an earlier consumer
        stopped, or (the first time) at the end. From then on no entry recorded is missed."""
        for _ in range(600):
            if consumer.assignment():
                break
            await asyncio.sleep(0.1)
        else:
            raise KafkaError("no partition of the journey topic was assigned within 60 s")
        for partition in consumer.assignment():
            remembered = self._next_offsets.get(partition)
            if remembered is None:
                self._next_offsets[partition] = await consumer.position(partition)
            else:
                consumer.seek(partition, remembered)
        self.ready.set()
        log.info("journey_feed_following", partitions=len(consumer.assignment()))

    async def _add(self, records: list[Any]) -> None:
        """Number and keep a partition's batch; its offsets are remembered only once it is
        kept, so a batch that failed to open is read again after the restart. A batch of
        `erasures` forgets the entries held of those customers instead."""
        if records and records[0].topic == topic_name(Topic.ERASURES, self._settings):
            erased = self._forget(records)
            if self._on_erasures is not None and erased:
                try:
                    async with asyncio.timeout(ERASURE_LISTENER_SECONDS):  # pages wait meanwhile
                        await self._on_erasures(erased)
                except Exception as exc:  # only a courtesy: what it keeps is sealed anyway
                    log.warning("journey_feed_erasure_listener_failed", error=type(exc).__name__)
            return
        opened = await self._sealer.open_all([record.value for record in records])
        async with self._arrived:
            for record, entry in zip(records, opened, strict=True):
                self._next_offsets[TopicPartition(record.topic, record.partition)] = (
                    record.offset + 1
                )
                if isinstance(entry, ValueError) or not record.key:
                    continue  # unreadable: its person was erased
                if record.key.decode() in self._erased:
                    continue
                self._number += 1
                self._entries.append(LiveEntry(self._number, record.key.decode(), entry))
            self._arrived.notify_all()
        if self._on_entries is not None:
            read = [entry for entry in opened if not isinstance(entry, ValueError)]
            try:
                await self._on_entries(read)
            except Exception as exc:  # only a courtesy: the feed goes on whatever it meets
                log.warning("journey_feed_listener_failed", error=type(exc).__name__)

    def _forget(self, records: list[Any]) -> set[str]:
        """Drop the held entries of the customers these erasures name (and their aliases): the
        entries were opened before the keys went, and a page asking for those ids must not be
        sent them again (one reconnecting while the profile service is away is trusted with
        the ids it was rendered with)."""
        erased: set[str] = set()
        for record in records:
            self._next_offsets[TopicPartition(record.topic, record.partition)] = record.offset + 1
            with suppress(ValueError, TypeError, AttributeError):
                erasure = json.loads(record.value)
                erased |= {str(erasure["customer_id"]), *map(str, erasure.get("aliases", []))}
        for customer in erased:
            self._erased[customer] = None
        while len(self._erased) > (self._entries.maxlen or 0):
            del self._erased[next(iter(self._erased))]
        forgotten = 0
        for index, held in enumerate(self._entries):
            if held.customer_id in erased:
                # Left in its place, numbered, as nobody's: pages count on consecutive numbers.
                self._entries[index] = LiveEntry(held.number, "", {})
                forgotten += 1
        if forgotten:
            log.info("live_entries_forgotten", count=forgotten)
        return erased

    def after(self, cursor: str, customers: Collection[str]) -> tuple[list[LiveEntry], int]:
        """The entries of `customers` after `cursor`, and the number they reach; `Gap` when
        some of what came after `cursor` is no longer held.

        Entries are numbered consecutively, so the ones after `cursor` are the last
        `reached - number` held: only those are looked at, from the newest end (every open page
        asks on every batch, and most are nearly up to date)."""
        epoch, _, number_text = cursor.partition(":")
        if epoch != self.epoch or not number_text.isdigit() or int(number_text) > self._number:
            raise Gap
        number = int(number_text)
        oldest = self._entries[0].number if self._entries else self._number + 1
        if number < oldest - 1:
            raise Gap
        newest_first = islice(reversed(self._entries), self._number - number)
        found = [e for e in newest_first if e.customer_id and e.customer_id in customers]
        found.reverse()
        return found, self._number

    async def follow(
        self,
        cursor: str,
        customers: Collection[str],
        heartbeat_seconds: float = 15.0,
        until: float = math.inf,
    ) -> AsyncGenerator[tuple[list[LiveEntry], int], None]:
        """Yield what arrives for `customers` after `cursor` with the number the feed reached
        (an empty list as a heartbeat): the reached number lets a page resume from there even
        when none of the entries were its customer's. Ends at `until` (a `time.time()`): the
        end of the session the page was opened with, which nothing else would check again."""
        found, reached = self.after(cursor, customers)
        while True:
            yield found, reached
            left = until - time.time()
            if left <= 0:
                return
            async with self._arrived:
                if self._number == reached:
                    with suppress(TimeoutError):
                        await asyncio.wait_for(self._arrived.wait(), min(heartbeat_seconds, left))
            if time.time() >= until:
                return
            found, reached = self.after(f"{self.epoch}:{reached}", customers)
