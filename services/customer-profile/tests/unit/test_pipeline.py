"""The pipeline against in-memory fakes of its ports: the rules, in milliseconds.

The same rules run against real Kafka and MongoDB in `test_fault_injection.py`; here they run over
many more seeds, and the number of store calls per batch is counted.
"""

from __future__ import annotations

import json
import random
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from prometheus_client import REGISTRY
from pydantic_extra_types.currency_code import ISO4217

from customer_profile.adapters.memory import InMemoryStore
from customer_profile.domain.identity import (
    DEFAULT_BLOCKED_VALUES,
    DEFAULT_MAX_PER_KIND,
    Conflict,
    IdentityPolicy,
)
from customer_profile.domain.journey import JourneyEntry
from customer_profile.domain.profile import MAX_REFUNDS_WAITING, RECENT_ORDERS, derive_view
from customer_profile.service import checkpoint_sweep, derivation
from customer_profile.service.checkpoint_sweep import sweep_checkpoints
from customer_profile.service.pipeline import STEPS, Pipeline
from customer_profile.service.ports import Checkpoint, Contention, StoredProfile, ViewSave
from customer_profile.service.prices import PriceCheck
from customer_profile.testing import (
    FAULT_POINTS,
    T0,
    FaultPoint,
    InjectedFault,
    clear_faults,
    done_mark,
    inject_fault,
    interaction,
    interleave,
    message,
    raw_records,
)
from hilo.contract import (
    DONE_AFTER,
    ConversationDone,
    Direction,
    Fulfilment,
    Identified,
    IdentifierKind,
    Identifiers,
    Interaction,
    LineItem,
    Money,
    OrderPlaced,
    OrderRefunded,
    OrderStatus,
    SalesChannel,
    new_interaction,
)
from hilo.kafka import Record
from hilo.offers.model import Conditions, OffersSnapshot
from hilo.sealing import InMemoryKeys, Sealer
from hilo.testkit.offers import percent_off, price_schedule
from hilo.testkit.samples import sample_payloads
from hilo.topics import Topic

WINDOW = timedelta(hours=24)
PEPPER = b"a-pepper-for-unit-tests"
SEEDS = range(20)
POINTS = FAULT_POINTS


class RecordingPublisher:
    """The publisher port, keeping what was 'acknowledged' in order."""

    def __init__(self) -> None:
        self.records: list[tuple[Topic, bytes, bytes | None]] = []

    async def publish_records(self, records: Sequence[Record]) -> None:
        self.records += [(record.topic, record.key, record.value) for record in records]

    def values(self, topic: Topic) -> list[bytes]:
        return [value for t, _, value in self.records if t is topic and value is not None]


def pipeline(
    store: InMemoryStore,
    publisher: RecordingPublisher,
    checkpoint_behind: timedelta = derivation.CHECKPOINT_BEHIND,
) -> Pipeline:
    policy = IdentityPolicy(
        unique_kinds=frozenset({IdentifierKind.CUSTOMER_ID, IdentifierKind.LOYALTY_ID}),
        max_per_kind=dict(DEFAULT_MAX_PER_KIND),
        max_merges=50,
        blocked_values=DEFAULT_BLOCKED_VALUES,
    )
    sealer = Sealer(InMemoryKeys(), PEPPER)
    return Pipeline(store, publisher, sealer, policy, WINDOW, checkpoint_behind=checkpoint_behind)


def scenario(seed: int) -> tuple[list[Interaction], list[Interaction]]:
    s = str(seed)
    before = [
        interaction(f"{s}-p1", minutes=0, email=f"p{s}@example.com"),
        interaction(f"{s}-q1", minutes=1, phone="+34612345678"),
        interaction(f"{s}-r1", minutes=2, loyalty_id=f"L1-{s}", email=f"r{s}@x.org"),
    ]
    batch = [
        interaction(f"{s}-m1", minutes=10, email=f"p{s}@example.com", phone="+34612345678"),
        interaction(f"{s}-p2", minutes=11, kind="order", email=f"p{s}@example.com"),
        interaction(f"{s}-q0", minutes=-5, kind="message", phone="+34612345678"),
        interaction(f"{s}-r2", minutes=13, loyalty_id=f"L2-{s}", email=f"r{s}@x.org"),
        interaction(f"{s}-n1", minutes=14, kind="cart", phone="+34699887766"),
    ]
    random.Random(seed).shuffle(batch)
    return before, batch


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("point", POINTS, ids=lambda p: p.name)
async def test_any_interrupted_batch_is_completed_once_on_redelivery(
    point: FaultPoint, seed: int
) -> None:
    store, publisher = InMemoryStore(), RecordingPublisher()
    run = pipeline(store, publisher)
    before, batch = scenario(seed)
    await run.process(raw_records(before))

    target = store if point.target == "store" else publisher
    inject_fault(target, point)
    with pytest.raises(InjectedFault):
        await run.process(raw_records(batch))
    clear_faults(target, point.method)
    await run.process(raw_records(batch))
    again = await run.process(raw_records(batch))

    assert (again.repaired, again.duplicates, again.merges) == (0, len(batch), [])
    assert sorted(store.journey) == sorted(e.id for e in [*before, *batch])
    assert not store.pending
    assert not [h for h in store.profiles.values() if h.merge_pending]
    for customer, profile in (await store.load(_canonical(store))).items():
        journey = (await store.entries_of([profile]))[customer]
        assert profile.view == derive_view(journey, WINDOW), "folded exactly once"
    journey_ids = {json.loads(v)["id"] for v in publisher.values(Topic.JOURNEY)}
    assert journey_ids == {e.id for e in [*before, *batch]}
    merges = set(publisher.values(Topic.IDENTITY_MERGES))
    assert len(merges) == 1, "one merge, published (possibly more than once) identically"
    last = {key: value for topic, key, value in publisher.records if topic is Topic.PROFILES}
    for customer, head in store.profiles.items():
        record = json.loads(last[customer.encode()] or b"{}")
        if head.merged_into:
            assert record == {"customer_id": customer, "merged_into": head.merged_into}
        else:
            [state] = (await store.head_states([customer])).values()
            assert record["version"] == state.version


async def test_a_save_that_overtook_nothing_is_derived_again() -> None:
    """A reads version 1; meanwhile B saves 2 and C saves 3 (freeing 2); A's save of 2 succeeds
    although 3, derived without A's event, is current. A must notice and derive it again."""
    store, publisher = InMemoryStore(), RecordingPublisher()
    a, b, c = (pipeline(store, publisher) for _ in range(3))
    email = "ona@example.com"
    await a.process(raw_records([interaction("x0", minutes=0, email=email)]))
    [customer] = store.profiles

    async def others() -> None:
        await b.process(raw_records([interaction("b1", minutes=2, email=email)]))
        await c.process(raw_records([interaction("c1", minutes=3, email=email)]))

    interleave(store, "save_views", others)
    await a.process(raw_records([interaction("a1", minutes=1, email=email)]))

    [profile] = (await store.load([customer])).values()
    journey = (await store.entries_of([profile]))[customer]
    assert profile.view == derive_view(journey, WINDOW), "the current view holds all four events"
    assert profile.view is not None
    assert profile.view.event_count == 4
    last = [v for t, k, v in publisher.records if t is Topic.PROFILES and k == customer.encode()]
    assert json.loads(last[-1] or b"{}")["version"] == profile.version
    assert [v for c, v in store.views if c == customer] == [profile.version], "A's view is gone"


