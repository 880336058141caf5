"""Benchmark: from a WhatsApp webhook to the customer's profile, at a steady rate.

Starts channel-whatsapp and customer-profile as their own processes (as they run in production)
on the test infrastructure, sends signed notifications open-loop at `--rate` per second (each
send starts on schedule whether or not earlier ones were answered, so queueing shows), and reads
the `journey` topic: customer-profile publishes an entry's journey record only after the
customer's profile view that includes it was saved, so the record's arrival is the moment the
event is visible in the profile API. Reports webhook latency and webhook→profile latency.

    python services/customer-profile/bench/end_to_end.py --rate 200 --seconds 30
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
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer

sys.path.insert(0, str(Path(__file__).parents[2] / "channel-whatsapp" / "bench"))

from webhooks import SECRET, LoadGenerator, http_request

from hilo.contract import interaction_id
from hilo.settings import HiloSettings
from hilo.testkit.serving import free_port
from hilo.topics import Topic, ensure_topics, topic_name
from hilo_devkit.local_infra import Endpoints, Infrastructure


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


async def watch_journey(
    settings: HiloSettings,
    arrivals: dict[str, float],
    ready: asyncio.Event,
    expected: set[str],
    complete: asyncio.Event,
) -> None:
    """Record when each event's journey record arrives, by event id (the `ce_id` header)."""
    consumer = AIOKafkaConsumer(
        topic_name(Topic.JOURNEY, settings),
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
            now = time.perf_counter()
            for records in fetched.values():
                for record in records:
                    event_id = dict(record.headers).get("ce_id")
                    if event_id is not None:
                        arrivals.setdefault(event_id.decode(), now)
            if expected and expected <= arrivals.keys():
                complete.set()
    finally:
        await consumer.stop()


async def send_steadily(
    port: int, rate: float, seconds: float
) -> tuple[dict[str, float], list[float]]:
    """Send at a fixed rate (open loop, the WhatsApp bench's lean client); the scheduled start
    of each event (by event id) and the webhook latencies."""
    total = int(rate * seconds)
    requests = [http_request(n) for n in range(total)]
    generator = LoadGenerator(port)
    began = time.perf_counter()
    try:
        outcome = await generator.open_loop(requests, rate)
    finally:
        generator.close()
    if outcome.failures:
        raise RuntimeError(f"{outcome.failures} webhooks failed: {outcome.first_failure[:300]}")
    sent = {interaction_id("whatsapp", f"wamid.bench{n}"): began + n / rate for n in range(total)}
    return sent, outcome.latencies


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


async def measure(endpoints: Endpoints, rate: float, seconds: float) -> dict[str, float]:
    run = uuid.uuid4().hex[:8]
    settings = HiloSettings(
        kafka_bootstrap_servers=endpoints.kafka_bootstrap_servers, topic_prefix=f"e2e{run}."
    )
    await ensure_topics(settings)
    common = {
        "HILO_KAFKA_BOOTSTRAP_SERVERS": endpoints.kafka_bootstrap_servers,
        "HILO_TOPIC_PREFIX": settings.topic_prefix,
        "HILO_LOG_LEVEL": "WARNING",
        "HILO_MONGODB_URL": endpoints.mongodb_url,  # the profiles, and the key store for both
        "HILO_MONGODB_KEYS_DATABASE": f"e2e_{run}_keys",
    }
    channel_port, profile_port = free_port(), free_port()
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
    profile = await start_service(
        [sys.executable, "-m", "customer_profile", "serve"],
        {
            **common,
            "HILO_HTTP_PORT": str(profile_port),
            "HILO_MONGODB_DATABASE": f"e2e_{run}",
            "HILO_ENVIRONMENT": "development",
        },
        profile_port,
    )
    arrivals: dict[str, float] = {}
    expected: set[str] = set()
    ready, complete = asyncio.Event(), asyncio.Event()
    watcher = asyncio.create_task(watch_journey(settings, arrivals, ready, expected, complete))
    try:
        await ready.wait()
        sent, webhook = await send_steadily(channel_port, rate, seconds)
        expected.update(sent)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(complete.wait(), timeout=120)
        visible = [arrivals[e] - at for e, at in sent.items() if e in arrivals]
    finally:
        watcher.cancel()
        for process in (channel, profile):
            process.terminate()
            await process.wait()
    return {
        "rate": rate,
        "events": len(sent),
        "webhook_p50_ms": 1000 * percentile(webhook, 50),
        "webhook_p99_ms": 1000 * percentile(webhook, 99),
        "visible": len(visible),
        "profile_p50_ms": 1000 * percentile(visible, 50),
        "profile_p99_ms": 1000 * percentile(visible, 99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=200, help="webhooks per second")
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    with Infrastructure() as endpoints:
        result = asyncio.run(measure(endpoints, args.rate, args.seconds))
    header = [
        "rate",
        "events",
        "webhook p50",
        "webhook p99",
        "visible in profile",
        "webhook→profile p50",
        "webhook→profile p99",
    ]
    row = [
        f"{result['rate']:.0f}/s",
        f"{result['events']:.0f}",
        f"{result['webhook_p50_ms']:.1f} ms",
        f"{result['webhook_p99_ms']:.1f} ms",
        f"{result['visible']:.0f}",
        f"{result['profile_p50_ms']:.0f} ms",
        f"{result['profile_p99_ms']:.0f} ms",
    ]
    print(f"infrastructure: {endpoints.provider}")  # noqa: T201
    for line in (header, ["---"] * len(header), row):
        print("| " + " | ".join(line) + " |")  # noqa: T201


if __name__ == "__main__":
    main()
