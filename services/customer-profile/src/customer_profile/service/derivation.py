"""Views derived again from whole journeys, holding a bounded number of entries in memory.

A late event, a merge, a split or a lost race derives a customer's view again from the whole
journey. A shop's walk-in account, on every till, gathers hundreds of thousands of entries, and
an entry parsed takes about 4 KB: held at once, one late event on a journey of 100,000 entries
took the consumer to 1,087 MiB, past its 512 MB limit, and the batch, delivered again after the
restart, did it again. Journeys are read together while they hold at most `HELD_ENTRIES`; past
that, each is folded as it is read, in event-time order (`bench/late_entry.py`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import aclosing
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
    "Journey entries folded to derive views again: what late events on long journeys cost",
)

HELD_ENTRIES = 10_000
"""The most entries read into memory together (about 40 MB): a batch's journeys usually hold a
few hundred, and one query reads them all."""


async def derived_views(
    store: Store, profiles: Iterable[StoredProfile], conversation_window: timedelta
) -> dict[str, ProfileView]:
    """Each profile's view as its whole journey (aliases included) implies it.

    The profiles are read in groups their stored views say hold at most `HELD_ENTRIES` events
    together (one query each, usually one for a batch); a profile whose view alone counts more,
    or a group that turns out to hold more (a merge brought entries its views did not count), is
    folded as read, one profile at a time."""
    views: dict[str, ProfileView] = {}
    groups, long = _grouped(profiles)
    for group in groups:
        journeys = await store.entries_within(group, HELD_ENTRIES)
        if journeys is None:
            long += group
            continue
        for customer, entries in journeys.items():
            views[customer] = derive_view(entries, conversation_window)
            DERIVED_ENTRIES.inc(len(entries))
        DERIVED.labels(read="held").inc(len(journeys))
    for profile in long:
        async with aclosing(store.in_order(profile.aliases)) as journey:
            views[profile.customer_id] = await _folded(journey, conversation_window)
    return views


def _grouped(
    profiles: Iterable[StoredProfile],
) -> tuple[list[list[StoredProfile]], list[StoredProfile]]:
    """Profiles in groups of at most `HELD_ENTRIES` events by their stored views, and those
    whose view alone counts more (folded as read, never read up to the bound first)."""
    groups: list[list[StoredProfile]] = [[]]
    long: list[StoredProfile] = []
    held = 0
    for profile in profiles:
        count = profile.view.event_count if profile.view is not None else 0
        if count > HELD_ENTRIES:
            long.append(profile)
            continue
        if held + count > HELD_ENTRIES and groups[-1]:
            groups.append([])
            held = 0
        groups[-1].append(profile)
        held += count
    return [group for group in groups if group], long


async def _folded(entries: AsyncIterator[JourneyEntry], window: timedelta) -> ProfileView:
    """`derive_view` of entries that come in event-time order, each dropped once applied."""
    view = ProfileView()
    async for entry in entries:
        view.apply(entry, window)
        DERIVED_ENTRIES.inc()
    DERIVED.labels(read="as_read").inc()
    return view.finish()