async def test_a_profile_merged_away_while_it_is_saved_leaves_its_events_to_the_survivor() -> None:
    """A resolves an event to C; before A stores it, B merges C into the older S and derives S.
    A's entry (under C) and A's save of C still succeed, but S was derived without A's event:
    S must be derived again."""
    store, publisher, a, merge = await _about_to_merge()
    survivor, absorbed = sorted(store.profiles, key=lambda c: store.profiles[c].created_at)

    interleave(store, "insert_entries", merge)
    await a.process(raw_records([interaction("a1", minutes=3, email="ona@example.com")]))

    assert store.profiles[absorbed].merged_into == survivor
    [profile] = (await store.load([survivor])).values()
    journey = (await store.entries_of([profile]))[survivor]
    assert len(journey) == 4
    assert profile.view == derive_view(journey, WINDOW), "the survivor's view holds A's event"
    last = {k: v for t, k, v in publisher.records if t is Topic.PROFILES}
    assert json.loads(last[survivor.encode()] or b"{}")["version"] == profile.version
    assert json.loads(last[absorbed.encode()] or b"{}") == {
        "customer_id": absorbed,
        "merged_into": survivor,
    }


async def test_a_profile_merged_away_while_it_is_saved_ends_on_its_alias_after_a_crash() -> None:
    """As above, but A fails right after reading the heads once it published C's snapshot (before
    C's alias): on redelivery, C's last record on `profiles` must again be its alias."""
    store, publisher, a, merge = await _about_to_merge()
    survivor, absorbed = sorted(store.profiles, key=lambda c: store.profiles[c].created_at)
    batch = raw_records([interaction("a1", minutes=3, email="ona@example.com")])

    async def merge_then_fail_after_the_next_read() -> None:
        await merge()
        inject_fault(store, FaultPoint("store", "head_states", "after"))

    interleave(store, "insert_entries", merge_then_fail_after_the_next_read)
    with pytest.raises(InjectedFault):
        await a.process(batch)
    clear_faults(store, "insert_entries", "head_states")
    last = {k: v for t, k, v in publisher.records if t is Topic.PROFILES}
    assert json.loads(last[absorbed.encode()] or b"{}")["customer_id"] == absorbed
    assert "view" in json.loads(last[absorbed.encode()] or b"{}"), "C's snapshot is last"

    again = await a.process(batch)

    assert again.repaired == 1
    [profile] = (await store.load([survivor])).values()
    journey = (await store.entries_of([profile]))[survivor]
    assert profile.view == derive_view(journey, WINDOW)
    assert profile.view is not None
    assert profile.view.event_count == 4
    last = {k: v for t, k, v in publisher.records if t is Topic.PROFILES}
    assert json.loads(last[absorbed.encode()] or b"{}") == {
        "customer_id": absorbed,
        "merged_into": survivor,
    }
    assert json.loads(last[survivor.encode()] or b"{}")["version"] == profile.version


async def _about_to_merge() -> tuple[
    InMemoryStore, RecordingPublisher, Pipeline, Callable[[], Awaitable[None]]
]:
    """S (a phone) and the newer C (an email); instance A, and what instance B does to merge C
    into S (an event carrying both)."""
    store, publisher = InMemoryStore(), RecordingPublisher()
    a, b = pipeline(store, publisher), pipeline(store, publisher)
    email, phone = "ona@example.com", "+34612345678"
    await a.process(raw_records([interaction("s1", minutes=0, phone=phone)]))
    await a.process(raw_records([interaction("c1", minutes=1, email=email)]))

    async def merge() -> None:
        await b.process(raw_records([interaction("m1", minutes=2, email=email, phone=phone)]))

    return store, publisher, a, merge


def _canonical(store: InMemoryStore) -> list[str]:
    return [c for c, head in store.profiles.items() if head.merged_into is None]


@pytest.mark.parametrize("size", [10, 100, 400])
async def test_store_calls_per_batch_do_not_grow_with_the_batch(size: int) -> None:
    """Round trips per batch stay constant: no per-event reads or writes on the hot path."""
    store, publisher = InMemoryStore(), RecordingPublisher()
    run = pipeline(store, publisher)
    known = [interaction(f"k{n}", email=f"c{n}@example.com") for n in range(size)]
    await run.process(raw_records(known))
    store.calls.clear()

    more = [
        interaction(f"m{n}", minutes=1, kind="order", email=f"c{n % size}@example.com")
        for n in range(size)
    ]
    await run.process(raw_records(more))

    assert store.calls == {
        "owners": 1,
        "load": 2,
        "insert_entries": 1,
        "save_views": 1,
    }, "the same handful of calls whether the batch holds 10 or 400 events"


async def test_new_customers_are_created_holding_their_identifiers_in_one_call() -> None:
    """A new profile is inserted with its claims; only a known profile's new ones are added."""
    store, publisher = InMemoryStore(), RecordingPublisher()
    run = pipeline(store, publisher)
    await run.process(raw_records([interaction("k", email="known@example.com")]))
    store.calls.clear()

    batch = [
        interaction(f"n{n}", email=f"n{n}@example.com", phone=f"+34612345{n + 100:03d}")
        for n in range(50)
    ]
    batch.append(interaction("k2", minutes=1, email="known@example.com", phone="+34612345670"))
    await run.process(raw_records(batch))

    assert (store.calls["create_profiles"], store.calls["attach"]) == (1, 1)
    heads = {c: sorted(h.identifiers) for c, h in store.profiles.items()}
    assert len(heads) == 51
    assert sorted(map(len, heads.values())) == [2] * 51, "every profile holds both identifiers"
    assert set(store.identities.values()) == set(heads)


@pytest.mark.parametrize("shared_phone", [False, True], ids=["new", "known-profile"])
async def test_what_was_claimed_for_an_event_erased_since_the_batch_checked_it_is_released(
    shared_phone: bool,
) -> None:
    """The person's erasure was recorded (and their claims deleted) between the batch's check
    of its events and their resolution: the email looks new. Neither the profile made for the
    event nor the known profile whose phone the event also carries keeps it, and nothing of the
    event is stored."""
    store, publisher = InMemoryStore(), RecordingPublisher()
    run = pipeline(store, publisher)

    def event_of(n: str, minutes: float, email: str) -> Interaction:
        if shared_phone:
            return interaction(n, minutes=minutes, email=email, phone="+34600111222")
        return interaction(n, minutes=minutes, email=email)

    others = [event_of("o1", 0, "other@example.com")]
    await run.process(raw_records(others))
    before = {c: list(h.identifiers) for c, h in store.profiles.items()}
    event = event_of("e1", 1, "gone@example.com")
    subject = Sealer(InMemoryKeys(), PEPPER).subject("email:gone@example.com")

    async def erasure_recorded() -> None:
        store.erased[subject] = event.occurred_at + timedelta(seconds=1)

    interleave(store, "identity_state", erasure_recorded)
    outcome = await run.process(raw_records([event]))

    assert (outcome.erased, outcome.accepted) == (1, 0)
    assert {c: list(h.identifiers) for c, h in store.profiles.items()} == before
    assert set(store.identities) == {key for keys in before.values() for key in keys}
    assert [entry.id for entry in store.journey.values()] == [others[0].id]


def order(n: int, order_id: str, status: OrderStatus = OrderStatus.PLACED) -> Interaction:
    placed = interaction(f"buy{n}", minutes=n, kind="order", loyalty_id="L-HOUSE")
    payload = placed.payload.model_copy(update={"order_id": order_id, "status": status})
    return placed.model_copy(update={"payload": payload})


