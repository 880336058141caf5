"""Benchmark: from a WhatsApp webhook to the customer's profile, at a steady rate.

Starts channel-whatsapp and customer-profile as their own processes (as they run in production)
on the test infrastructure, sends signed notifications open-loop at `--rate` per second (each
send starts on schedule whether or not earlier ones were answered, so queueing shows), and reads
the `journey` topic: customer-profile publishes an entry's journey record only after the
customer's profile view that includes it was saved, so the record's arrival is the moment the
event is visible in the profile API. Reports webhook latency and webhook→profile latency.

A warm-up at the same rate comes first (`--warm-up` seconds, as the WhatsApp bench has): the
services' first seconds (connections, collections created, caches empty) are reported on their
own, and once all of it is visible the measured part starts. Notifications come from 5,000
senders in turn, so with the defaults (2,000 warm-up, 6,000 measured) the measured part is
3,000 new customers and 3,000 returning ones; without a warm-up it was 5,000 and 1,000.

    python services/customer-profile/bench/end_to_end.py --rate 200 --seconds 30 --warm-up 10

On two shared cores one run's p99 varies several-fold (202 ms to 1.2 s on the same code), so
`make bench` runs it three times (`--runs 3`) and adds the median.

Each run also splits every event's way into stages, from the timestamps Kafka keeps (the
producer's clock, in ms, on this one machine): the webhook until the channel handed the
interaction to its producer, then until customer-profile recorded the entry (fetch, parse,
resolve), until it handed the journey record to its producer (views, publish), and until a
reader had it (the ack, the reader's fetch); with the mean of each stage over the slowest 1%.

With `--profile DIR` (`make bench-profile`), py-spy records both services during the measured
part and the bench prints where each one's time went (`hilo_devkit.sampling`); py-spy's raw
stacks stay in DIR/run1, DIR/run2, ...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import time
import uuid
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer
from prometheus_client.parser import text_string_to_metric_families
from pydantic_core import from_json

sys.path.insert(0, str(Path(__file__).parents[2] / "channel-whatsapp" / "bench"))

from webhooks import SECRET, LoadGenerator, http_request

from hilo.contract import interaction_id
from hilo.settings import HiloSettings
from hilo.testkit.probes import eventually
from hilo.testkit.serving import free_port
from hilo.topics import Topic, ensure_topics, topic_name
from hilo_devkit.local_infra import Endpoints, Infrastructure
from hilo_devkit.sampling import Bucket, Sampler

VISIBLE_WITHIN_SECONDS = 120

CUSTOMER_PROFILE_BUCKETS = (
    Bucket("parse: open the sealed fields, validate", ("Pipeline._parse",)),
    Bucket("resolve identities", ("IdentityResolver.resolve",)),
    Bucket("write the journey", ("Pipeline._write_journey",)),
    Bucket("update and save the views", ("Pipeline._update_profiles",)),
    Bucket("publish journey and profile records", ("Pipeline._publish",)),
    Bucket("the rest of a batch (settling, merges, offsets)", ("Pipeline.process", "BatchRunner")),
    Bucket(
        "Kafka client: fetch, decode, produce (aiokafka)",
        ("Fetcher", "Sender.", "AIOKafkaConnection", "AIOKafkaClient", "AIOKafkaConsumer"),
    ),
    Bucket("FastStream around the handler", ("SubscriberUsecase", "LogicSubscriber")),
    Bucket("HTTP API (uvicorn, Starlette)", ("RequestResponseCycle", "HttpToolsProtocol")),
)
CHANNEL_BUCKETS = (
    Bucket("signature check, body", ("verified_body",)),
    Bucket("parse the notification", ("parse_json",)),
    Bucket("translate into interactions", ("translate",)),
    Bucket("seal the personal fields", ("Sealer.seal_all",)),
    Bucket("serialise and key the records", ("KafkaPublisher.interaction_records",)),
    Bucket("hand the records to the producer", ("KafkaPublisher.publish_records",)),
    Bucket("key store (read, create keys)", ("SubjectKeys", "SharedCalls")),
    Bucket("Kafka client: produce requests, acks", ("Sender.", "AIOKafkaConnection")),
    Bucket("web stack (uvicorn, Starlette)", ("RequestResponseCycle", "HttpToolsProtocol")),
)
BUCKETS = {"channel-whatsapp": CHANNEL_BUCKETS, "customer-profile": CUSTOMER_PROFILE_BUCKETS}
"""Where each service's samples are counted (`hilo_devkit.sampling`), by service."""


