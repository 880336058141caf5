"""Benchmark: signed WhatsApp webhooks through one channel-whatsapp process.

Runs the service as it runs in production (uvicorn, one process, default settings and log level)
against the test infrastructure's Kafka. Every request is a distinct signed notification and is
answered only after Kafka acknowledged its event (acks=all, idempotent producer). One run prints,
as markdown:

- steady load: requests sent open-loop at a fixed rate (`--rate`, default 500 req/s): each
  request's start time is scheduled at fixed intervals whatever the answers, and its latency is
  counted from that scheduled time, so queueing in the service (or in the load generator) shows;
- the service's CPU per request (user + system time of its process, from /proc);
- saturation: the most requests per second the process answers, with `wrk` (C, closed loop,
  `--concurrency` connections) when installed (`apt-get install wrk`), else the Python generator;
- a comparison of Kafka compression codecs (`HILO_KAFKA_COMPRESSION`): service and broker CPU per
  request, latency at the fixed rate and the bytes each event takes in the broker's log;
- with `--lingers 0,5,10,20`, the same for each producer linger (`HILO_KAFKA_LINGER_MS`): the
  Kafka client's cost is per produce request, so a longer window trades latency for CPU;
- with `--floors`, where a request's CPU goes: uvicorn with a bare ASGI app (`asgi_floor.py`),
  the service with Kafka left out (`without_kafka.py`), and the service.

The machine's cores are shared by Kafka, the service and the load generator (whose own CPU per
request is printed too); compare runs from one machine and one day, on an otherwise idle machine.

    python services/channel-whatsapp/bench/webhooks.py --rate 500 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import logging
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import typing
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import structlog
import uvloop

from hilo.channel import ChannelSettings
from hilo.providers.meta import signed_headers
from hilo.settings import HiloSettings
from hilo.testkit.probes import read_topic
from hilo.testkit.serving import free_port
from hilo.topics import Topic, ensure_topics, topic_name
from hilo_devkit.local_infra import Infrastructure
from hilo_devkit.sampling import process_cpu_seconds

SECRET = "bench-secret"  # noqa: S105 - the benchmark signs with its own throwaway secret
PATH = "/webhooks/whatsapp"
CODECS: tuple[str, ...] = typing.get_args(HiloSettings.model_fields["kafka_compression"].annotation)


def notification(n: int) -> bytes:
    """Notification number `n`: one inbound text message from one of 5,000 customers."""
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


def http_request(n: int) -> bytes:
    """The whole signed HTTP/1.1 request for notification `n`."""
    body = notification(n)
    signature = signed_headers(body, SECRET)["X-Hub-Signature-256"]
    return (
        f"POST {PATH} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"X-Hub-Signature-256: {signature}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


# --- a lean HTTP/1.1 load generator (keep-alive connections, callbacks, no task per request) ---

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)


@dataclass
class Outcome:
    latencies: list[float] = field(default_factory=list)
    failures: int = 0
    first_failure: str = ""


class _Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self, generator: LoadGenerator) -> None:
        self.generator = generator
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.expected = -1
        self.status = 0
        self.request = b""
        self.since = 0.0
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = typing.cast("asyncio.Transport", transport)

    def send(self, request: bytes, since: float) -> None:
        if self.transport is None:
            raise RuntimeError("not connected")
        self.request, self.since = request, since
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.expected < 0:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end])
            length = _CONTENT_LENGTH.search(head)
            self.status = int(head[9:12])
            self.expected = end + 4 + (int(length.group(1)) if length else 0)
        if len(self.buffer) < self.expected:
            return
        answer = bytes(self.buffer[: self.expected])
        del self.buffer[: self.expected]
        self.expected = -1
        self.request = b""
        self.generator.answered(self, self.since, self.status, answer)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.request:  # closed under a request (an idle keep-alive timed out): send it again
            self.generator.resend(self.request, self.since)
            self.request = b""


class LoadGenerator:
    """Sends pre-built requests over keep-alive connections and times each answer."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: list[_Connection] = []
        self.outcome = Outcome()
        self.pending = 0
        self._drained = asyncio.Event()
        self._on_idle: list[bytes] = []  # closed loop: what each freed connection sends next

    async def _connection(self) -> _Connection:
        while self.idle:
            connection = self.idle.pop()  # most recently used first: the others may time out
            if not connection.closed:
                return connection
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(
            lambda: _Connection(self), "127.0.0.1", self.port
        )
        return protocol

    async def _send(self, request: bytes, since: float) -> None:
        (await self._connection()).send(request, since)

    def _dispatch(self, request: bytes, since: float) -> None:
        """Send now on an idle connection, or open one without holding up the schedule."""
        while self.idle:
            connection = self.idle.pop()
            if not connection.closed:
                connection.send(request, since)
                return
        task = asyncio.ensure_future(self._send(request, since))
        task.add_done_callback(self._check_sent)

    def _check_sent(self, task: asyncio.Future[None]) -> None:
        if task.exception() is not None:
            self._failed(f"connect: {task.exception()!r}")

    def resend(self, request: bytes, since: float) -> None:
        self._dispatch(request, since)

    def _failed(self, why: str) -> None:
        self.outcome.failures += 1
        self.outcome.first_failure = self.outcome.first_failure or why
        self._done()

    def _done(self) -> None:
        self.pending -= 1
        if self.pending == 0:
            self._drained.set()

    def answered(self, connection: _Connection, since: float, status: int, answer: bytes) -> None:
        self.outcome.latencies.append(time.perf_counter() - since)
        if status != 200:
            self.outcome.failures += 1
            self.outcome.first_failure = self.outcome.first_failure or answer.decode(
                errors="replace"
            )
        if self._on_idle:
            connection.send(self._on_idle.pop(), time.perf_counter())
        else:
            self.idle.append(connection)
        self._done()

    async def open_loop(self, requests: Sequence[bytes], rate: float) -> Outcome:
        """Request `i` starts at `i / rate` seconds, whatever happened to the earlier ones."""
        self.outcome, self.pending = Outcome(), len(requests)
        self._drained.clear()
        interval = 1 / rate
        start = time.perf_counter()
        for i, request in enumerate(requests):
            due = start + i * interval
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            self._dispatch(request, due)
        await asyncio.wait_for(self._drained.wait(), timeout=60)
        return self.outcome

    async def closed_loop(self, requests: Sequence[bytes], concurrency: int) -> Outcome:
        """`concurrency` connections, each sending its next request when answered."""
        self.outcome, self.pending = Outcome(), len(requests)
        self._drained.clear()
        self._on_idle = list(reversed(requests))
        for _ in range(min(concurrency, len(requests))):
            self._dispatch(self._on_idle.pop(), time.perf_counter())
        await asyncio.wait_for(self._drained.wait(), timeout=300)
        return self.outcome

    def close(self) -> None:
        for connection in self.idle:
            if connection.transport is not None:
                connection.transport.close()
        self.idle.clear()


