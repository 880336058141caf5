"""Benchmark: signed WhatsApp webhooks per second through one channel-whatsapp process.

Runs the service as it runs in production (uvicorn, one process) against the test
infrastructure's Kafka, sends `--requests` signed notifications with `--concurrency` in flight,
each answered only after Kafka acknowledged it (acks=all), and reports throughput, latency
percentiles, the service's CPU per request and peak memory. The Python load generator shares the
machine's cores and costs more CPU per request than the service; when `wrk` is installed
(`apt-get install wrk`) the same service is also measured with it for `--seconds`, one signed
notification repeated (every request still verified, validated and acknowledged by Kafka).

    python services/channel-whatsapp/bench/webhooks.py --requests 3000 --concurrency 32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from hilo.providers.meta import signed_headers
from hilo.settings import HiloSettings
from hilo.testkit.local_infra import Infrastructure, free_port
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


def kafka_wait_ms(metrics: str) -> float:
    """Mean time a request waited for Kafka's acknowledgement, from the service's own metrics."""
    values = {
        line.split("{")[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith(
            ("hilo_channel_publish_seconds_sum", "hilo_channel_publish_seconds_count")
        )
    }
    count = values.get("hilo_channel_publish_seconds_count", 0.0)
    return values.get("hilo_channel_publish_seconds_sum", 0.0) * 1000 / count if count else 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


WRK_SCRIPT = """wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Hub-Signature-256"] = "{signature}"
"""


async def with_wrk(url: str, concurrency: int, seconds: int) -> str:
    """wrk's throughput and latency for one repeated notification, or why it did not run."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return "wrk: not installed"
    body = notification(10**9)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            WRK_SCRIPT.format(
                body=json.dumps(body.decode()),
                signature=signed_headers(body, SECRET)["X-Hub-Signature-256"],
            )
        )
    process = await asyncio.create_subprocess_exec(
        wrk,
        "-t1",
        f"-c{concurrency}",
        f"-d{seconds}s",
        "--latency",
        "-s",
        script.name,
        url,
        stdout=asyncio.subprocess.PIPE,
    )
    output = (await process.communicate())[0].decode()
    os.unlink(script.name)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if not (rate and p50 and p99):
        return f"wrk: unreadable output\n{output}"
    return (
        f"wrk, concurrency {concurrency}, {seconds}s: {float(rate.group(1)):.0f} req/s, "
        f"p50 {p50.group(1)}, p99 {p99.group(1)}, non-2xx {errors.group(1) if errors else 0}"
    )


async def bench(kafka: str, total: int, concurrency: int, seconds: int) -> None:
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
        cpu_before, started = cpu_seconds(service.pid), time.perf_counter()
        client_cpu = time.process_time()
        latencies = await fire(f"{url}/webhooks/whatsapp", total, concurrency)
        elapsed = time.perf_counter() - started
        client_ms = (time.process_time() - client_cpu) * 1000 / total
        cpu_ms = (cpu_seconds(service.pid) - cpu_before) * 1000 / total
        rss = peak_rss_mib(service.pid)
        async with httpx.AsyncClient() as probe:
            metrics = (await probe.get(f"{url}/metrics")).text
        publish_ms = kafka_wait_ms(metrics)
        wrk_line = await with_wrk(f"{url}/webhooks/whatsapp", concurrency, seconds)
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
        f"Kafka ack wait {publish_ms:.1f} ms on average; "
        f"service CPU {cpu_ms:.1f} ms/request (load generator {client_ms:.1f}), "
        f"peak RSS {rss:.0f} MiB; "
        f"{len(on_topic)} records on the topic"
    )
    print(f"channel-whatsapp: {wrk_line}")  # noqa: T201


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=20, help="how long wrk runs")
    args = parser.parse_args()
    with Infrastructure() as endpoints:
        asyncio.run(
            bench(endpoints.kafka_bootstrap_servers, args.requests, args.concurrency, args.seconds)
        )


if __name__ == "__main__":
    main()
