"""The offers book without Kafka: whole versions only, compaction while catching up, per-key
versions whatever the order."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import permutations

import pytest
from pydantic_extra_types.currency_code import ISO4217

from hilo.offers import book as book_module
from hilo.offers.book import OffersBook, parse_record
from hilo.offers.model import (
    OfferRecord,
    PricePoint,
    PriceSchedule,
    Promotion,
    PromotionKind,
    price_key,
    promotion_key,
)

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
EUR = ISO4217("EUR")


def price(sku: str, amount: str, version: int, *, part: int = 1, parts: int = 1) -> OfferRecord:
    schedule = PriceSchedule(
        sku=sku,
        currency=EUR,
        points=[
            PricePoint(amount=Decimal(amount), tax_included=True, valid_from=T0, version=version)
        ],
    )
    return OfferRecord(
        key=price_key(sku, "EUR"),
        version=version,
        part=part,
        parts=parts,
        changed_at=T0,
        changed_by="test",
        price=schedule,
    )


def promotion(promotion_id: str, version: int, *, active: bool = True) -> OfferRecord:
    promo = Promotion(
        id=promotion_id,
        name="Gold 10%",
        kind=PromotionKind.PERCENT_OFF,
        skus=["SKU-1"],
        currency=EUR,
        percent=Decimal(10),
        valid_from=T0,
        valid_until=T0 + timedelta(days=30),
        active=active,
    )
    return OfferRecord(
        key=promotion_key(promotion_id),
        version=version,
        part=1,
        parts=1,
        changed_at=T0,
        changed_by="test",
        promotion=promo,
    )


def amounts(book: OffersBook) -> dict[str, Decimal]:
    return {
        sku: schedule.points[-1].amount for (sku, _), schedule in book.snapshot().prices.items()
    }


def live_book() -> OffersBook:
    book = OffersBook()
    book.caught_up()
    return book


def test_a_version_applies_only_once_all_its_parts_arrived() -> None:
    book = live_book()
    book.apply(price("A", "1.00", 1))
    parts = [price(sku, "2.00", 2, part=n, parts=3) for n, sku in enumerate("ABC", 1)]

    book.apply(parts[0])
    book.apply(parts[2])
    assert amounts(book) == {"A": Decimal("1.00")}
    assert book.snapshot().version == 1
    assert book.pending_versions() == [2]

    book.apply(parts[1])
    assert amounts(book) == dict.fromkeys("ABC", Decimal("2.00"))
    assert book.snapshot().version == 2
    assert book.pending_versions() == []


def test_live_a_higher_version_does_not_release_an_incomplete_one() -> None:
    book = live_book()
    book.apply(price("A", "2.00", 2, part=1, parts=2))
    book.apply(price("C", "3.00", 3))

    assert amounts(book) == {"C": Decimal("3.00")}
    assert book.pending_versions() == [2]


def test_catching_up_a_higher_version_releases_the_parts_compaction_left() -> None:
    book = OffersBook()
    # Version 2 touched A and B; version 3 changed B again, so compaction dropped 2's B.
    book.apply(price("A", "2.00", 2, part=1, parts=2))
    book.apply(price("B", "3.00", 3))

    assert amounts(book) == {"A": Decimal("2.00"), "B": Decimal("3.00")}
    assert book.snapshot().version == 3


def test_at_the_end_only_versions_below_the_highest_read_are_released() -> None:
    book = OffersBook()
    book.apply(price("A", "1.00", 1))
    book.apply(price("B", "5.00", 5))
    book.apply(price("C", "4.00", 4, part=1, parts=2))  # read after 5: superseded parts
    book.apply(price("D", "6.00", 6, part=1, parts=2))  # the highest: being written now

    book.caught_up()

    assert amounts(book) == {"A": Decimal("1.00"), "B": Decimal("5.00"), "C": Decimal("4.00")}
    assert book.pending_versions() == [6]
    book.apply(price("E", "6.00", 6, part=2, parts=2))
    assert set(amounts(book)) == set("ABCDE")
    assert book.snapshot().version == 6


@pytest.mark.parametrize("order", list(permutations(range(3))))
def test_per_key_the_highest_version_wins_whatever_the_order(order: tuple[int, ...]) -> None:
    records = [price("A", "1.00", 1), price("A", "2.00", 2), price("A", "3.00", 3)]
    book = live_book()
    for index in order:
        book.apply(records[index])

    assert amounts(book) == {"A": Decimal("3.00")}
    assert book.snapshot().version == 3


def test_a_version_published_twice_changes_nothing() -> None:
    book = live_book()
    first = [price(sku, "2.00", 2, part=n, parts=2) for n, sku in enumerate("AB", 1)]
    for record in first:
        book.apply(record)
    book.apply(price("A", "3.00", 3))
    before = book.snapshot()

    for record in first:
        book.apply(record)

    assert amounts(book) == {"A": Decimal("3.00"), "B": Decimal("2.00")}
    assert book.snapshot() is before, "nothing changed, the same snapshot"
    assert book.pending_versions() == []


def test_retired_promotions_are_left_out_and_snapshots_are_immutable() -> None:
    book = live_book()
    book.apply(promotion("gold", 1))
    book.apply(promotion("silver", 2))
    held = book.snapshot()

    book.apply(promotion("gold", 3, active=False))

    assert set(book.snapshot().promotions) == {"silver"}
    assert set(held.promotions) == {"gold", "silver"}, "a held snapshot does not change"
    with pytest.raises(TypeError):
        held.promotions["x"] = held.promotions["gold"]  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        held.version = 9  # type: ignore[misc]


def test_unreadable_or_inconsistent_records_are_skipped() -> None:
    good = price("A", "1.00", 1)
    wrong_key = good.model_copy(update={"key": price_key("B", "EUR")})

    assert parse_record(good.model_dump_json().encode()) == good
    assert parse_record(b"{not json") is None
    assert parse_record(None) is None
    assert parse_record(wrong_key.model_dump_json().encode()) is None


def test_the_versions_applied_are_remembered_within_a_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A number per version, kept for ever by every process that prices (a price feed writes a
    version a minute): only the latest are listed, and a part of an older one, read again, is
    a stray part that per key cannot go back."""
    monkeypatch.setattr(book_module, "APPLIED_KEPT", 10, raising=False)
    book = live_book()
    for version in range(1, 101):
        book.apply(price("A", f"{version}.00", version))

    book.apply(price("B", "9.00", 3, part=1, parts=2))  # long forgotten: taken, not waiting

    assert len(book._applied) <= 20
    assert amounts(book) == {"A": Decimal("100.00"), "B": Decimal("9.00")}
    assert book.pending_versions() == []