# --- measuring ---------------------------------------------------------------------------------


def publish_seconds(metrics: str) -> tuple[float, float]:
    """Total time requests waited for Kafka's acknowledgement, and how many: service metrics."""
    values = {
        line.split("{")[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith(
            ("hilo_channel_publish_seconds_sum", "hilo_channel_publish_seconds_count")
        )
    }
    return (
        values.get("hilo_channel_publish_seconds_sum", 0.0),
        values.get("hilo_channel_publish_seconds_count", 0.0),
    )


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


@dataclass
class Steady:
    rate: float
    sent: int
    outcome: Outcome
    elapsed: float
    service_cpu_ms: float
    broker_cpu_ms: float | None
    client_cpu_ms: float
    ack_wait_ms: float

    def quantile(self, q: int) -> float:
        return statistics.quantiles(self.outcome.latencies, n=100)[q - 1]

    def latency(self) -> str:
        return (
            f"p50 {ms(self.quantile(50))}, p95 {ms(self.quantile(95))}, "
            f"p99 **{ms(self.quantile(99))}**, max {ms(max(self.outcome.latencies))}"
        )


class Service:
    """One channel-whatsapp process (uvicorn) with its own topics."""

    def __init__(
        self,
        kafka: str,
        prefix: str,
        extra_env: dict[str, str],
        command: Sequence[str] = (sys.executable, "-m", "channel_whatsapp"),
    ) -> None:
        self.kafka = kafka
        self.settings = HiloSettings(
            environment="development", kafka_bootstrap_servers=kafka, topic_prefix=prefix
        )
        self.extra_env = extra_env
        self.command = command
        self.port = free_port()
        self.process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("not started")
        return self.process.pid

    @property
    def topic(self) -> str:
        return topic_name(Topic.INTERACTIONS, self.settings)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Service]:
        await ensure_topics(self.settings)
        env = {
            **os.environ,
            "HILO_ENVIRONMENT": "development",
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka,
            "HILO_TOPIC_PREFIX": self.settings.topic_prefix,
            "HILO_HTTP_PORT": str(self.port),
            "HILO_WHATSAPP_APP_SECRET": SECRET,
            "HILO_WHATSAPP_VERIFY_TOKEN": "t",
            **self.extra_env,
        }
        self.process = await asyncio.create_subprocess_exec(
            *self.command, env=env, stdout=asyncio.subprocess.DEVNULL
        )
        try:
            async with httpx.AsyncClient() as probe:
                for _ in range(150):
                    with contextlib.suppress(httpx.TransportError):
                        if (await probe.get(self.url("/health/ready"))).status_code == 200:
                            break
                    await asyncio.sleep(0.2)
                else:
                    raise RuntimeError("channel-whatsapp did not become ready")
            yield self
        finally:
            self.process.terminate()
            await asyncio.wait_for(self.process.wait(), timeout=20)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def metrics(self) -> str:
        async with httpx.AsyncClient() as probe:
            return (await probe.get(self.url("/metrics"))).text


