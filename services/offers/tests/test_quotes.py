"""Quotes with customer facts from a running customer-profile service: a gold member gets the
gold promotion, an anonymous shopper does not, and the customer's offers show the same
numbers a quote gives."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import httpx
import pytest
from pymongo import AsyncMongoClient

from customer_profile.testing import API_KEY as PROFILE_API_KEY
from customer_profile.testing import RunningProfileService, interaction, running_profile_service
from hilo.contract import ConsentChanged, Identified, Identifiers, new_interaction
from hilo.mongo import MongoDocument
from hilo.settings import HiloSettings
from hilo.testkit.probes import eventually
from hilo.testkit.serving import free_port, served
from offers.app import create_service
from offers.testing import API_KEY, RunningOffers, offers_settings, running_offers

NOW = datetime.now(UTC).replace(microsecond=0)
ANA = "ana.gold@example.com"


@pytest.fixture
async def profile(
    settings: HiloSettings, topics: list[str], mongo_client: AsyncMongoClient[MongoDocument]
) -> AsyncIterator[RunningProfileService]:
    async with running_profile_service(settings) as running:
        signed_in = new_interaction(
            channel="web",
            instance="test",
            provider_event_id="evt-sign-in",
            identifiers=Identifiers(email=ANA),
            payload=Identified(traits={"loyalty_tier": "gold"}),
            occurred_at=NOW - timedelta(hours=1),
        )
        await running.publish([signed_in])
        await running.wait_for_entries(1)
        yield running


@pytest.fixture
async def offers(
    settings: HiloSettings, profile: RunningProfileService
) -> AsyncIterator[RunningOffers]:
    async with (
        served(profile.service.app, lifespan="off") as profile_url,
        running_offers(
            settings, profile_api_url=profile_url, profile_api_key=PROFILE_API_KEY
        ) as running,
    ):
        await running.call(
            "PUT",
            "/v1/prices",
            json=[
                {"sku": "SKU-1", "currency": "EUR", "amount": "100.00", "tax_included": True},
                {"sku": "SKU-2", "currency": "EUR", "amount": "19.99", "tax_included": True},
            ],
        )
        await running.call("PUT", "/v1/promotions/gold-10", json=GOLD)
        await running.caught_up_to(2)
        yield running


GOLD = {
    "id": "gold-10",
    "name": "Gold members 10% off",
    "kind": "percent_off",
    "skus": ["SKU-1"],
    "currency": "EUR",
    "percent": "10",
    "valid_from": (NOW - timedelta(days=1)).isoformat(),
    "valid_until": (NOW + timedelta(days=30)).isoformat(),
    "conditions": {"loyalty_tiers": ["gold"]},
}
LINES = [{"sku": "SKU-1", "quantity": 2}, {"sku": "SKU-2", "quantity": 1}]


def quote(**asked: Any) -> dict[str, Any]:
    return {"channel": "web", "currency": "EUR", "lines": LINES, **asked}


async def test_a_gold_member_gets_the_gold_promotion_and_an_anonymous_shopper_does_not(
    offers: RunningOffers, profile: RunningProfileService
) -> None:
    customer_id = await profile.customer_of("email", ANA)

    gold = await offers.call("POST", "/v1/quotes", json=quote(identifiers={"email": ANA}))
    anonymous = await offers.call("POST", "/v1/quotes", json=quote())

    assert gold["customer_id"] is None  # an email asked for prices, not for who it is
    assert customer_id
    assert (gold["subtotal"], gold["discount"], gold["total"]) == ("219.99", "20.00", "199.99")
    sku1 = gold["lines"][0]
    assert [p["id"] for p in sku1["promotions"]] == ["gold-10"]
    assert gold["offers_version"] == 2
    assert anonymous["customer_id"] is None
    assert (anonymous["discount"], anonymous["total"]) == ("0.00", "219.99")
    assert all(line["promotions"] == [] for line in anonymous["lines"])
    assert gold["quote_id"] != anonymous["quote_id"]


async def test_a_quote_by_customer_id_is_the_same_quote_with_the_same_id(
    offers: RunningOffers, profile: RunningProfileService
) -> None:
    customer_id = await profile.customer_of("email", ANA)
    at = NOW.isoformat()

    by_email = await offers.call(
        "POST", "/v1/quotes", json=quote(identifiers={"email": ANA.upper()}, at=at)
    )
    by_id = await offers.call("POST", "/v1/quotes", json=quote(customer_id=customer_id, at=at))

    assert by_id == {**by_email, "customer_id": customer_id}, "the same prices and quote id"
    own = await offers.call(
        "POST", "/v1/quotes", json=quote(customer_id=customer_id, at=at, quote_id="cart-77")
    )
    assert own["quote_id"] == "cart-77"


async def test_the_same_question_after_the_profile_changed_is_another_quote(
    offers: RunningOffers, profile: RunningProfileService
) -> None:
    asked = quote(identifiers={"email": ANA}, at=datetime.now(UTC).isoformat())
    gold = await offers.call("POST", "/v1/quotes", json=asked)
    await profile.publish(
        [
            new_interaction(
                channel="web",
                instance="test",
                provider_event_id="evt-downgraded",
                identifiers=Identifiers(email=ANA),
                payload=Identified(traits={"loyalty_tier": "silver"}),
                occurred_at=NOW - timedelta(minutes=30),
            )
        ]
    )
    await profile.wait_for_entries(2)

    silver = await offers.call("POST", "/v1/quotes", json=asked)

    assert (gold["total"], silver["total"]) == ("199.99", "219.99")
    assert silver["quote_id"] != gold["quote_id"], "one id, one set of numbers"


async def test_a_quote_by_email_priced_as_anyone_tells_nothing_of_the_customer(
    offers: RunningOffers, profile: RunningProfileService
) -> None:
    """Bo is a customer with no tier, who consented to marketing (no promotion asks for it):
    priced as anyone, his email's quote is anyone's quote, id included, so comparing ids does
    not tell that the email is a customer's."""
    consent = new_interaction(
        channel="web",
        instance="test",
        provider_event_id="evt-bo-consent",
        identifiers=Identifiers(email="bo@example.com"),
        payload=ConsentChanged(purpose="marketing", granted=True),
        occurred_at=NOW - timedelta(minutes=30),
    )
    await profile.publish([interaction("bo-1", email="bo@example.com"), consent])
    await profile.wait_for_entries(3)
    at = datetime.now(UTC).isoformat()

    by_email = await offers.call(
        "POST", "/v1/quotes", json=quote(identifiers={"email": "bo@example.com"}, at=at)
    )
    anonymous = await offers.call("POST", "/v1/quotes", json=quote(at=at))

    assert by_email == anonymous


