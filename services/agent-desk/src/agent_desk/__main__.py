"""`agent-desk serve` (default): the desk; `agent-desk hash-password`: a HILO_DESK_AGENTS hash;
`agent-desk export-notes <customer id>`: the notes about a customer, as JSON (a request of
access: the profile service's export does not hold them)."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Coroutine
from typing import Any

from agent_desk.app import create_app
from agent_desk.auth import hash_password
from agent_desk.notes import NOTES, Notes, export
from agent_desk.profiles import ProfileApi
from agent_desk.settings import DeskSettings
from hilo.entrypoint import run_app, run_job
from hilo.logs import configure_logging
from hilo.mongo import create_mongo_client
from hilo.sealing import create_sealer


def serve() -> None:
    settings = DeskSettings()
    configure_logging(settings)
    if not settings.desk_agents:
        sys.exit("agent-desk: HILO_DESK_AGENTS is empty: nobody could sign in.")
    run_app(create_app(settings), settings)


async def export_notes(settings: DeskSettings, customer_id: str) -> list[dict[str, str]]:
    """The notes about the customer, read with the desk's settings (MongoDB, the key store and
    the profile service)."""
    mongo = create_mongo_client(settings)
    profiles = ProfileApi(settings)
    try:
        notes = Notes(mongo[settings.mongodb_database][NOTES], create_sealer(settings, mongo))
        return await export(notes, profiles, customer_id)
    finally:
        await profiles.close()
        await mongo.close()


async def printed(exporting: Coroutine[Any, Any, list[dict[str, str]]]) -> int:
    """Print the notes as JSON on stdout (0); an unknown customer is an error (`run_job`: 1)."""
    print(json.dumps(await exporting, ensure_ascii=False, indent=2))  # noqa: T201 - the output
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="agent-desk", description=__doc__)
    parser.add_argument(
        "command", nargs="?", default="serve", choices=["serve", "hash-password", "export-notes"]
    )
    parser.add_argument("customer_id", nargs="?", help="export-notes: whose notes")
    args = parser.parse_args()
    if args.command == "export-notes":
        if not args.customer_id:
            parser.error("export-notes needs the customer id")
        settings = DeskSettings()
        configure_logging(settings)
        sys.exit(run_job("export-notes", printed(export_notes(settings, args.customer_id))))
    if args.command == "hash-password":
        password = (
            sys.stdin.readline().rstrip("\n") if not sys.stdin.isatty() else getpass.getpass()
        )
        print(hash_password(password))  # noqa: T201 - the command's output
        return
    serve()


if __name__ == "__main__":
    main()
