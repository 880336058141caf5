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
"""

from __future__ import annotations

import asyncio
import secrets
from collections import deque
from collections.abc import AsyncIterator, Collection
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

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


class JourneyFeed:
    def __init__(self, settings: HiloSettings, sealer: Sealer, capacity: int) -> None:
        self.epoch = secrets.token_hex(4)
        self._settings = settings
        self._sealer = sealer
        self._entries: deque[LiveEntry] = deque(maxlen=capacity)
        self._number = 0
        self._arrived = asyncio.Condition()
        self._consumer: AIOKafkaConsumer | None = None
        self.ready = asyncio.Event()

    @property
    def position(self) -> str:
        """The cursor of a page rendered now: it is sent everything that arrives after."""
        return f"{self.epoch}:{self._number}"

    async def run(self) -> None:
        """Follow `journey` until cancelled; reconnects by itself when Kafka comes back."""
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except (KafkaError, OSError) as exc:
                log.warning("journey_feed_interrupted", error=type(exc).__name__, detail=str(exc))
                await asyncio.sleep(2.0)

    async def _follow(self) -> None:
        consumer = AIOKafkaConsumer(
            topic_name(Topic.JOURNEY, self._settings),
            bootstrap_servers=self._settings.kafka_bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            client_id=f"{self._settings.client_id}-live",
        )
        await consumer.start()
        try:
            await self._positioned(consumer)
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=500)
                for records in batches.values():
                    await self._add(records)
        finally:
            await consumer.stop()

    async def _positioned(self, consumer: AIOKafkaConsumer) -> None:
        """Wait until every partition is assigned and its end offset known: from then on no
        entry recorded can be missed (a page rendered now gets it live)."""
        for _ in range(600):
            if consumer.assignment():
                break
            await asyncio.sleep(0.1)
        else:
            raise KafkaError("no partition of the journey topic was assigned within 60 s")
        for partition in consumer.assignment():
            await consumer.position(partition)
        self.ready.set()
        log.info("journey_feed_following", partitions=len(consumer.assignment()))

    async def _add(self, records: list[Any]) -> None:
        opened = await self._sealer.open_all([record.value for record in records])
        async with self._arrived:
            for record, entry in zip(records, opened, strict=True):
                if isinstance(entry, ValueError) or not record.key:
                    continue  # unreadable: its person was erased
                self._number += 1
                self._entries.append(LiveEntry(self._number, record.key.decode(), entry))
            self._arrived.notify_all()

    def after(self, cursor: str, customers: Collection[str]) -> tuple[list[LiveEntry], int]:
        """The entries of `customers` after `cursor`, and the number they reach; `Gap` when
        some of what came after `cursor` is no longer held."""
        epoch, _, number_text = cursor.partition(":")
        if epoch != self.epoch or not number_text.isdigit() or int(number_text) > self._number:
            raise Gap
        number = int(number_text)
        oldest = self._entries[0].number if self._entries else self._number + 1
        if number < oldest - 1:
            raise Gap
        found = [e for e in self._entries if e.number > number and e.customer_id in customers]
        return found, self._number

    async def follow(
        self, cursor: str, customers: Collection[str], heartbeat_seconds: float = 15.0
    ) -> AsyncIterator[list[LiveEntry]]:
        """Yield what arrives for `customers` after `cursor` (an empty list as a heartbeat)."""
        found, reached = self.after(cursor, customers)
        while True:
            yield found
            async with self._arrived:
                if self._number == reached:
                    with suppress(TimeoutError):
                        await asyncio.wait_for(self._arrived.wait(), heartbeat_seconds)
            found, reached = self.after(f"{self.epoch}:{reached}", customers)
