"""The live feed's bookkeeping, without Kafka: numbering, what a page is sent, heartbeats, gaps,
and where each partition resumes after the consumer restarts."""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import TopicPartition

from agent_desk.live import Gap, JourneyFeed, LiveEntry
from hilo.sealing import InMemoryKeys, Sealer
from hilo.settings import HiloSettings
from hilo.topics import Topic, topic_name

TOPIC = "journey"
_offsets = itertools.count()


@dataclass
class Record:
    """What the feed reads of a Kafka record."""

    key: bytes | None
    value: bytes
    partition: int = 0
    topic: str = TOPIC
    offset: int = field(default_factory=lambda: next(_offsets))


def record(customer: str, entry_id: str, partition: int = 0) -> Record:
    return Record(customer.encode(), json.dumps({"id": entry_id}).encode(), partition)


def feed(capacity: int = 100) -> JourneyFeed:
    # Unsealed values open as they are: the in-memory key store is never asked.
    return JourneyFeed(
        HiloSettings(environment="test"), Sealer(InMemoryKeys(), b"pepper-pepper-pepper"), capacity
    )


def ids(entries: list[LiveEntry]) -> list[str]:
    return [e.entry["id"] for e in entries]


async def test_the_feed_resends_what_a_page_missed_and_asks_for_a_reload_beyond_its_memory() -> (
    None
):
    live = feed(capacity=3)
    start = live.position

    await live._add([record("c1", "a")])
    await live._add([record("c2", "b")])
    middle = live.position
    await live._add([record("c1", f"x{n}") for n in range(2)])

    found, reached = live.after(middle, {"c1"})
    assert ids(found) == ["x0", "x1"]
    assert reached == 4
    with pytest.raises(Gap):
        live.after(start, {"c1"})  # "a" fell out of the three kept
    with pytest.raises(Gap):
        live.after("another-desk:1", {"c1"})
    with pytest.raises(Gap):
        live.after(f"{live.epoch}:9", {"c1"})  # a number the feed never gave


async def test_following_yields_the_customers_new_entries_and_how_far_the_feed_reached() -> None:
    live = feed()
    await live._add([record("c1", "before")])
    stream = live.follow(live.position, {"c1", "c1-merged"})

    assert await anext(stream) == ([], 1)
    waiting = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.01)
    assert not waiting.done(), "nothing arrived: the follower waits"
    await live._add(
        [
            record("c2", "other"),
            record("c1", "new"),
            record("c1-merged", "old-id"),
            record("c3", "x"),
        ]
    )
    found, reached = await asyncio.wait_for(waiting, 1)

    assert ids(found) == ["new", "old-id"]
    assert [e.number for e in found] == [3, 4]
    assert reached == 5
    await stream.aclose()


async def test_an_idle_follower_gets_a_heartbeat_at_the_same_number() -> None:
    live = feed()
    await live._add([record("c1", "a")])
    stream = live.follow(live.position, {"c1"}, heartbeat_seconds=0.05)

    assert await anext(stream) == ([], 1)
    assert await asyncio.wait_for(anext(stream), 1) == ([], 1)
    await live._add([record("c2", "not-theirs")])
    assert await asyncio.wait_for(anext(stream), 1) == ([], 2)
    await stream.aclose()


async def test_a_follower_the_buffer_left_behind_gets_a_gap() -> None:
    live = feed(capacity=3)
    stream = live.follow(live.position, {"c1"})
    assert await anext(stream) == ([], 0)

    waiting = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.01)
    await live._add([record("c1", f"burst-{n}") for n in range(4)])

    with pytest.raises(Gap):
        await asyncio.wait_for(waiting, 1)


async def test_each_partition_resumes_after_the_last_record_taken_in_even_an_unreadable_one() -> (
    None
):
    live = feed()
    await live._add(
        [Record(b"c1", b'{"id": "a"}', 0, offset=41), Record(None, b"{}", 0, offset=42)]
    )
    await live._add([Record(b"c1", b"not json", 1, offset=7)])

    assert live._next_offsets == {TopicPartition(TOPIC, 0): 43, TopicPartition(TOPIC, 1): 8}
    assert ids(live.after(f"{live.epoch}:0", {"c1"})[0]) == ["a"]


class Consumer:
    """The part of `AIOKafkaConsumer` that positions the feed after a (re)start."""

    def __init__(self, partitions: list[int], end: int) -> None:
        self._assigned = {TopicPartition(TOPIC, p) for p in partitions}
        self.end = end
        self.seeks: dict[TopicPartition, int] = {}

    def assignment(self) -> set[TopicPartition]:
        return self._assigned

    async def position(self, partition: TopicPartition) -> int:
        return self.seeks.get(partition, self.end)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.seeks[partition] = offset


async def test_a_restarted_consumer_seeks_where_the_last_one_stopped() -> None:
    live = feed()
    first = Consumer([0, 1], end=10)
    await live._positioned(cast_consumer(first))
    await live._add([Record(b"c1", b'{"id": "a"}', 0, offset=10)])

    again = Consumer([0, 1, 2], end=50)  # meanwhile both partitions moved on; one was added
    await live._positioned(cast_consumer(again))

    assert first.seeks == {}, "the first start begins at the end"
    assert again.seeks == {TopicPartition(TOPIC, 0): 11, TopicPartition(TOPIC, 1): 10}
    assert live._next_offsets[TopicPartition(TOPIC, 2)] == 50
    assert live.ready.is_set()


def cast_consumer(consumer: Consumer) -> Any:
    return consumer


async def test_an_erasure_forgets_the_entries_held_of_the_customer_and_their_aliases() -> None:
    """Opened before the keys went, they must not reach a page asking for those ids again (a
    page reconnecting while the profile service is away is trusted with its ids)."""
    live = feed()
    start = live.position
    await live._add([record("c1", "a"), record("c2", "b"), record("c9", "c")])
    middle = live.position
    await live._add([record("c2", "d")])
    erasures = topic_name(Topic.ERASURES, HiloSettings(environment="test"))
    erasure = {"customer_id": "c1", "aliases": ["c9"], "subjects": [], "erased_at": "2026-12-05"}

    await live._add([Record(b"c1", json.dumps(erasure).encode(), topic=erasures)])

    found, reached = live.after(start, {"c1", "c2", "c9", ""})
    assert ids(found) == ["b", "d"]
    assert reached == 4, "the numbering pages resume from is unchanged"
    assert ids(live.after(middle, {"c2"})[0]) == ["d"]
    # An entry of theirs read after the erasure (another topic, no order between the two).
    await live._add([record("c9", "late")])
    assert ids(live.after(start, {"c1", "c9"})[0]) == []
