"""The pricing engine: every promotion kind, the stacking and rounding rules the module
docstring states, and properties that must hold for any basket (totals add up to the minor unit,
no line below zero, the same answer in any line order)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, localcontext
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic_extra_types.currency_code import ISO4217

from hilo.offers.model import (
    Conditions,
    CustomerFacts,
    OffersSnapshot,
    PricedLine,
    PricedLines,
    PricePoint,
    PriceSchedule,
    Promotion,
    PromotionKind,
    QuoteLine,
    Stacking,
)
from hilo.offers.money import (
    CurrencyError,
    format_amount,
    minor_unit,
    minor_units,
    round_money,
    zero,
)
from hilo.offers.pricing import merge_lines, price_lines, qualifying, quote_id

START = datetime(2026, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
END = datetime(2027, 1, 1, tzinfo=UTC)
NOBODY = CustomerFacts()


def schedule(
    sku: str,
    *amounts: str,
    currency: str = "EUR",
    tax_included: bool = True,
    step: timedelta = timedelta(days=30),
) -> PriceSchedule:
    """Prices for `sku`, the first from START, each next one `step` later."""
    points = [
        PricePoint(
            amount=Decimal(amount),
            tax_included=tax_included,
            valid_from=START + index * step,
            version=index + 1,
        )
        for index, amount in enumerate(amounts)
    ]
    return PriceSchedule(sku=sku, currency=ISO4217(currency), points=points)


def promotion(promotion_id: str, kind: str, *skus: str, **fields: Any) -> Promotion:
    defaults: dict[str, Any] = {
        "name": promotion_id.replace("-", " ").title(),
        "currency": "EUR",
        "valid_from": START,
        "valid_until": END,
    }
    return Promotion.model_validate(
        {**defaults, **fields, "id": promotion_id, "kind": kind, "skus": list(skus)}
    )


def snapshot(
    prices: Sequence[PriceSchedule], promotions: Sequence[Promotion] = (), version: int = 7
) -> OffersSnapshot:
    return OffersSnapshot(
        version=version,
        prices={(p.sku, p.currency): p for p in prices},
        promotions={p.id: p for p in promotions},
    )


def quote(
    offers: OffersSnapshot,
    *lines: tuple[str, int],
    currency: str = "EUR",
    channel: str = "web",
    facts: CustomerFacts = NOBODY,
    at: datetime = NOW,
) -> PricedLines:
    return price_lines(
        offers,
        [QuoteLine(sku=sku, quantity=quantity) for sku, quantity in lines],
        currency=currency,
        channel=channel,
        facts=facts,
        at=at,
    )


def line_of(result: PricedLines, sku: str) -> PricedLine:
    return next(line for line in result.lines if line.sku == sku)


def applied(result: PricedLines, sku: str) -> list[tuple[str, str, str]]:
    """(promotion id, discount, why) on the line, in the order they applied."""
    return [(p.id, str(p.discount), p.why) for p in line_of(result, sku).promotions]


# --- money ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("currency", "digits"),
    [("EUR", 2), ("USD", 2), ("JPY", 0), ("KRW", 0), ("BHD", 3), ("KWD", 3), ("IQD", 3)],
)
def test_minor_units_follow_iso_4217(currency: str, digits: int) -> None:
    assert minor_units(currency) == digits
    assert minor_unit(currency) == Decimal(1).scaleb(-digits)


@pytest.mark.parametrize("currency", ["ZZZ", "eur", "XAU", "XXX"])
def test_no_minor_unit_is_an_error(currency: str) -> None:
    with pytest.raises(CurrencyError):
        minor_units(currency)


@pytest.mark.parametrize(
    ("amount", "currency", "rounded"),
    [
        ("0.005", "EUR", "0.01"),
        ("0.025", "EUR", "0.03"),  # half up, where half even would give 0.02
        ("0.0049", "EUR", "0.00"),
        ("59.9", "EUR", "59.90"),
        ("2.5", "JPY", "3"),
        ("100.00", "JPY", "100"),
        ("1.0005", "BHD", "1.001"),
        ("1.0004", "BHD", "1.000"),
    ],
)
def test_round_money_half_up_to_the_minor_unit(amount: str, currency: str, rounded: str) -> None:
    assert str(round_money(Decimal(amount), currency)) == rounded


def test_zero_and_format_amount() -> None:
    assert str(zero("EUR")) == "0.00"
    assert str(zero("JPY")) == "0"
    assert format_amount(Decimal("99"), "EUR") == "99.00"
    assert format_amount(Decimal("0.1234"), "EUR") == "0.1234"
    assert format_amount(Decimal("1000"), "JPY") == "1000"


# --- list prices -----------------------------------------------------------------------------


def test_duplicate_lines_merge_in_order_of_first_appearance() -> None:
    offers = snapshot([schedule("A", "10.00"), schedule("B", "5.00")])
    result = quote(offers, ("B", 1), ("A", 1), ("B", 2))
    assert [(line.sku, line.quantity) for line in result.lines] == [("B", 3), ("A", 1)]
    assert result.subtotal == Decimal("25.00")


def test_a_sku_without_a_price_in_force_is_unpriced_and_counts_in_no_total() -> None:
    later = PriceSchedule(
        sku="LATER",
        currency=ISO4217("EUR"),
        points=[PricePoint(amount=Decimal(1), tax_included=True, valid_from=END, version=1)],
    )
    offers = snapshot([schedule("A", "10.00"), later, schedule("USD-ONLY", "3.00", currency="USD")])
    result = quote(offers, ("A", 1), ("NONE", 2), ("LATER", 1), ("USD-ONLY", 1))
    assert [u.sku for u in result.unpriced] == ["NONE", "LATER", "USD-ONLY"]
    assert {u.reason for u in result.unpriced} == {"no_price"}
    assert [line.sku for line in result.lines] == ["A"]
    assert result.total == Decimal("10.00")


def test_the_price_in_force_at_the_quotes_time() -> None:
    offers = snapshot([schedule("A", "10.00", "12.00", step=timedelta(days=100))])
    change = START + timedelta(days=100)
    before = quote(offers, ("A", 1), at=change - timedelta(seconds=1))
    assert line_of(before, "A").unit_price == Decimal("10.00")
    assert line_of(quote(offers, ("A", 1), at=change), "A").unit_price == Decimal("12.00")
    assert quote(offers, ("A", 1), at=START - timedelta(seconds=1)).unpriced[0].sku == "A"


def test_a_list_price_with_more_decimals_than_the_currency_rounds_half_up_first() -> None:
    offers = snapshot([schedule("A", "0.125"), schedule("B", "0.1234")])
    result = quote(offers, ("A", 3), ("B", 1))
    assert str(line_of(result, "A").unit_price) == "0.13"
    assert str(line_of(result, "A").list_total) == "0.39"
    assert str(line_of(result, "B").unit_price) == "0.12"


def test_tax_included_is_shown_per_line_and_totals_add_lines_as_they_are() -> None:
    offers = snapshot([schedule("GROSS", "12.10"), schedule("NET", "10.00", tax_included=False)])
    result = quote(offers, ("GROSS", 1), ("NET", 1))
    assert line_of(result, "GROSS").tax_included is True
    assert line_of(result, "NET").tax_included is False
    assert result.total == Decimal("22.10")


def test_the_answer_echoes_the_question_and_the_offers_version() -> None:
    result = quote(snapshot([schedule("A", "1.00")], version=42), ("A", 1), channel="store")
    assert (result.offers_version, result.currency, result.channel, result.at) == (
        42,
        "EUR",
        "store",
        NOW,
    )


def test_a_quote_time_without_a_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="time zone"):
        quote(snapshot([]), ("A", 1), at=datetime(2026, 6, 1))  # noqa: DTZ001


# --- each kind -----------------------------------------------------------------------------


def test_percent_off_each_unit() -> None:
    offers = snapshot(
        [schedule("A", "50.00")], [promotion("spring", "percent_off", "A", percent="20")]
    )
    result = quote(offers, ("A", 2))
    assert applied(result, "A") == [("spring", "20.00", "20% off 2 units")]
    assert line_of(result, "A").total == Decimal("80.00")


def test_amount_off_each_unit_never_below_zero() -> None:
    offers = snapshot(
        [schedule("A", "12.00"), schedule("B", "3.00")],
        [promotion("fiver", "amount_off", "A", "B", amount="5")],
    )
    result = quote(offers, ("A", 3), ("B", 1))
    assert applied(result, "A") == [("fiver", "15.00", "5.00 off 3 units")]
    assert applied(result, "B") == [("fiver", "3.00", "5.00 off 1 unit")]
    assert line_of(result, "B").total == Decimal("0.00")


def test_fixed_price_sells_each_unit_at_the_amount() -> None:
    offers = snapshot(
        [schedule("A", "14.99")], [promotion("flat", "fixed_price", "A", amount="9.99")]
    )
    result = quote(offers, ("A", 3))
    assert applied(result, "A") == [("flat", "15.00", "3 units at 9.99")]
    assert line_of(result, "A").total == Decimal("29.97")


def test_fixed_price_at_or_above_the_price_takes_nothing() -> None:
    offers = snapshot(
        [schedule("A", "9.99")], [promotion("flat", "fixed_price", "A", amount="9.99")]
    )
    assert line_of(quote(offers, ("A", 2)), "A").promotions == []


@pytest.mark.parametrize(("quantity", "free"), [(2, 0), (3, 1), (5, 1), (6, 2), (7, 2)])
def test_buy_x_get_y(quantity: int, free: int) -> None:
    offers = snapshot(
        [schedule("A", "4.00")], [promotion("b2g1", "buy_x_get_y", "A", buy=2, get=1)]
    )
    line = line_of(quote(offers, ("A", quantity)), "A")
    assert line.discount == Decimal("4.00") * free
    if free:
        unit = "unit" if free == 1 else "units"
        assert line.promotions[0].why == f"buy 2 get 1: {free} {unit} free"
    else:
        assert line.promotions == []


def test_buy_x_get_y_counts_per_sku_line() -> None:
    offers = snapshot(
        [schedule("A", "4.00"), schedule("B", "6.00")],
        [promotion("b2g1", "buy_x_get_y", "A", "B", buy=2, get=1)],
    )
    result = quote(offers, ("A", 2), ("B", 3))
    assert line_of(result, "A").promotions == []
    assert applied(result, "B") == [("b2g1", "6.00", "buy 2 get 1: 1 unit free")]


def test_bundle_splits_its_saving_in_proportion_to_prices() -> None:
    offers = snapshot(
        [schedule("CAM", "60.00"), schedule("BAG", "40.00")],
        [promotion("kit", "bundle", "CAM", "BAG", amount="90")],
    )
    result = quote(offers, ("CAM", 2), ("BAG", 1))
    assert applied(result, "CAM") == [("kit", "6.00", "bundle of 2 at 90.00: 1 bundle")]
    assert applied(result, "BAG") == [("kit", "4.00", "bundle of 2 at 90.00: 1 bundle")]
    assert result.total == Decimal("150.00")


def test_bundle_remainder_goes_to_the_last_listed_sku() -> None:
    offers = snapshot(
        [schedule("A", "10.00"), schedule("B", "10.00"), schedule("C", "10.00")],
        [promotion("trio", "bundle", "A", "B", "C", amount="20")],
    )
    result = quote(offers, ("C", 2), ("B", 2), ("A", 3))
    discounts = {sku: line_of(result, sku).discount for sku in "ABC"}
    assert discounts == {"A": Decimal("6.66"), "B": Decimal("6.66"), "C": Decimal("6.68")}
    assert result.discount == Decimal("20.00")
    assert line_of(result, "A").promotions[0].why == "bundle of 3 at 20.00: 2 bundles"


def test_a_near_free_bundle_costs_its_amount_and_no_share_exceeds_its_line() -> None:
    """The last SKU took what rounding left, 0.04 on a 0.03 line: the cap kept the line at zero
    and quietly dropped the cent, so the bundle "for 3.48" cost 3.49."""
    offers = snapshot(
        [
            schedule("A", "23.42"),
            schedule("B", "20.95"),
            schedule("C", "9.39"),
            schedule("D", "0.03"),
        ],
        [promotion("cheap", "bundle", "A", "B", "C", "D", amount="3.48")],
    )

    result = quote(offers, ("A", 1), ("B", 1), ("C", 1), ("D", 1))

    assert result.total == Decimal("3.48")
    assert all(line.discount <= line.list_total for line in result.lines)


def test_a_bundle_member_it_takes_nothing_off_stays_open_to_an_exclusive_promotion() -> None:
    """Y's share of a 0.20 saving rounds to 0.00: recorded as applied, the exclusive bundle
    closed Y's line and the second Y never got its 50% off (a promotion counts as applied
    only when it takes something off)."""
    offers = snapshot(
        [schedule("X", "100.00"), schedule("Y", "2.00")],
        [
            promotion("kit", "bundle", "X", "Y", amount="101.80", priority=2),
            promotion("half", "percent_off", "Y", percent="50", priority=1),
        ],
    )

    result = quote(offers, ("X", 1), ("Y", 2))

    assert applied(result, "X") == [("kit", "0.20", "bundle of 2 at 101.80: 1 bundle")]
    assert applied(result, "Y") == [("half", "1.00", "50% off 1 unit")]
    assert result.total == Decimal("102.80")


@given(
    st.lists(
        st.decimals(min_value=Decimal("0.01"), max_value=Decimal("500"), places=2),
        min_size=2,
        max_size=5,
    ),
    st.decimals(min_value=Decimal("0"), max_value=Decimal("1"), places=2),
)
def test_a_bundle_always_costs_its_amount_when_it_saves(
    prices: list[Decimal], fraction: Decimal
) -> None:
    """Whatever the prices, a bundle cheaper than its SKUs costs exactly its amount."""
    skus = [f"S{n}" for n in range(len(prices))]
    amount = (sum(prices, Decimal(0)) * fraction).quantize(Decimal("0.01"))
    offers = snapshot(
        [schedule(sku, str(price)) for sku, price in zip(skus, prices, strict=True)],
        [promotion("kit", "bundle", *skus, amount=str(amount))],
    )

    result = quote(offers, *((sku, 1) for sku in skus))

    assert result.total == min(amount, sum(prices, Decimal(0)))


def test_bundle_needs_every_sku_and_a_saving() -> None:
    offers = snapshot(
        [schedule("A", "10.00"), schedule("B", "10.00")],
        [
            promotion("pair", "bundle", "A", "B", amount="15"),
            promotion(
                "dear", "bundle", "A", "B", amount="25", priority=1, stacking=Stacking.STACKABLE
            ),
        ],
    )
    assert quote(offers, ("A", 4)).discount == Decimal("0.00")
    result = quote(offers, ("A", 1), ("B", 1))
    assert [p.id for p in line_of(result, "A").promotions] == ["pair"]
    assert result.total == Decimal("15.00")


# --- which promotions qualify --------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "facts", "channel"),
    [
        pytest.param({"valid_until": NOW}, NOBODY, "web", id="expired-end-is-exclusive"),
        pytest.param({"valid_from": NOW + timedelta(seconds=1)}, NOBODY, "web", id="not-yet"),
        pytest.param({"channels": ["store"]}, NOBODY, "web", id="wrong-channel"),
        pytest.param({"channels": []}, NOBODY, "web", id="no-channel"),
        pytest.param({"currency": "USD"}, NOBODY, "web", id="wrong-currency"),
        pytest.param({"active": False}, NOBODY, "web", id="retired"),
        pytest.param(
            {"conditions": Conditions(loyalty_tiers=["gold"])},
            CustomerFacts(loyalty_tier="silver"),
            "web",
            id="wrong-tier",
        ),
        pytest.param(
            {"conditions": Conditions(loyalty_tiers=["gold"])}, NOBODY, "web", id="no-tier"
        ),
        pytest.param(
            {"conditions": Conditions(segments=["cart_abandoned_7d", "vip"])},
            CustomerFacts(segments=frozenset({"vip"})),
            "web",
            id="missing-segment",
        ),
        pytest.param(
            {"conditions": Conditions(marketing_consent=True)},
            CustomerFacts(marketing_consent_channels=frozenset({"email"})),
            "web",
            id="no-consent-on-channel",
        ),
    ],
)
def test_a_promotion_that_does_not_qualify_is_not_applied(
    fields: dict[str, Any], facts: CustomerFacts, channel: str
) -> None:
    offers = snapshot(
        [schedule("A", "10.00")], [promotion("p", "percent_off", "A", percent="10", **fields)]
    )
    result = quote(offers, ("A", 1), channel=channel, facts=facts)
    assert result.discount == Decimal("0.00")
    assert qualifying(offers, facts=facts, channel=channel, at=NOW, currency="EUR") == []


@pytest.mark.parametrize(
    ("conditions", "facts"),
    [
        (Conditions(loyalty_tiers=["gold", "silver"]), CustomerFacts(loyalty_tier="silver")),
        (
            Conditions(segments=["cart_abandoned_7d"]),
            CustomerFacts(segments=frozenset({"cart_abandoned_7d", "vip"})),
        ),
        (
            Conditions(marketing_consent=True),
            CustomerFacts(marketing_consent_channels=frozenset({"web"})),
        ),
        (
            Conditions(marketing_consent=True),
            CustomerFacts(marketing_consent_channels=frozenset({None})),
        ),
    ],
)
def test_met_conditions_apply(conditions: Conditions, facts: CustomerFacts) -> None:
    offers = snapshot(
        [schedule("A", "10.00")],
        [promotion("p", "percent_off", "A", percent="10", conditions=conditions, channels=["web"])],
    )
    assert quote(offers, ("A", 1), facts=facts).discount == Decimal("1.00")


def test_qualifying_on_any_channel() -> None:
    consent = Conditions(marketing_consent=True)
    offers = snapshot(
        [],
        [
            promotion("store-only", "percent_off", "A", percent="5", channels=["store"]),
            promotion("nowhere", "percent_off", "A", percent="5", channels=[]),
            promotion(
                "consent-store",
                "percent_off",
                "A",
                percent="5",
                channels=["store"],
                conditions=consent,
            ),
            promotion("consent-any", "percent_off", "A", percent="5", conditions=consent),
        ],
    )
    web_consent = CustomerFacts(marketing_consent_channels=frozenset({"web"}))
    store_consent = CustomerFacts(marketing_consent_channels=frozenset({"store"}))

    def ids(facts: CustomerFacts) -> list[str]:
        return [p.id for p in qualifying(offers, facts=facts, channel=None, at=NOW)]

    assert ids(NOBODY) == ["store-only"]
    assert ids(web_consent) == ["consent-any", "store-only"]
    assert ids(store_consent) == ["consent-any", "consent-store", "store-only"]


def test_qualifying_orders_by_priority_then_id_and_filters_currency_only_when_asked() -> None:
    offers = snapshot(
        [],
        [
            promotion("b", "percent_off", "A", percent="5", priority=1),
            promotion("a", "percent_off", "A", percent="5", priority=1),
            promotion("z", "percent_off", "A", percent="5", priority=9),
            promotion("low", "percent_off", "A", percent="5", priority=-3, currency="JPY"),
        ],
    )
    every = qualifying(offers, facts=NOBODY, channel="web", at=NOW)
    assert [p.id for p in every] == ["z", "a", "b", "low"]
    in_eur = qualifying(offers, facts=NOBODY, channel="web", at=NOW, currency="EUR")
    assert [p.id for p in in_eur] == ["z", "a", "b"]


# --- overlapping promotions ----------------------------------------------------------------


def test_exclusive_against_exclusive_the_higher_priority_wins() -> None:
    offers = snapshot(
        [schedule("A", "100.00")],
        [
            promotion("big", "percent_off", "A", percent="30", priority=1),
            promotion("small", "percent_off", "A", percent="10", priority=5),
        ],
    )
    assert applied(quote(offers, ("A", 1)), "A") == [("small", "10.00", "10% off 1 unit")]


def test_exclusive_against_exclusive_of_equal_priority_the_first_id_wins() -> None:
    offers = snapshot(
        [schedule("A", "100.00")],
        [
            promotion("b-thirty", "percent_off", "A", percent="30"),
            promotion("a-ten", "percent_off", "A", percent="10"),
        ],
    )
    assert [p[0] for p in applied(quote(offers, ("A", 1)), "A")] == ["a-ten"]


def test_exclusive_then_stackable_the_stackable_does_not_apply_on_that_line() -> None:
    offers = snapshot(
        [schedule("A", "100.00"), schedule("B", "100.00")],
        [
            promotion("only-a", "percent_off", "A", percent="20", priority=2),
            promotion("all", "percent_off", "A", "B", percent="10", stacking=Stacking.STACKABLE),
        ],
    )
    result = quote(offers, ("A", 1), ("B", 1))
    assert [p[0] for p in applied(result, "A")] == ["only-a"]
    assert [p[0] for p in applied(result, "B")] == ["all"]


def test_stackable_then_exclusive_the_exclusive_does_not_apply_on_that_line() -> None:
    offers = snapshot(
        [schedule("A", "100.00")],
        [
            promotion(
                "first", "amount_off", "A", amount="5", priority=2, stacking=Stacking.STACKABLE
            ),
            promotion("second", "percent_off", "A", percent="50"),
        ],
    )
    assert [p[0] for p in applied(quote(offers, ("A", 1)), "A")] == ["first"]


def test_stackable_then_stackable_applies_on_the_price_left() -> None:
    offers = snapshot(
        [schedule("A", "100.00")],
        [
            promotion(
                "twenty", "percent_off", "A", percent="20", priority=2, stacking=Stacking.STACKABLE
            ),
            promotion("ten", "percent_off", "A", percent="10", stacking=Stacking.STACKABLE),
        ],
    )
    result = quote(offers, ("A", 1))
    assert applied(result, "A") == [
        ("twenty", "20.00", "20% off 1 unit"),
        ("ten", "8.00", "10% off 1 unit"),
    ]
    assert result.total == Decimal("72.00")


def test_an_exclusive_that_takes_nothing_does_not_block_the_next() -> None:
    offers = snapshot(
        [schedule("A", "10.00")],
        [
            promotion("dearer", "fixed_price", "A", amount="12", priority=5),
            promotion("b2g1", "buy_x_get_y", "A", buy=2, get=1, priority=4),
            promotion("ten", "percent_off", "A", percent="10"),
        ],
    )
    assert [p[0] for p in applied(quote(offers, ("A", 2)), "A")] == ["ten"]


def test_stackables_after_free_or_bundled_units_price_only_the_other_units() -> None:
    offers = snapshot(
        [schedule("A", "10.00"), schedule("B", "20.00")],
        [
            promotion(
                "b2g1", "buy_x_get_y", "A", buy=2, get=1, priority=3, stacking=Stacking.STACKABLE
            ),
            promotion(
                "kit", "bundle", "A", "B", amount="25", priority=2, stacking=Stacking.STACKABLE
            ),
            promotion("ten", "percent_off", "A", "B", percent="10", stacking=Stacking.STACKABLE),
        ],
    )
    result = quote(offers, ("A", 4), ("B", 1))
    assert applied(result, "A") == [
        ("b2g1", "10.00", "buy 2 get 1: 1 unit free"),
        ("kit", "1.67", "bundle of 2 at 25.00: 1 bundle"),
        ("ten", "2.00", "10% off 2 units"),
    ]
    assert applied(result, "B") == [("kit", "3.33", "bundle of 2 at 25.00: 1 bundle")]


def test_an_exclusive_bundle_needs_every_line_untouched() -> None:
    offers = snapshot(
        [schedule("A", "10.00"), schedule("B", "10.00")],
        [
            promotion("a-off", "amount_off", "A", amount="1", priority=1),
            promotion("kit", "bundle", "A", "B", amount="15"),
        ],
    )
    result = quote(offers, ("A", 1), ("B", 1))
    assert [p[0] for p in applied(result, "A")] == ["a-off"]
    assert line_of(result, "B").promotions == []


# --- rounding ------------------------------------------------------------------------------


def test_jpy_rounds_to_whole_yen_half_up() -> None:
    offers = snapshot(
        [schedule("A", "105", currency="JPY"), schedule("B", "333", currency="JPY")],
        [promotion("ten", "percent_off", "A", "B", percent="10", currency="JPY")],
    )
    result = quote(offers, ("A", 1), ("B", 1), currency="JPY")
    assert str(line_of(result, "A").discount) == "11"
    assert str(line_of(result, "B").discount) == "33"
    assert str(result.total) == "394"


def test_bhd_rounds_to_three_decimals_half_up() -> None:
    offers = snapshot(
        [schedule("A", "1.255", currency="BHD")],
        [promotion("ten", "percent_off", "A", percent="10", currency="BHD")],
    )
    result = quote(offers, ("A", 1), currency="BHD")
    line = line_of(result, "A")
    assert (str(line.unit_price), str(line.discount), str(line.total)) == (
        "1.255",
        "0.126",
        "1.129",
    )
    assert str(result.subtotal) == "1.255"


def test_each_discount_rounds_on_its_own_and_a_line_never_goes_below_zero() -> None:
    offers = snapshot(
        [schedule("A", "0.01")],
        [
            promotion(
                "half", "percent_off", "A", percent="50", priority=1, stacking=Stacking.STACKABLE
            ),
            promotion("free", "fixed_price", "A", amount="0", stacking=Stacking.STACKABLE),
        ],
    )
    result = quote(offers, ("A", 1))
    assert applied(result, "A") == [("half", "0.01", "50% off 1 unit")]  # nothing left to free
    assert result.total == Decimal("0.00")


@pytest.mark.parametrize("quantity", [1, 2, 3, 7])
def test_n_units_cost_n_times_one_unit_as_a_till_prices_them(quantity: int) -> None:
    offers = snapshot(
        [schedule("A", "64.90")], [promotion("spring", "percent_off", "A", percent="15")]
    )

    result = quote(offers, ("A", quantity))

    assert result.total == Decimal("55.16") * quantity


def test_the_callers_decimal_context_changes_nothing() -> None:
    offers = snapshot(
        [schedule("A", "123456.78")],
        [promotion("odd", "percent_off", "A", percent="33.3333")],
    )
    expected = quote(offers, ("A", 7))
    with localcontext(prec=3):
        assert quote(offers, ("A", 7)) == expected


KEY = b"a-pepper-for-quote-ids"


# --- quote ids -----------------------------------------------------------------------------


def test_quote_id_is_a_name_of_the_question() -> None:
    lines = [QuoteLine(sku="A", quantity=2), QuoteLine(sku="B", quantity=1)]
    same_lines = [
        QuoteLine(sku="B", quantity=1),
        QuoteLine(sku="A", quantity=1),
        QuoteLine(sku="A", quantity=1),
    ]
    madrid = NOW.astimezone(timezone(timedelta(hours=2)))
    first = quote_id([], "web", "EUR", lines, NOW, 7, KEY)
    assert uuid.UUID(first).version == 5
    assert quote_id([], "web", "EUR", same_lines, madrid, 7, KEY) == first
    assert quote_id([], "web", "EUR", lines, NOW, 8, KEY) != first
    assert quote_id([], "store", "EUR", lines, NOW, 7, KEY) != first
    assert quote_id([], "web", "EUR", lines, NOW + timedelta(microseconds=1), 7, KEY) != first
    assert quote_id([], "web", "EUR", lines, NOW, 7, b"another-platform") != first, (
        "an HMAC: nobody without the pepper recomputes it"
    )


def test_quote_id_names_the_promotions_applied_and_nothing_else_of_the_customer() -> None:
    """A customer priced as anyone gets anyone's id: quoting by email then anonymously must not
    tell whether the email is a customer's. Other promotions, other numbers, another id."""
    lines = [QuoteLine(sku="A", quantity=2)]
    anyone = quote_id([], "web", "EUR", lines, NOW, 7, KEY)

    assert quote_id(["gold-10"], "web", "EUR", lines, NOW, 7, KEY) != anyone
    assert quote_id(["gold-10", "gold-10"], "web", "EUR", lines, NOW, 7, KEY) == quote_id(
        ["gold-10"], "web", "EUR", lines, NOW, 7, KEY
    )
    assert quote_id(["b", "a"], "web", "EUR", lines, NOW, 7, KEY) == quote_id(
        ["a", "b"], "web", "EUR", lines, NOW, 7, KEY
    )