async def test_unknown_customers_and_strangers(offers: RunningOffers) -> None:
    await offers.call("POST", "/v1/quotes", expect=404, json=quote(customer_id="cus-nobody"))
    stranger = await offers.call(
        "POST", "/v1/quotes", json=quote(identifiers={"email": "nobody@example.com"})
    )
    assert stranger["customer_id"] is None
    assert stranger["discount"] == "0.00"
    invalid = await offers.call(
        "POST", "/v1/quotes", expect=422, json=quote(identifiers={"email": "not-an-email"})
    )
    assert "not-an-email" not in str(invalid)
    unpriced = await offers.call(
        "POST", "/v1/quotes", json=quote(lines=[{"sku": "SKU-404", "quantity": 1}])
    )
    assert unpriced["unpriced"] == [{"sku": "SKU-404", "reason": "no_price"}]


@pytest.mark.parametrize(
    "at", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00", "1899-12-31T23:59:59Z"]
)
async def test_a_quote_time_beyond_the_calendar_is_refused_naming_the_field(
    offers: RunningOffers, at: str
) -> None:
    refused = await offers.call(
        "POST", "/v1/quotes", expect=422, json=quote(identifiers={"email": ANA}, at=at)
    )

    (error,) = refused["detail"]
    assert error["loc"] == ["body", "at"]
    assert at not in str(refused)


