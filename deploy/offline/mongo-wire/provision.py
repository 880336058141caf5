"""What the mongo image does on first start, for SecantusDB: the root user of
MONGO_INITDB_ROOT_USERNAME and Hilo's own user (as deploy/mongo/create-hilo-user.js creates
there: read-write on Hilo's two databases, nothing else), on a server reachable only from inside
the container. The entrypoint then starts the server with authentication on. Done once per data
directory (a marker file); a start interrupted half-way is finished on the next one.
"""

import os
import subprocess
import sys
from pathlib import Path

from pymongo import MongoClient
from pymongo.errors import OperationFailure

DATA = Path("/data/db")
MARKER = DATA / ".users-created"
SERVER = "/opt/secantusdb/bin/secantusd-py"
PORT = 27018
ALREADY_EXISTS = 51003


def users() -> list[tuple[str, str, list[dict[str, str]]]]:
    env = os.environ
    wanted = [
        (
            env["MONGO_INITDB_ROOT_USERNAME"],
            env["MONGO_INITDB_ROOT_PASSWORD"],
            [{"role": "root", "db": "admin"}],
        )
    ]
    if env.get("HILO_MONGO_USERNAME") and env.get("HILO_MONGO_PASSWORD"):
        databases = (
            env.get("HILO_MONGODB_DATABASE", "hilo"),
            env.get("HILO_MONGODB_KEYS_DATABASE", "hilo_keys"),
        )
        roles = [{"role": "readWrite", "db": name} for name in databases]
        wanted.append((env["HILO_MONGO_USERNAME"], env["HILO_MONGO_PASSWORD"], roles))
    return wanted


def create(client: MongoClient, name: str, password: str, roles: list[dict[str, str]]) -> None:
    try:
        client.admin.command("createUser", name, pwd=password, roles=roles)
    except OperationFailure as exc:
        if exc.code != ALREADY_EXISTS:
            raise
    print(f"mongo-wire: user {name} ready ({len(roles)} role(s))", flush=True)  # noqa: T201


def main() -> int:
    if MARKER.exists():
        return 0
    local_only = ["--host=127.0.0.1", f"--port={PORT}", f"--storage-path={DATA}"]
    server = subprocess.Popen([SERVER, *local_only, "--log-level=WARNING"])  # noqa: S603
    try:
        url = f"mongodb://127.0.0.1:{PORT}/?directConnection=true"
        with MongoClient(url, serverSelectionTimeoutMS=60000) as client:
            for name, password, roles in users():
                create(client, name, password, roles)
    finally:
        server.terminate()
        server.wait(timeout=60)
    MARKER.touch()
    return 0


if __name__ == "__main__":
    sys.exit(main())