def test_merge_lines() -> None:
    merged = merge_lines(
        [
            QuoteLine(sku="B", quantity=1),
            QuoteLine(sku="A", quantity=2),
            QuoteLine(sku="B", quantity=4),
        ]
    )
    assert merged == [QuoteLine(sku="B", quantity=5), QuoteLine(sku="A", quantity=2)]


# --- properties ----------------------------------------------------------------------------

SKUS = ["A", "B", "C"]
CURRENCIES = ["EUR", "JPY", "BHD"]
amounts = st.decimals(min_value=0, max_value=500, places=4)
mostly = st.sampled_from([True] * 9 + [False])
"""Most generated offers are in force, so most examples exercise the rules, not the filters."""


@st.composite
def schedules(draw: st.DrawFn, sku: str, currency: str) -> PriceSchedule:
    count = draw(st.integers(min_value=1, max_value=3))
    days = draw(st.lists(st.integers(min_value=-400, max_value=30), min_size=count, max_size=count))
    points = [
        PricePoint(
            amount=draw(amounts),
            tax_included=draw(st.booleans()),
            valid_from=NOW + timedelta(days=day),
            version=index + 1,
        )
        for index, day in enumerate(days)
    ]
    return PriceSchedule(sku=sku, currency=ISO4217(currency), points=points)


