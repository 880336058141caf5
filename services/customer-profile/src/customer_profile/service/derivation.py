"""Views derived again from whole journeys, holding a bounded number of entries in memory, and
from a checkpoint when only recent entries changed.

A late event, a merge, a split or a lost race derives a customer's view again from the whole
journey. A shop's walk-in account, on every till, gathers hundreds of thousands of entries, and
an entry parsed takes about 4 KB: held at once, one late event on a journey of 100,000 entries
took the consumer to 1,087 MiB, past its 512 MB limit, and the batch, delivered again after the
restart, did it again. Journeys are read together while they hold at most `HELD_ENTRIES`; past
that, each is folded as it is read, in event-time order (`bench/late_entry.py`).

Folded as read, that late event still took 33 s, and on a walk-in account fed by several tills
most events are late by seconds (one till's clock behind another's). So a derivation that folds
more than `CHECKPOINT_AFTER` entries before the point `CHECKPOINT_BEHIND` its view's last entry
keeps the view as it stood there (a `Checkpoint`), and the view saved names it; a late event
after that point folds the entries since, from the checkpoint, and the view comes out as a
derivation from the beginning would leave it.

That still left the first late event on a long journey (after a restart of the tills, a merge)
to read it whole. So a long journey's view also keeps checkpoints as it grows (`fold_on_top`):
the fold of a batch on top keeps the view as it stood after one of the batch's entries, named
as the view's checkpoint when it has none, else as its *next* one, which takes the checkpoint's
place once it is `CHECKPOINT_BEHIND` the view's last entry. A view that keeps getting events
then names a checkpoint between one and two `CHECKPOINT_BEHIND` back, made once per that time.

A till back online after hours sends its sales in several batches, each dated before that
checkpoint. So a derivation for late entries keeps its checkpoint just before the earliest of
them when that is further back than `CHECKPOINT_BEHIND`: the till's next batches, dated after
it, fold from there instead of each reading the journey whole. Other tills' events late by
seconds, folded in between, move it on only once it costs `MOVED_AFTER` times more to fold.

The first of those batches still read the journey whole, as did most batches of a till whose
clock jumps between minutes and hours behind. So a view also names *earlier* checkpoints
(`ladder`): the oldest of those its checkpoint took the place of in each doubling of
`CHECKPOINT_BEHIND` back, to `EARLIER_LEVELS` doublings, and ones a derivation from the
beginning keeps as it folds past those points (`_rungs`). A late event before the checkpoint
folds from the youngest earlier one before it.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from prometheus_client import Counter

from customer_profile.domain.journey import JourneyEntry
from customer_profile.domain.profile import DONE, ProfileView
from customer_profile.service.ports import Checkpoint, Store, StoredProfile, ViewSave

DERIVED = Counter(
    "hilo_profile_views_derived_total",
    "Views derived again (late events, merges, splits, lost races), by how the journey was "
    "read: held together, folded as read (a long one), or from a checkpoint on",
    ["read"],
)
DERIVED_ENTRIES = Counter(
    "hilo_profile_derived_entries_total",
    "Journey entries folded to derive views again: what late events on long journeys cost",
)
CHECKPOINTS_KEPT = Counter(
    "hilo_profile_checkpoints_kept_total",
    "Checkpoints of long journeys kept: a view as it stood a while before its last entry, "
    "by a derivation or as the journey grew",
)

HELD_ENTRIES = 10_000
"""The most entries read into memory together (about 40 MB): a batch's journeys usually hold a
few hundred, and one query reads them all."""
CHECKPOINT_BEHIND = timedelta(hours=1)
"""How far behind its stored view's last entry a long journey's checkpoint is kept, unless the
settings say otherwise (`HILO_CHECKPOINT_BEHIND_HOURS`): a late event dated after that (a till's
clock minutes behind another's, a delivery retried) folds only the entries since; one dated
before derives the view from the beginning."""
CHECKPOINT_AFTER = 1_000
"""Entries a fold passes before the checkpoint's place for one to be kept there: a journey
shorter than that folds from the beginning about as fast as from a checkpoint."""
EARLIER_LEVELS = 6
"""How many doublings of `CHECKPOINT_BEHIND` back a view keeps naming older checkpoints
(`ladder`): at an hour, the oldest is between 64 and 128 hours back. Each is a copy of the view
(a few KB) for long journeys only."""
MOVED_AFTER = 4
"""A fold from a checkpoint moves it on to the horizon once it passed this many times
`CHECKPOINT_AFTER` entries to get there, not sooner: a till back online after hours may still
be sending batches dated just after it, between other tills' events late by seconds, and each
would read the journey whole once it moved past them. Such folds read up to about that many
entries more."""


@dataclass(frozen=True)
class Derived:
    view: ProfileView
    checkpoint: Checkpoint | None
    """The checkpoint the view names when saved: a kept one it was folded from, a new one kept
    during the fold, or none."""
    next_checkpoint: Checkpoint | None = None
    """The younger checkpoint it names (`fold_on_top`), while still true of the journey."""
    earlier: tuple[Checkpoint, ...] = ()
    """The older checkpoints it names (`ladder`), oldest first, while still true of it."""

    def save(self, base: StoredProfile) -> ViewSave:
        """This view to store as the version after `base`'s, naming its checkpoints."""
        return ViewSave(
            base,
            self.view,
            checkpoint=self.checkpoint,
            next_checkpoint=self.next_checkpoint,
            earlier_checkpoints=self.earlier,
        )


async def fold_on_top(
    store: Store,
    profile: StoredProfile,
    new: list[JourneyEntry],
    window: timedelta,
    behind: timedelta | None = None,
) -> Derived:
    """The stored view with a batch's entries (none late) applied on top, in place (the view
    was loaded for this batch alone: a deep copy of every touched view was once the largest
    single cost of a batch), and the checkpoints it names.

    A long journey whose view names no checkpoint, or one `behind` its new last entry and no
    next one, keeps the view as it stood after the first of these entries it can (`_covered`):
    as its checkpoint if it had none, else as the next. Once per `behind` at most, for views of
    `CHECKPOINT_AFTER` entries or more: one copy and one insert beside a save."""
    behind = CHECKPOINT_BEHIND if behind is None else behind
    view = profile.view if profile.view is not None else ProfileView()
    entries = sorted(new, key=JourneyEntry.sort_key)
    horizon = _last_seen(view, entries) - behind
    current, upcoming = profile.checkpoint, profile.next_checkpoint
    earlier = list(profile.earlier_checkpoints)
    if upcoming is not None and (current is None or upcoming.at <= horizon):
        earlier += [current] if current is not None else []  # the ladder's to keep or let go
        current, upcoming = upcoming, None
    wanted = view.event_count >= CHECKPOINT_AFTER and (
        current is None or (upcoming is None and current.at <= horizon)
    )
    kept: tuple[Checkpoint, ProfileView] | None = None
    for entry in entries:
        view.apply(entry, window)
        if wanted and kept is None and _covered_after(view, entry):
            kept = _copy_through(entry, view)
    if kept is not None:
        await _keep_all(store, profile, [kept])
        current, upcoming = (kept[0], None) if current is None else (current, kept[0])
    return Derived(view.finish(), current, upcoming, ladder(earlier, horizon + behind, behind))


def _copy_through(entry: JourneyEntry, view: ProfileView) -> tuple[Checkpoint, ProfileView]:
    """A new checkpoint at `entry`, and a copy of the view as it stands, folded through it."""
    return Checkpoint(uuid.uuid4().hex, *entry.sort_key()), view.finished_copy()


async def _keep_all(
    store: Store, profile: StoredProfile, kept: Iterable[tuple[Checkpoint, ProfileView]]
) -> None:
    """Store these checkpoints of the profile's journey, before the save that names them."""
    for checkpoint, view in kept:
        await store.keep_checkpoint(profile.customer_id, checkpoint, profile.aliases, view)
        CHECKPOINTS_KEPT.inc()


def _last_seen(view: ProfileView, entries: list[JourneyEntry]) -> datetime:
    """The view's last time seen once these entries are folded on top (a done mark sets none)."""
    seen = [entry.occurred_at for entry in entries if entry.type != DONE]
    if view.last_seen is not None:
        seen.append(view.last_seen)
    return max(seen, default=datetime.max.replace(tzinfo=UTC))


def _covered_after(view: ProfileView, entry: JourneyEntry) -> bool:
    """Whether the view, just folded through `entry`, holds only entries up to it: a done mark
    moves no time seen, and one dated after the entry (folded before it, on an earlier batch)
    would be folded again after a checkpoint here (see `_Fold._covered`)."""
    if entry.type == DONE:
        return False
    done = view.marked_through()
    return done is None or done <= entry.occurred_at


async def derived_views(
    store: Store,
    profiles: Iterable[StoredProfile],
    conversation_window: timedelta,
    late_from: Mapping[str, tuple[datetime, str]] | None = None,
    behind: timedelta | None = None,
) -> dict[str, Derived]:
    """Each profile's view as its whole journey (aliases included) implies it.

    A profile in `late_from` (the earliest of its late entries, as `JourneyEntry.sort_key`,
    for those derived again only because entries came late) whose view names a checkpoint
    before that entry is folded from the checkpoint on (`_from_checkpoint`). The others are
    read in groups their stored views say hold at most `HELD_ENTRIES` events together (one
    query each, usually one for a batch); a profile whose view alone counts more, or a group
    that turns out to hold more (a merge brought entries its views did not count), is folded
    as read, one profile at a time. A checkpoint is kept `behind` (`CHECKPOINT_BEHIND` unless
    given) the stored view's last entry, or just before the earliest late entry when that came
    first (the till that sent it sends the next hours' sales after it)."""
    behind = CHECKPOINT_BEHIND if behind is None else behind
    late = late_from or {}
    derived: dict[str, Derived] = {}
    whole: list[StoredProfile] = []
    for profile in profiles:
        since = late.get(profile.customer_id)
        folded = None
        if since is not None:
            folded = await _from_checkpoint(store, profile, since, conversation_window, behind)
        if folded is not None:
            derived[profile.customer_id] = folded
        else:
            whole.append(profile)
    groups, long = _grouped(whole)

    def fold_for(profile: StoredProfile) -> _Fold:
        since = late.get(profile.customer_id)
        horizon = _horizon(profile, behind)
        rungs = _rungs(profile, behind)
        return _Fold(ProfileView(), conversation_window, horizon, since=since, rungs=rungs)

    for group in groups:
        journeys = await store.entries_within(group, HELD_ENTRIES)
        if journeys is None:
            long += group
            continue
        for profile in group:
            fold = fold_for(profile)
            for entry in sorted(journeys[profile.customer_id], key=JourneyEntry.sort_key):
                fold.add(entry)
            derived[profile.customer_id] = await fold.done(store, profile)
        DERIVED.labels(read="held").inc(len(group))
    for profile in long:
        fold = fold_for(profile)
        async with aclosing(store.in_order(profile.aliases)) as journey:
            async for entry in journey:
                fold.add(entry)
        derived[profile.customer_id] = await fold.done(store, profile)
        DERIVED.labels(read="as_read").inc()
    return derived


async def _from_checkpoint(
    store: Store,
    profile: StoredProfile,
    since: tuple[datetime, str],
    window: timedelta,
    behind: timedelta,
) -> Derived | None:
    """The view folded from the youngest checkpoint it names that came before its earliest late
    entry (`since`) and is still kept: the next one, the current one, or one of the ladder's
    (`ladder`: a till back online after hours reaches past the current one). None, to derive it
    from the beginning, when there is none, it was kept for other aliases, more than
    `HELD_ENTRIES` came since, or an order the checkpoint let go cannot be recalled as it counted
    it. The view goes on naming the checkpoints before `since` that the ladder keeps; those after
    it miss that entry."""
    seen = profile.view.last_seen if profile.view is not None else None
    if seen is None:
        return None
    current, upcoming = profile.checkpoint, profile.next_checkpoint
    named = [c for c in (upcoming, current, *reversed(profile.earlier_checkpoints)) if c]
    before = [c for c in named if c.key() < since and c.at <= seen]  # youngest first
    start, view = await _first_kept(store, before, profile.aliases)
    if start is None or view is None:
        return None
    older = before[before.index(start) + 1 :]
    if start is upcoming and older and older[0] is current:  # it stays the view's checkpoint
        folded_from, older = older[0], older[1:]
    else:
        folded_from, upcoming = start, None
    tail = await store.entries_after(profile.aliases, start.key(), HELD_ENTRIES)
    if tail is None:
        return None
    recall = Recall(view, profile.aliases, tail, start.key())
    if await recall_forgotten_orders(store, {profile.customer_id: recall}, {e.id for e in tail}):
        return None
    fold = _Fold(view, window, _horizon(profile, behind), folded_from, since=since)
    for entry in tail:
        fold.add(entry)
    DERIVED.labels(read="from_checkpoint").inc()
    derived = await fold.done(store, profile)
    kept = derived.checkpoint
    if kept is not folded_from:  # moved on: the one it folded from joins the ladder
        older.append(folded_from)
        if upcoming is not None and kept is not None and upcoming.key() <= kept.key():
            older += [upcoming] if upcoming.key() < kept.key() else []
            upcoming = None
    earlier = ladder(older, seen, behind)
    return replace(derived, next_checkpoint=upcoming, earlier=earlier)


def ladder(
    checkpoints: Iterable[Checkpoint], last_seen: datetime, behind: timedelta
) -> tuple[Checkpoint, ...]:
    """Of the checkpoints older than a view's current one, those it keeps naming, oldest first:
    the oldest of each doubling of `behind` back from `last_seen` (one between one and two
    `behind` back, one between two and four, ...), to `EARLIER_LEVELS` doublings. A sync from
    a till offline for hours then folds from the first one before its earliest sale, not from
    the beginning; the rest are let go (the save deletes them)."""
    kept: dict[int, Checkpoint] = {}
    for checkpoint in sorted(checkpoints, key=Checkpoint.key):
        level = max(int(max((last_seen - checkpoint.at) / behind, 0)).bit_length() - 1, 0)
        if level <= EARLIER_LEVELS:
            kept.setdefault(level, checkpoint)
    return tuple(sorted(kept.values(), key=Checkpoint.key))


async def _first_kept(
    store: Store, checkpoints: Sequence[Checkpoint], aliases: list[str]
) -> tuple[Checkpoint | None, ProfileView | None]:
    """The first of these checkpoints still kept for these aliases, and its view (a save that
    overtook ours may have deleted one our view names)."""
    for checkpoint in checkpoints:
        if view := await store.checkpoint_view(checkpoint, aliases):
            return checkpoint, view
    return None, None


@dataclass(frozen=True)
class Recall:
    """A view about to fold `new` entries on top, whose orders those update it may have let go."""

    view: ProfileView
    aliases: list[str]
    new: list[JourneyEntry]
    through: tuple[datetime, str] | None = None
    """The last entry the view holds, when entries after it are stored besides `new` (a
    checkpoint's): only those up to it are recalled."""


async def recall_forgotten_orders(
    store: Store, recalls: Mapping[str, Recall], besides: set[str]
) -> set[str]:
    """Put back into the views, from their journeys, the orders their new entries update but
    the views let go (see `ProfileView.unknown_orders`), so the fold finds them and counts their
    new state instead of a new order; `besides`: the new entries' ids. One read of the journey's
    order index, only for views that let orders go; a refund months later costs that, not a
    derivation of the whole journey. Returns the customers whose views cannot recall (they let
    waiting refunds go, so an order cannot be recalled as they counted it): derive those whole."""
    unknown = {
        c: ids for c, recall in recalls.items() if (ids := recall.view.unknown_orders(recall.new))
    }
    overflowed = {c for c in unknown if recalls[c].view.refunds_overflowed}
    unknown = {c: ids for c, ids in unknown.items() if c not in overflowed}
    if not unknown:
        return overflowed
    owner = {alias: c for c in unknown for alias in recalls[c].aliases}
    recalled: dict[str, list[JourneyEntry]] = defaultdict(list)
    for entry in await store.order_entries(set().union(*unknown.values()), besides):
        # An order id on another customer's journey (a pick-up by someone else) is theirs.
        if (customer := owner.get(entry.customer_id)) is None:
            continue
        through = recalls[customer].through
        if through is None or entry.sort_key() <= through:
            recalled[customer].append(entry)
    for customer, entries in recalled.items():
        recalls[customer].view.recall_orders(entries)
    return overflowed


def _horizon(profile: StoredProfile, behind: timedelta) -> datetime | None:
    """Where a checkpoint of the profile's journey goes: `behind` its stored view's last entry
    (none without one)."""
    last = profile.view.last_seen if profile.view is not None else None
    return last - behind if last is not None else None


def _rungs(profile: StoredProfile, behind: timedelta) -> list[datetime]:
    """Where a derivation from the beginning keeps the earlier checkpoints (`ladder`), oldest
    first: just before two, four, ... 2 ** `EARLIER_LEVELS` `behind` back from the stored view's
    last entry, each at least that far back, so one in each of the ladder's doublings but the
    oldest (the first between one and two `behind` back, the checkpoint's)."""
    last = profile.view.last_seen if profile.view is not None else None
    if last is None:
        return []
    return [last - behind * 2**level for level in range(EARLIER_LEVELS, 0, -1)]


class _Fold:
    """A view folded entry by entry in journey order, keeping a copy of it (a checkpoint) as it
    stood before the first entry past `horizon`, or before the entry at `since` (the earliest
    late one) when that comes first, if `CHECKPOINT_AFTER` entries came before (`MOVED_AFTER`
    times that to the horizon from a `checkpoint`): a till that sends hours of sales late folds
    its next batches from there."""

    def __init__(
        self,
        view: ProfileView,
        window: timedelta,
        horizon: datetime | None,
        checkpoint: Checkpoint | None = None,
        *,
        since: tuple[datetime, str] | None = None,
        rungs: Sequence[datetime] = (),
    ) -> None:
        self._view = view
        self._window = window
        self._horizon = horizon
        self._since = since
        self._rungs = list(rungs)
        self._folded = 0
        self._last: JourneyEntry | None = None
        self._checkpoint = checkpoint
        self._moves = checkpoint is not None
        self._kept: ProfileView | None = None
        self._kept_rungs: list[tuple[Checkpoint, ProfileView]] = []

    def add(self, entry: JourneyEntry) -> None:
        past_horizon = self._horizon is not None and entry.occurred_at > self._horizon
        if past_horizon or (self._since is not None and entry.sort_key() >= self._since):
            moved_after = MOVED_AFTER if past_horizon and self._moves else 1
            if self._folded >= CHECKPOINT_AFTER * moved_after:
                self._keep()
            if past_horizon or self._checkpoint is not None:
                # Past it later entries are no place for one, and one (kept or folded from)
                # before the late entry covers the till's next ones: moving it on would not.
                # The earlier ones come before it.
                self._horizon = None
                self._rungs = []
            self._since = None
        elif self._rungs and entry.occurred_at > self._rungs[0]:
            self._rung(entry)
        self._view.apply(entry, self._window)
        self._folded += 1
        self._last = entry

    def _rung(self, entry: JourneyEntry) -> None:
        """Keep a copy of the view as it stands, before `entry`, as one of the earlier
        checkpoints (`ladder`), once the fold passed a rung's time."""
        while self._rungs and entry.occurred_at > self._rungs[0]:
            self._rungs.pop(0)
        if self._folded >= CHECKPOINT_AFTER and (last := self._covered()) is not None:
            self._kept_rungs.append(_copy_through(last, self._view))

    def _keep(self) -> None:
        """Keep a copy of the view as it stands, if it holds nothing after the last entry."""
        if (last := self._covered()) is not None:
            self._checkpoint, self._kept = _copy_through(last, self._view)

    def _covered(self) -> JourneyEntry | None:
        """The last entry folded, if the view's last time seen reaches it: only then is every
        entry dated up to it that comes later late, and derived again rather than folded on
        top (an agent's done mark moves no time seen: a checkpoint after it would be passed
        by an entry dated between the two, and miss it)."""
        last, seen = self._last, self._view.last_seen
        return last if last is not None and seen is not None and last.occurred_at <= seen else None

    async def done(self, store: Store, profile: StoredProfile) -> Derived:
        """The view, finished, naming its checkpoint: a new one is kept first, so a view is
        never saved naming one not there (one deleted later, by a save that overtook nothing,
        makes the next derivation start from the beginning)."""
        kept = [*self._kept_rungs]
        if self._kept is not None and self._checkpoint is not None:
            kept.append((self._checkpoint, self._kept))
        await _keep_all(store, profile, kept)
        DERIVED_ENTRIES.inc(self._folded)
        earlier = [rung for rung, _ in self._kept_rungs]
        current = self._checkpoint
        if current is None and earlier:  # none kept at the horizon: the youngest rung is it
            current = earlier.pop()
        return Derived(self._view.finish(), current, earlier=tuple(earlier))


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
