"""The consistency watch: carts, orders and receipts checked against the offers in force, on the
real broker and database, with the offers published on the `offers` topic as the offers service
publishes them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from pydantic_extra_types.currency_code import ISO4217

from customer_profile.service.prices import PriceCheck
from customer_profile.testing import RunningProfileService, running_profile_service
from hilo.contract import (
    Fulfilment,
    Identified,
    Identifiers,
    Interaction,
    LineItem,
    Measure,
    MeasureUnit,
    Money,
    OrderPlaced,
    OrderStatus,
    SalesChannel,
    new_interaction,
)
from hilo.offers.book import OffersBook
from hilo.offers.model import (
    Conditions,
    OfferRecord,
    OffersSnapshot,
    PriceSchedule,
    Promotion,
    PromotionKind,
    price_key,
    promotion_key,
)
from hilo.settings import HiloSettings
from hilo.testkit.offers import offer_record, percent_off, price_schedule, publish_offer_records
from hilo.testkit.probes import eventually

EUR = ISO4217("EUR")
NOW = datetime.now(UTC)
CHANGED = NOW - timedelta(hours=2)
"""When the price of the shoes went from 59.90 to 64.90."""


def schedule(*points: tuple[str, datetime, int]) -> PriceSchedule:
    return price_schedule("SKU-RED-42", *points)


def gold_promotion(version: int) -> OfferRecord:
    promotion = Promotion(
        id="gold-10",
        name="Gold members: 10% off shoes",
        kind=PromotionKind.PERCENT_OFF,
        skus=["SKU-RED-42"],
        currency=EUR,
        percent=Decimal(10),
        valid_from=NOW - timedelta(days=1),
        valid_until=NOW + timedelta(days=1),
        conditions=Conditions(loyalty_tiers=["gold"]),
    )
    record = offer_record(promotion_key("gold-10"), version, promotion=promotion)
    # Written when it began, a day ago: the sales checked below come after it.
    return record.model_copy(update={"changed_at": promotion.valid_from})


def receipt(n: int, unit_price: str, *, ago: timedelta, email: str) -> Interaction:
    shoes = LineItem(
        sku="SKU-RED-42", quantity=2, unit_price=Money(amount=Decimal(unit_price), currency=EUR)
    )
    return new_interaction(
        channel="store",
        instance="test",
        provider_event_id=f"receipt-{n}",
        identifiers=Identifiers(email=email),
        payload=OrderPlaced(
            order_id=f"R-{n}",
            sold_via=SalesChannel.STORE,
            fulfilment=Fulfilment.IN_STORE,
            store_id="BCN-01",
            items=[shoes],
            total=Money(amount=Decimal(unit_price) * 2, currency=EUR),
        ),
        occurred_at=NOW - ago,
    )


def gold_member(email: str, ago: timedelta = timedelta(days=2)) -> Interaction:
    return new_interaction(
        channel="web",
        instance="test",
        provider_event_id=f"identify-{email}",
        identifiers=Identifiers(email=email),
        payload=Identified(traits={"loyalty_tier": "gold"}),
        occurred_at=NOW - ago,
    )


async def offers_read(svc: RunningProfileService, version: int) -> bool:
    follower = svc.service.offers
    return follower.ready.is_set() and follower.book.version >= version


async def test_a_receipt_charging_the_old_price_after_a_change_is_flagged_with_both_numbers(
    settings: HiloSettings, topics: list[str]
) -> None:
    price = schedule(("59.90", NOW - timedelta(days=30), 1), ("64.90", CHANGED, 2))
    await publish_offer_records(
        settings, [offer_record(price_key("SKU-RED-42", "EUR"), 2, price=price)]
    )
    async with running_profile_service(settings) as svc:
        await eventually(lambda: offers_read(svc, 2))
        forged = receipt(4, "1.00", ago=timedelta(hours=1), email="forged@example.com")
        await svc.publish(
            [
                receipt(1, "59.90", ago=timedelta(hours=1), email="stale@example.com"),
                receipt(2, "64.90", ago=timedelta(hours=1), email="right@example.com"),
                receipt(3, "59.90", ago=timedelta(hours=3), email="before@example.com"),
                forged.model_copy(update={"channel": "web", "identity_trust": "unverified"}),
            ]
        )
        await svc.wait_for_entries(4)
        flagged = await svc.get("/v1/mismatches?channel=store")
        by_sku = await svc.get("/v1/mismatches?sku=SKU-RED-42&identity_trust=verified")
        from_browsers = await svc.get("/v1/mismatches?channel=web")
        trusted = await svc.get("/v1/mismatches?identity_trust=verified&identity_trust=claimed")
        stale = await svc.customer_of("email", "stale@example.com")
        journey = await svc.get(f"/v1/customers/{stale}/journey")

    assert flagged == by_sku == trusted
    assert [(m["customer_id"], m["charged"], m["expected"]) for m in flagged] == [
        (stale, "59.90", "64.90")
    ]
    assert flagged[0]["offers_version"] == 2
    assert flagged[0]["identity_trust"] == "verified"
    assert [(m["charged"], m["identity_trust"]) for m in from_browsers] == [
        ("1.00", "unverified")
    ], "a browser's order is checked, and says it could be anyone's"
    (entry,) = journey["entries"]
    assert entry["price_mismatches"] == [
        {
            "sku": "SKU-RED-42",
            "quantity": 2,
            "currency": "EUR",
            "charged": "59.90",
            "expected": "64.90",
            "charged_total": "119.80",
            "expected_total": "129.80",
            "list_price": "64.90",
            "promotions": [],
            "offers_version": 2,
            "quote_id": None,
        }
    ]


async def test_a_promotion_the_customer_qualifies_for_is_expected_and_shown_to_agents(
    settings: HiloSettings, topics: list[str]
) -> None:
    price = schedule(("60.00", NOW - timedelta(days=30), 1))
    await publish_offer_records(
        settings,
        [offer_record(price_key("SKU-RED-42", "EUR"), 1, price=price), gold_promotion(2)],
    )
    async with running_profile_service(settings) as svc:
        await eventually(lambda: offers_read(svc, 2))
        await svc.publish([gold_member("gold@example.com")])
        await svc.wait_for_entries(1)
        await svc.publish(
            [
                receipt(1, "54.00", ago=timedelta(minutes=5), email="gold@example.com"),
                receipt(2, "54.00", ago=timedelta(minutes=5), email="walkin@example.com"),
            ]
        )
        await svc.wait_for_entries(3)
        mismatches = await svc.get("/v1/mismatches")
        gold = await svc.customer_of("email", "gold@example.com")
        walkin = await svc.customer_of("email", "walkin@example.com")
        context = await svc.get(f"/v1/customers/{gold}/context")
        nothing = await svc.get(f"/v1/customers/{walkin}/offers")

    assert [(m["customer_id"], m["expected"]) for m in mismatches] == [(walkin, "60.00")]
    (offer,) = context["offers"]
    assert offer["promotion_id"] == "gold-10"
    assert offer["example"] == [
        {"sku": "SKU-RED-42", "quantity": 1, "list_total": "60.00", "total": "54.00"}
    ]
    assert nothing == []


async def test_a_sale_uploaded_after_the_customer_became_gold_is_not_priced_as_gold(
    settings: HiloSettings, topics: list[str]
) -> None:
    """Ana became gold an hour ago; the end-of-day file brings her sale of three hours ago, the
    shoes at the full price, right then, and socks below their price. The profile keeps only
    her tier now: the shoes, which a gold promotion prices, are not checked (they were flagged
    against the gold price); the socks, which no tier changes, are. A sale since is checked."""
    price = schedule(("60.00", NOW - timedelta(days=30), 1))
    socks_price = price_schedule("SKU-SOCKS", ("5.00", NOW - timedelta(days=30), 1))
    await publish_offer_records(
        settings,
        [
            offer_record(price_key("SKU-RED-42", "EUR"), 1, price=price),
            offer_record(price_key("SKU-SOCKS", "EUR"), 1, price=socks_price),
            gold_promotion(2),
        ],
    )
    late = receipt(1, "60.00", ago=timedelta(hours=3), email="ana@example.com")
    assert isinstance(late.payload, OrderPlaced)
    socks = LineItem(sku="SKU-SOCKS", quantity=1, unit_price=Money(amount=Decimal(4), currency=EUR))
    late_with_socks = late.model_copy(
        update={"payload": late.payload.model_copy(update={"items": [*late.payload.items, socks]})}
    )
    since = receipt(2, "60.00", ago=timedelta(minutes=5), email="ana@example.com")
    async with running_profile_service(settings) as svc:
        await eventually(lambda: offers_read(svc, 2))
        await svc.publish([gold_member("ana@example.com", ago=timedelta(hours=1))])
        await svc.wait_for_entries(1)
        await svc.publish([late_with_socks, since])
        await svc.wait_for_entries(3)
        mismatches = await svc.get("/v1/mismatches")

    assert sorted((m["event_id"], m["sku"], m["expected"]) for m in mismatches) == sorted(
        [(late.id, "SKU-SOCKS", "5.00"), (since.id, "SKU-RED-42", "54.00")]
    )


async def test_offers_not_read_yet_are_unknown_not_none(
    settings: HiloSettings, topics: list[str]
) -> None:
    """Before the service has read the offers topic, an agent must not be told the customer
    has no promotion (the web shop may be applying one): 503 to ask again, null in context."""
    async with running_profile_service(settings) as svc:
        await svc.publish([gold_member("gold@example.com")])
        await svc.wait_for_entries(1)
        gold = await svc.customer_of("email", "gold@example.com")
        svc.service.offers.ready.clear()  # as while the topic is being read
        context = await svc.get(f"/v1/customers/{gold}/context")
        unknown = await svc.http.get(f"/v1/customers/{gold}/offers")
        svc.service.offers.ready.set()
        known = await svc.http.get(f"/v1/customers/{gold}/offers")

    assert context["offers"] is None
    assert unknown.status_code == 503
    assert unknown.headers["retry-after"] == "5"
    assert "not loaded yet" in unknown.json()["detail"]
    assert known.status_code == 200, "read: the customer's offers, none here"


def three_for_two_check() -> PriceCheck:
    """A check against 10.00 shoes on buy 2 get 1 (three cost 20.00: 6.67 a unit)."""
    price = schedule(("10.00", NOW - timedelta(days=30), 1))
    three_for_two = Promotion(
        id="3for2",
        name="Buy 2 get 1",
        kind=PromotionKind.BUY_X_GET_Y,
        skus=["SKU-RED-42"],
        currency=EUR,
        buy=2,
        get=1,
        valid_from=NOW - timedelta(days=1),
        valid_until=NOW + timedelta(days=1),
    )
    snapshot = OffersSnapshot(
        version=2, prices={("SKU-RED-42", "EUR"): price}, promotions={"3for2": three_for_two}
    )
    return PriceCheck(lambda: snapshot)


def order(*lines: tuple[int, str, str], weighed: Sequence[LineItem] = ()) -> Interaction:
    """A store order of the shoes: (quantity, unit price, currency) per line."""
    items = [
        LineItem(
            sku="SKU-RED-42",
            quantity=quantity,
            unit_price=Money(amount=Decimal(amount), currency=ISO4217(currency)),
        )
        for quantity, amount, currency in lines
    ]
    items += weighed
    return new_interaction(
        channel="store",
        instance="test",
        provider_event_id=f"order-{lines}",
        identifiers=Identifiers(email="a@example.com"),
        payload=OrderPlaced(
            order_id="R-1",
            sold_via=SalesChannel.STORE,
            fulfilment=Fulfilment.IN_STORE,
            store_id="BCN-01",
            items=items,
            total=items[0].unit_price or Money(amount=Decimal(0), currency=EUR),
        ),
        occurred_at=NOW,
    )


def test_a_basket_is_checked_per_sku_on_its_whole_quantity_and_never_fails_an_event() -> None:
    check = three_for_two_check()

    split_lines = check.mismatches(order((2, "10.00", "EUR"), (1, "0.00", "EUR")), "c", None)
    test_currency = check.mismatches(order((1, "5.00", "XTS")), "c", None)

    assert split_lines == []  # 2 paid + 1 free on two lines: 20.00, as the quote
    assert test_currency == []


def test_a_weighed_line_is_left_out_of_the_check_and_the_rest_is_checked() -> None:
    """1.25 kg of the SKU is one unit of 1.25 kg at 12.50: no quote prices a kilo's fraction."""
    check = three_for_two_check()
    weighed = LineItem(
        sku="SKU-RED-42",
        quantity=1,
        unit_price=Money(amount=Decimal("12.50"), currency=EUR),
        measure=Measure(amount=Decimal("1.25"), unit=MeasureUnit.KG),
    )
    alone = order(weighed=[weighed])
    beside = order((3, "6.66", "EUR"), weighed=[weighed])

    assert check.mismatches(alone, "c", None) == []
    assert [(m["charged"], m["quantity"]) for m in check.mismatches(beside, "c", None)] == [
        ("6.66", 3)
    ]