@st.composite
def promotions(draw: st.DrawFn, index: int, currency: str) -> Promotion:
    kind = draw(st.sampled_from(list(PromotionKind)))
    least = 2 if kind == PromotionKind.BUNDLE else 1
    skus = draw(st.lists(st.sampled_from(SKUS), min_size=least, max_size=3, unique=True))
    starts = -draw(st.integers(min_value=0, max_value=30)) if draw(mostly) else 1
    lasts = draw(st.integers(min_value=1, max_value=60)) if draw(mostly) else -starts
    return promotion(
        f"p{index}",
        kind.value,
        *skus,
        currency=currency if draw(mostly) else "USD",
        percent=draw(st.decimals(min_value=Decimal("0.0001"), max_value=100, places=4)),
        amount=draw(amounts),
        buy=draw(st.integers(min_value=1, max_value=4)),
        get=draw(st.integers(min_value=1, max_value=3)),
        valid_from=NOW + timedelta(days=starts),
        valid_until=NOW + timedelta(days=starts + max(lasts, 1)),
        channels=None if draw(mostly) else draw(st.sampled_from([["web"], ["store"], []])),
        priority=draw(st.integers(min_value=-2, max_value=2)),
        stacking=draw(st.sampled_from(list(Stacking))),
    )


@st.composite
def cases(draw: st.DrawFn) -> tuple[OffersSnapshot, list[QuoteLine], str]:
    currency = draw(st.sampled_from(CURRENCIES))
    prices = [draw(schedules(sku, currency)) for sku in SKUS if draw(mostly)]
    count = draw(st.integers(min_value=1, max_value=6))
    offers = [draw(promotions(index, currency)) for index in range(count)]
    lines = draw(
        st.lists(
            st.builds(
                QuoteLine,
                sku=st.sampled_from([*SKUS, *SKUS, "UNPRICED"]),
                quantity=st.integers(min_value=1, max_value=12),
            ),
            min_size=1,
            max_size=8,
        )
    )
    return snapshot(prices, offers, version=draw(st.integers(1, 10**6))), lines, currency


