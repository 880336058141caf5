"""`agent-desk serve` (default): the desk; `agent-desk hash-password`: a HILO_DESK_AGENTS hash."""

from __future__ import annotations

import argparse
import getpass
import sys

from agent_desk.app import create_app
from agent_desk.auth import hash_password
from agent_desk.settings import DeskSettings
from hilo.entrypoint import run_app
from hilo.logs import configure_logging


def serve() -> None:
    settings = DeskSettings()
    configure_logging(settings)
    if not settings.desk_agents:
        sys.exit("agent-desk: HILO_DESK_AGENTS is empty: nobody could sign in.")
    run_app(create_app(settings), settings)


def main() -> None:
    parser = argparse.ArgumentParser(prog="agent-desk", description=__doc__)
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "hash-password"])
    args = parser.parse_args()
    if args.command == "hash-password":
        password = (
            sys.stdin.readline().rstrip("\n") if not sys.stdin.isatty() else getpass.getpass()
        )
        print(hash_password(password))  # noqa: T201 - the command's output
        return
    serve()


if __name__ == "__main__":
    main()