def test_a_unit_price_rounded_from_the_quote_matches_and_any_other_is_flagged() -> None:
    check = three_for_two_check()

    rounded_unit = check.mismatches(order((3, "6.67", "EUR")), "c", None)
    cent_short = check.mismatches(order((3, "6.66", "EUR")), "c", None)
    off_the_total = check.mismatches(order((3, "10.00", "EUR")), "c", None)

    assert rounded_unit == []  # 20.01 charged: 6.67 a unit, the quote's unit price
    assert [(m["charged"], m["expected"]) for m in cent_short] == [("6.66", "6.67")]
    assert [
        (m["charged"], m["expected"], m["charged_total"], m["expected_total"])
        for m in off_the_total
    ] == [("10.00", "6.67", "30.00", "20.00")]


def test_a_mismatch_always_shows_two_different_unit_prices() -> None:
    check = three_for_two_check()

    for cents in range(600, 700):
        unit = f"{Decimal(cents) / 100:.2f}"
        found = check.mismatches(order((2, unit, "EUR"), (1, unit, "EUR")), "c", None)

        assert [(m["charged"], m["expected"]) for m in found] == (
            [] if unit == "6.67" else [(unit, "6.67")]
        ), unit


@pytest.mark.parametrize(
    ("status", "checked"),
    [
        (OrderStatus.PLACED, True),
        (OrderStatus.COMPLETED, True),  # a till receipt
        (OrderStatus.PICKED_UP, False),  # click and collect: priced when ordered online
        (OrderStatus.CANCELLED, False),
        (OrderStatus.REFUNDED, False),
    ],
)
def test_only_a_sale_is_priced_not_a_later_state_of_an_order(
    status: OrderStatus, checked: bool
) -> None:
    """A web order picked up in store repeats the lines charged online: priced again on the
    store channel that day, a web-only promotion rightly charged showed as a mismatch."""
    event = order((3, "10.00", "EUR"))
    event = event.model_copy(
        update={"payload": event.payload.model_copy(update={"status": status})}
    )

    found = three_for_two_check().mismatches(event, "c", None)

    assert bool(found) is checked


