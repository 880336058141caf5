"""`customer-profile serve` (default), `init`, `rebuild`, or `dlq replay` after a fix."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime

from pymongo import AsyncMongoClient

from customer_profile.adapters.store import ProfileStore
from customer_profile.bootstrap import bootstrap
from customer_profile.service.rebuild import NotEmpty, rebuild
from customer_profile.settings import ProfileSettings
from hilo.contract.identifiers import DEFAULT_PHONE_REGION
from hilo.dead_letters import ReplayFilter, ReplayIncomplete, replay
from hilo.entrypoint import init_deployment, run_job, serve_api
from hilo.logs import configure_logging
from hilo.mongo import MongoDocument, create_mongo_client


def serve(settings: ProfileSettings) -> None:
    serve_api("customer-profile", settings, lambda: bootstrap(settings).app)


async def run_init(settings: ProfileSettings) -> int:
    async def indexes(mongo: AsyncMongoClient[MongoDocument]) -> None:
        await ProfileStore(mongo, settings.mongodb_database).create_indexes()

    return await init_deployment(settings, indexes)


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
    if report.left_out:
        # Not a success to script on: a fault every record meets (a bug) leaves them all out.
        print(  # noqa: T201
            f"{report.left_out} records were left out (unreadable or failing: the log's "
            "record_dead_lettered names each); the database holds the rest",
            file=sys.stderr,
        )
        return 3
    return 0


async def run_dlq_replay(settings: ProfileSettings, args: argparse.Namespace) -> int:
    """Put dead letters back on `interactions` once their cause is fixed."""
    chosen = ReplayFilter(reasons=frozenset(args.reason or ()), since=args.since, until=args.until)
    try:
        report = await replay(settings, chosen, dry_run=args.dry_run)
    except ReplayIncomplete as exc:
        print(f"replay incomplete: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    verb = "would replay" if args.dry_run else "replayed"
    reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(report.by_reason.items()))
    print(  # noqa: T201
        f"read {report.read} dead letters; {verb} {report.replayed} ({reasons or 'none'}); "
        f"{report.superseded} left out, replayed before and failed again (their newer copy counts)"
    )
    if report.without_value:
        print(  # noqa: T201
            f"{len(report.without_value)} left out without their value (too large for the "
            "dead-letter topic); their records are at (topic/partition/offset): "
            + ", ".join(report.without_value)
        )
    return 0


def _aware(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise argparse.ArgumentTypeError("give a timezone, e.g. 2026-12-01T10:00:00+00:00")
    return parsed


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="customer-profile", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="consume interactions and serve the HTTP API (default)")
    commands.add_parser("init", help="create topics and indexes (idempotent)")
    commands.add_parser("rebuild", help="replay `interactions` into an empty database")
    dlq = commands.add_parser("dlq", help="dead letters of `interactions`")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True)
    again = dlq_commands.add_parser("replay", help="re-publish dead letters to `interactions`")
    again.add_argument("--reason", action="append", help="only this reason (repeatable)")
    again.add_argument("--since", type=_aware, help="failed at or after (ISO 8601, with zone)")
    again.add_argument("--until", type=_aware, help="failed before (ISO 8601, with zone)")
    again.add_argument("--dry-run", action="store_true", help="count, publish nothing")
    return parser


def main() -> None:
    args = _parser().parse_args()
    settings = ProfileSettings()
    configure_logging(settings)
    DEFAULT_PHONE_REGION.set(settings.default_phone_region)
    if args.command == "init":
        sys.exit(run_job("init", run_init(settings)))
    if args.command == "rebuild":
        sys.exit(run_job("rebuild", run_rebuild(settings)))
    if args.command == "dlq":
        sys.exit(run_job("dlq_replay", run_dlq_replay(settings, args)))
    serve(settings)


if __name__ == "__main__":
    main()
