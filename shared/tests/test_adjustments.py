"""Bad input never loses the good part: what the contract keeps, what it replaces, and how the
event says so (fields and reasons, never values)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from hilo.contract import (
    EARLIEST_EVENT_TIME,
    MAX_ADJUSTMENTS,
    MAX_FUTURE_SKEW,
    SECONDARY_CONTACTS,
    Adjustment,
    DropInvalid,
    IdentifierKind,
    Identifiers,
    Interaction,
    bound_event_time,
    new_interaction,
    parse_interaction,
    rfc2822_time,
    unix_time,
)
from hilo.contract.schema import interaction_json_schema
from hilo.testkit.contract_check import validate_against_schema
from hilo.testkit.samples import sample_interaction, sample_payloads

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
SKEW = timedelta(minutes=5)


def received_now(occurred_at: datetime) -> Interaction:
    """An interaction as a consumer may read it: times not bounded yet."""
    return sample_interaction().model_copy(update={"occurred_at": occurred_at, "received_at": NOW})


def occurred_at_bounded(occurred_at: datetime) -> tuple[datetime, list[Adjustment]]:
    bounded = bound_event_time(received_now(occurred_at), max_future_skew=SKEW, now=NOW)
    return bounded.occurred_at, bounded.adjustments


def test_a_time_within_the_skew_is_kept_as_it_is() -> None:
    for occurred in (NOW - timedelta(days=400), NOW, NOW + SKEW):
        assert occurred_at_bounded(occurred) == (occurred, [])


def test_a_time_beyond_the_skew_becomes_the_receipt_time_and_says_why() -> None:
    assert occurred_at_bounded(NOW + SKEW + timedelta(seconds=1)) == (
        NOW,
        [Adjustment(field="occurred_at", reason="in_the_future")],
    )


@pytest.mark.parametrize(
    "occurred",
    [
        datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1))),
        datetime(1970, 1, 1, tzinfo=UTC),
        EARLIEST_EVENT_TIME - timedelta(microseconds=1),
    ],
)
def test_a_time_before_2000_is_a_broken_clock_and_becomes_the_receipt_time(
    occurred: datetime,
) -> None:
    assert occurred_at_bounded(occurred) == (
        NOW,
        [Adjustment(field="occurred_at", reason="too_old")],
    )


def test_the_end_of_the_calendar_is_in_the_future_not_an_overflow() -> None:
    far = datetime(9999, 12, 31, 23, 59, tzinfo=timezone(timedelta(hours=-23)))

    assert occurred_at_bounded(far)[1] == [Adjustment(field="occurred_at", reason="in_the_future")]


def test_bounding_returns_a_copy_and_is_idempotent() -> None:
    original = received_now(NOW + timedelta(days=1))

    once = bound_event_time(original, max_future_skew=SKEW, now=NOW)
    twice = bound_event_time(once, max_future_skew=SKEW, now=NOW + timedelta(hours=1))

    assert original.occurred_at == NOW + timedelta(days=1)
    assert original.adjustments == []
    assert twice == once


def test_a_receipt_time_out_of_bounds_too_falls_back_to_now() -> None:
    broken = received_now(NOW + timedelta(days=2)).model_copy(
        update={"received_at": NOW + timedelta(days=1)}
    )

    assert bound_event_time(broken, max_future_skew=SKEW, now=NOW).occurred_at == NOW


def test_the_adjustment_list_stays_within_its_maximum() -> None:
    full = received_now(NOW + timedelta(days=1)).model_copy(
        update={"adjustments": [Adjustment(field="identifiers.phone", reason="invalid_phone")] * 50}
    )

    bounded = bound_event_time(full, max_future_skew=SKEW, now=NOW)

    assert len(bounded.adjustments) == MAX_ADJUSTMENTS
    assert bounded.adjustments[-1] == Adjustment(field="occurred_at", reason="in_the_future")
    assert parse_interaction(bounded.model_dump_json()) == bounded


def test_new_interaction_bounds_with_the_services_skew() -> None:
    received = datetime.now(UTC)

    def built(occurred_at: datetime | None) -> tuple[datetime, list[Adjustment]]:
        interaction = new_interaction(
            channel="web",
            instance="test",
            provider_event_id="e-1",
            identifiers=Identifiers(email="ana@example.com"),
            payload=sample_payloads()["custom"],
            occurred_at=occurred_at,
            received_at=received,
        )
        return interaction.occurred_at, interaction.adjustments

    an_hour_ahead = received + timedelta(hours=1)
    token = MAX_FUTURE_SKEW.set(timedelta(hours=2))
    try:
        assert built(an_hour_ahead) == (an_hour_ahead, [])
    finally:
        MAX_FUTURE_SKEW.reset(token)
    assert built(an_hour_ahead) == (
        received,
        [Adjustment(field="occurred_at", reason="in_the_future")],
    )
    assert built(None) == (received, [Adjustment(field="occurred_at", reason="unreadable")])


def test_events_without_adjustments_serialise_as_before() -> None:
    document = json.loads(sample_interaction().model_dump_json())

    assert "adjustments" not in document
    assert "adjustments" not in interaction_json_schema()["required"]
    assert parse_interaction(json.dumps(document)).adjustments == []


def test_adjustments_are_serialised_and_validate_against_the_schema() -> None:
    adjusted = sample_interaction().model_copy(
        update={"adjustments": [Adjustment(field="identifiers.phone", reason="invalid_phone")]}
    )
    document = json.loads(adjusted.model_dump_json())

    validate_against_schema(document)
    assert document["adjustments"] == [{"field": "identifiers.phone", "reason": "invalid_phone"}]
    assert parse_interaction(adjusted.model_dump_json()) == adjusted


@pytest.mark.parametrize(
    "adjustment",
    [
        {"field": "identifiers.phone", "reason": "invalid_phone", "value": "+34 612"},
        {"field": "identifiers.email", "reason": "ana@example.com is invalid"},
        {"field": "Ana García", "reason": "invalid_name"},
    ],
)
def test_an_adjustment_holds_a_field_path_and_a_reason_code_never_a_value(
    adjustment: dict[str, str],
) -> None:
    with pytest.raises(ValidationError):
        Adjustment.model_validate(adjustment)


def identifiers_dropping(
    values: dict[str, str], kinds: frozenset[IdentifierKind] = SECONDARY_CONTACTS
) -> tuple[Identifiers, list[Adjustment]]:
    policy = DropInvalid(kinds)
    return Identifiers.model_validate(values, context=policy.context()), policy.dropped


def test_an_invalid_secondary_identifier_is_dropped_and_named() -> None:
    identifiers, dropped = identifiers_dropping(
        {"customer_id": "C-1", "email": "Ana@Example.com", "phone": "(+34) 612-345-678"}
    )

    assert (identifiers.customer_id, identifiers.email, identifiers.phone) == (
        "C-1",
        "ana@example.com",
        None,
    )
    assert dropped == [Adjustment(field="identifiers.phone", reason="invalid_phone")]


def test_an_invalid_primary_identifier_still_refuses_without_echoing_it() -> None:
    with pytest.raises(ValidationError) as refused:
        identifiers_dropping({"customer_id": " ", "email": "ana@example.com"})

    assert [error["loc"] for error in refused.value.errors()] == [("customer_id",)]


def test_with_nothing_valid_left_the_original_reasons_refuse() -> None:
    with pytest.raises(ValidationError) as refused:
        identifiers_dropping({"email": "ana@@example", "phone": "not a phone"})

    assert sorted(error["type"] for error in refused.value.errors()) == ["email", "phone"]
    assert "ana@@example" not in str(refused.value)


def test_without_a_policy_an_invalid_identifier_refuses_as_before() -> None:
    with pytest.raises(ValidationError):
        Identifiers.model_validate({"customer_id": "C-1", "phone": "(+34) 612-345-678"})


@pytest.mark.parametrize(
    ("value", "per_second", "expected"),
    [
        ("1749416383", 1, datetime(2025, 6, 8, 20, 59, 43, tzinfo=UTC)),
        (1583173666767, 1000, datetime(2020, 3, 2, 18, 27, 46, 767000, tzinfo=UTC)),
        ("yesterday", 1, None),
        ("", 1, None),
        ("nan", 1, None),
        ("1e400", 1, None),
        (10**20, 1000, None),
        ("9" * 5000, 1, None),
    ],
)
def test_unix_times_are_read_or_reported_unreadable(
    value: str | int, per_second: int, expected: datetime | None
) -> None:
    assert unix_time(value, per_second=per_second) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Mon, 23 Nov 2026 18:04:12 +0100", datetime(2026, 11, 23, 17, 4, 12, tzinfo=UTC)),
        ("Mon, 23 Nov 2026 18:04:12 GMT", datetime(2026, 11, 23, 18, 4, 12, tzinfo=UTC)),
        # UTC, the sender's own zone unknown (RFC 5322 3.3): a time, not an unreadable one.
        ("Mon, 23 Nov 2026 18:04:12 -0000", datetime(2026, 11, 23, 18, 4, 12, tzinfo=UTC)),
        # No zone, or one Python does not know: hours off if read as UTC.
        ("Mon, 23 Nov 2026 18:04:12", None),
        ("Mon, 23 Nov 2026 18:04:12 CEST", None),
        ("yesterday", None),
        ("Mon, 23 Nov 99999999999 18:04:12 +0000", None),
        ("", None),
        (None, None),
    ],
)
def test_rfc_2822_dates_are_read_or_reported_unreadable(
    value: str | None, expected: datetime | None
) -> None:
    parsed = rfc2822_time(value)

    assert parsed == expected
    assert parsed is None or parsed.tzinfo is not None


def test_a_sender_known_to_write_utc_has_its_zone_less_dates_read_as_utc() -> None:
    assert rfc2822_time("Mon, 23 Nov 2026 18:04:12", zone_less_as_utc=True) == datetime(
        2026, 11, 23, 18, 4, 12, tzinfo=UTC
    )