class Bench:
    def __init__(self, kafka: str, kafka_pid: int | None, kafka_data: Path | None) -> None:
        self.kafka = kafka
        self.kafka_pid = kafka_pid
        self.kafka_data = kafka_data
        self.next_n = 0
        self.published: dict[str, int] = {}  # topic -> requests answered 200

    def requests(self, count: int) -> list[bytes]:
        first, self.next_n = self.next_n, self.next_n + count
        return [http_request(n) for n in range(first, first + count)]

    def count(self, service: Service, answered: int) -> None:
        self.published[service.topic] = self.published.get(service.topic, 0) + answered

    async def steady(
        self, service: Service, rate: float, seconds: float, *, warm_up: float = 2
    ) -> Steady:
        requests = self.requests(int(rate * seconds))
        generator = LoadGenerator(service.port)
        await generator.open_loop(self.requests(int(rate * warm_up)), rate)
        self.count(service, int(rate * warm_up))
        waited, acknowledged = publish_seconds(await service.metrics())
        cpu, broker = process_cpu_seconds(service.pid), self.broker_cpu()
        client, started = time.process_time(), time.perf_counter()
        outcome = await generator.open_loop(requests, rate)
        elapsed = time.perf_counter() - started
        cpu_after, client_after = process_cpu_seconds(service.pid), time.process_time()
        broker_after = self.broker_cpu()
        waited_after, acknowledged_after = publish_seconds(await service.metrics())
        per_request = 1000 / len(requests)
        broker_ms = None
        if broker is not None and broker_after is not None:
            broker_ms = (broker_after - broker) * per_request
        result = Steady(
            rate=len(requests) / elapsed,
            sent=len(requests),
            outcome=outcome,
            elapsed=elapsed,
            service_cpu_ms=(cpu_after - cpu) * per_request,
            broker_cpu_ms=broker_ms,
            client_cpu_ms=(client_after - client) * per_request,
            ack_wait_ms=(waited_after - waited) * 1000 / max(acknowledged_after - acknowledged, 1),
        )
        generator.close()
        self.count(service, len(requests) - outcome.failures)
        return result

    def broker_cpu(self) -> float | None:
        return None if self.kafka_pid is None else process_cpu_seconds(self.kafka_pid)

    def log_bytes(self, topic: str) -> int | None:
        """Bytes the topic's records take in the broker's log: record batches as sent."""
        if self.kafka_data is None:
            return None
        return sum(segment.stat().st_size for segment in self.kafka_data.glob(f"{topic}-*/*.log"))

    async def saturation(self, service: Service, concurrency: int, seconds: int) -> str:
        """The service's capacity: wrk when installed, else the Python generator."""
        cpu = process_cpu_seconds(service.pid)
        wrk = shutil.which("wrk")
        if wrk is not None:
            answered, line = await self._wrk(wrk, service, concurrency, seconds)
        else:
            requests = self.requests(int(400 * seconds))
            started = time.perf_counter()
            outcome = await LoadGenerator(service.port).closed_loop(requests, concurrency)
            elapsed = time.perf_counter() - started
            quantiles = statistics.quantiles(outcome.latencies, n=100)
            answered = len(requests) - outcome.failures
            line = (
                f"Python generator (wrk not installed), {concurrency} connections, "
                f"{len(requests)} requests: **{len(requests) / elapsed:.0f} req/s**, "
                f"p50 {ms(quantiles[49])}, p99 {ms(quantiles[98])}, failures {outcome.failures}"
            )
        self.count(service, answered)
        cpu_ms = (process_cpu_seconds(service.pid) - cpu) * 1000 / max(answered, 1)
        return f"{line}; service CPU {cpu_ms:.2f} ms/request"

    async def _wrk(
        self, wrk: str, service: Service, concurrency: int, seconds: int
    ) -> tuple[int, str]:
        """wrk, cycling through 5,000 distinct signed notifications."""
        first, self.next_n = self.next_n, self.next_n + 5000
        entries = []
        for n in range(first, first + 5000):
            body = notification(n)
            signature = signed_headers(body, SECRET)["X-Hub-Signature-256"]
            entries.append(f'{{[==[{body.decode()}]==], "{signature}"}}')
        script = (
            "local messages = {\n" + ",\n".join(entries) + "\n}\n"
            "local requests = {}\n"
            "init = function(args)\n"
            "  for i, m in ipairs(messages) do\n"
            '    requests[i] = wrk.format("POST", nil, {["Content-Type"] = "application/json",'
            ' ["X-Hub-Signature-256"] = m[2]}, m[1])\n'
            "  end\n"
            "end\n"
            "local i = 0\n"
            "request = function()\n"
            "  i = i % #requests + 1\n"
            "  return requests[i]\n"
            "end\n"
        )
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as file:
            file.write(script)
        try:
            process = await asyncio.create_subprocess_exec(
                wrk,
                "-t1",
                f"-c{concurrency}",
                f"-d{seconds}s",
                "--latency",
                "-s",
                file.name,
                service.url(PATH),
                stdout=asyncio.subprocess.PIPE,
            )
            output = (await process.communicate())[0].decode()
        finally:
            os.unlink(file.name)
        rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
        total = re.search(r"(\d+) requests in", output)
        p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
        p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
        errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
        if not (rate and total and p50 and p99):
            raise RuntimeError(f"wrk: unreadable output\n{output}")
        failed = int(errors.group(1)) if errors else 0
        line = (
            f"wrk, {concurrency} connections, {seconds} s: **{float(rate.group(1)):.0f} req/s**, "
            f"p50 {p50.group(1)}, p99 {p99.group(1)}, non-2xx {failed}"
        )
        return int(total.group(1)) - failed, line

    async def verify(self, service: Service) -> str:
        """Every answered request's event is on the topic (each request is a distinct event)."""
        expected = self.published.get(service.topic, 0)
        records = await read_topic(self.kafka, service.topic, expected=expected, timeout=60)
        if len(records) < expected:
            raise RuntimeError(f"{service.topic}: {len(records)} records, {expected} answered")
        return f"{len(records)} records on the topic for {expected} requests answered 200"