async def test_a_customers_offers_show_the_numbers_a_quote_gives(
    offers: RunningOffers, profile: RunningProfileService
) -> None:
    customer_id = await profile.customer_of("email", ANA)

    found = await offers.call(
        "GET", f"/v1/customers/{customer_id}/offers", params={"channel": "web"}
    )

    assert [offer["promotion"]["id"] for offer in found["offers"]] == ["gold-10"]
    example = found["offers"][0]["example"]
    assert (example["lines"][0]["unit_price"], example["total"]) == ("100.00", "90.00")
    same = await offers.call(
        "POST",
        "/v1/quotes",
        json={
            "customer_id": customer_id,
            "channel": "web",
            "currency": "EUR",
            "lines": [{"sku": "SKU-1", "quantity": 1}],
            "at": example["at"],
        },
    )
    assert {k: same[k] for k in example} == example
    await offers.call(
        "GET", "/v1/customers/cus-nobody/offers", params={"channel": "web"}, expect=404
    )


async def test_each_offer_shows_its_own_discount_as_the_profile_api_does(
    offers: RunningOffers, profile: RunningProfileService
) -> None:
    """Gold's 10% and a 20% sale on SKU-1: the 20% wins a quote of it, but each offer shows
    its own discount, the same numbers the profile API gives the desk (the offers API showed
    80.00 under "10% off" where the desk showed 90.00)."""
    sale = {**GOLD, "id": "sale-20", "name": "20% off", "percent": "20", "priority": 1}
    sale.pop("conditions")
    await offers.call("PUT", "/v1/promotions/sale-20", json=sale)
    await offers.caught_up_to(3)
    customer_id = await profile.customer_of("email", ANA)

    async def context_read() -> dict[str, Any]:
        return cast(dict[str, Any], await profile.get(f"/v1/customers/{customer_id}/context"))

    context = await eventually(context_read, until=lambda c: len(c["offers"]) == 2)
    found = await offers.call(
        "GET", f"/v1/customers/{customer_id}/offers", params={"channel": "web"}
    )

    totals = {o["promotion"]["id"]: o["example"]["total"] for o in found["offers"]}
    assert totals == {"gold-10": "90.00", "sale-20": "80.00"}
    assert {o["promotion_id"]: o["example_total"] for o in context["offers"]} == totals


async def test_quotes_wait_for_the_offers_to_load(
    offers: RunningOffers, settings: HiloSettings
) -> None:
    offers.service.follower.ready.clear()
    try:
        response = await offers.http.post(
            "/v1/quotes", json=quote(), headers={"X-API-Key": API_KEY}
        )
        health = await offers.http.get("/health/ready")
    finally:
        offers.service.follower.ready.set()

    assert response.status_code == 503
    assert health.status_code == 503
    assert health.json()["checks"] == {"offers": "failing", "kafka": "ok", "mongodb": "ok"}
    assert (await offers.http.get("/health/ready")).status_code == 200


async def test_an_instance_that_lost_kafka_and_mongodb_still_quotes_and_stays_ready(
    settings: HiloSettings,
) -> None:
    """Quotes come from the catalogue in memory: an instance answering 503 to readiness while
    MongoDB or Kafka was away was taken out by its load balancer, and every channel lost its
    prices, though the instance could quote."""
    away = offers_settings(
        settings,
        kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
        mongodb_url=f"mongodb://127.0.0.1:{free_port()}/?serverSelectionTimeoutMS=500",
    )
    cut_off = create_service(away)
    cut_off.follower.ready.set()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=cut_off.app), base_url="http://offers"
    ) as http:
        health = await http.get("/health/ready")

    assert health.status_code == 200, health.text
    assert health.json() == {
        "status": "degraded",
        "checks": {"offers": "ok", "kafka": "failing", "mongodb": "failing"},
    }
