"""`offers serve` (default): the API; `offers init`: create the topics and indexes."""

from __future__ import annotations

import argparse
import asyncio
import sys

import uvicorn

from hilo.logs import configure_logging
from hilo.mongo import create_mongo_client
from hilo.topics import ensure_topics
from offers.app import OpenApiRefused, create_service
from offers.settings import OffersSettings
from offers.store import OffersStore


def serve(settings: OffersSettings) -> None:
    try:
        service = create_service(settings)
    except OpenApiRefused as exc:
        sys.exit(f"offers: {exc}")
    uvicorn.run(
        service.app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
    )


async def run_init(settings: OffersSettings) -> int:
    """Create the topics and the MongoDB indexes (both idempotent): the deployment's init step."""
    created = await ensure_topics(settings)
    mongo = create_mongo_client(settings)
    try:
        store = OffersStore(
            mongo, settings.mongodb_database, max_record_bytes=settings.kafka_max_record_bytes
        )
        await store.create_indexes()
    finally:
        await mongo.close()
    print(f"topics: {len(created)} created, the others existed; indexes ready")  # noqa: T201
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="offers", description=__doc__)
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "init"])
    args = parser.parse_args()
    settings = OffersSettings()
    configure_logging(settings)
    if args.command == "init":
        sys.exit(asyncio.run(run_init(settings)))
    serve(settings)


if __name__ == "__main__":
    main()