async def start_service(
    command: list[str], env: dict[str, str], port: int
) -> asyncio.subprocess.Process:
    """Start one service process and wait until it answers ready."""
    process = await asyncio.create_subprocess_exec(*command, env={**os.environ, **env})
    async with httpx.AsyncClient() as probe:
        for _ in range(300):
            try:
                if (await probe.get(f"http://127.0.0.1:{port}/health/ready")).status_code == 200:
                    return process
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    process.terminate()
    raise RuntimeError(f"{command[-1]} did not become ready")


@dataclass
class Stamps:
    """When each event (by id) passed each point on its way, in seconds since the epoch."""

    arrived: dict[str, float] = field(default_factory=dict)
    """A reader of `journey` had its journey record: the event is visible in the profile."""
    produced: dict[str, float] = field(default_factory=dict)
    """channel-whatsapp handed the interaction to its producer (the record's timestamp)."""
    recorded: dict[str, float] = field(default_factory=dict)
    """customer-profile recorded the journey entry (its `recorded_at`)."""
    published: dict[str, float] = field(default_factory=dict)
    """customer-profile handed the journey record to its producer (the record's timestamp)."""


STAGES = (
    "webhook → interaction handed to Kafka (channel)",
    "→ entry recorded (Kafka, fetch, parse, resolve)",
    "→ journey record handed to Kafka (views, publish)",
    "→ read from `journey` (ack, fetch)",
)


async def watch(settings: HiloSettings, topic: Topic, stamps: Stamps, ready: asyncio.Event) -> None:
    """Note when each event's record on `topic` was produced and (for `journey`) recorded and
    read, by event id (the `ce_id` header)."""
    consumer = AIOKafkaConsumer(
        topic_name(topic, settings),
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=f"bench-watch-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="latest",
    )
    await consumer.start()
    try:
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=100)
        ready.set()
        while True:
            fetched = await consumer.getmany(timeout_ms=100)
            now = time.time()
            for records in fetched.values():
                for record in records:
                    event_id = dict(record.headers).get("ce_id")
                    if event_id is not None:
                        note(
                            stamps,
                            topic,
                            event_id.decode(),
                            record.timestamp / 1000,
                            record.value,
                            now,
                        )
    finally:
        await consumer.stop()


def note(
    stamps: Stamps, topic: Topic, event_id: str, produced: float, value: bytes | None, now: float
) -> None:
    if topic is Topic.INTERACTIONS:
        stamps.produced.setdefault(event_id, produced)
    elif event_id not in stamps.arrived:
        stamps.arrived[event_id] = now
        stamps.published[event_id] = produced
        recorded = datetime.fromisoformat(from_json(value or b"{}")["recorded_at"])
        stamps.recorded[event_id] = recorded.timestamp()


def stages(sent: dict[str, float], stamps: Stamps) -> dict[str, list[float]]:
    """Each stage's seconds for every event that went all the way, in `STAGES` order; the key
    `""` holds the whole way."""
    done = [e for e in sent if e in stamps.arrived and e in stamps.produced]
    points = [sent, stamps.produced, stamps.recorded, stamps.published, stamps.arrived]
    result = {
        name: [points[n + 1][e] - points[n][e] for e in done] for n, name in enumerate(STAGES)
    }
    result[""] = [stamps.arrived[e] - sent[e] for e in done]
    return result


