"""`offers serve` (default): the API; `offers init`: create the topics and indexes; `offers demo`:
seed the demo catalogue through a running service's API."""

from __future__ import annotations

import argparse
import sys

from pymongo import AsyncMongoClient

from hilo.entrypoint import init_deployment, run_job, serve_api
from hilo.logs import configure_logging
from hilo.mongo import MongoDocument
from offers.app import create_service
from offers.demo import SeedError, seed_url
from offers.settings import OffersSettings
from offers.store import OffersStore


def serve(settings: OffersSettings) -> None:
    serve_api("offers", settings, lambda: create_service(settings).app)


async def run_init(settings: OffersSettings) -> int:
    async def indexes(mongo: AsyncMongoClient[MongoDocument]) -> None:
        store = OffersStore(
            mongo, settings.mongodb_database, max_record_bytes=settings.kafka_max_record_bytes
        )
        await store.create_indexes()

    return await init_deployment(settings, indexes)


def run_demo(settings: OffersSettings, url: str | None, wait_seconds: float) -> int:
    """Seed the demo catalogue (`offers.demo`) with the first of HILO_ADMIN_API_KEYS."""
    keys = [key.get_secret_value() for key in settings.admin_api_keys]
    target = url or f"http://127.0.0.1:{settings.http_port}"
    try:
        seeded = seed_url(target, keys[0] if keys else "", wait_seconds=wait_seconds)
    except SeedError as exc:
        print(f"offers demo: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    print(seeded)  # noqa: T201
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="offers", description=__doc__)
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "init", "demo"])
    parser.add_argument(
        "--url", help="demo: the offers service (default: this host, HILO_HTTP_PORT)"
    )
    parser.add_argument(
        "--wait", type=float, default=60.0, help="demo: seconds to wait for it to be ready"
    )
    args = parser.parse_args()
    settings = OffersSettings()
    configure_logging(settings)
    if args.command == "init":
        sys.exit(run_job("init", run_init(settings)))
    if args.command == "demo":
        sys.exit(run_demo(settings, args.url, args.wait))
    serve(settings)


if __name__ == "__main__":
    main()
