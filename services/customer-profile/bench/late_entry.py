"""Benchmark: what one late event costs on a long journey (a house account).

An event dated before the latest one on a customer's journey (a till whose clock is behind, a
provider's retry) cannot be folded on top of the stored view: the view is derived again from
the whole journey, in event-time order. This run stores a journey of `--entries` entries for one
customer (a shop's walk-in account, on every till), a minute apart and all in the past (an
event dated ahead of the clock is brought back to it), then processes a batch holding one event
dated before all of them, and reports the memory the consumer's process allocated at its peak
during that batch (tracemalloc), the process's peak resident memory before and after it, and
how long the batch took. That derivation keeps a checkpoint an hour behind the journey's end;
a late event after it, dated five minutes back, folds from it: how long that batch took and how
many entries it folded. Before both, the journey's first late event ever, dated 30 minutes
back, folds from the checkpoint its view kept as it grew on time (`derivation.fold_on_top`).

    python services/customer-profile/bench/late_entry.py --entries 20000
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from prometheus_client import REGISTRY
from throughput import bench_settings

from customer_profile.adapters.store import ProfileStore
from customer_profile.service.pipeline import Pipeline
from customer_profile.testing import interaction, raw_records
from hilo.mongo import create_mongo_client
from hilo.sealing import create_sealer
from hilo_devkit.local_infra import Endpoints, Infrastructure

HOUSE = "walk-in@shop.example"
BATCH = 500


async def measure(endpoints: Endpoints, entries: int) -> dict[str, float]:
    settings = bench_settings(endpoints, "late")
    mongo = create_mongo_client(settings)
    store = ProfileStore(mongo, settings.mongodb_database)
    await store.create_indexes()
    sealer = create_sealer(settings, mongo)
    pipeline = Pipeline(
        store, None, sealer, settings.identity_policy(), settings.conversation_window
    )
    try:
        began = time.perf_counter()
        for start in range(0, entries, BATCH):
            batch = [
                interaction(f"h{n}", minutes=n - entries, kind="message", email=HOUSE)
                for n in range(start, min(start + BATCH, entries))
            ]
            await pipeline.process(raw_records(batch))
        stored = time.perf_counter() - began
        grown = raw_records([interaction("grown", minutes=-30.5, kind="message", email=HOUSE)])
        grown_folded = _entries_folded()
        began = time.perf_counter()
        await pipeline.process(grown)
        grown_seconds = time.perf_counter() - began
        grown_folded = _entries_folded() - grown_folded
        first = -entries - 1
        late = raw_records([interaction("late", minutes=first, kind="message", email=HOUSE)])
        rss_before = _peak_rss_mib()
        tracemalloc.start()
        began = time.perf_counter()
        await pipeline.process(late)
        seconds = time.perf_counter() - began
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        recent = raw_records([interaction("recent", minutes=-5.5, kind="message", email=HOUSE)])
        folded = _entries_folded()
        began = time.perf_counter()
        await pipeline.process(recent)
        recent_seconds = time.perf_counter() - began
        [profile] = (await store.load([await _house(store)])).values()
        if profile.view is None or profile.view.event_count != entries + 3:
            raise SystemExit(f"the view counts {profile.view and profile.view.event_count}")
        return {
            "stored_seconds": stored,
            "grown_seconds": grown_seconds,
            "grown_folded": grown_folded,
            "late_seconds": seconds,
            "recent_seconds": recent_seconds,
            "recent_folded": _entries_folded() - folded,
            "peak_mib": peak / 2**20,
            "rss_before_mib": rss_before,
            "rss_after_mib": _peak_rss_mib(),
        }
    finally:
        await mongo.drop_database(settings.mongodb_database)
        await mongo.close()


def _entries_folded() -> float:
    return REGISTRY.get_sample_value("hilo_profile_derived_entries_total") or 0.0


def _peak_rss_mib() -> float:
    """The process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _house(store: ProfileStore) -> str:
    owners = await store.owners([f"email:{HOUSE}"])
    return owners[f"email:{HOUSE}"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=20000)
    args = parser.parse_args()
    with Infrastructure() as endpoints:
        result = asyncio.run(measure(endpoints, args.entries))
    print(  # noqa: T201
        f"**The first late event on a journey of {args.entries:,} entries that grew on time**, "
        f"dated 30 minutes back, folded from the checkpoint its view kept as it grew: "
        f"{result['grown_seconds']:.2f} s, {result['grown_folded']:.0f} entries folded. "
        f"**One dated before every entry**: the batch took "
        f"{result['late_seconds']:.2f} s and allocated {result['peak_mib']:.1f} MiB at its peak "
        f"(tracemalloc); the process's peak resident memory went from "
        f"{result['rss_before_mib']:.0f} to {result['rss_after_mib']:.0f} MiB (storing the "
        f"journey took {result['stored_seconds']:.0f} s). **Then one dated 5 minutes back**, "
        f"folded from the checkpoint that one kept: {result['recent_seconds']:.2f} s, "
        f"{result['recent_folded']:.0f} entries folded"
    )


if __name__ == "__main__":
    main()