def test_a_line_no_quote_could_name_leaves_the_rest_of_the_basket_checked() -> None:
    """A carrier bag (`BAG 01`: no SKU a quote takes) or a SKU sold in more units than a quote
    prices (two lines of 60,000 pens) made the whole basket unchecked, its mispriced shoes too."""
    shoes = three_for_two_check()._offers()
    assert shoes is not None
    pens = schedule(("0.50", NOW - timedelta(days=30), 1))
    both = replace(shoes, prices={**shoes.prices, ("SKU-PEN", "EUR"): pens})
    check = PriceCheck(lambda: both)
    bag = LineItem(sku="BAG 01", quantity=1, unit_price=Money(amount=Decimal("0.10"), currency=EUR))
    pen = LineItem(
        sku="SKU-PEN", quantity=60_000, unit_price=Money(amount=Decimal(1), currency=EUR)
    )

    flagged = check.mismatches(order((3, "10.00", "EUR"), weighed=[bag, pen, pen]), "c", None)

    assert [(m["sku"], m["charged"], m["expected"]) for m in flagged] == [
        ("SKU-RED-42", "10.00", "6.67")
    ]


def test_a_sale_from_before_a_promotion_changed_is_not_priced_with_it_as_it_is_now() -> None:
    """The morning's receipts, uploaded at the end of the day, were discounted by a promotion
    retired at noon (or cut from 20% to 10%): priced with the offers as they are now, each was
    flagged. Prices keep their schedule; a promotion keeps only its latest form, so its SKUs
    are left out for sales from before its change, and checked for later ones."""
    price = offer_record(
        price_key("SKU-RED-42", "EUR"), 1, price=schedule(("10.00", NOW - timedelta(days=30), 1))
    )
    ten = percent_off(
        "spring",
        "Spring: 10% off shoes (20% until the cut)",
        "SKU-RED-42",
        10,
        valid_from=NOW - timedelta(days=1),
        valid_until=NOW + timedelta(days=1),
    )
    cut = offer_record(promotion_key("spring"), 2, promotion=ten)
    book = OffersBook()
    for record in (price, cut.model_copy(update={"changed_at": NOW - timedelta(hours=3)})):
        book.apply(record)
    book.caught_up()
    check = PriceCheck(book.snapshot)

    def sold(unit_price: str, hours_ago: int) -> Interaction:
        return replace_time(order((1, unit_price, "EUR")), NOW - timedelta(hours=hours_ago))

    assert check.mismatches(sold("8.00", 5), "c", None) == [], "20% off, before the cut"
    assert [m["expected"] for m in check.mismatches(sold("8.00", 1), "c", None)] == ["9.00"]