def test_a_key_whose_last_record_is_older_than_one_read_before_is_noted_until_it_comes_again() -> (
    None
):
    """A publish that timed out lands after a later version of its key: compaction would keep
    the older record. The book names the key's latest record until one as high is read last."""
    book = OffersBook()
    book.apply(price("SKU-1", "10.00", 1))
    book.apply(price("SKU-1", "9.00", 2))
    book.apply(price("SKU-2", "5.00", 3))
    assert book.overtaken_on_topic() == []

    book.apply(price("SKU-1", "10.00", 1))
    assert book.overtaken_on_topic() == [price("SKU-1", "9.00", 2)]
    assert book.snapshot().prices[("SKU-1", "EUR")].points[-1].amount == Decimal("9.00")

    book.apply(price("SKU-1", "9.00", 2))
    assert book.overtaken_on_topic() == []


def test_a_key_overtaken_while_its_latest_version_waits_for_parts_is_listed_once_it_applies() -> (
    None
):
    """Version 2 changes SKU-1 and SKU-2 in two parts; an older record of SKU-1 lands between
    them. Until version 2 is whole the book's SKU-1 is version 1, which is no record to
    publish again; once whole, version 2's SKU-1 is."""
    book = OffersBook()
    book.apply(price("SKU-1", "10.00", 1))
    book.caught_up()
    book.apply(price("SKU-1", "9.00", 2, part=1, parts=2))
    book.apply(price("SKU-1", "10.00", 1))
    assert book.overtaken_on_topic() == []

    book.apply(price("SKU-2", "5.00", 2, part=2, parts=2))
    assert book.overtaken_on_topic() == [price("SKU-1", "9.00", 2, part=1, parts=2)]
