"""`journey-analytics serve` (default): the consumer, the API and the metrics loop;
`journey-analytics init`: create the topics and indexes."""

from __future__ import annotations

import argparse
import asyncio
import sys

import uvicorn

from hilo.logs import configure_logging
from hilo.mongo import create_mongo_client
from hilo.topics import ensure_topics
from journey_analytics.app import OpenApiRefused, create_service
from journey_analytics.settings import AnalyticsSettings
from journey_analytics.store import TouchStore


def serve(settings: AnalyticsSettings) -> None:
    try:
        service = create_service(settings)
    except OpenApiRefused as exc:
        sys.exit(f"journey-analytics: {exc}")
    uvicorn.run(
        service.app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
    )


async def run_init(settings: AnalyticsSettings) -> int:
    created = await ensure_topics(settings)
    mongo = create_mongo_client(settings)
    try:
        await TouchStore(mongo, settings.mongodb_database).create_indexes()
    finally:
        await mongo.close()
    print(f"topics: {len(created)} created, the others existed; indexes ready")  # noqa: T201
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="journey-analytics", description=__doc__)
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "init"])
    args = parser.parse_args()
    settings = AnalyticsSettings()
    configure_logging(settings)
    if args.command == "init":
        sys.exit(asyncio.run(run_init(settings)))
    serve(settings)


if __name__ == "__main__":
    main()