def replace_time(event: Interaction, at: datetime) -> Interaction:
    return event.model_copy(update={"occurred_at": at})


def test_a_sale_charged_from_a_quote_made_just_before_a_promotion_ended_matches() -> None:
    """Quoted at 23:59:50 inside a promotion ending at midnight, recorded at 00:00:05 at the
    quoted price: flagged. A sale that names its quote is checked against the offers of the
    last `QUOTED_WITHIN` too; one naming none, or much later, still against the sale's time."""
    ended = NOW - timedelta(minutes=2)
    ten = percent_off(
        "ten",
        "10% off shoes",
        "SKU-RED-42",
        10,
        valid_from=NOW - timedelta(days=1),
        valid_until=ended,
    )
    snapshot = OffersSnapshot(
        version=2,
        prices={("SKU-RED-42", "EUR"): schedule(("10.00", NOW - timedelta(days=30), 1))},
        promotions={ten.id: ten},
    )
    check = PriceCheck(lambda: snapshot)

    def sale(quote_id: str | None, minutes_after: int) -> Interaction:
        sold = order((1, "9.00", "EUR"))
        assert isinstance(sold.payload, OrderPlaced)
        payload = sold.payload.model_copy(update={"quote_id": quote_id})
        at = ended + timedelta(minutes=minutes_after)
        return sold.model_copy(update={"payload": payload, "occurred_at": at})

    assert check.mismatches(sale("q-1", 1), "c", None) == []
    assert [m["expected"] for m in check.mismatches(sale(None, 1), "c", None)] == ["10.00"]
    assert [m["expected"] for m in check.mismatches(sale("q-1", 30), "c", None)] == ["10.00"]
