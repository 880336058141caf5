"""Benchmark: interactions per second through one customer-profile instance.

Publishes a realistic stream (returning customers on several channels, anonymous browsing that
later identifies, cross-channel merges) to a fresh `interactions` topic, then starts one service
instance and times it from start until every event is in a journey. Uses the same infrastructure
as the tests (local Kafka + SecantusDB here; set KAFKA_BOOTSTRAP_SERVERS / MONGODB_URL to measure
against real MongoDB).

    python services/customer-profile/bench/throughput.py --events 3000 --people 600
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import MongoDsn
from pymongo import monitoring

from customer_profile.bootstrap import Service, bootstrap, start, stop
from customer_profile.settings import ProfileSettings
from customer_profile.testing import interaction
from hilo import heap
from hilo.contract import Interaction
from hilo.kafka import KafkaPublisher, create_broker
from hilo.mongo import CommandCounter
from hilo.testkit.probes import eventually
from hilo.topics import ensure_topics
from hilo_devkit.local_infra import Endpoints, Infrastructure

CHANNEL_KINDS = [
    ("web", "page_view"),
    ("web", "product_view"),
    ("web", "cart"),
    ("whatsapp", "message"),
    ("email", "message"),
    ("voice", "call"),
    ("store", "order"),
    ("app", "page_view"),
]


def introductions(people: int) -> list[Interaction]:
    """Each person once, signing in with every identifier the stream gives them: after these,
    every event of `stream` is a returning customer's. (Partitions are read side by side, so an
    event can still reach its person before the introduction does, and merge when it lands.)"""
    return [
        interaction(
            f"i{person}",
            channel="web",
            kind="identify",
            anonymous_id=f"anon-{person}",
            device_id=f"dev-{person}",
            phone=f"+3461{person:07d}",
            email=f"p{person}@example.com",
            loyalty_id=f"L-{person}",
        )
        for person in range(people)
    ]


def stream(events: int, people: int, seed: int = 1) -> list[Interaction]:
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not security
    result = []
    for n in range(events):
        person = rng.randrange(people)
        channel, kind = rng.choice(CHANNEL_KINDS)
        ids = {
            "web": {"anonymous_id": f"anon-{person}"},
            "app": {"device_id": f"dev-{person}"},
            "whatsapp": {"phone": f"+3461{person:07d}"},
            "voice": {"phone": f"+3461{person:07d}"},
            "email": {"email": f"p{person}@example.com"},
            "store": {"loyalty_id": f"L-{person}", "phone": f"+3461{person:07d}"},
        }[channel]
        if rng.random() < 0.3:  # signed in / identified: links the channel id to the email
            ids = {**ids, "email": f"p{person}@example.com"}
        result.append(interaction(f"b{n}", minutes=n / 10, channel=channel, kind=kind, **ids))
    return result


def bench_settings(endpoints: Endpoints, name: str, batch: int = 500) -> ProfileSettings:
    """A database and topics of their own for one run, on the given servers."""
    run = uuid.uuid4().hex[:8]
    return ProfileSettings(
        kafka_bootstrap_servers=endpoints.kafka_bootstrap_servers,
        mongodb_url=MongoDsn(endpoints.mongodb_url),
        mongodb_database=f"{name}_{run}",
        topic_prefix=f"{name}{run}.",
        topic_partitions=6,
        consumer_group=name,
        batch_max_records=batch,
        log_level="WARNING",
        environment="development",
    )


async def publish_stream(settings: ProfileSettings, items: list[Interaction]) -> float:
    """Create the topics and publish `items` as channels do (acks=all); seconds it took."""
    await ensure_topics(settings)
    producer = create_broker(settings)
    await producer.start()
    publisher = KafkaPublisher(producer, settings)
    began = time.perf_counter()
    try:
        for offset in range(0, len(items), 500):
            await asyncio.gather(*map(publisher.publish_interaction, items[offset : offset + 500]))
    finally:
        await producer.stop()
    return time.perf_counter() - began


ROUND_TRIPS = CommandCounter()
monitoring.register(ROUND_TRIPS)


@dataclass
class Batches:
    """Every batch the pipeline processed: its records and wall time, in order."""

    records: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    def ms_per_event(self, first: bool, share: float = 0.1, after: int = 0) -> float:
        """Wall ms per event over the batches holding the first (or last) `share` of the
        events after the first `after`: how the cost of an event moves as the data grows,
        within one run."""
        pairs = self._after(after)
        wanted = max(1, int(sum(records for records, _ in pairs) * share))
        taken, seconds = 0, 0.0
        for records, took in pairs if first else reversed(pairs):
            if taken >= wanted:
                break
            taken, seconds = taken + records, seconds + took
        return 1000 * seconds / max(1, taken)

    def tenths(self, after: int = 0) -> list[float]:
        """Wall ms per event in each tenth of the events after the first `after` (by batch):
        the whole curve, where `ms_per_event` gives its two ends."""
        pairs = self._after(after)
        size = max(1, sum(records for records, _ in pairs) / 10)
        tenths: list[tuple[int, float]] = [(0, 0.0) for _ in range(10)]
        taken = 0
        for records, took in pairs:
            tenth = min(9, int(taken / size))
            n, seconds = tenths[tenth]
            tenths[tenth] = (n + records, seconds + took)
            taken += records
        return [round(1000 * seconds / n, 2) for n, seconds in tenths if n]

    def _after(self, events: int) -> list[tuple[int, float]]:
        """(records, seconds) of the batches after the first `events` events: whole batches,
        so the one holding the boundary goes too."""
        pairs = list(zip(self.records, self.seconds, strict=True))
        while events > 0 and pairs:
            events -= pairs.pop(0)[0]
        return pairs


def time_batches(service: Service) -> Batches:
    """Wrap the pipeline so each processed batch is timed; returns the live record."""
    batches = Batches()
    process: Callable[[Sequence[Any]], Awaitable[Any]] = service.pipeline.process

    async def timed(records: Sequence[Any]) -> Any:
        began = time.perf_counter()
        outcome = await process(records)
        batches.records.append(len(records))
        batches.seconds.append(time.perf_counter() - began)
        return outcome

    service.pipeline.process = timed  # type: ignore[method-assign]
    return batches


def service_cpu_seconds() -> float:
    """CPU of this process (the service runs in it), user + system."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def settle_uncounted() -> tuple[float, float]:
    """`heap.settle()`, as `run_app` does once a service has started; the seconds and CPU seconds
    it took, which the run does not count (one full collection of this process's objects)."""
    began, cpu = time.perf_counter(), service_cpu_seconds()
    heap.settle()
    return time.perf_counter() - began, service_cpu_seconds() - cpu