async def test_a_frequent_buyers_view_recalls_a_forgotten_order_instead_of_deriving_again() -> None:
    store, publisher = InMemoryStore(), RecordingPublisher()
    run = pipeline(store, publisher)
    history = [order(n, f"ORD-{n}") for n in range(RECENT_ORDERS + 10)]
    await run.process(raw_records(history))

    for batch in (
        [order(100, "ORD-NEW")],  # new: nothing to recall (its own entry is not an earlier one)
        [order(101, "ORD-0", OrderStatus.REFUNDED), order(102, "ORD-NEWER")],  # ORD-0 was let go
    ):
        store.calls.clear()
        await run.process(raw_records(batch))
        assert "entries_within" not in store.calls, "no derivation of the whole journey"
        assert store.calls["order_entries"] == 1
        history += batch

    [profile] = (await store.load(list(store.profiles))).values()
    journey = (await store.entries_of([profile]))[profile.customer_id]
    assert profile.view is not None
    assert profile.view.order_count == RECENT_ORDERS + 12
    assert profile.view.model_dump() == derive_view(journey, WINDOW).model_dump()


@pytest.mark.parametrize("held", [5, 10_000])
async def test_a_late_event_on_a_long_journey_folds_it_as_read_past_the_entries_held(
    monkeypatch: pytest.MonkeyPatch, held: int
) -> None:
    """A house account's late refund: derived whole either way, the same view; past `held`
    entries the journey is folded in event-time order as read, never gathered."""
    monkeypatch.setattr(derivation, "HELD_ENTRIES", held)
    store, publisher = InMemoryStore(), RecordingPublisher()
    run = pipeline(store, publisher)
    history = [order(n, f"ORD-{n}") for n in range(1, 8)]
    history += [
        interaction(f"m{n}", minutes=20 + n, kind="message", loyalty_id="L-HOUSE") for n in range(4)
    ]
    await run.process(raw_records(history))

    store.calls.clear()
    await run.process(raw_records([refund(-5, "ORD-3")]))  # dated before every entry

    [profile] = (await store.load(list(store.profiles))).values()
    journey = (await store.entries_of([profile]))[profile.customer_id]
    assert profile.view is not None
    assert profile.view.event_count == len(history) + 1
    assert profile.view.model_dump() == derive_view(journey, WINDOW).model_dump()
    assert ("in_order" in store.calls) == (held < len(journey))


async def test_a_journey_read_that_fails_midway_folds_nothing_and_the_redelivery_does_it_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """MongoDB failing while a long journey is folded as read: the batch fails before any view
    is saved; delivered again, the late event is stored once and the view counts it once."""
    monkeypatch.setattr(derivation, "HELD_ENTRIES", 3)
    store, publisher = InMemoryStore(), RecordingPublisher()
    run = pipeline(store, publisher)
    history = [order(n, f"ORD-{n}") for n in range(1, 9)]
    await run.process(raw_records(history))
    whole = store.in_order

    async def failing_midway(aliases: list[str]) -> AsyncGenerator[JourneyEntry, None]:
        async for n, entry in _numbered(whole(aliases)):
            if n == 4:
                raise InjectedFault("the journey read failed midway")
            yield entry

    monkeypatch.setattr(store, "in_order", failing_midway)
    late = [refund(-5, "ORD-3")]
    views_before = dict(store.view_tokens)
    with pytest.raises(InjectedFault):
        await run.process(raw_records(late))
    assert store.view_tokens == views_before, "the failed batch saved no view"
    monkeypatch.setattr(store, "in_order", whole)
    await run.process(raw_records(late))

    [profile] = (await store.load(list(store.profiles))).values()
    journey = (await store.entries_of([profile]))[profile.customer_id]
    assert profile.view is not None
    assert profile.view.event_count == len(history) + 1
    assert profile.view.model_dump() == derive_view(journey, WINDOW).model_dump()
    assert not store.pending


async def _numbered(
    entries: AsyncIterator[JourneyEntry],
) -> AsyncIterator[tuple[int, JourneyEntry]]:
    n = 0
    async for entry in entries:
        n += 1
        yield n, entry


