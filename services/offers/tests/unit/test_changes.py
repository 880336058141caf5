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