async def bench(
    bench: Bench, rate: float, seconds: float, concurrency: int, wrk_seconds: int, codecs: list[str]
) -> None:
    load = os.getloadavg()[0]
    busy = " (busy: re-run on an idle machine)" if load > 1 else ""
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    print(  # noqa: T201
        f"### channel-whatsapp webhooks, {today}\n\n"
        f"{os.cpu_count()} cores shared by Kafka, the service and the load generator; load "
        f"average {load:.2f} before the run{busy}"
        f". Service settings: defaults (`HILO_LOG_LEVEL=INFO`, "
        f"`HILO_KAFKA_COMPRESSION={HiloSettings.model_fields['kafka_compression'].default}`, "
        f"`HILO_KAFKA_LINGER_MS={ChannelSettings.model_fields['kafka_linger_ms'].default}`).\n"
    )
    service = Service(bench.kafka, f"bench{os.getpid()}.", {})
    async with service.running():
        # A fresh broker spends its first seconds compiling (JIT) on the same cores: warm it up.
        steady = await bench.steady(service, rate, seconds, warm_up=15)
        saturation = await bench.saturation(service, concurrency, wrk_seconds)
    verified = await bench.verify(service)
    client = f"{steady.client_cpu_ms:.2f} ms/request"
    print(  # noqa: T201
        "| measure | result |\n|---|---|\n"
        f"| steady {rate:.0f} req/s, open loop, {seconds:.0f} s ({steady.sent} requests, "
        f"{steady.rate:.0f} req/s sent) | {steady.latency()}; "
        f"failures {steady.outcome.failures} |\n"
        f"| service CPU at {rate:.0f} req/s | **{steady.service_cpu_ms:.2f} ms/request** |\n"
        f"| of which publishing: linger + Kafka's ack (mean, service metrics) | "
        f"{steady.ack_wait_ms:.1f} ms |\n"
        f"| saturation | {saturation} |\n"
        f"| load generator CPU (Python, open loop) | {client} |\n"
        f"| read back | {verified} |\n"
    )
    if steady.outcome.failures:
        print(f"first failure: {steady.outcome.first_failure[:300]}")  # noqa: T201
    if not codecs:
        return
    print(  # noqa: T201
        f"Compression codecs at {rate:.0f} req/s, open loop, {seconds:.0f} s each (one fresh "
        "service per codec, after one unreported run; bytes per event as stored in the broker's "
        "log, record batches as sent)"
        ":\n\n| codec | service CPU ms/request | broker CPU ms/request | p50 | p99 "
        "| bytes per event on the wire |\n|---|---|---|---|---|---|"
    )
    # The first run after the main one costs the broker more, whatever its codec: one unreported.
    for codec, warm_up in [(codecs[0], True), *((codec, False) for codec in codecs)]:
        prefix = f"bench{os.getpid()}{codec}{'-warm-up' if warm_up else ''}."
        service = Service(bench.kafka, prefix, {"HILO_KAFKA_COMPRESSION": codec})
        async with service.running():
            result = await bench.steady(service, rate, seconds)
        await bench.verify(service)
        if warm_up:
            continue
        size = bench.log_bytes(service.topic)
        answered = bench.published[service.topic]
        print(  # noqa: T201
            f"| {codec} | {result.service_cpu_ms:.2f} | "
            f"{'n/a' if result.broker_cpu_ms is None else f'{result.broker_cpu_ms:.2f}'} | "
            f"{ms(result.quantile(50))} | {ms(result.quantile(99))} | "
            f"{'n/a' if size is None else f'{size / answered:.0f}'} |"
        )


