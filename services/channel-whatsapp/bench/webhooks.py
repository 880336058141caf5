"""Benchmark: signed WhatsApp webhooks per second through one channel-whatsapp process.

Runs the service as it runs in production (uvicorn, one process) against the test
infrastructure's Kafka, sends `--requests` signed notifications with `--concurrency` in flight,
each answered only after Kafka acknowledged it (acks=all), and reports throughput, latency
percentiles and the service's peak memory.

    python services/channel-whatsapp/bench/webhooks.py --requests 3000 --concurrency 32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import sys
import time
from pathlib import Path

import httpx

from hilo.providers.meta import signed_headers
from hilo.settings import HiloSettings
from hilo.testkit.local_infra import Infrastructure
from hilo.testkit.probes import read_topic
from hilo.topics import Topic, ensure_topics, topic_name

SECRET = "bench-secret"  # noqa: S105 - the benchmark signs with its own throwaway secret


def notification(n: int) -> bytes:
    wa_id = f"3461{n % 5000:07d}"
    return json.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": "WABA",
                    "changes": [
                        {
                            "field": "messages",
                            "value": {
                                "messaging_product": "whatsapp",
                                "metadata": {
                                    "display_phone_number": "34900000000",
                                    "phone_number_id": "PN",
                                },
                                "contacts": [{"wa_id": wa_id, "profile": {"name": "Bench"}}],
                                "messages": [
                                    {
                                        "from": wa_id,
                                        "id": f"wamid.bench{n}",
                                        "timestamp": "1763900000",
                                        "type": "text",
                                        "text": {"body": f"message {n}"},
                                    }
                                ],
                            },
                        }
                    ],
                }
            ],
        }
    ).encode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def fire(url: str, total: int, concurrency: int) -> list[float]:
    latencies: list[float] = []
    queue = iter(range(total))
    async with httpx.AsyncClient(timeout=30) as client:

        async def worker() -> None:
            for n in queue:
                body = notification(n)
                started = time.perf_counter()
                response = await client.post(
                    url, content=body, headers=signed_headers(body, SECRET)
                )
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    raise RuntimeError(f"{response.status_code}: {response.text}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


async def bench(kafka: str, total: int, concurrency: int) -> None:
    settings = HiloSettings(kafka_bootstrap_servers=kafka, topic_prefix=f"bench{os.getpid()}.")
    await ensure_topics(settings)
    port = free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "HILO_TOPIC_PREFIX": settings.topic_prefix,
        "HILO_HTTP_PORT": str(port),
        "HILO_WHATSAPP_APP_SECRET": SECRET,
        "HILO_WHATSAPP_VERIFY_TOKEN": "t",
        "HILO_LOG_LEVEL": "WARNING",
    }
    service = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "channel_whatsapp", env=env
    )
    try:
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient() as probe:
            for _ in range(100):
                try:
                    if (await probe.get(f"{url}/health/ready")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)
        await fire(f"{url}/webhooks/whatsapp", 200, concurrency)  # warm-up
        started = time.perf_counter()
        latencies = await fire(f"{url}/webhooks/whatsapp", total, concurrency)
        elapsed = time.perf_counter() - started
        rss = peak_rss_mib(service.pid)
    finally:
        service.terminate()
        await asyncio.wait_for(service.wait(), timeout=20)
    on_topic = await read_topic(
        kafka, topic_name(Topic.INTERACTIONS, settings), expected=total + 200
    )
    quantiles = statistics.quantiles(latencies, n=100)
    print(  # noqa: T201
        f"channel-whatsapp: {total} webhooks, concurrency {concurrency}: "
        f"{total / elapsed:.0f} req/s, p50 {quantiles[49] * 1000:.1f} ms, "
        f"p95 {quantiles[94] * 1000:.1f} ms, p99 {quantiles[98] * 1000:.1f} ms, "
        f"peak RSS {rss:.0f} MiB; {len(on_topic)} records on the topic"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    with Infrastructure() as endpoints:
        asyncio.run(bench(endpoints.kafka_bootstrap_servers, args.requests, args.concurrency))


if __name__ == "__main__":
    main()
