"""The garbage collector, tuned for a long-running service once it has started.

CPython's cyclic collector looks at the young objects after every 700 new container objects,
and now and then at every object the process holds. A started service holds over 100,000
(imported modules, pydantic's validators and schemas), all of them walked by each full
collection, and builds thousands per batch or request that reference counting frees anyway.
Measured at 200 webhooks/s (docs/benchmarks.md): collections took 4-5% of customer-profile's
CPU and 1% of channel-whatsapp's, and none once settled. So, once a service has started:

- what start-up built is frozen (`gc.freeze`): it lives as long as the process, and no
  collection walks it again;
- the youngest generation is collected after `YOUNG_GENERATION_THRESHOLD` new objects, not 700.

What it costs: garbage in reference cycles is found later (young cycles after 50,000 new objects;
older ones at the full collections, which also come later), and start-up objects in cycles that
die afterwards are never freed: a bounded, one-off amount. Objects a service builds after its
lifespan has started (a cache filling, the offers book loading) stay in the ordinary generations.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Final, TypeVar

YOUNG_GENERATION_THRESHOLD: Final = 50_000
_DEFAULT_THRESHOLD: Final = gc.get_threshold()

App = TypeVar("App")
Lifespan = Callable[[App], AbstractAsyncContextManager[Any]]


def settle() -> None:
    """Collect once, freeze what is left (start-up's objects), and collect less often."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, middle, oldest)


def unsettle() -> None:
    """Back to the interpreter's defaults: for a process that runs one service after another
    (a benchmark), so that each run's frozen objects can be freed."""
    gc.unfreeze()
    gc.set_threshold(*_DEFAULT_THRESHOLD)


def settled_after(lifespan: Lifespan[App]) -> Lifespan[App]:
    """`lifespan`, calling `settle` once its start-up has returned (connections, consumers)."""

    @asynccontextmanager
    async def settled(app: App) -> AsyncIterator[Any]:
        async with lifespan(app) as state:
            settle()
            yield state

    return settled