def priced(
    case: tuple[OffersSnapshot, list[QuoteLine], str], lines: Sequence[QuoteLine]
) -> PricedLines:
    offers, _, currency = case
    return price_lines(offers, lines, currency=currency, channel="web", facts=NOBODY, at=NOW)


def money_of(result: PricedLines) -> list[Decimal]:
    found = [result.subtotal, result.discount, result.total]
    for line in result.lines:
        found += [line.unit_price, line.list_total, line.discount, line.total]
        found += [p.discount for p in line.promotions]
    return found


def no_floats(value: object) -> bool:
    if isinstance(value, dict):
        return all(no_floats(item) for item in value.values())
    if isinstance(value, list | tuple):
        return all(no_floats(item) for item in value)
    return not isinstance(value, float)


@given(cases())
def test_totals_add_up_exactly(case: tuple[OffersSnapshot, list[QuoteLine], str]) -> None:
    result = priced(case, case[1])
    zero_ = zero(case[2])
    assert result.subtotal == sum((line.list_total for line in result.lines), zero_)
    assert result.discount == sum((line.discount for line in result.lines), zero_)
    assert result.total == sum((line.total for line in result.lines), zero_)
    assert result.total == result.subtotal - result.discount
    for line in result.lines:
        assert line.discount == sum((p.discount for p in line.promotions), zero_)
        assert line.total == line.list_total - line.discount
        assert line.list_total == line.unit_price * line.quantity


