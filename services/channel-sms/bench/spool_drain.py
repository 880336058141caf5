"""Benchmark: how fast a Twilio channel's spool drains once Kafka is back.

channel-sms, -voice and -email keep a webhook's records in MongoDB while Kafka is away (Twilio
never retries a 503) and publish them once it takes them again (`hilo.spool`). This run keeps
`--requests` requests of two records each (an SMS and its status, sealed-size values) in the
spool, then drains them into the real broker through the channels' publisher (5 ms linger, as
deployed) and reports requests a second and the draining process's CPU per request.

    python services/channel-sms/bench/spool_drain.py --requests 2000
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time

import structlog

from hilo.kafka import KafkaPublisher, Record, create_broker
from hilo.mongo import create_mongo_client
from hilo.settings import HiloSettings
from hilo.spool import SPOOL_COLLECTION, Spool
from hilo.topics import Topic, ensure_topics
from hilo_devkit.local_infra import Endpoints, Infrastructure

LINGER_SECONDS = 0.005
"""`HILO_KAFKA_LINGER_MS`'s default."""


async def measure(endpoints: Endpoints, requests: int) -> tuple[int, float, float]:
    """(requests drained, seconds, CPU seconds of this process)."""
    settings = HiloSettings(
        environment="test",
        kafka_bootstrap_servers=endpoints.kafka_bootstrap_servers,
        mongodb_url=endpoints.mongodb_url,
        topic_prefix="bench-spool.",
        mongodb_database="bench_spool",
    )
    await ensure_topics(settings)
    mongo = create_mongo_client(settings)
    broker = create_broker(settings)
    try:
        spool = Spool("sms", mongo[settings.mongodb_database][SPOOL_COLLECTION])
        await spool.prepare()
        for n in range(requests):
            key = f"+3461{n:07d}".encode()
            await spool.keep([Record(Topic.INTERACTIONS, key, b"x" * 600, {}) for _ in range(2)])
        await broker.start()
        publisher = KafkaPublisher(broker, settings, linger_seconds=LINGER_SECONDS)
        started, cpu = time.perf_counter(), time.process_time()
        drained = await spool.drain(publisher)
        return drained, time.perf_counter() - started, time.process_time() - cpu
    finally:
        await broker.stop()
        await mongo.drop_database(settings.mongodb_database)
        await mongo.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    # Each kept request logs a warning (`records_spooled`), as it should in a channel.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    with Infrastructure() as endpoints:
        drained, seconds, cpu = asyncio.run(measure(endpoints, args.requests))
    print(  # noqa: T201
        f"**A spool of {args.requests:,} Twilio webhooks drained** once Kafka was back: "
        f"{drained:,} requests in {seconds:.2f} s ({drained / seconds:,.0f} requests/s), "
        f"{cpu / max(drained, 1) * 1000:.2f} ms of the channel's CPU per request"
    )


if __name__ == "__main__":
    main()
