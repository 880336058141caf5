"""`make bench`: one table from one run — the customer-profile service against baseline B.

For each size: the service consumes a fresh stream (throughput.py), then baseline B consumes the
same stream (baseline.py), on the same broker and database, one after the other. Database CPU is
read from /proc for the local database process (blank when the database is not ours).

    python services/customer-profile/bench/report.py --sizes 1000 10000 50000
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import baseline
import throughput

from hilo_devkit.local_infra import Endpoints, Infrastructure
from hilo_devkit.sampling import process_cpu_seconds


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU of a process so far (Linux /proc), or None."""
    if pid is None:
        return None
    return process_cpu_seconds(pid)


async def run_baseline(endpoints: Endpoints, events: int, people: int) -> tuple[float, float]:
    """Publish the same stream to fresh topics and time baseline B on it; (ev/s, seconds)."""
    settings = throughput.bench_settings(endpoints, "baseline")
    await throughput.publish_stream(settings, throughput.stream(events, people))
    seconds = await baseline.consume(settings, events)
    return events / seconds, seconds


def measure(
    endpoints: Endpoints, pid: int | None, sizes: list[int]
) -> tuple[list[list[str]], list[str]]:
    """The table's rows, and for each size how an event's cost moved within its run."""
    rows, growth = [], []
    for events in sizes:
        people = max(1, events // 5)
        before = cpu_seconds(pid)
        profile = asyncio.run(throughput.run(endpoints, events, people, 500))
        profile_db = _delta(before, cpu_seconds(pid))
        before = cpu_seconds(pid)
        base_rate, _ = asyncio.run(run_baseline(endpoints, events, people))
        base_db = _delta(before, cpu_seconds(pid))
        rate = float(profile["consume_events_per_second"])
        rows.append(
            [
                f"{events:,}",
                f"{rate:.0f}",
                f"{profile['service_cpu_ms_per_event']:.2f}",
                _per_event(profile_db, events),
                f"{profile['round_trips_per_batch']:.0f} ({profile['batches']:.0f} batches)",
                f"{base_rate:.0f}",
                _per_event(base_db, events),
                f"{rate / base_rate:.2f}",
            ]
        )
        growth.append(_growth(events, profile))
    return rows, growth


def _growth(events: int, profile: dict[str, float]) -> str:
    """Within one run the database grows from empty to `events` entries: the wall time per
    event of the first and last tenth of the events, in the same process and run."""
    first = profile["first_tenth_ms_per_event"]
    last = profile["last_tenth_ms_per_event"]
    return (
        f"- {events:,} events: first tenth {first:.2f} ms/event, last tenth {last:.2f} ms/event "
        f"({last / first:.2f}x)"
    )


def _delta(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def _per_event(seconds: float | None, events: int) -> str:
    return "" if seconds is None else f"{1000 * seconds / events:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000])
    args = parser.parse_args()
    infra = Infrastructure()
    with infra as endpoints:
        pid = infra.database.process.pid if infra.database and infra.database.process else None
        rows, growth = measure(endpoints, pid, args.sizes)
    header = [
        "events",
        "profile ev/s",
        "profile: service CPU ms/event",
        "profile: database CPU ms/event",
        "profile: database round trips per batch",
        "baseline B ev/s",
        "baseline B: database CPU ms/event",
        "profile / baseline",
    ]
    print(f"infrastructure: {endpoints.provider}")  # noqa: T201
    print("| " + " | ".join(header) + " |")  # noqa: T201
    print("|" + "---|" * len(header))  # noqa: T201
    for row in rows:
        print("| " + " | ".join(row) + " |")  # noqa: T201
    print("\nCost per event as the data grows, within each run (batch processing time):")  # noqa: T201
    for line in growth:
        print(line)  # noqa: T201


if __name__ == "__main__":
    main()