@given(cases())
def test_discounts_never_exceed_list_totals(
    case: tuple[OffersSnapshot, list[QuoteLine], str],
) -> None:
    result = priced(case, case[1])
    for line in result.lines:
        assert Decimal(0) <= line.discount <= line.list_total
        assert all(p.discount >= 0 for p in line.promotions)
        assert line.total >= 0


@given(cases())
def test_money_is_decimal_in_the_currencys_minor_unit(
    case: tuple[OffersSnapshot, list[QuoteLine], str],
) -> None:
    result = priced(case, case[1])
    digits = minor_units(case[2])
    for amount in money_of(result):
        assert isinstance(amount, Decimal)
        assert amount.as_tuple().exponent == -digits
    assert no_floats(result.model_dump())


@given(cases(), st.randoms(use_true_random=False))
def test_line_order_changes_neither_totals_nor_quote_id(
    case: tuple[OffersSnapshot, list[QuoteLine], str], random: Any
) -> None:
    offers, lines, currency = case
    shuffled = list(lines)
    random.shuffle(shuffled)
    first, second = priced(case, lines), priced(case, shuffled)
    assert (first.subtotal, first.discount, first.total) == (
        second.subtotal,
        second.discount,
        second.total,
    )
    assert sorted(first.lines, key=lambda line: line.sku) == sorted(
        second.lines, key=lambda line: line.sku
    )
    assert quote_id([], "web", currency, lines, NOW, offers.version, KEY) == quote_id(
        [], "web", currency, shuffled, NOW, offers.version, KEY
    )


@given(cases())
def test_without_promotions_the_total_is_the_subtotal(
    case: tuple[OffersSnapshot, list[QuoteLine], str],
) -> None:
    offers, lines, currency = case
    bare = OffersSnapshot(version=offers.version, prices=offers.prices, promotions={})
    result = priced((bare, lines, currency), lines)
    assert result.total == result.subtotal
    assert result.discount == zero(currency)
    assert all(line.promotions == [] for line in result.lines)
