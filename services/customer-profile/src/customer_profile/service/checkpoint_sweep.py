"""Checkpoints no stored view names, deleted once no batch can still be saving one that does.

A derivation keeps its checkpoints (`service.derivation`) before the save of the view that
names them, so a view never names one not there. A batch that fails between the two leaves
them named by nothing (a derivation from the beginning keeps up to seven), and so does the save
of an instance of an earlier release during a rolling upgrade (it does not know every field
that names one). They are copies of a customer's view: personal data an erasure deletes, but
otherwise kept for ever. So the service sweeps them, every `HILO_CHECKPOINT_SWEEP_SECONDS`.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import structlog
from prometheus_client import Counter
from pymongo.errors import PyMongoError

from customer_profile.service.ports import Store

log = structlog.get_logger(__name__)

SWEPT = Counter(
    "hilo_profile_checkpoints_swept_total",
    "Checkpoints deleted by the sweep: no stored view named them an hour after they were kept "
    "(a batch failed before its save, or an earlier release's save left them unnamed)",
)

GRACE = timedelta(hours=1)
"""How long after it was kept a checkpoint no view names may be deleted: a batch keeps one
before its save, and no batch takes this long (a consumer's poll interval is minutes)."""
AT_MOST = 10_000
"""The most checkpoints one sweep looks at (their ids and owners only); the next takes the rest."""


async def sweep_checkpoints(store: Store, kept_before: datetime, at_most: int = AT_MOST) -> int:
    """Delete the checkpoints kept before `kept_before` that their profile's stored view does
    not name (nor any view: a profile gone); how many."""
    kept = await store.checkpoints_kept_before(kept_before, at_most)
    if not kept:
        return 0
    profiles = await store.load(kept)
    unnamed = [
        checkpoint
        for customer, ids in kept.items()
        for checkpoint in sorted(
            ids - (profiles[customer].checkpoints() if customer in profiles else set())
        )
    ]
    await store.drop_checkpoints(unnamed)
    SWEPT.inc(len(unnamed))
    return len(unnamed)


async def keep_sweeping(store: Store, every: float) -> None:
    """Sweep every `every` seconds for the life of the service, the first time after `every`
    (a start is no time to add load); a failure waits for the next."""
    while True:
        await asyncio.sleep(every)
        try:
            swept = await sweep_checkpoints(store, datetime.now(UTC) - GRACE)
        except PyMongoError as exc:
            log.warning("checkpoints_sweep_failed", error=type(exc).__name__)
            continue
        if swept:
            log.info("checkpoints_swept", count=swept)
