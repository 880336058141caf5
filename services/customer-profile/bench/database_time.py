"""Benchmark: where the database's time goes, per step of a batch and per store operation.

The database's CPU is the largest cost per event (`make bench`), and each batch waits for every
command it sends. This run drives the throughput bench's stream through one customer-profile
instance and, for every command the service sends, records which batch step and which store
operation sent it, how long the database took (as the driver saw it), how many documents it
wrote and how many it returned. With a local database process (SecantusDB), py-spy also records
that process and splits its CPU into what it was doing.

The command listener walks the caller's stack for every command, so the service's own CPU and
the events per second of this run are not the throughput bench's figures: read them there.

    python services/customer-profile/bench/database_time.py --events 10000
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import throughput
from pymongo import monitoring

from hilo_devkit.database_time import CommandsByCaller, command_table
from hilo_devkit.local_infra import Endpoints, Infrastructure
from hilo_devkit.sampling import Bucket, NotRecorded, Sampler

DATABASE_PARTS = (
    Bucket("matching `$in` lists (each document against every value)", ("_in_candidate_matches",)),
    Bucket("checking `$in` lists (again for each document)", ("_validate_in_arg",)),
    Bucket("re-reading index definitions per written document", ("Storage._index_options_map",)),
    Bucket(
        "writing and removing index entries",
        ("Storage._write_index_entries", "Storage._delete_index_entries"),
    ),
    Bucket("finding documents (index lookups, reading, other matching)", ("_find",)),
    Bucket("inserting documents", ("_insert",)),
    Bucket("updating documents", ("_update",)),
    Bucket("deleting documents", ("_delete",)),
    Bucket("reading requests off the wire", ("read_message",)),
)
"""Parts of SecantusDB 0.7's work, by its own function names: the first bucket a stack passes
through takes it, so the specific costs come before the commands that include them."""


async def measure(
    endpoints: Endpoints, pid: int | None, events: int, batch: int, output: Path
) -> tuple[dict[str, float], CommandsByCaller, str | None]:
    times = CommandsByCaller()
    monitoring.register(times)
    if pid is None:
        return await throughput.run(endpoints, events, events // 5, batch), times, None
    try:
        async with Sampler(pid, output) as sampler:
            result = await throughput.run(endpoints, events, events // 5, batch)
        database = sampler.summary(DATABASE_PARTS).table("SecantusDB", events)
    except NotRecorded as exc:
        return result, times, f"(no profile of the database: {exc})"
    return result, times, database


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=10000)
    parser.add_argument("--batch", type=int, default=500, help="max records per consumed batch")
    parser.add_argument("--top", type=int, default=25, help="rows of the command table")
    parser.add_argument("--output", type=Path, default=Path(".bench/database.txt"))
    args = parser.parse_args()
    infra = Infrastructure()
    began = time.perf_counter()
    with infra as endpoints:
        process = infra.database.process if infra.database else None
        pid = process.pid if process else None
        result, times, database = asyncio.run(
            measure(endpoints, pid, args.events, args.batch, args.output)
        )
    batches = int(result["batches"])
    print(f"infrastructure: {endpoints.provider}; {time.perf_counter() - began:.0f} s")  # noqa: T201
    print(command_table(times, args.events, batches, args.top))  # noqa: T201
    if database:
        print()  # noqa: T201
        print(database)  # noqa: T201


if __name__ == "__main__":
    main()
