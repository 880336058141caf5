"""`journey-analytics serve` (default): the consumer, the API and the metrics loop;
`journey-analytics init`: create the topics and indexes."""

from __future__ import annotations

import argparse
import sys

from pymongo import AsyncMongoClient

from hilo.entrypoint import init_deployment, run_job, serve_api
from hilo.logs import configure_logging
from hilo.mongo import MongoDocument
from journey_analytics.app import create_service
from journey_analytics.settings import AnalyticsSettings
from journey_analytics.store import TouchStore


def serve(settings: AnalyticsSettings) -> None:
    serve_api("journey-analytics", settings, lambda: create_service(settings).app)


async def run_init(settings: AnalyticsSettings) -> int:
    async def indexes(mongo: AsyncMongoClient[MongoDocument]) -> None:
        await TouchStore(mongo, settings.mongodb_database).create_indexes()

    return await init_deployment(settings, indexes)


def main() -> None:
    parser = argparse.ArgumentParser(prog="journey-analytics", description=__doc__)
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "init"])
    args = parser.parse_args()
    settings = AnalyticsSettings()
    configure_logging(settings)
    if args.command == "init":
        sys.exit(run_job("init", run_init(settings)))
    serve(settings)


if __name__ == "__main__":
    main()
