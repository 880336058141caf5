"""Which entries and identifiers a split gives back: the rules of `domain.split`, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from customer_profile.domain.journey import JourneyEntry
from customer_profile.domain.split import SplitSeeds, plan_split
from customer_profile.testing import stored_entry

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
MERGED_AT = T0 + timedelta(minutes=10)
ANA, BO = "ana", "bo"
A, B = "email:ana@example.com", "phone:+34612345678"


def entry(event_id: str, customer: str, minute: int, **identifiers: str) -> JourneyEntry:
    at = T0 + timedelta(minutes=minute)
    return stored_entry(event_id, customer, at, kind="page_view", identifiers=identifiers)


def undo_seeds(owned: set[str], **overrides: object) -> SplitSeeds:
    values: dict[str, object] = {
        "restored_aliases": frozenset({BO}),
        "restored_keys": frozenset({B}),
        "kept_keys": frozenset({A}),
        "owned": frozenset(owned),
        "fixed_before": MERGED_AT,
        "linking_event": "link",
    }
    values.update(overrides)
    return SplitSeeds(**values)  # type: ignore[arg-type]


def test_undoing_a_merge_gives_back_what_came_before_and_what_only_their_identifiers_explain() -> (
    None
):
    journey = [
        entry("ana-1", ANA, 1, email="ana@example.com"),
        entry("bo-1", BO, 2, phone="+34612345678"),
        entry("link", ANA, 10, email="ana@example.com", phone="+34612345678"),
        entry("bo-2", ANA, 11, phone="+34612345678", whatsapp_id="34612345678"),
        entry("bo-3", ANA, 12, whatsapp_id="34612345678"),
        entry("ana-2", ANA, 13, email="ana@example.com", device_id="d-1"),
    ]
    owned = {A, B, "whatsapp_id:34612345678", "device_id:d-1"}

    plan = plan_split(journey, undo_seeds(owned))

    assert plan.restored_entries == ["bo-1", "bo-2", "bo-3"]
    assert plan.restored_keys == {B, "whatsapp_id:34612345678"}
    assert plan.kept_keys == {A, "device_id:d-1"}
    assert plan.ambiguous == []


def test_an_entry_with_both_sides_identifiers_stays_and_is_reported() -> None:
    journey = [
        entry("link", ANA, 10, email="ana@example.com", phone="+34612345678"),
        entry("again", ANA, 11, email="ana@example.com", phone="+34612345678"),
    ]

    plan = plan_split(journey, undo_seeds({A, B}))

    assert plan.restored_entries == []
    assert plan.ambiguous == ["again"], "the linking event itself is not ambiguous: it is known"


def test_identifiers_not_held_any_more_decide_nothing() -> None:
    journey = [entry("x", ANA, 11, phone="+34612345678", email="test@test.com")]

    plan = plan_split(journey, undo_seeds({A, B}))

    assert plan.restored_entries == ["x"]
    assert plan.restored_keys == {B}, "a blocked or released value is never handed over"


def test_entries_recorded_before_the_merge_keep_the_profile_they_were_stored_under() -> None:
    journey = [entry("old", ANA, 1, email="ana@example.com", phone="+34612345678")]

    plan = plan_split(journey, undo_seeds({A, B}))

    assert plan.restored_entries == []


def test_a_split_by_identifiers_replays_the_whole_journey() -> None:
    journey = [
        entry("1", ANA, 1, email="ana@example.com"),
        entry("2", ANA, 2, email="ana@example.com", phone="+34612345678"),
        entry("3", ANA, 3, phone="+34612345678"),
        entry("4", ANA, 4, phone="+34612345678", device_id="d-2"),
        entry("5", ANA, 5, device_id="d-2"),
    ]
    seeds = SplitSeeds(
        restored_aliases=frozenset({"new"}),
        restored_keys=frozenset({B}),
        kept_keys=frozenset(),
        owned=frozenset({A, B, "device_id:d-2"}),
    )

    plan = plan_split(journey, seeds)

    assert plan.restored_entries == ["3", "4", "5"]
    assert plan.ambiguous == ["2"]
    assert plan.restored_keys == {B, "device_id:d-2"}
    assert plan.kept_keys == {A}
