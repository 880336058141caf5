"""Views derived again from whole journeys, holding a bounded number of entries in memory.

A late event, a merge, a split or a lost race derives a customer's view again from the whole
journey. A shop's walk-in account, on every till, gathers hundreds of thousands of entries, and
an entry parsed takes about 5 KB: held at once, one late event on a journey of 100,000 entries
took the consumer past its 512 MB limit, and the batch, delivered again after the restart, did
it again. Journeys are read together while they hold at most `HELD_ENTRIES`; past that, each
is folded as it is read, in event-time order.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from datetime import timedelta

from prometheus_client import Counter

from customer_profile.domain.journey import JourneyEntry
from customer_profile.domain.profile import ProfileView, derive_view
from customer_profile.service.ports import Store, StoredProfile

DERIVED = Counter(
    "hilo_profile_views_derived_total",
    "Views derived again from the whole journey (late events, merges, splits, lost races), by "
    "how the journey was read: held together, or folded as read (a long one)",
    ["read"],
)
DERIVED_ENTRIES = Counter(
    "hilo_profile_derived_entries_total",
    "Journey entries read to derive views again: what late events on long journeys cost",
)

HELD_ENTRIES = 10_000
"""The most entries read into memory together (about 50 MB): a batch's journeys usually hold a
few hundred, and one query reads them all."""


async def derived_views(
    store: Store, profiles: Iterable[StoredProfile], conversation_window: timedelta
) -> dict[str, ProfileView]:
    """Each profile's view as its whole journey (aliases included) implies it. A profile whose
    stored view already counts more than `HELD_ENTRIES` events is folded as read straight away,
    not read up to the bound first."""
    long: list[StoredProfile] = []
    short: list[StoredProfile] = []
    for profile in profiles:
        view = profile.view
        (long if view is not None and view.event_count > HELD_ENTRIES else short).append(profile)
    journeys = await store.entries_within(short, HELD_ENTRIES)
    if journeys is None:
        long, journeys = long + short, {}
    views = {c: derive_view(entries, conversation_window) for c, entries in journeys.items()}
    DERIVED.labels(read="held").inc(len(journeys))
    DERIVED_ENTRIES.inc(sum(map(len, journeys.values())))
    for profile in long:
        views[profile.customer_id] = await _folded(
            store.in_order(profile.aliases), conversation_window
        )
    return views


async def _folded(entries: AsyncIterator[JourneyEntry], window: timedelta) -> ProfileView:
    """`derive_view` of entries that come in event-time order, each dropped once applied."""
    view = ProfileView()
    async for entry in entries:
        view.apply(entry, window)
        DERIVED_ENTRIES.inc()
    DERIVED.labels(read="as_read").inc()
    return view.finish()
