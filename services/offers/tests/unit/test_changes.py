"""Building a version's records: schedules keep their history, newest points win ties."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from pydantic import ValidationError

from hilo.offers.model import OfferRecord
from offers.changes import MAX_POINTS, NewPrice, price_keys, price_records

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def new(sku: str, amount: str, *, days: int | None = None, currency: str = "EUR") -> NewPrice:
    return NewPrice.model_validate(
        {
            "sku": sku,
            "currency": currency,
            "amount": amount,
            "tax_included": True,
            "valid_from": None if days is None else T0 + timedelta(days=days),
        }
    )


def build(
    prices: list[NewPrice], current: dict[str, OfferRecord], version: int
) -> list[OfferRecord]:
    return price_records(prices, current, version=version, at=T0, by="test")


def test_one_record_per_sku_and_currency_numbered_in_order() -> None:
    prices = [
        new("A", "1.00"),
        new("B", "2.00"),
        new("A", "1.50", days=3),
        new("A", "9", currency="USD"),
    ]

    records = build(prices, {}, 4)

    assert price_keys(prices) == ["price:A:EUR", "price:B:EUR", "price:A:USD"]
    assert [(r.key, r.part, r.parts, r.version) for r in records] == [
        ("price:A:EUR", 1, 3, 4),
        ("price:B:EUR", 2, 3, 4),
        ("price:A:USD", 3, 3, 4),
    ]
    a = records[0].price
    assert a is not None
    assert [(p.amount, p.valid_from) for p in a.points] == [
        (Decimal("1.00"), T0),
        (Decimal("1.50"), T0 + timedelta(days=3)),
    ], "valid_from defaults to the change's time"


def test_a_schedule_keeps_earlier_points_and_a_new_point_replaces_one_starting_with_it() -> None:
    first = build([new("A", "1.00", days=0), new("A", "2.00", days=5)], {}, 1)

    second = build(
        [new("A", "3.00", days=5), new("A", "4.00", days=9)], {first[0].key: first[0]}, 2
    )

    schedule = second[0].price
    assert schedule is not None
    assert [(p.amount, p.version) for p in schedule.points] == [
        (Decimal("1.00"), 1),
        (Decimal("3.00"), 2),
        (Decimal("4.00"), 2),
    ]
    assert schedule.at(T0 + timedelta(days=6)) == schedule.points[1]


def test_a_schedule_keeps_the_latest_500_points() -> None:
    current: dict[str, OfferRecord] = {}
    for version in range(1, MAX_POINTS + 3):
        record = build([new("A", f"{version}.00", days=version)], current, version)[0]
        current = {record.key: record}

    schedule = current["price:A:EUR"].price
    assert schedule is not None
    assert len(schedule.points) == MAX_POINTS
    assert schedule.points[0].version == 3, "the oldest went first"


@pytest.mark.parametrize("amount", [19.99, "19,99", "-1", "NaN", "1e400", "0.00001"])
def test_money_is_an_exact_decimal_string(amount: object) -> None:
    with pytest.raises(ValidationError) as raised:
        NewPrice.model_validate(
            {"sku": "A", "currency": "EUR", "amount": amount, "tax_included": True}
        )

    assert [e["loc"] for e in raised.value.errors()] == [("amount",)]
    assert str(amount) not in str(raised.value)


def test_whole_numbers_are_exact_too() -> None:
    price = NewPrice.model_validate(
        {"sku": "A", "currency": "JPY", "amount": 1200, "tax_included": True}
    )

    assert price.amount == Decimal(1200)


def test_a_price_from_now_that_lost_the_race_for_its_version_is_still_the_one_in_force() -> None:
    """Two merchandisers at once: B, stamped 5 ms after A, took version 7; A, built again on top
    of it as version 8, was stamped before B's point and never came in force (found by a
    review). From now means from no earlier than the point in force when it is built."""
    b_stamp = T0 + timedelta(milliseconds=5)
    [b] = price_records([new("A", "45.00")], {}, version=7, at=b_stamp, by="b")
    built = b_stamp + timedelta(milliseconds=3)

    [a] = price_records([new("A", "50.00")], {b.key: b}, version=8, at=T0, by="a", built_at=built)

    assert a.price is not None
    in_force = a.price.at(built + timedelta(seconds=1))
    assert in_force is not None
    assert (in_force.amount, in_force.version) == (Decimal("50.00"), 8)
    assert [p.version for p in a.price.points] == [8], "B's point, tied and older, is dropped"


def test_a_price_from_now_keeps_a_scheduled_future_point_after_it() -> None:
    """A point scheduled for next week is not in force when the version is built: from now is
    now, and next week's point still takes over then."""
    [scheduled] = price_records([new("A", "60.00", days=7)], {}, version=1, at=T0, by="b")

    [now] = price_records([new("A", "50.00")], {scheduled.key: scheduled}, version=2, at=T0, by="a")

    assert now.price is not None
    assert [(p.valid_from, p.version) for p in now.price.points] == [
        (T0, 2),
        (T0 + timedelta(days=7), 1),
    ]