def breakdown(split: dict[str, list[float]]) -> list[list[str]]:
    """Rows: each stage's p50, p99, and its mean over the slowest 1% of events."""
    whole = split[""]
    if len(whole) < 2:
        return []
    by_time = sorted(range(len(whole)), key=whole.__getitem__)
    slowest = by_time[-max(1, len(whole) // 100) :]
    rows = []
    for name in (*STAGES, ""):
        values = split[name]
        tail = statistics.fmean(values[n] for n in slowest)
        rows.append(
            [
                name or "**webhook → visible**",
                f"{1000 * percentile(values, 50):.0f} ms",
                f"{1000 * percentile(values, 99):.0f} ms",
                f"{1000 * tail:.0f} ms",
            ]
        )
    return rows


async def send_steadily(
    port: int, rate: float, seconds: float, first: int = 0
) -> tuple[dict[str, float], list[float]]:
    """Send notifications `first`, `first + 1`, ... at a fixed rate (open loop, the WhatsApp
    bench's lean client); the scheduled start of each event (by event id) and the webhook
    latencies."""
    numbers = range(first, first + int(rate * seconds))
    requests = [http_request(n) for n in numbers]
    generator = LoadGenerator(port)
    began = time.perf_counter()
    try:
        outcome = await generator.open_loop(requests, rate)
    finally:
        generator.close()
    if outcome.failures:
        raise RuntimeError(f"{outcome.failures} webhooks failed: {outcome.first_failure[:300]}")
    sent = {
        interaction_id("whatsapp", f"wamid.bench{n}"): began + (n - first) / rate for n in numbers
    }
    return sent, outcome.latencies


async def visible(
    sent: dict[str, float], arrivals: dict[str, float], watchers: list[asyncio.Task[None]]
) -> list[float]:
    """Seconds from each sent event's scheduled start until its journey record arrived, once
    all have (or two minutes passed: the missing ones are left out). A watcher that failed
    fails the run at once: its events would otherwise be reported as never visible."""

    async def arrived() -> bool:
        for watcher in watchers:
            if watcher.done():
                raise RuntimeError("a topic watcher stopped") from watcher.exception()
        return sent.keys() <= arrivals.keys()

    with contextlib.suppress(TimeoutError):
        await eventually(arrived, timeout=VISIBLE_WITHIN_SECONDS, interval=0.05)
    return [arrivals[e] - at for e, at in sent.items() if e in arrivals]


async def batch_totals(ports: list[int]) -> tuple[float, float]:
    """customer-profile's batches so far and the seconds they took (its `/metrics`), summed
    over its replicas."""
    batches = busy = 0.0
    async with httpx.AsyncClient() as client:
        for port in ports:
            text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
            samples = {
                sample.name: sample.value
                for family in text_string_to_metric_families(text)
                if family.name == "hilo_profile_batch_seconds"
                for sample in family.samples
            }
            batches += samples["hilo_profile_batch_seconds_count"]
            busy += samples["hilo_profile_batch_seconds_sum"]
    return batches, busy


def since_epoch(sent: dict[str, float]) -> dict[str, float]:
    """`send_steadily`'s times (`perf_counter`) as seconds since the epoch, as Kafka's are."""
    offset = time.time() - time.perf_counter()
    return {event: at + offset for event, at in sent.items()}


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


async def measure(
    endpoints: Endpoints,
    rate: float,
    seconds: float,
    warm_up: float,
    profile_dir: Path | None,
    replicas: int = 1,
) -> tuple[dict[str, float], dict[str, Sampler], dict[str, list[float]]]:
    run = uuid.uuid4().hex[:8]
    settings = HiloSettings(
        environment="development",
        kafka_bootstrap_servers=endpoints.kafka_bootstrap_servers,
        topic_prefix=f"e2e{run}.",
    )
    await ensure_topics(settings)
    common = {
        "HILO_ENVIRONMENT": "development",
        "HILO_KAFKA_BOOTSTRAP_SERVERS": endpoints.kafka_bootstrap_servers,
        "HILO_TOPIC_PREFIX": settings.topic_prefix,
        "HILO_LOG_LEVEL": "WARNING",
        "HILO_MONGODB_URL": endpoints.mongodb_url,  # the profiles, and the key store for both
        "HILO_MONGODB_KEYS_DATABASE": f"e2e_{run}_keys",
    }
    channel_port, profile_ports = free_port(), [free_port() for _ in range(replicas)]
    channel = await start_service(
        [sys.executable, "-m", "channel_whatsapp"],
        {
            **common,
            "HILO_HTTP_PORT": str(channel_port),
            "HILO_WHATSAPP_APP_SECRET": SECRET,
            "HILO_WHATSAPP_VERIFY_TOKEN": "t",
        },
        channel_port,
    )
    profiles = [
        await start_service(
            [sys.executable, "-m", "customer_profile", "serve"],
            {
                **common,
                "HILO_HTTP_PORT": str(port),
                "HILO_MONGODB_DATABASE": f"e2e_{run}",
            },
            port,
        )
        for port in profile_ports
    ]
    stamps = Stamps()
    ready = {topic: asyncio.Event() for topic in (Topic.JOURNEY, Topic.INTERACTIONS)}
    watchers = [asyncio.create_task(watch(settings, t, stamps, ready[t])) for t in ready]
    samplers: dict[str, Sampler] = {}
    try:
        await asyncio.gather(*(event.wait() for event in ready.values()))
        warm_sent = (await send_steadily(channel_port, rate, warm_up))[0] if warm_up else {}
        warm = await visible(since_epoch(warm_sent), stamps.arrived, watchers)
        async with AsyncExitStack() as sampling:
            if profile_dir is not None:
                processes = {"channel-whatsapp": channel, "customer-profile": profiles[0]}
                for name, process in processes.items():
                    samplers[name] = await sampling.enter_async_context(
                        Sampler(process.pid, profile_dir / f"{name}.raw")
                    )
            batches_before, busy_before = await batch_totals(profile_ports)
            sent, webhook = await send_steadily(channel_port, rate, seconds, first=len(warm_sent))
            sent = since_epoch(sent)
            shown = await visible(sent, stamps.arrived, watchers)
            batches, busy = await batch_totals(profile_ports)
    finally:
        for watcher in watchers:
            watcher.cancel()
        for process in (channel, *profiles):
            process.terminate()
            await process.wait()
    return (
        {
            "rate": rate,
            "events": len(sent),
            "webhook_p50_ms": 1000 * percentile(webhook, 50),
            "webhook_p99_ms": 1000 * percentile(webhook, 99),
            "visible": len(shown),
            "profile_p50_ms": 1000 * percentile(shown, 50),
            "profile_p99_ms": 1000 * percentile(shown, 99),
            "warm_up_seconds": warm_up,
            "warm_up_p50_ms": 1000 * percentile(warm, 50) if warm else float("nan"),
            "warm_up_p99_ms": 1000 * percentile(warm, 99) if warm else float("nan"),
            "batches": batches - batches_before,
            "batch_busy_seconds": busy - busy_before,
        },
        samplers,
        stages(sent, stamps),
    )


COLUMNS = (
    "rate",
    "events",
    "webhook p50",
    "webhook p99",
    "visible in profile",
    "webhook→profile p50",
    "webhook→profile p99",
    "warm-up: webhook→profile p50 / p99",
)


def row(result: dict[str, float]) -> list[str]:
    """One line of the table: `result` of one run, or the medians of several."""
    return [
        f"{result['rate']:.0f}/s",
        f"{result['events']:.0f}",
        f"{result['webhook_p50_ms']:.1f} ms",
        f"{result['webhook_p99_ms']:.1f} ms",
        f"{result['visible']:.0f}",
        f"{result['profile_p50_ms']:.0f} ms",
        f"{result['profile_p99_ms']:.0f} ms",
        f"first {result['warm_up_seconds']:.0f} s: {result['warm_up_p50_ms']:.0f} / "
        f"{result['warm_up_p99_ms']:.0f} ms",
    ]


def print_table(header: list[str], rows: list[list[str]]) -> None:
    for line in (header, ["---"] * len(header), *rows):
        print("| " + " | ".join(line) + " |")  # noqa: T201


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=200, help="webhooks per second")
    parser.add_argument("--seconds", type=float, default=30, help="length of the measured part")
    parser.add_argument(
        "--warm-up", type=float, default=10, help="seconds sent first and reported on their own"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="record both services with py-spy during the measured part; raw stacks go to DIR",
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=1,
        help="repeat the whole measurement (fresh services and topics each time) and add the "
        "median of each column: one run's p99 here varies several-fold",
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="customer-profile processes in one consumer group (with --profile, the first is "
        "recorded)",
    )
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    results: list[dict[str, float]] = []
    splits: list[dict[str, list[float]]] = []
    samplers: dict[str, Sampler] = {}
    with Infrastructure() as endpoints:
        for run in range(args.runs):
            stacks = args.profile / f"run{run + 1}" if args.profile else None
            result, samplers, split = asyncio.run(
                measure(endpoints, args.rate, args.seconds, args.warm_up, stacks, args.replicas)
            )
            results.append(result)
            splits.append(split)
    print(f"infrastructure: {endpoints.provider}")  # noqa: T201
    header = ["run", *COLUMNS]
    rows = [[str(n), *row(result)] for n, result in enumerate(results, start=1)]
    if len(results) > 1:
        medians = {key: statistics.median(r[key] for r in results) for key in results[0]}
        rows.append([f"median of {len(results)}", *row(medians)])
    print_table(header, rows)
    for n, (result, split) in enumerate(zip(results, splits, strict=True), start=1):
        batches, busy = result["batches"], result["batch_busy_seconds"]
        print(  # noqa: T201
            f"\n**Where the way goes, run {n}** (each event's stages; customer-profile ran "
            f"{batches:.0f} batches of {result['events'] / max(1, batches):.0f} events on "
            f"average, {1000 * busy / max(1, batches):.0f} ms each)"
        )
        print_table(["stage", "p50", "p99", "mean over the slowest 1%"], breakdown(split))
    for name, sampler in samplers.items():
        title = f"{name}, during the measured part of the last run"
        if sampler.failure is not None:
            print(f"\n**{title}**: py-spy recorded nothing ({sampler.failure})")  # noqa: T201
            continue
        table = sampler.summary(BUCKETS[name]).table(title, int(results[-1]["events"]))
        print(f"\n{table}")  # noqa: T201


if __name__ == "__main__":
    main()
