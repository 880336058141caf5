"""Reading back what services wrote, by polling with a deadline instead of sleeping."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiokafka.structs import ConsumerRecord

from hilo.kafka import from_the_beginning, read_on_to_end, read_to_end

__all__ = ["eventually", "read_to_end", "read_topic"]

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T]],
    *,
    until: Callable[[T], bool] = bool,
    timeout: float = 30.0,
    interval: float = 0.2,
) -> T:
    """Await `probe` until `until(result)` holds; return the last result or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if until(result):
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s; last result: {result!r}")
        await asyncio.sleep(interval)


async def read_topic(
    bootstrap_servers: str,
    topic: str,
    *,
    expected: int,
    timeout: float = 30.0,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read a topic from the beginning until `expected` records arrived (or the timeout), and
    then on to its end offsets: anything beyond `expected` (a duplicate), and with `expected=0`
    everything there, is seen, not only what one poll happened to return.

    Returns what arrived, possibly more or fewer than expected: the caller asserts.
    """
    consumer = from_the_beginning(bootstrap_servers, topic)
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for partition_records in batch.values():
                records.extend(partition_records)
        # At least one poll more (a duplicate published just after the expected records), and on
        # to the end offsets: with `expected=0`, one empty poll proved nothing.
        await read_on_to_end(consumer, records, max(deadline, time.monotonic() + 1))
    finally:
        await consumer.stop()
    return records