async def run(
    endpoints: Endpoints, events: int, people: int, batch: int, *, introduce: bool = False
) -> dict[str, Any]:
    """One instance through `stream(events, people)`; with `introduce`, every person signs in
    with all their identifiers first (`introductions`, not counted in the tenths), so the mix
    stays the same throughout and only the data grows."""
    settings = bench_settings(endpoints, "bench", batch)
    items = introductions(people) if introduce else []
    introduced = len(items)
    items += stream(events, people)
    events = len(items)
    publish_seconds = await publish_stream(settings, items)

    service = bootstrap(settings)
    batches = time_batches(service)
    round_trips = ROUND_TRIPS.count
    cpu = service_cpu_seconds()
    began = time.perf_counter()
    await start(service)
    settle_seconds, settle_cpu = settle_uncounted()
    began += settle_seconds
    cpu += settle_cpu
    try:
        # Poll the service's own counter: counting documents every half second would load the
        # database being measured (a full count is a scan on some servers).
        await eventually(
            lambda: _processed(service),
            until=lambda n: n >= events,
            timeout=3600,
            interval=0.2,
        )
        consume_seconds = time.perf_counter() - began
        cpu = service_cpu_seconds() - cpu
        round_trips = ROUND_TRIPS.count - round_trips
        # The counter counts an event redelivered after a rebalance twice: before the database
        # is dropped, every event must be settled, or the drop lands under a batch in flight.
        await eventually(
            service.store.settled_count, until=lambda n: n >= events, timeout=600, interval=0.5
        )
        counts = await service.store.counts()
        await service.mongo.drop_database(settings.mongodb_database)
    finally:
        await stop(service)
        heap.unsettle()
    return {
        "events": events,
        "publish_events_per_second": events / publish_seconds,
        "consume_events_per_second": events / consume_seconds,
        "consume_seconds": consume_seconds,
        "service_cpu_ms_per_event": 1000 * cpu / events,
        "batches": len(batches),
        "round_trips_per_batch": round_trips / max(1, len(batches)),
        "first_tenth_ms_per_event": batches.ms_per_event(first=True, after=introduced),
        "last_tenth_ms_per_event": batches.ms_per_event(first=False, after=introduced),
        "ms_per_event_by_tenth": batches.tenths(after=introduced),
        "profiles": counts["profiles"],
        "merged_aliases": counts["aliases"],
        "journey_entries": counts["journey_entries"],
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


async def _processed(service: Service) -> int:
    return service.pipeline.events_processed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--people", type=int, default=600)
    parser.add_argument("--batch", type=int, default=500, help="max records per consumed batch")
    parser.add_argument(
        "--introduce",
        action="store_true",
        help="every person signs in with all their identifiers first: the same mix throughout",
    )
    args = parser.parse_args()
    with Infrastructure() as endpoints:
        run_once = run(endpoints, args.events, args.people, args.batch, introduce=args.introduce)
        result = asyncio.run(run_once)
    print(f"infrastructure: {endpoints.provider}")  # noqa: T201
    for key, value in result.items():
        print(f"{key}: {value:.2f}" if isinstance(value, float) else f"{key}: {value}")  # noqa: T201


if __name__ == "__main__":
    main()
