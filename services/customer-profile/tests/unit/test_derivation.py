"""Views derived again from whole journeys, within the entries held in memory at once."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY

from customer_profile.adapters.memory import InMemoryStore
from customer_profile.domain.journey import JourneyEntry
from customer_profile.domain.profile import derive_view
from customer_profile.service import derivation
from customer_profile.service.derivation import derived_views, fold_on_top
from customer_profile.service.ports import Checkpoint, StoredProfile, ViewSave
from customer_profile.testing import stored_entry

START = datetime(2026, 11, 1, 9, tzinfo=UTC)
WINDOW = timedelta(hours=24)


def entry(n: int, customer_id: str) -> JourneyEntry:
    return stored_entry(
        f"e{n:02}",
        customer_id,
        START + timedelta(minutes=(20 - n) % 7),
        channel=("web", "sms")[n % 2],
        payload={"direction": "inbound", "text": f"message {n}"},
    )


def profile(customer_id: str, merged_from: list[str], events: int | None) -> StoredProfile:
    view = (
        None
        if events is None
        else derive_view([], WINDOW).model_copy(update={"event_count": events})
    )
    return StoredProfile(
        customer_id=customer_id,
        version=1,
        created_at=START,
        identifiers=[],
        merged_from=merged_from,
        view=view,
    )


@pytest.mark.parametrize(
    ("held", "counted", "folded_as_read"),
    [
        (100, None, 0),  # both journeys read together
        (6, None, 2),  # 8 + 4 entries: past the bound together, each folded as read
        (100, 200, 1),  # a view that counts more than the bound: folded as read straight away
    ],
)
async def test_views_are_derived_the_same_whether_held_or_folded_as_read(
    monkeypatch: pytest.MonkeyPatch, held: int, counted: int | None, folded_as_read: int
) -> None:
    monkeypatch.setattr(derivation, "HELD_ENTRIES", held)
    store = InMemoryStore()
    journey = [entry(n, ("c1", "c1-old", "c2")[n % 3]) for n in range(12)]
    await store.insert_entries(journey)
    profiles = [profile("c1", ["c1-old"], counted), profile("c2", [], None)]

    before = {read: _sample("hilo_profile_views_derived_total", read) for read in READS}
    entries_before = _sample("hilo_profile_derived_entries_total")

    views = await derived_views(store, profiles, WINDOW)

    for p in profiles:
        own = [e for e in journey if e.customer_id in p.aliases]
        assert views[p.customer_id].view == derive_view(own, WINDOW), p.customer_id
    assert store.calls.get("in_order", 0) == folded_as_read
    derived = {
        read: _sample("hilo_profile_views_derived_total", read) - before[read] for read in READS
    }
    assert derived == {"held": 2 - folded_as_read, "as_read": folded_as_read}
    assert _sample("hilo_profile_derived_entries_total") - entries_before == len(journey)


READS = ("held", "as_read")


def _sample(name: str, read: str | None = None) -> float:
    labels = {} if read is None else {"read": read}
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_profiles_are_read_in_groups_their_views_say_fit_within_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Three customers of 4 entries each, 8 held at most: two reads (4 + 4, then 4), none
    folded one profile at a time, where one read past the bound would fold all three."""
    monkeypatch.setattr(derivation, "HELD_ENTRIES", 8)
    store = InMemoryStore()
    journey = [entry(n, ("c1", "c2", "c3")[n % 3]) for n in range(12)]
    await store.insert_entries(journey)
    profiles = [profile(c, [], 4) for c in ("c1", "c2", "c3")]

    views = await derived_views(store, profiles, WINDOW)

    assert (store.calls.get("entries_within"), store.calls.get("in_order")) == (2, None)
    for p in profiles:
        own = [e for e in journey if e.customer_id == p.customer_id]
        assert views[p.customer_id].view == derive_view(own, WINDOW)


async def test_a_checkpoint_no_stored_view_names_is_deleted_by_the_save_that_left_it() -> None:
    """A save that names another checkpoint (or none) deletes its base's once it won; one that
    lost deletes the checkpoint it kept for itself; one that carries its base's keeps it."""
    store = InMemoryStore()
    await store.create_profiles({"c1": []})
    [base] = (await store.load(["c1"])).values()
    view = derive_view([], WINDOW)
    kept = Checkpoint("k1", START, "e01")
    await store.keep_checkpoint("c1", kept, ["c1"], view)
    assert await store.save_views({"c1": ViewSave(base, view, checkpoint=kept)}) == set()
    [named] = (await store.load(["c1"])).values()
    assert named.checkpoint == kept

    carried = ViewSave(named, view, checkpoint=named.checkpoint)
    assert await store.save_views({"c1": carried}) == set()
    assert set(store.checkpoints) == {"k1"}

    newer = Checkpoint("k2", START, "e02")
    await store.keep_checkpoint("c1", newer, ["c1"], view)
    lost = ViewSave(named, view, checkpoint=newer)  # the version after `named` is taken
    assert await store.save_views({"c1": lost}) == {"c1"}
    assert set(store.checkpoints) == {"k1"}, "the loser's own checkpoint goes, not the named one"

    [current] = (await store.load(["c1"])).values()
    assert await store.save_views({"c1": ViewSave(current, view)}) == set()
    assert store.checkpoints == {}, "a view saved naming none leaves none"
    assert await store.checkpoint_view(kept, ["c1"]) is None


