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
Last, a till offline for three hours sends its sales in batches, oldest first, with another
till's event 90 seconds late between them: the first folds from the earlier checkpoint the
derivation from the beginning kept just before four hours back (`derivation.ladder`) and keeps
one just before its first sale, the next ones fold from there.

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
from hilo.contract import Interaction
from hilo.mongo import create_mongo_client
from hilo.sealing import create_sealer
from hilo_devkit.local_infra import Endpoints, Infrastructure

HOUSE = "walk-in@shop.example"
BATCH = 500
SYNC_BATCHES = 3
SYNC_BATCH = 20


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
        grown = [interaction("grown", minutes=-30.5, kind="message", email=HOUSE)]
        grown_seconds, grown_folded = await _timed(pipeline, grown)
        first = -entries - 1
        late = raw_records([interaction("late", minutes=first, kind="message", email=HOUSE)])
        rss_before = _peak_rss_mib()
        tracemalloc.start()
        began = time.perf_counter()
        await pipeline.process(late)
        seconds = time.perf_counter() - began
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        recent = [interaction("recent", minutes=-5.5, kind="message", email=HOUSE)]
        recent_seconds, recent_folded = await _timed(pipeline, recent)
        sync = []
        for n, sales in enumerate(_till_back_online()):
            sync.append(await _timed(pipeline, sales))
            other = interaction(f"other{n}", minutes=-1.5 - n / 100, kind="cart", email=HOUSE)
            await pipeline.process(raw_records([other]))  # another till's, 90 s late
        [profile] = (await store.load([await _house(store)])).values()
        expected = entries + 3 + SYNC_BATCHES * (SYNC_BATCH + 1)
        if profile.view is None or profile.view.event_count != expected:
            raise SystemExit(f"the view counts {profile.view and profile.view.event_count}")
        return {
            "stored_seconds": stored,
            "grown_seconds": grown_seconds,
            "grown_folded": grown_folded,
            "late_seconds": seconds,
            "recent_seconds": recent_seconds,
            "recent_folded": recent_folded,
            **{f"sync{n}_seconds": taken for n, (taken, _) in enumerate(sync)},
            **{f"sync{n}_folded": folded for n, (_, folded) in enumerate(sync)},
            "peak_mib": peak / 2**20,
            "rss_before_mib": rss_before,
            "rss_after_mib": _peak_rss_mib(),
        }
    finally:
        await mongo.drop_database(settings.mongodb_database)
        await mongo.close()


def _till_back_online() -> list[list[Interaction]]:
    """A till offline for three hours sends its sales (one every three minutes), oldest first,
    a batch at a time."""
    sales = [
        interaction(f"till{n}", minutes=-180.5 + 3 * n, kind="cart", email=HOUSE)
        for n in range(SYNC_BATCHES * SYNC_BATCH)
    ]
    return [sales[n : n + SYNC_BATCH] for n in range(0, len(sales), SYNC_BATCH)]


async def _timed(pipeline: Pipeline, events: list[Interaction]) -> tuple[float, float]:
    """How long the batch of these events took, and how many entries its derivations folded."""
    folded = _entries_folded()
    began = time.perf_counter()
    await pipeline.process(raw_records(events))
    return time.perf_counter() - began, _entries_folded() - folded


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
        f"{result['recent_folded']:.0f} entries folded. **A till offline for three hours** "
        f"sends its {SYNC_BATCHES * SYNC_BATCH} sales, {SYNC_BATCH} a batch, oldest first "
        "(another till's event 90 s late between them): "
        + ", then ".join(
            f"{result[f'sync{n}_seconds']:.2f} s ({result[f'sync{n}_folded']:.0f} folded)"
            for n in range(SYNC_BATCHES)
        )
    )


if __name__ == "__main__":
    main()