HERE = Path(__file__).parent


async def floors(bench: Bench, rate: float, seconds: float) -> None:
    """Where a request's CPU goes: the HTTP server alone, the service without Kafka, the whole."""
    print(  # noqa: T201
        f"\nWhere a request's CPU goes at {rate:.0f} req/s, open loop, {seconds:.0f} s each "
        "(one fresh process each):\n\n| process | service CPU ms/request | p50 | p99 |\n"
        "|---|---|---|---|"
    )
    python = sys.executable
    for name, command in [
        ("uvicorn, a bare ASGI app", (python, str(HERE / "asgi_floor.py"))),
        ("channel-whatsapp, Kafka left out", (python, str(HERE / "without_kafka.py"))),
        ("channel-whatsapp", (python, "-m", "channel_whatsapp")),
    ]:
        prefix = f"bench{os.getpid()}floor{len(name)}."
        service = Service(bench.kafka, prefix, {}, command)
        async with service.running():
            result = await bench.steady(service, rate, seconds, warm_up=8)
        print(  # noqa: T201
            f"| {name} | {result.service_cpu_ms:.2f} | {ms(result.quantile(50))} | "
            f"{ms(result.quantile(99))} |"
        )


async def lingers(bench: Bench, rate: float, seconds: float, windows: list[int]) -> None:
    """CPU and latency for each producer linger: what `HILO_KAFKA_LINGER_MS` trades."""
    print(  # noqa: T201
        f"\nProducer linger at {rate:.0f} req/s, open loop, {seconds:.0f} s each (one fresh "
        "service each):\n\n| `HILO_KAFKA_LINGER_MS` | service CPU ms/request | p50 | p99 "
        "| linger + ack (mean) |\n|---|---|---|---|---|"
    )
    for linger in windows:
        prefix = f"bench{os.getpid()}linger{linger}."
        service = Service(bench.kafka, prefix, {"HILO_KAFKA_LINGER_MS": str(linger)})
        async with service.running():
            result = await bench.steady(service, rate, seconds, warm_up=8)
        await bench.verify(service)
        print(  # noqa: T201
            f"| {linger} | {result.service_cpu_ms:.2f} | {ms(result.quantile(50))} | "
            f"{ms(result.quantile(99))} | {result.ack_wait_ms:.1f} ms |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=500, help="steady rate, requests/s")
    parser.add_argument("--seconds", type=float, default=20, help="length of each steady run")
    parser.add_argument("--concurrency", type=int, default=32, help="connections at saturation")
    parser.add_argument("--wrk-seconds", type=int, default=15, help="length of the saturation run")
    parser.add_argument(
        "--codecs",
        default=",".join(CODECS),
        help="comma-separated codecs to compare ('' for none)",
    )
    parser.add_argument(
        "--lingers", default="", help="comma-separated producer lingers (ms) to compare"
    )
    parser.add_argument(
        "--floors", action="store_true", help="where a request's CPU goes (HTTP, service, Kafka)"
    )
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    codecs = [codec for codec in args.codecs.split(",") if codec]
    if unknown := set(codecs) - set(CODECS):
        parser.error(f"unknown codecs {sorted(unknown)}; choose from {', '.join(CODECS)}")
    infra = Infrastructure()
    with infra as endpoints:
        os.environ["MONGODB_URL"] = endpoints.mongodb_url  # the key store the channel seals with
        kafka = infra.kafka
        process = kafka.process if kafka is not None else None
        run = Bench(
            endpoints.kafka_bootstrap_servers,
            kafka_pid=process.pid if process is not None else None,
            kafka_data=kafka.workdir / "data" if kafka is not None else None,
        )
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(
                bench(run, args.rate, args.seconds, args.concurrency, args.wrk_seconds, codecs)
            )
            if args.floors:
                runner.run(floors(run, args.rate, args.seconds))
            if windows := [int(linger) for linger in args.lingers.split(",") if linger]:
                runner.run(lingers(run, args.rate, args.seconds, windows))


if __name__ == "__main__":
    main()
