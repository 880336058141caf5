"""The offers journeys: prices asked of the offers service, charged on the web and at a till,
and the read-back that expects no mismatch for the promotion and one for the stale price."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from traffic_simulator.journeys import journey, journey_start
from traffic_simulator.offers import (
    PROMOTED,
    RAISED,
    Charge,
    OfferPlan,
    OffersClient,
    OffersUnavailable,
    judge,
    stale_points,
)
from traffic_simulator.people import people
from traffic_simulator.settings import SimulatorSettings

SETTINGS = SimulatorSettings.model_validate(
    {
        name: SecretStr("secret")
        for name, field in SimulatorSettings.model_fields.items()
        if field.annotation is SecretStr
    }
)

NOW = datetime(2026, 11, 24, tzinfo=UTC)
PROMO_WEB = Charge(PROMOTED[0], PROMOTED[1], Decimal("19.92"), Decimal("24.90"), ("demo-cap-20",))
PROMO_STORE = Charge(PROMOTED[0], PROMOTED[1], Decimal("19.92"), Decimal("24.90"), ("demo-cap-20",))
STALE = Charge(RAISED[0], RAISED[1], Decimal("12.90"), Decimal("14.90"))


def bodies(steps: list[Any], channel: str) -> list[dict[str, Any]]:
    return [json.loads(step.body) for step in steps if step.channel == channel]


def test_every_fifth_person_buys_the_promotion_and_the_next_is_charged_a_stale_price() -> None:
    crowd = people(11, seed=2)

    assert [p.number for p in crowd if p.buys_the_promotion] == [0, 5, 10]
    assert [p.number for p in crowd if p.is_charged_a_stale_price] == [1, 6]


def test_the_promoted_sku_is_charged_the_quoted_prices_on_the_web_and_at_the_till() -> None:
    person = people(1, seed=1)[0]
    start = journey_start(person, NOW)
    plain = journey(person, SETTINGS, start)

    steps = journey(
        person, SETTINGS, start, OfferPlan(web_cart=PROMO_WEB, store_receipt=PROMO_STORE)
    )

    assert len(steps) == len(plain) + 2
    added = [b for b in bodies(steps, "web") if b.get("event") == "Product Added"]
    assert [a["properties"]["sku"] for a in added] == [person.product[0], PROMOTED[0]]
    assert Decimal(str(added[1]["properties"]["price"])) == Decimal("19.92")
    assert added[1]["properties"]["currency"] == "EUR"
    receipts = bodies(steps, "store")
    assert [r["lines"][0]["sku"] for r in receipts] == [person.product[0], PROMOTED[0]]
    assert receipts[1]["lines"][0]["unit_price"] == receipts[1]["total"] == "19.92"
    assert len({r["receipt_id"] for r in receipts}) == 2
    assert datetime.fromisoformat(receipts[1]["occurred_at"]) > start + timedelta(days=1)


def test_the_stale_price_is_charged_on_a_receipt_of_its_own() -> None:
    person = people(2, seed=1)[1]
    steps = journey(person, SETTINGS, journey_start(person, NOW), OfferPlan(stale_receipt=STALE))

    receipts = bodies(steps, "store")
    assert receipts[-1]["lines"] == [
        {"sku": RAISED[0], "name": RAISED[1], "quantity": 1, "unit_price": "12.90"}
    ]
    assert receipts[-1]["receipt_id"].endswith("-receipt-stale")


def offers_api(requests: list[httpx.Request]) -> httpx.MockTransport:
    """The offers service's answers: a 20% promotion on the cap, the bottle raised a month ago."""

    def answer(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if request.url.path == "/v1/quotes":
            asked = json.loads(request.content)
            promotions = [{"id": "demo-cap-20", "name": "cap", "discount": "4.98", "why": "20%"}]
            return httpx.Response(
                200,
                json={
                    "lines": [
                        {
                            "sku": asked["lines"][0]["sku"],
                            "quantity": 1,
                            "unit_price": "24.90",
                            "list_total": "24.90",
                            "discount": "4.98",
                            "total": "19.92",
                            "tax_included": True,
                            "promotions": promotions,
                        }
                    ],
                    "unpriced": [],
                },
            )
        if request.url.path == f"/v1/prices/{RAISED[0]}":
            points = [
                {"amount": "12.90", "valid_from": "2025-11-24T00:00:00Z", "version": 1},
                {"amount": "14.90", "valid_from": "2026-10-25T00:00:00Z", "version": 1},
            ]
            return httpx.Response(200, json=[{"currency": "EUR", "points": points}])
        return httpx.Response(404, json={"detail": "no price for this SKU"})

    return httpx.MockTransport(answer)


async def test_the_plan_asks_the_offers_service_for_the_prices() -> None:
    requests: list[httpx.Request] = []
    crowd = people(2, seed=1)
    async with httpx.AsyncClient(transport=offers_api(requests), base_url="http://offers") as http:
        client = OffersClient(http)
        promotion = await client.plan(crowd[0], NOW - timedelta(days=3))
        stale = await client.plan(crowd[1], NOW - timedelta(days=3))

    assert promotion == OfferPlan(web_cart=PROMO_WEB, store_receipt=PROMO_STORE)
    assert stale == OfferPlan(stale_receipt=STALE)
    quotes = [json.loads(r.content) for r in requests if r.url.path == "/v1/quotes"]
    assert [q["channel"] for q in quotes] == ["web", "store"]
    assert quotes[0]["lines"] == [{"sku": PROMOTED[0], "quantity": 1}]
    assert datetime.fromisoformat(quotes[1]["at"]) - datetime.fromisoformat(
        quotes[0]["at"]
    ) > timedelta(hours=23)


async def test_without_a_price_the_journey_cannot_be_planned() -> None:
    def missing(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"lines": [], "unpriced": [{"sku": PROMOTED[0]}]})

    async with httpx.AsyncClient(
        transport=httpx.MockTransport(missing), base_url="http://offers"
    ) as http:
        with pytest.raises(OffersUnavailable, match="offers demo"):
            await OffersClient(http).plan(people(1, seed=1)[0], NOW)


