"""`customer-profile serve` (default), `customer-profile init` or `customer-profile rebuild`."""

from __future__ import annotations

import argparse
import asyncio
import sys

import uvicorn

from customer_profile.adapters.store import ProfileStore
from customer_profile.bootstrap import bootstrap
from customer_profile.service.rebuild import NotEmpty, rebuild
from customer_profile.settings import ProfileSettings
from hilo.contract.identifiers import DEFAULT_PHONE_REGION
from hilo.logs import configure_logging
from hilo.mongo import create_mongo_client
from hilo.topics import ensure_topics


def serve(settings: ProfileSettings) -> None:
    service = bootstrap(settings)
    uvicorn.run(
        service.app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
    )


async def run_init(settings: ProfileSettings) -> int:
    """Create the topics and the MongoDB indexes (both idempotent): the deployment's init step."""
    created = await ensure_topics(settings)
    mongo = create_mongo_client(settings)
    try:
        await ProfileStore(mongo, settings.mongodb_database).create_indexes()
    finally:
        await mongo.close()
    print(f"topics: {len(created)} created, the others existed; indexes ready")  # noqa: T201
    return 0


async def run_rebuild(settings: ProfileSettings) -> int:
    mongo = create_mongo_client(settings)
    try:
        report = await rebuild(settings, ProfileStore(mongo, settings.mongodb_database))
    except NotEmpty as exc:
        print(f"refusing to rebuild: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    finally:
        await mongo.close()
    print(f"rebuilt from {report.records} records in {report.seconds:.1f}s")  # noqa: T201
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="customer-profile", description=__doc__)
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "init", "rebuild"])
    args = parser.parse_args()
    settings = ProfileSettings()
    configure_logging(settings)
    DEFAULT_PHONE_REGION.set(settings.default_phone_region)
    if args.command == "init":
        sys.exit(asyncio.run(run_init(settings)))
    if args.command == "rebuild":
        sys.exit(asyncio.run(run_rebuild(settings)))
    serve(settings)


if __name__ == "__main__":
    main()
