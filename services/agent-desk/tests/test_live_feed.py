"""The live feed against a real Kafka broker: a failure while reading (here MongoDB, behind the
sealer, failing once) pauses it, and what was recorded before and during the restart still
arrives, in order."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any

from aiokafka import AIOKafkaProducer
from pymongo.errors import AutoReconnect

from agent_desk.live import JourneyFeed, LiveEntry
from hilo.sealing import InMemoryKeys, Sealer
from hilo.settings import HiloSettings
from hilo.topics import Topic, topic_name


class BlippingSealer(Sealer):
    """Opens records, except the first time: MongoDB (the key store) drops the connection, as
    it does in a failover."""

    def __init__(self) -> None:
        super().__init__(InMemoryKeys(), b"pepper-pepper-pepper")
        self.failed = asyncio.Event()

    async def open_all(self, values: Sequence[bytes | None]) -> list[dict[str, Any] | ValueError]:
        if not self.failed.is_set():
            self.failed.set()
            raise AutoReconnect("connection reset")
        return await super().open_all(values)


@asynccontextmanager
async def running(feed: JourneyFeed) -> AsyncIterator[JourneyFeed]:
    runner = asyncio.create_task(feed.run())
    try:
        await asyncio.wait_for(feed.ready.wait(), 30)
        yield feed
    finally:
        runner.cancel()
        with suppress(asyncio.CancelledError):
            await runner


@asynccontextmanager
async def journey_writer(settings: HiloSettings) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


async def record(producer: AIOKafkaProducer, settings: HiloSettings, entry_id: str) -> None:
    await producer.send_and_wait(
        topic_name(Topic.JOURNEY, settings), json.dumps({"id": entry_id}).encode(), key=b"c1"
    )


async def test_the_feed_outlives_a_database_blip_and_misses_nothing_written_meanwhile(
    settings: HiloSettings, topics: list[str]
) -> None:
    sealer = BlippingSealer()
    async with (
        running(JourneyFeed(settings, sealer, 100, retry_seconds=1.0)) as feed,
        journey_writer(settings) as producer,
    ):
        stream = feed.follow(feed.position, {"c1"}, heartbeat_seconds=1.0)
        assert await anext(stream) == ([], 0)

        await record(producer, settings, "before-the-blip")
        await asyncio.wait_for(sealer.failed.wait(), 15)
        await record(producer, settings, "during-the-restart")  # the new consumer is not up yet

        arrived: list[LiveEntry] = []
        async with asyncio.timeout(30):
            while len(arrived) < 2:
                batch, _ = await anext(stream)
                arrived += batch
        await stream.aclose()

    assert [e.entry["id"] for e in arrived] == ["before-the-blip", "during-the-restart"]
    assert [e.number for e in arrived] == [1, 2]