@pytest.mark.parametrize("seed", range(6))
async def test_late_events_after_a_checkpoint_fold_from_it_and_give_the_view_a_derivation_gives(
    monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """A walk-in account: 200 orders, messages and carts a minute apart (the view lets all but
    the latest orders go), and a profile known by an email alone at minutes 185 to 189, merged
    into it at 195. Then batches of late events dated in the last 80 minutes (some with one on
    each side of the checkpoint): refunds and updates of forgotten orders, messages, with an
    event on time beside some. A checkpoint is kept 30 minutes behind the view's end once 40
    entries came before; those after it fold from it, the merged profile's entries included,
    and those before it from an earlier one the merge's derivation kept (`ladder`: just before
    two hours back). Every view is the one a derivation from the beginning gives, its
    checkpoints no later than its last time seen, and no checkpoint is left that no view names."""
    monkeypatch.setattr(derivation, "CHECKPOINT_AFTER", 40)
    rng = random.Random(seed)
    store, publisher = InMemoryStore(), RecordingPublisher()
    run = pipeline(store, publisher, checkpoint_behind=timedelta(minutes=30))
    history = [_walk_in(n, rng) for n in range(200)]
    history[185:190] = [
        interaction(f"e{n}", minutes=n, kind="message", email="walk@example.com")
        for n in range(185, 190)
    ]
    history[195] = interaction("both", minutes=195, kind="cart", email="walk@example.com")
    history[195] = history[195].model_copy(
        update={"identifiers": Identifiers(loyalty_id="L-HOUSE", email="walk@example.com")}
    )
    for first, last in [(n, n + 25) for n in range(0, 175, 25)] + [(175, 190), (190, 200)]:
        await run.process(raw_records(history[first:last]))
    started = {read: _derivations(read) for read in ("from_checkpoint", "held")}

    for n in range(12):
        late = [_late(f"{n}", 200 + n - rng.uniform(1, 80), rng)]
        if rng.random() < 0.3:
            late.append(_late(f"{n}-recent", 200 + n - rng.uniform(1, 20), rng))
        if rng.random() < 0.5:
            now = interaction(f"now{n}", minutes=200 + n, kind="message", loyalty_id="L-HOUSE")
            late.append(now)
        await run.process(raw_records(late))

        [survivor] = {head.merged_into for head in store.profiles.values() if head.merged_into}
        profile = (await store.load([survivor]))[survivor]
        journey = (await store.entries_of([profile]))[profile.customer_id]
        assert len(profile.aliases) == 2, "the email's profile was merged in"
        assert profile.view is not None
        assert profile.view.model_dump() == derive_view(journey, WINDOW).model_dump(), n
        _assert_checkpoints_true_of(profile, journey, store)
    assert _derivations("from_checkpoint") > started["from_checkpoint"]
    assert _derivations("held") == started["held"], "none from the start"


async def test_a_long_journey_keeps_checkpoints_as_it_grows_and_its_first_late_event_folds_from_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A walk-in account grows a minute an entry, ten a batch, never late: once it counts 40
    entries its view names a checkpoint, and from then on one between 30 and 60 minutes (plus
    a batch) behind its last entry, renewed about every 30 minutes, not every batch. Its first
    late event ever, 5 minutes back, folds the entries since the next checkpoint (kept as the
    journey grew) without reading the journey whole; one 25 minutes back, since the
    checkpoint. Each view is a derivation's, each checkpoint true of the journey through it."""
    store, run = _rolling(monkeypatch)
    rng = random.Random(3)
    history = [_walk_in(n, rng) for n in range(200)]
    for first in range(0, 200, 10):
        await run.process(raw_records(history[first : first + 10]))
        [profile] = (await store.load(list(store.profiles))).values()
        assert profile.view is not None
        assert profile.view.last_seen is not None
        if first < 40:
            continue
        assert profile.checkpoint is not None, f"a view of {first + 10} entries names one"
        if first >= 80:
            behind = profile.view.last_seen - profile.checkpoint.at
            assert timedelta(minutes=30) <= behind <= timedelta(minutes=69), first
    journey = (await store.entries_of([profile]))[profile.customer_id]
    _assert_checkpoints_true_of(profile, journey, store)
    assert profile.checkpoint is not None
    assert profile.next_checkpoint is not None
    assert store.calls["keep_checkpoint"] <= 6, "about one per 30 minutes of the 160 since 40"

    for minutes_back, since in ((5, profile.next_checkpoint), (25, profile.checkpoint)):
        store.calls.clear()
        folded = _entries_derived()
        late = interaction(
            f"late{minutes_back}", minutes=199 - minutes_back, kind="message", loyalty_id="L-HOUSE"
        )
        await run.process(raw_records([late]))
        after = await _folded_from(since, folded, store)
        _assert_checkpoints_true_of(after, await _journey(store, after), store)


async def test_a_late_event_after_a_next_checkpoint_no_longer_kept_folds_from_the_checkpoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A save that overtook ours may have deleted a checkpoint our view names: a late event
    after the next checkpoint, gone, folds from the checkpoint instead of the whole journey."""
    store, run = _rolling(monkeypatch)
    await _grow(run, [_walk_in(n, random.Random(3)) for n in range(200)])
    [grown] = (await store.load(list(store.profiles))).values()
    assert grown.checkpoint is not None
    assert grown.next_checkpoint is not None
    del store.checkpoints[grown.next_checkpoint.id]

    store.calls.clear()
    folded = _entries_derived()
    await run.process(raw_records([interaction("late", minutes=194, loyalty_id="L-HOUSE")]))

    after = await _folded_from(grown.checkpoint, folded, store)
    assert (after.checkpoint, after.next_checkpoint) == (grown.checkpoint, None)


async def test_a_reply_sent_before_an_agents_done_mark_and_delivered_after_it_is_derived_in(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A long journey's customer asks at minute 59; an agent marks the conversation done at 70;
    a reply sent at 65 comes after the mark (later than the view's last time seen, yet before
    the mark). Folded on top it came after the mark and the view kept `done_through` where its
    derivation has none; a checkpoint copied from it as the journey grew carried that on past
    every later late event. It is derived in: every view is a derivation's, every checkpoint
    true of the journey through it."""
    store, run = _rolling(monkeypatch)
    history = [interaction(f"p{n}", minutes=n, loyalty_id="L-HOUSE") for n in range(59)]
    await _grow(run, [*history, _message("question", 59, Direction.INBOUND)])
    mark = done_mark(
        "mark", minutes=70, waiting_since=T0 + timedelta(minutes=59), loyalty_id="L-HOUSE"
    )
    batches = [
        [mark],
        [_message("reply", 65, Direction.OUTBOUND)],
        [interaction(f"p{n}", minutes=n, loyalty_id="L-HOUSE") for n in range(80, 101)],
        [interaction("late", minutes=90.5, loyalty_id="L-HOUSE")],
    ]
    for n, batch in enumerate(batches):
        await run.process(raw_records(batch))
        [profile] = (await store.load(list(store.profiles))).values()
        journey = (await store.entries_of([profile]))[profile.customer_id]
        assert profile.view is not None
        assert profile.view.model_dump() == derive_view(journey, WINDOW).model_dump(), n
        _assert_checkpoints_true_of(profile, journey, store)


async def test_a_message_sent_before_a_done_mark_that_saw_to_nobody_is_derived_in() -> None:
    """Ida asks at minute 1 and is answered at 2; an agent's done mark dated 5, of the question
    the desk showed, comes after the answer, so nobody waits and it sees to nothing. Her
    message of minute 3 arrives after the mark: later than the view's last time seen, yet
    before the mark, which the journey orders after it. The view notes the mark's time and
    derives the message in: the mark sees to it, as the journey says. Folded on top, the view
    had her waiting since minute 3 where its derivation has nobody waiting."""
    store, publisher = InMemoryStore(), RecordingPublisher()
    asked = _message("question", 1, Direction.INBOUND)
    mark = done_mark("mark", minutes=5, waiting_since=asked.occurred_at, loyalty_id="L-HOUSE")
    run = pipeline(store, publisher)
    for batch in (
        [asked],
        [_message("answer", 2, Direction.OUTBOUND)],
        [mark],
        [_message("again", 3, Direction.INBOUND)],
    ):
        await run.process(raw_records(batch))

    [profile] = (await store.load(list(store.profiles))).values()
    journey = (await store.entries_of([profile]))[profile.customer_id]
    assert profile.view is not None
    assert profile.view == derive_view(journey, WINDOW)
    assert profile.view.conversation is not None
    assert profile.view.conversation.awaiting_reply_since is None
    assert profile.view.conversation.done_through == mark.occurred_at
    assert profile.view.last_done_mark_at == mark.occurred_at


def _message(name: str, minutes: float, direction: Direction) -> Interaction:
    return message(name, minutes=minutes, direction=direction, loyalty_id="L-HOUSE")


@pytest.mark.parametrize("lag", [1.5, 45])
async def test_a_walk_in_account_fed_by_a_till_whose_clock_is_behind_folds_a_bounded_tail(
    monkeypatch: pytest.MonkeyPatch, lag: float
) -> None:
    """A walk-in account grows on time for 100 minutes; then for 100 more every batch holds an
    entry from a till on time and one from a till whose clock is behind (late): 90 seconds, or
    45 minutes (further back than the checkpoint's 30). No batch reads the journey whole: each
    folds from a checkpoint, at most the entries since one `MOVED_AFTER` times
    `CHECKPOINT_AFTER` entries (and half an hour, or the lag) back, as a checkpoint moves on
    with the journey. Every view is a derivation's, every checkpoint true of the journey
    through it."""
    store, run = _rolling(monkeypatch)
    rng = random.Random(11)
    await _grow(run, [_walk_in(n, rng) for n in range(100)])
    if lag > 30:  # its first entry is dated before the checkpoint: derived from the beginning
        first = interaction("first", minutes=99 - lag, kind="cart", loyalty_id="L-HOUSE")
        await run.process(raw_records([first]))
    store.calls.clear()
    started = _derivations("from_checkpoint")
    most = 0
    for n in range(100, 200):
        behind = interaction(f"till{n}", minutes=n - lag, kind="cart", loyalty_id="L-HOUSE")
        folded = _entries_derived()
        await run.process(raw_records([_walk_in(n, rng), behind]))
        most = max(most, int(_entries_derived() - folded))

        [profile] = (await store.load(list(store.profiles))).values()
        journey = (await store.entries_of([profile]))[profile.customer_id]
        assert profile.view is not None
        assert profile.view.model_dump() == derive_view(journey, WINDOW).model_dump(), n
        _assert_checkpoints_true_of(profile, journey, store)
    assert _derivations("from_checkpoint") - started == 100
    assert "entries_within" not in store.calls
    assert "in_order" not in store.calls
    bound = derivation.MOVED_AFTER * 40 + 2 * max(30, lag) * 2 + 2
    assert most <= bound, f"{most} entries folded by one batch, of {len(journey)}"


@pytest.mark.parametrize("others_late", [False, True])
async def test_a_till_back_online_after_hours_folds_its_later_batches_from_a_checkpoint(
    monkeypatch: pytest.MonkeyPatch, others_late: bool
) -> None:
    """A walk-in account grows on time for 200 minutes; a till offline since minute 100 comes
    back and sends its 30 sales (one every 3 minutes), five a batch, oldest first, beside an
    event on time from another till (and, between its batches, one from a third till 90 s
    late, in a batch of its own). Its first batch, dated before the checkpoint (30 minutes
    back), folds from an earlier one the view kept naming as it grew (`ladder`), and keeps a
    checkpoint just before its first sale; each later batch folds from a checkpoint. No batch
    reads the journey whole (before, every batch of the sync read it whole; then the first did;
    the third till's late events moved the checkpoint past the sync's next batches). Every view
    is a derivation's, every checkpoint true of the journey through it."""
    store, run = _rolling(monkeypatch)
    rng = random.Random(5)
    await _grow(run, [_walk_in(n, rng) for n in range(200)])
    sales = [
        interaction(f"till{n}", minutes=100.5 + 3 * n, kind="cart", loyalty_id="L-HOUSE")
        for n in range(30)
    ]
    started = _derivations("from_checkpoint")
    deep = (T0, "")
    for n, first in enumerate(range(0, 30, 5)):
        store.calls.clear()
        folded = _entries_derived()
        on_time = interaction(f"now{n}", minutes=200 + n, kind="message", loyalty_id="L-HOUSE")
        await run.process(raw_records([*sales[first : first + 5], on_time]))

        [profile] = (await store.load(list(store.profiles))).values()
        journey = await _journey(store, profile)
        assert profile.view is not None
        assert profile.view.model_dump() == derive_view(journey, WINDOW).model_dump(), n
        _assert_checkpoints_true_of(profile, journey, store)
        read_whole = "entries_within" in store.calls or "in_order" in store.calls
        assert not read_whole, f"batch {n} of the sync"
        assert profile.checkpoint is not None
        if n == 0:
            assert profile.checkpoint.at == T0 + timedelta(minutes=100), "just before its sale"
            deep = min(c.key() for c in profile.earlier_checkpoints)
        since = [entry for entry in journey if entry.sort_key() > deep]
        assert _entries_derived() - folded <= len(since) < len(journey), n
        if others_late:
            late = interaction(f"other{n}", minutes=199 + n, kind="cart", loyalty_id="L-HOUSE")
            await run.process(raw_records([late]))
    assert _derivations("from_checkpoint") - started == 6 + 6 * others_late


async def test_a_derivation_from_the_beginning_keeps_earlier_checkpoints_a_later_sync_folds_from(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A walk-in account grows on time to minute 399; a late event dated before all of it
    derives the view from the beginning, which keeps the checkpoint 30 minutes back and, on
    the way, earlier ones just before 60, 120 and 240 minutes back (`ladder`; 480 is before the
    journey). A till offline since minute 200 then sends its sales, oldest first: its first
    batch folds from the one at minute 159, not from the beginning again. Every view is a
    derivation's, every checkpoint true of the journey through it."""
    store, run = _rolling(monkeypatch)
    await _grow(run, [_walk_in(n, random.Random(9)) for n in range(400)])
    await run.process(raw_records([interaction("first", minutes=-1, loyalty_id="L-HOUSE")]))
    [derived] = (await store.load(list(store.profiles))).values()
    assert [c.at for c in derived.earlier_checkpoints] == [
        T0 + timedelta(minutes=159),
        T0 + timedelta(minutes=279),
        T0 + timedelta(minutes=339),
    ], "just before 240, 120 and 60 minutes back"
    assert derived.checkpoint is not None
    assert derived.checkpoint.at == T0 + timedelta(minutes=369)

    store.calls.clear()
    folded = _entries_derived()
    sales = [
        interaction(f"till{n}", minutes=200.5 + n, kind="cart", loyalty_id="L-HOUSE")
        for n in range(5)
    ]
    await run.process(raw_records(sales))

    [profile] = (await store.load(list(store.profiles))).values()
    journey = await _journey(store, profile)
    assert "entries_within" not in store.calls
    assert "in_order" not in store.calls
    assert _entries_derived() - folded == len(journey) - 161, "those after minute 159 (from -1)"
    assert profile.view is not None
    assert profile.view.model_dump() == derive_view(journey, WINDOW).model_dump()
    _assert_checkpoints_true_of(profile, journey, store)
    assert profile.checkpoint is not None
    assert profile.checkpoint.at == T0 + timedelta(minutes=200), "just before the first sale"
    assert [c.at for c in profile.earlier_checkpoints] == [T0 + timedelta(minutes=159)]


async def test_checkpoints_a_batch_kept_before_failing_are_swept_once_old_enough(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A late event dated before a walk-in account's whole journey: its derivation keeps the
    checkpoint and earlier ones, then the save fails; delivered again, the batch keeps its own.
    The first batch's are named by no view: a sweep of those kept before now deletes them and
    no other, and one of those kept an hour back (the service's) deletes nothing yet."""
    store, run = _rolling(monkeypatch)
    await _grow(run, [_walk_in(n, random.Random(9)) for n in range(400)])
    late = raw_records([interaction("first", minutes=-1, loyalty_id="L-HOUSE")])
    inject_fault(store, FaultPoint("store", "save_views", "before"))
    with pytest.raises(InjectedFault):
        await run.process(late)
    clear_faults(store, "save_views")
    await run.process(late)
    [profile] = (await store.load(list(store.profiles))).values()
    left = set(store.checkpoints) - profile.checkpoints()
    assert len(left) >= 3, "the failed batch's checkpoint and earlier ones"

    now = datetime.now(UTC)
    assert await sweep_checkpoints(store, now - checkpoint_sweep.GRACE) == 0
    assert await sweep_checkpoints(store, now + timedelta(seconds=1)) == len(left)

    assert set(store.checkpoints) == profile.checkpoints()
    journey = await _journey(store, profile)
    _assert_checkpoints_true_of(profile, journey, store)


async def test_a_growing_journeys_view_overtaken_by_two_others_leaves_no_checkpoint_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Instance A folds a batch on top of a long journey's version 10 and keeps a checkpoint;
    before A saves, B and C save versions 11 and 12 (each keeping checkpoints of their own). A
    saves 11 (its slot freed by 12) and finds its view overtaken: its checkpoints go with it.
    Every checkpoint kept is named by the current view, which is a derivation's."""
    monkeypatch.setattr(derivation, "CHECKPOINT_AFTER", 40)
    rng = random.Random(1)
    store, publisher = InMemoryStore(), RecordingPublisher()
    a, b, c = (pipeline(store, publisher, checkpoint_behind=timedelta(minutes=30)) for _ in "abc")
    history = [_walk_in(n, rng) for n in range(140)]
    for first in range(0, 100, 10):
        await a.process(raw_records(history[first : first + 10]))

    async def others() -> None:
        await b.process(raw_records(history[101:135]))
        await c.process(raw_records(history[135:140]))

    interleave(store, "save_views", others)
    await a.process(raw_records(history[100:101]))

    [profile] = (await store.load(list(store.profiles))).values()
    journey = (await store.entries_of([profile]))[profile.customer_id]
    assert profile.version == 13, "A's overtaken view was derived again"
    assert profile.view is not None
    assert profile.view.model_dump() == derive_view(journey, WINDOW).model_dump()
    assert set(store.checkpoints) <= profile.checkpoints(), "none left that no view names"


async def test_a_long_journey_merged_away_leaves_no_checkpoint_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A web customer known by an email alone grows on time to 120 entries (keeping checkpoints);
    an event naming the email and a loyalty id merges it into the loyalty card's profile: the
    absorbed profile's checkpoints are deleted with the merge."""
    store, run = _rolling(monkeypatch)
    await run.process(raw_records([interaction("s0", minutes=0, loyalty_id="L-HOUSE")]))
    await _grow(
        run, [interaction(f"w{n}", minutes=n, email="walk@example.com") for n in range(1, 120)]
    )
    named = {c for p in (await store.load(list(store.profiles))).values() for c in p.checkpoints()}
    assert len(store.checkpoints) >= 2, "a checkpoint and a next one, and earlier ones"
    assert set(store.checkpoints) == named
    both = interaction("both", minutes=130, kind="cart", email="walk@example.com")
    both = both.model_copy(
        update={"identifiers": Identifiers(loyalty_id="L-HOUSE", email="walk@example.com")}
    )
    await run.process(raw_records([both]))

    [survivor] = [c for c, head in store.profiles.items() if not head.merged_into]
    profile = (await store.load([survivor]))[survivor]
    assert len(profile.merged_from) == 1
    assert set(store.checkpoints) <= profile.checkpoints()


@pytest.mark.parametrize(
    "point",
    [
        FaultPoint("store", "keep_checkpoint", "before"),
        FaultPoint("store", "keep_checkpoint", "after"),
        FaultPoint("store", "save_views", "after"),
    ],
    ids=lambda point: point.name,
)
async def test_a_batch_failing_as_it_keeps_a_checkpoint_of_a_growing_journey_is_counted_once(
    monkeypatch: pytest.MonkeyPatch, point: FaultPoint
) -> None:
    """The store failing once around the checkpoint a growing journey's batch keeps: delivered
    again, the batch counts each event once, the view names checkpoints true of the journey,
    and only one kept by a batch that failed before its save is left over."""
    store, run = _rolling(monkeypatch)
    rng = random.Random(5)
    history = [_walk_in(n, rng) for n in range(100)]
    await run.process(raw_records(history[:50]))
    inject_fault(store, point)
    failed = 0
    for first in range(50, 100, 10):
        batch = raw_records(history[first : first + 10])
        try:
            await run.process(batch)
        except InjectedFault:
            failed += 1
            await run.process(batch)
    clear_faults(store, point.method)

    [profile] = (await store.load(list(store.profiles))).values()
    journey = (await store.entries_of([profile]))[profile.customer_id]
    assert failed == 1, f"{point.name} was never reached"
    assert profile.view is not None
    assert profile.view.event_count == len(history)
    assert profile.view.model_dump() == derive_view(journey, WINDOW).model_dump()
    left = point == FaultPoint("store", "keep_checkpoint", "after")
    named = {c.id for c in (profile.checkpoint, profile.next_checkpoint) if c is not None}
    assert profile.checkpoint is not None
    assert named <= set(store.checkpoints)
    assert len(set(store.checkpoints) - named) == left
    for orphan in set(store.checkpoints) - named:
        store.checkpoints.pop(orphan)
    _assert_checkpoints_true_of(profile, journey, store)
    assert not store.pending


@pytest.mark.parametrize(
    "point",
    [
        FaultPoint("store", "keep_checkpoint", "before"),
        FaultPoint("store", "keep_checkpoint", "after"),
        FaultPoint("store", "save_views", "after"),
        FaultPoint("store", "checkpoint_view", "before"),
        FaultPoint("store", "entries_after", "before"),
        FaultPoint("store", "order_entries", "before"),
        FaultPoint("store", "save_views", "after", call=2),
    ],
    ids=lambda point: point.name,
)
async def test_a_late_batch_failing_at_any_checkpoint_step_is_counted_once_on_redelivery(
    monkeypatch: pytest.MonkeyPatch, point: FaultPoint
) -> None:
    """A walk-in account's first late event (from the beginning: a checkpoint is kept), then a
    late refund of a forgotten order after the checkpoint (folded from it), the store failing
    once at a step of either; each failed batch delivered again. The view counts each event
    once, as a derivation does, and names a checkpoint that is there."""
    monkeypatch.setattr(derivation, "CHECKPOINT_AFTER", 40)
    rng = random.Random(7)
    store, publisher = InMemoryStore(), RecordingPublisher()
    run = pipeline(store, publisher, checkpoint_behind=timedelta(minutes=30))
    history = [order(n, f"ORD-{n}") if n % 2 else _walk_in(n, rng) for n in range(200)]
    await run.process(raw_records(history))
    inject_fault(store, point)
    failed = 0
    for late in ([_late("first", -5, rng)], [refund(190, "ORD-3", paid="5.00")]):
        try:
            await run.process(raw_records(late))
        except InjectedFault:
            failed += 1
            await run.process(raw_records(late))
    clear_faults(store, point.method)

    [profile] = (await store.load(list(store.profiles))).values()
    journey = (await store.entries_of([profile]))[profile.customer_id]
    assert failed == 1, f"{point.name} was never reached"
    assert profile.view is not None
    assert profile.view.event_count == len(history) + 2
    assert profile.view.model_dump() == derive_view(journey, WINDOW).model_dump()
    assert profile.checkpoint is not None
    assert profile.checkpoint.id in store.checkpoints
    left = set(store.checkpoints) - profile.checkpoints()
    assert len(left) == (point == FaultPoint("store", "keep_checkpoint", "after")), (
        "only one kept by a batch that failed before its save stays (until an erasure)"
    )
    assert not store.pending


async def _folded_from(
    checkpoint: Checkpoint, folded_before: float, store: InMemoryStore
) -> StoredProfile:
    """The walk-in account's profile after a late batch, checked to be a derivation's and to
    have folded the entries after `checkpoint` alone, the journey never read whole."""
    [after] = (await store.load(list(store.profiles))).values()
    journey = await _journey(store, after)
    assert "entries_within" not in store.calls
    assert "in_order" not in store.calls
    assert after.view is not None
    assert after.view.model_dump() == derive_view(journey, WINDOW).model_dump()
    since = [entry for entry in journey if entry.sort_key() > checkpoint.key()]
    assert _entries_derived() - folded_before == len(since), checkpoint
    return after


async def _journey(store: InMemoryStore, profile: StoredProfile) -> list[JourneyEntry]:
    return (await store.entries_of([profile]))[profile.customer_id]


def _rolling(monkeypatch: pytest.MonkeyPatch) -> tuple[InMemoryStore, Pipeline]:
    """A pipeline whose views keep checkpoints 30 minutes behind once they count 40 entries."""
    monkeypatch.setattr(derivation, "CHECKPOINT_AFTER", 40)
    store = InMemoryStore()
    return store, pipeline(store, RecordingPublisher(), timedelta(minutes=30))


async def _grow(run: Pipeline, history: list[Interaction]) -> None:
    """The events on time, ten a batch."""
    for first in range(0, len(history), 10):
        await run.process(raw_records(history[first : first + 10]))


def _assert_checkpoints_true_of(
    profile: StoredProfile, journey: list[JourneyEntry], store: InMemoryStore
) -> None:
    """Every checkpoint kept is one the view names, holds what a derivation of the journey
    through its entry gives, and is no later than the view's last time seen; the earlier ones,
    the checkpoint and the next one come in that order."""
    ladder = [*profile.earlier_checkpoints, profile.checkpoint, profile.next_checkpoint]
    named = [c for c in ladder if c is not None]
    assert set(store.checkpoints) == {c.id for c in named}, "every checkpoint kept is named"
    assert profile.view is not None
    assert profile.view.last_seen is not None
    for checkpoint in named:
        assert checkpoint.at <= profile.view.last_seen
        through = [entry for entry in journey if entry.sort_key() <= checkpoint.key()]
        kept = store.checkpoints[checkpoint.id][2]
        assert kept.model_dump() == derive_view(through, WINDOW).model_dump(), checkpoint
    assert [c.key() for c in named] == sorted({c.key() for c in named})
    assert not profile.earlier_checkpoints or profile.checkpoint is not None


def _walk_in(n: int, rng: random.Random) -> Interaction:
    kind = rng.choice(("order", "order", "message", "cart"))
    if kind == "order":
        return order(n, f"ORD-{n}")
    return interaction(f"w{n}", minutes=n, kind=kind, loyalty_id="L-HOUSE")


def _late(name: str, at: float, rng: random.Random) -> Interaction:
    """A late event at `at` minutes: a refund or an update of an order of the first 100 (long
    let go by the view) or a message."""
    kind = rng.choice(("refund", "update", "message"))
    old = f"ORD-{rng.randrange(100)}"
    if kind == "refund":
        event = refund(0, old, paid=rng.choice((None, "5.00")))
    elif kind == "update":
        event = order(0, old, rng.choice((OrderStatus.CANCELLED, OrderStatus.COMPLETED)))
    else:
        event = interaction(0, kind="message", loyalty_id="L-HOUSE")
    identified = interaction(f"late-{name}", minutes=at, loyalty_id="L-HOUSE")
    return event.model_copy(
        update={
            "id": identified.id,
            "occurred_at": identified.occurred_at,
            "identifiers": identified.identifiers,
        }
    )


def _entries_derived() -> float:
    return REGISTRY.get_sample_value("hilo_profile_derived_entries_total") or 0.0


def _derivations(read: str) -> float:
    labels = {"read": read}
    return REGISTRY.get_sample_value("hilo_profile_views_derived_total", labels) or 0.0


def refund(n: int, order_id: str, paid: str | None = "20.00") -> Interaction:
    returned = interaction(f"back{n}", minutes=n, kind="refund", loyalty_id="L-HOUSE")
    amount = None if paid is None else Money.model_validate({"amount": paid, "currency": "EUR"})
    payload = OrderRefunded(
        order_id=order_id, refunded_via=SalesChannel.STORE, store_id="BCN-01", amount=amount
    )
    return returned.model_copy(update={"payload": payload})


async def test_a_view_that_let_waiting_refunds_go_is_derived_whole_when_an_order_comes_back() -> (
    None
):
    """A house account: a refund of ORD-X dated before it, then more refunds of orders never
    seen than a view keeps waiting (ORD-X's goes), ORD-X, many orders after it, and ORD-X
    cancelled. Recalled alone, ORD-X would take its refund back and leave 20.00 in the lifetime
    value; derived whole, the view counts as a derivation does."""
    store, publisher = InMemoryStore(), RecordingPublisher()
    run = pipeline(store, publisher)
    batches = [
        [refund(0, "ORD-X")],
        [refund(1 + n, f"PRE-{n}", paid="1.00") for n in range(MAX_REFUNDS_WAITING)],
        [order(200, "ORD-X")],
        [order(300 + n, f"ORD-{n}") for n in range(RECENT_ORDERS + 1)],
    ]
    for batch in batches:
        await run.process(raw_records(batch))
    [before] = (await store.load(list(store.profiles))).values()
    assert before.view is not None
    assert before.view.refunds_overflowed

    store.calls.clear()
    await run.process(raw_records([order(500, "ORD-X", OrderStatus.CANCELLED)]))

    assert "entries_within" in store.calls, "derived whole, not recalled"
    [profile] = (await store.load(list(store.profiles))).values()
    journey = (await store.entries_of([profile]))[profile.customer_id]
    assert profile.view is not None
    assert profile.view.model_dump() == derive_view(journey, WINDOW).model_dump()
    sample = sample_payloads()["order"]
    assert isinstance(sample, OrderPlaced)
    assert profile.view.lifetime_value == {"EUR": str((RECENT_ORDERS + 1) * sample.total.amount)}


class SlowStore(InMemoryStore):
    """Each write of a step moves a fake clock on by a known amount."""

    def __init__(self, clock: list[float]) -> None:
        super().__init__()
        self.clock = clock

    async def record_conflicts(self, conflicts: list[tuple[Conflict, str]]) -> set[str]:
        self.clock[0] += 1
        return await super().record_conflicts(conflicts)

    async def insert_entries(self, entries: list[JourneyEntry]) -> set[str]:
        self.clock[0] += 3
        return await super().insert_entries(entries)

    async def save_views(self, views: Mapping[str, ViewSave]) -> set[str]:
        self.clock[0] += 7
        return await super().save_views(views)

    async def settle(self, event_ids: Iterable[str], absorbed: Iterable[str]) -> None:
        self.clock[0] += 2
        await super().settle(event_ids, absorbed)


class SlowPublisher(RecordingPublisher):
    def __init__(self, clock: list[float]) -> None:
        super().__init__()
        self.clock = clock

    async def publish_records(self, records: Sequence[Record]) -> None:
        self.clock[0] += 5
        await super().publish_records(records)


async def test_a_batch_reports_the_time_of_each_step_for_the_operators_metrics() -> None:
    clock = [100.0]
    store, publisher = SlowStore(clock), SlowPublisher(clock)
    timed = Pipeline(
        store,
        publisher,
        Sealer(InMemoryKeys(), PEPPER),
        pipeline(store, publisher)._policy,
        WINDOW,
        clock=lambda: clock[0],
    )

    outcome = await timed.process(
        raw_records(
            [interaction("t1", email="t@example.com"), interaction("t2", phone="+34612345679")]
        )
    )

    assert tuple(outcome.seconds) == STEPS
    assert outcome.seconds == {
        "parse": 0,
        "resolve": 0,
        "journey": 4,  # the conflicts are recorded once the entries say which events are new
        "views": 7,
        "publish": 5,
        "settle": 2,
    }


@pytest.mark.parametrize("microseconds", [0, 700])
async def test_events_at_the_same_instant_in_two_batches_fold_as_the_journey_orders_them(
    microseconds: int,
) -> None:
    """A WhatsApp and an SMS message in the same second (providers keep seconds), in two
    batches: the view must be the one derived from the journey (ties in id order), not the
    one arrival order gives, or the last channel, the reply channel, flips at the next
    re-derivation. MongoDB keeps milliseconds: 700 µs apart is a tie too."""
    store, publisher = InMemoryStore(), RecordingPublisher()
    events = [
        interaction("tie-wa", channel="whatsapp", kind="message", email="tia@example.com"),
        interaction("tie-sms", channel="sms", kind="message", email="tia@example.com"),
    ]
    first, second = sorted(events, key=lambda event: event.id, reverse=True)
    second = second.model_copy(
        update={"occurred_at": second.occurred_at + timedelta(microseconds=microseconds)}
    )
    run = pipeline(store, publisher)
    await run.process(raw_records([first]))
    await run.process(raw_records([second]))

    [customer] = store.profiles
    [profile] = (await store.load([customer])).values()
    journey = (await store.entries_of([profile]))[customer]
    assert profile.view is not None
    assert profile.view == derive_view(journey, WINDOW)
    assert profile.view.last_channel == first.channel
    assert not any(entry.late for entry in journey), "in order: a tie is not late"


async def test_two_merges_bringing_different_loyalty_ids_to_one_profile_at_once_make_one() -> None:
    """While one instance's merge of a loyalty card into the shared profile is under way (its
    value reserved there), another instance's batch merging a second card there meets
    contention and is retried; then it sees the first card and keeps the second apart."""
    store, publisher = InMemoryStore(), RecordingPublisher()
    first, second = pipeline(store, publisher), pipeline(store, publisher)
    before = [
        interaction("s1", minutes=0, email="shared@example.com"),
        interaction("c1", minutes=1, loyalty_id="L1"),
        interaction("c2", minutes=2, loyalty_id="L2"),
    ]
    await first.process(raw_records(before))
    cards = [
        interaction(f"card-{n}", minutes=5, loyalty_id=f"L{n}", email="shared@example.com")
        for n in (1, 2)
    ]
    refused: list[Exception] = []

    async def meanwhile() -> None:
        try:
            await second.process(raw_records(cards[1:]))
        except Contention as exc:
            refused.append(exc)

    interleave(store, "merge", meanwhile)
    await first.process(raw_records(cards[:1]))
    clear_faults(store, "merge")
    await second.process(raw_records(cards[1:]))

    assert refused, "the second merge waited for the first"
    shared = store.identities["email:shared@example.com"]
    assert [k for k in store.profiles[shared].identifiers if k.startswith("loyalty_id:")] == [
        "loyalty_id:L1"
    ]
    assert store.identities["loyalty_id:L2"] != shared
    assert [c["reason"] for c in store.conflicts.values()] == ["unique_identifier"]


async def test_the_fake_store_refuses_a_reservation_of_a_kind_the_survivor_holds() -> None:
    """Whichever place the survivor's loyalty id has among its identifiers."""
    store = InMemoryStore()
    await store.create_profiles({"s": ["email:a@example.com", "loyalty_id:L1"]})
    assert not await store.reserve("s", ["loyalty_id:L2"], "e1", "t1")
    assert await store.reserve("s", ["customer_id:C2"], "e1", "t1")


async def test_a_forged_identify_call_does_not_give_a_known_customer_a_loyalty_tier() -> None:
    """The public web key is on every page: an identify call naming Ana's email with a gold
    tier reaches Ana's profile, but not her prices."""
    store, publisher = InMemoryStore(), RecordingPublisher()
    known = interaction("ana", minutes=0, email="ana@example.com")
    forged = interaction("forged", minutes=1, kind="identify", email="ana@example.com")
    forged = forged.model_copy(
        update={
            "identity_trust": "unverified",
            "payload": forged.payload.model_copy(update={"traits": {"loyalty_tier": "gold"}}),
        }
    )

    await pipeline(store, publisher).process(raw_records([known, forged]))

    [profile] = (await store.load(list(store.profiles))).values()
    assert profile.view is not None
    assert "loyalty_tier" not in profile.view.traits
    assert store.journey[forged.id].adjustments == [
        {"field": "payload.traits", "reason": "unverified_source"}
    ]


@pytest.mark.parametrize("mark_id", ["mark", "mark1"], ids=["reply first", "mark first"])
async def test_a_reply_at_the_instant_of_a_done_mark_folds_as_the_journey_orders_them(
    mark_id: str,
) -> None:
    """A question, an agent's done mark of it, then (next batch) a reply dated at the mark's
    very instant: the mark sets no time seen, yet the reply ties with it, so the view is the
    one derived from the journey (in id order), whichever id comes first."""
    store, publisher = InMemoryStore(), RecordingPublisher()
    question = interaction("q", kind="message", email="ida@example.com")
    mark = interaction(mark_id, channel="desk", kind="conversation_done", email="ida@example.com")
    seen = ConversationDone(agent_id="ana", waiting_since=question.occurred_at)
    at = question.occurred_at + DONE_AFTER
    mark = mark.model_copy(update={"payload": seen, "occurred_at": at})
    answer = sample_payloads()["message"].model_copy(update={"direction": Direction.OUTBOUND})
    reply = interaction("reply", kind="message", email="ida@example.com")
    reply = reply.model_copy(update={"payload": answer, "occurred_at": at})
    run = pipeline(store, publisher)
    for batch in ([question], [mark], [reply]):
        await run.process(raw_records(batch))

    [customer] = store.profiles
    [profile] = (await store.load([customer])).values()
    journey = (await store.entries_of([profile]))[customer]
    assert profile.view is not None
    assert profile.view == derive_view(journey, WINDOW)
    assert profile.view.conversation is not None
    assert profile.view.conversation.awaiting_reply_since is None
    assert (reply.id < mark.id) == (mark_id == "mark"), "the two orders of one instant"


async def test_a_sale_is_not_priced_without_a_fact_its_own_batch_told_before_it() -> None:
    """An end-of-day file tells Ana's gold tier at 10:00 and her receipt at 10:05, charged the
    gold price: checked against the profile as it was before the batch (no tier), the receipt
    was flagged; in two batches it was not. Its gold-priced SKUs are left unchecked now, as
    for a fact told since; a walk-in's receipt in the same batch is still checked."""
    at = datetime.now(UTC) - timedelta(hours=8)
    gold = percent_off(
        "gold-10",
        "Gold: 10% off",
        "SKU-1",
        10,
        valid_from=at - timedelta(days=1),
        valid_until=at + timedelta(days=1),
        conditions=Conditions(loyalty_tiers=["gold"]),
    )
    snapshot = OffersSnapshot(
        version=2,
        prices={("SKU-1", "EUR"): price_schedule("SKU-1", ("60.00", at - timedelta(days=9), 1))},
        promotions={gold.id: gold},
    )
    store, publisher = InMemoryStore(), RecordingPublisher()
    checked = Pipeline(
        store,
        publisher,
        Sealer(InMemoryKeys(), PEPPER),
        pipeline(store, publisher)._policy,
        WINDOW,
        price_check=PriceCheck(lambda: snapshot),
    )

    def sale(name: str, email: str) -> Interaction:
        charged = Money(amount=Decimal("54.00"), currency=ISO4217("EUR"))
        line = LineItem(sku="SKU-1", quantity=1, unit_price=charged)
        return new_interaction(
            channel="store",
            instance="t",
            provider_event_id=name,
            identifiers=Identifiers(email=email),
            payload=OrderPlaced(
                order_id=name,
                sold_via=SalesChannel.STORE,
                fulfilment=Fulfilment.IN_STORE,
                store_id="BCN-01",
                items=[line],
                total=charged,
            ),
            occurred_at=at + timedelta(minutes=5),
        )

    told = new_interaction(
        channel="store",
        instance="t",
        provider_event_id="tier",
        identifiers=Identifiers(email="ana@example.com"),
        payload=Identified(traits={"loyalty_tier": "gold"}),
        occurred_at=at,
    )
    ana, walk_in = sale("R-1", "ana@example.com"), sale("R-2", "walkin@example.com")

    await checked.process(raw_records([told, ana, walk_in]))

    assert store.journey[ana.id].price_mismatches == []
    assert [m["expected"] for m in store.journey[walk_in.id].price_mismatches] == ["60.00"]