async def test_no_checkpoint_is_kept_past_the_views_last_time_seen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A kept profile after a split: its stored view (from before) was seen until minute 104,
    its journey now holds messages until minute 19 and agents' done marks at 60 and 100, which
    move no time seen. A checkpoint at the mark at 60 would be passed by a message dated 40,
    not late (after 19) and folded on top, then missed by a late event folded from it: none is
    kept there, nor past minute 19 (the one kept as the ladder's, 60 minutes back, is at 19)."""
    monkeypatch.setattr(derivation, "CHECKPOINT_AFTER", 5)
    monkeypatch.setattr(derivation, "CHECKPOINT_BEHIND", timedelta(minutes=30))
    store = InMemoryStore()
    messages = [stored_entry(f"m{n:02}", "c1", START + timedelta(minutes=n)) for n in range(20)]
    marks = [
        stored_entry(
            f"d{at}",
            "c1",
            START + timedelta(minutes=at),
            channel="desk",
            kind="conversation_done",
            payload={"agent_id": "agent-ana", "waiting_since": START.isoformat()},
        )
        for at in (60, 100)
    ]
    await store.insert_entries([*messages, *marks])
    before = derive_view([], WINDOW).model_copy(
        update={"last_seen": START + timedelta(minutes=104), "event_count": 22}
    )
    stale = replace(profile("c1", [], None), view=before)

    [derived] = (await derived_views(store, [stale], WINDOW)).values()

    assert derived.view.last_seen == START + timedelta(minutes=19)
    assert derived.checkpoint is not None
    assert derived.checkpoint.key() == (START + timedelta(minutes=19), "m19")
    assert (derived.earlier, set(store.checkpoints)) == ((), {derived.checkpoint.id})


async def test_a_growing_journey_keeps_no_checkpoint_before_an_agents_done_mark_it_holds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A long journey's view seen until minute 10, with an agent's done mark at 30 (the customer
    waited from minute 0). The next batch brings a message dated 20 (sent before the mark,
    delivered after it: not late by the view's time seen) and one at 40. The view after the
    message at 20 holds the mark at 30: kept as a checkpoint there, a late event folded from it
    would fold the mark a second time, after the message at 20. It is kept after the one at 40."""
    monkeypatch.setattr(derivation, "CHECKPOINT_AFTER", 5)
    store = InMemoryStore()
    inbound = {"direction": "inbound", "text": "hello"}
    messages = [
        stored_entry(f"m{n:02}", "c1", START + timedelta(minutes=n), payload=inbound)
        for n in range(11)
    ]
    mark = stored_entry(
        "d30",
        "c1",
        START + timedelta(minutes=30),
        channel="desk",
        kind="conversation_done",
        payload={"agent_id": "agent-ana", "waiting_since": START.isoformat()},
    )
    view = derive_view([*messages, mark], WINDOW)
    assert view.conversation is not None
    assert view.conversation.done_through == mark.occurred_at
    grown = replace(profile("c1", [], None), view=view)
    new = [
        stored_entry(f"m{n}", "c1", START + timedelta(minutes=n), payload=inbound) for n in (20, 40)
    ]

    derived = await fold_on_top(store, grown, new, WINDOW, timedelta(minutes=30))

    assert derived.checkpoint is not None
    assert derived.checkpoint.key() == new[1].sort_key()
    assert derived.next_checkpoint is None


def test_a_ladder_keeps_the_oldest_checkpoint_of_each_doubling_back_within_its_reach() -> None:
    """Checkpoints 1.5, 2.5, 3, 5, 7, 100 and 300 hours before the view's last entry, an hour
    behind: the ladder keeps 1.5 (one to two hours back), 3 (two to four: the oldest), 7 (four
    to eight), 100 (64 to 128, the last doubling it reaches) and lets 2.5, 5 and 300 go."""
    last = START + timedelta(days=30)
    hours = [1.5, 2.5, 3, 5, 7, 100, 300]
    checkpoints = [Checkpoint(f"c{h}", last - timedelta(hours=h), f"e{h}") for h in hours]

    kept = derivation.ladder(reversed(checkpoints), last, timedelta(hours=1))

    assert [c.id for c in kept] == ["c100", "c7", "c3", "c1.5"], "oldest first"
    assert derivation.EARLIER_LEVELS == 6, "64 to 128 hours is the sixth doubling"
