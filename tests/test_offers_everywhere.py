"""One offer, the same on every channel: a promotion created once in the offers service is quoted
identically for the web shop and the store till, charged through the web collector and a store
receipt without a mismatch, and shown with the same numbers in the agent context; a receipt
that charged the old price after a price change is flagged with both numbers.

Real Kafka and MongoDB; the offers, customer-profile, web and store services in-process with
their lifespans.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from channel_store.app import create_app as create_store_app
from channel_store.settings import StoreSettings
from channel_web.app import create_app as create_web_app
from channel_web.settings import WebSettings
from customer_profile.testing import API_KEY, RunningProfileService, running_profile_service
from hilo.settings import HiloSettings
from hilo.testkit.probes import eventually
from hilo_devkit.channel_contract import channel_client
from offers.testing import RunningOffers, running_offers

NOW = datetime.now(UTC).replace(microsecond=0)
CUSTOMER = "cust-7731"
WRITE_KEY = "wk_server_offers"
STORE_KEY = "store-key-offers"


def at(delta: timedelta) -> str:
    return (NOW + delta).isoformat()


PROMOTIONS: dict[str, dict[str, Any]] = {
    "spring-15": {
        "name": "Spring: 15% off running shoes",
        "kind": "percent_off",
        "percent": "15",
        "channels": ["web", "store"],
        "valid_from": at(-timedelta(hours=1)),
        "valid_until": at(timedelta(days=7)),
        "timezone": "Europe/Madrid",
    },
    "app-only-50": {
        "name": "App launch: half price",
        "kind": "percent_off",
        "percent": "50",
        "channels": ["app"],
        "valid_from": at(-timedelta(hours=1)),
        "valid_until": at(timedelta(days=7)),
    },
    "winter-30": {
        "name": "Winter sale (over)",
        "kind": "percent_off",
        "percent": "30",
        "valid_from": at(-timedelta(days=60)),
        "valid_until": at(-timedelta(days=30)),
    },
}


async def set_up_offers(offers: RunningOffers) -> None:
    """Shoes at 59.90, then 64.90 from two hours ago; three promotions, one in force here."""
    for amount, since in (("59.90", timedelta(days=30)), ("64.90", timedelta(hours=2))):
        price = {"sku": "SKU-RED-42", "currency": "EUR", "amount": amount, "tax_included": True}
        await offers.call("PUT", "/v1/prices", json=[{**price, "valid_from": at(-since)}])
    for promotion_id, fields in PROMOTIONS.items():
        body = {"id": promotion_id, "skus": ["SKU-RED-42"], "currency": "EUR", **fields}
        await offers.call("PUT", f"/v1/promotions/{promotion_id}", json=body)


@pytest.fixture
async def offers_and_profile(
    settings: HiloSettings, topics: list[str]
) -> AsyncIterator[tuple[RunningOffers, RunningProfileService]]:
    async with running_profile_service(settings) as profile:
        transport = httpx.ASGITransport(app=profile.service.app)
        async with running_offers(
            settings, profile_transport=transport, profile_api_key=API_KEY
        ) as offers:
            yield offers, profile


async def quote(offers: RunningOffers, channel: str, when: datetime) -> dict[str, Any]:
    answer: dict[str, Any] = await offers.call(
        "POST",
        "/v1/quotes",
        json={
            "identifiers": {"customer_id": CUSTOMER},
            "channel": channel,
            "currency": "EUR",
            "lines": [{"sku": "SKU-RED-42", "quantity": 2}],
            "at": when.isoformat(),
        },
    )
    return answer


def web_order(unit_price: str, when: datetime, quote_id: str) -> dict[str, Any]:
    return {
        "userId": CUSTOMER,
        "event": "Order Completed",
        "messageId": "web-order-1",
        "timestamp": when.isoformat(),
        "properties": {
            "order_id": "W-1",
            "quote_id": quote_id,
            "currency": "EUR",
            "total": str(2 * float(unit_price)),
            "products": [{"sku": "SKU-RED-42", "price": unit_price, "quantity": 2}],
        },
    }


def store_receipt(
    receipt_id: str, unit_price: str, when: datetime, quote_id: str | None = None
) -> dict[str, Any]:
    return {
        "store_id": "BCN-01",
        "receipt_id": receipt_id,
        "occurred_at": when.isoformat(),
        "currency": "EUR",
        "lines": [{"sku": "SKU-RED-42", "quantity": 2, "unit_price": unit_price}],
        "total": unit_price,
        "customer": {"customer_id": CUSTOMER},
        "quote_id": quote_id,
    }


async def test_one_promotion_is_quoted_charged_and_shown_the_same_everywhere(
    settings: HiloSettings,
    offers_and_profile: tuple[RunningOffers, RunningProfileService],
) -> None:
    offers, profile = offers_and_profile
    await set_up_offers(offers)
    await eventually(lambda: _profile_read(profile, 5))
    # After the offers were written: a sale from before a promotion's change is not checked
    # against it (it was priced with the promotion as it was then).
    bought = datetime.now(UTC)

    web_quote = await quote(offers, "web", bought)
    store_quote = await quote(offers, "store", bought)
    app_quote = await quote(offers, "app", bought)

    assert web_quote["total"] == store_quote["total"] == "110.32"  # 2 x (64.90 less 15%)
    assert [p["id"] for p in web_quote["lines"][0]["promotions"]] == ["spring-15"]
    assert [p["id"] for p in app_quote["lines"][0]["promotions"]] == ["app-only-50"]
    promoted_unit = "55.16"  # what the quote charges a unit: what the till charges

    web = WebSettings.model_validate(
        {
            **settings.model_dump(),
            "web_write_keys": [SecretStr("wk_browser_offers")],
            "web_verified_write_keys": [SecretStr(WRITE_KEY)],
        }
    )
    store = StoreSettings.model_validate(
        {**settings.model_dump(), "store_api_keys": [SecretStr(STORE_KEY)]}
    )
    basic = base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    async with (
        channel_client(create_web_app(web)) as web_channel,
        channel_client(create_store_app(store)) as store_channel,
    ):
        sent = [
            await web_channel.post(
                "/v1/track",
                json=web_order(promoted_unit, bought, web_quote["quote_id"]),
                headers={"Authorization": f"Basic {basic}"},
            ),
            await store_channel.post(
                "/v1/receipts",
                json=store_receipt("R-1", promoted_unit, bought, store_quote["quote_id"]),
                headers={"X-API-Key": STORE_KEY},
            ),
            await store_channel.post(
                "/v1/receipts",
                json=store_receipt(
                    "R-2", "50.91", bought, store_quote["quote_id"]
                ),  # the old price
                headers={"X-API-Key": STORE_KEY},
            ),
        ]
    assert [answer.status_code for answer in sent] == [200, 200, 200], [a.text for a in sent]
    await profile.wait_for_entries(3)
    customer = await profile.customer_of("customer_id", CUSTOMER)
    mismatches = await profile.get("/v1/mismatches")
    context = await profile.get(f"/v1/customers/{customer}/context")
    shown = await offers.call("GET", f"/v1/customers/{customer}/offers?channel=web")

    assert [(m["channel"], m["charged"], m["expected"]) for m in mismatches] == [
        ("store", "50.91", "55.16")  # 59.90 less 15%: the price before the change
    ]
    assert mismatches[0]["quote_id"] == store_quote["quote_id"]
    assert web_quote["quote_id"] != store_quote["quote_id"]  # asked for another channel
    journey = await profile.get(f"/v1/customers/{customer}/journey?channel=web")
    assert journey["entries"][0]["payload"]["quote_id"] == web_quote["quote_id"]
    offered = {offer["promotion_id"]: offer for offer in context["offers"]}
    assert set(offered) == {"spring-15", "app-only-50"}  # on any channel; not the expired one
    assert offered["spring-15"]["example_total"] == "55.16"  # one unit, as a quote prices it
    assert offered["app-only-50"]["quoted_on"] == "app"
    assert [o["promotion"]["id"] for o in shown["offers"]] == ["spring-15"]
    assert shown["offers"][0]["example"]["total"] == "55.16"


async def _profile_read(profile: RunningProfileService, version: int) -> bool:
    return profile.service.offers.book.version >= version