def test_the_stale_price_is_the_one_before_the_price_in_force() -> None:
    points = [
        {"amount": "12.90", "valid_from": "2025-01-01T00:00:00+00:00", "version": 1},
        {"amount": "14.90", "valid_from": "2026-10-01T00:00:00+00:00", "version": 1},
        {"amount": "16.90", "valid_from": "2027-01-01T00:00:00+00:00", "version": 2},
    ]

    assert stale_points(points, NOW) == (Decimal("14.90"), Decimal("12.90"))
    assert stale_points(points, datetime(2025, 6, 1, tzinfo=UTC)) == (Decimal("12.90"), None)
    assert stale_points(points, datetime(2024, 6, 1, tzinfo=UTC)) == (None, None)


def mismatch(customer: str, sku: str, charged: str, expected: str) -> dict[str, Any]:
    return {
        "event_id": f"e-{customer}-{sku}",
        "customer_id": customer,
        "channel": "store",
        "sku": sku,
        "charged": charged,
        "expected": expected,
    }


PLANS = {
    0: OfferPlan(web_cart=PROMO_WEB, store_receipt=PROMO_STORE),
    1: OfferPlan(stale_receipt=STALE),
}
CUSTOMERS = {0: "c-0", 1: "c-1", 2: "c-2"}


def test_the_read_back_expects_no_mismatch_for_the_promotion_and_one_for_the_stale_price() -> None:
    found = [
        mismatch("c-1", RAISED[0], "12.90", "14.90"),
        mismatch("someone-else", PROMOTED[0], "24.90", "19.92"),
    ]

    verdict = judge(PLANS, CUSTOMERS, found)

    assert verdict.healthy, verdict.lines
    text = "\n".join(verdict.lines)
    assert "price mismatch: store, SKU-BOTTLE-750, charged 12.90, expected 14.90" in text
    assert "someone" not in text
    assert "24.90, expected 19.92" not in text
    assert "1 journey, 0 mismatches  ok" in text
    assert "1 journey, 1 mismatch  ok" in text


@pytest.mark.parametrize(
    "found",
    [
        [],  # the stale price was not flagged
        [
            mismatch("c-1", RAISED[0], "12.90", "14.90"),
            mismatch("c-0", PROMOTED[0], "19.92", "24.90"),  # the promotion was not honoured
        ],
    ],
)
def test_the_read_back_fails_when_the_watch_says_otherwise(found: list[dict[str, Any]]) -> None:
    verdict = judge(PLANS, CUSTOMERS, found)

    assert not verdict.healthy
    assert "FAILED" in "\n".join(verdict.lines)


def test_a_promotion_that_did_not_apply_fails_the_read_back() -> None:
    listed = Charge(PROMOTED[0], PROMOTED[1], Decimal("24.90"), Decimal("24.90"))
    plans = {0: OfferPlan(web_cart=listed, store_receipt=listed)}

    verdict = judge(plans, CUSTOMERS, [])

    assert not verdict.healthy
    assert "no promotion applied" in verdict.lines[0]
