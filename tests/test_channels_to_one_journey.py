"""Every channel service, in its provider's real format, into one customer's journey.

The channel apps and the customer-profile service run in-process against the real broker and
database: Ana browses anonymously and fills a cart on the web, identifies with her email, writes
on WhatsApp and by SMS from her phone, calls, sends an email, and pays in the store with a
loyalty card that carries both her phone and her email. She must end as one customer, with
every event once, in event-time order, and her cart finished by the store purchase.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from pydantic import SecretStr

from channel_email.app import create_app as email_app
from channel_email.settings import EmailSettings
from channel_sms.app import create_app as sms_app
from channel_sms.settings import SmsSettings
from channel_store.app import create_app as store_app
from channel_store.settings import StoreSettings
from channel_voice.app import create_app as voice_app
from channel_voice.settings import VoiceSettings
from channel_web.app import create_app as web_app
from channel_web.settings import WebSettings
from channel_whatsapp.app import create_app as whatsapp_app
from channel_whatsapp.settings import WhatsAppSettings
from customer_profile.testing import RunningProfileService, running_profile_service
from hilo.settings import HiloSettings
from hilo.testkit.signing import meta_signed, twilio_signed
from hilo_devkit.channel_contract import channel_client

PHONE, WA_ID, EMAIL = "+34612345678", "34612345678", "ana.garcia@example.com"
SECRET, PUBLIC = "s3cret", "https://hooks.example.com"
SERVER = "shop-server-key"
"""The web shop's server-side write key: what it sends is verified (orders, refunds)."""
START = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)


def at(minutes: int) -> datetime:
    return START + timedelta(minutes=minutes)


@pytest.fixture
async def platform(
    settings: HiloSettings, topics: list[str]
) -> AsyncIterator[tuple[dict[str, httpx.AsyncClient], RunningProfileService]]:
    base = settings.model_dump()
    secrets = {
        "web_write_keys": [SecretStr(SECRET)],
        "whatsapp_app_secret": SecretStr(SECRET),
        "whatsapp_verify_token": SecretStr(SECRET),
        "twilio_auth_token": SecretStr(SECRET),
        "public_base_url": PUBLIC,
        "voice_api_keys": [SecretStr(SECRET)],
        "mailgun_signing_key": SecretStr(SECRET),
        "email_api_keys": [SecretStr(SECRET)],
        "store_api_keys": [SecretStr(SECRET)],
        "web_verified_write_keys": [SecretStr(SERVER)],
    }
    apps = {
        "web": web_app(WebSettings.model_validate({**base, **secrets})),
        "whatsapp": whatsapp_app(WhatsAppSettings.model_validate({**base, **secrets})),
        "sms": sms_app(SmsSettings.model_validate({**base, **secrets})),
        "voice": voice_app(VoiceSettings.model_validate({**base, **secrets})),
        "email": email_app(EmailSettings.model_validate({**base, **secrets})),
        "store": store_app(StoreSettings.model_validate({**base, **secrets})),
    }
    async with AsyncExitStack() as stack:
        clients = {
            name: await stack.enter_async_context(channel_client(app)) for name, app in apps.items()
        }
        profile = await stack.enter_async_context(running_profile_service(settings))
        yield clients, profile


async def web(
    client: httpx.AsyncClient, call: str, document: dict[str, Any], key: str = SECRET
) -> None:
    auth = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
    response = await client.post(f"/v1/{call}", json=document, headers={"Authorization": auth})
    assert response.status_code == 200, response.text


async def whatsapp(client: httpx.AsyncClient, text: str, minutes: int) -> None:
    body = json.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": "WABA-1",
                    "changes": [
                        {
                            "field": "messages",
                            "value": {
                                "messaging_product": "whatsapp",
                                "metadata": {
                                    "display_phone_number": "34900000000",
                                    "phone_number_id": "PN-1",
                                },
                                "contacts": [{"wa_id": WA_ID, "profile": {"name": "Ana"}}],
                                "messages": [
                                    {
                                        "from": WA_ID,
                                        "id": f"wamid.{minutes}",
                                        "type": "text",
                                        "timestamp": str(int(at(minutes).timestamp())),
                                        "text": {"body": text},
                                    }
                                ],
                            },
                        }
                    ],
                }
            ],
        }
    ).encode()
    response = await client.post(
        "/webhooks/whatsapp", content=body, headers=meta_signed(body, SECRET)
    )
    assert response.status_code == 200, response.text


async def twilio(client: httpx.AsyncClient, path: str, params: list[tuple[str, str]]) -> None:
    headers = twilio_signed(PUBLIC + path, params, SECRET)
    response = await client.post(path, content=urlencode(params), headers=headers)
    assert response.status_code == 200, response.text


async def test_one_customer_across_every_channel(
    platform: tuple[dict[str, httpx.AsyncClient], RunningProfileService],
) -> None:
    channels, profile = platform
    await web(
        channels["web"],
        "page",
        {
            "anonymousId": "anon-ana",
            "messageId": "w1",
            "properties": {"url": "https://shop.example.com/shoes"},
            "timestamp": at(0).isoformat(),
        },
    )
    await web(
        channels["web"],
        "track",
        {
            "anonymousId": "anon-ana",
            "messageId": "w2",
            "event": "Product Added",
            "timestamp": at(2).isoformat(),
            "properties": {
                "cart_id": "cart-ana",
                "sku": "SKU-RED-42",
                "price": 59.9,
                "currency": "EUR",
            },
        },
    )
    await web(
        channels["web"],
        "identify",
        {
            "anonymousId": "anon-ana",
            "messageId": "w3",
            "traits": {"email": "Ana.Garcia@Example.com", "first_name": "Ana"},
            "timestamp": at(3).isoformat(),
        },
    )
    await whatsapp(channels["whatsapp"], "Do you have the red shoes in 42?", 10)
    await profile.wait_for_entries(4)
    await twilio(
        channels["sms"],
        "/webhooks/twilio/sms",
        [
            ("MessageSid", "SM-ana-1"),
            ("From", PHONE),
            ("To", "+14155552671"),
            ("Body", "Can I pick them up today?"),
            ("NumMedia", "0"),
        ],
    )
    await twilio(
        channels["voice"],
        "/webhooks/twilio/voice/status",
        [
            ("CallSid", "CA-ana-1"),
            ("CallStatus", "completed"),
            ("Direction", "inbound"),
            ("From", PHONE),
            ("To", "+14155552671"),
            ("CallDuration", "95"),
            ("Timestamp", "Mon, 23 Nov 2026 18:04:12 +0000"),
        ],
    )
    mail = (
        f"From: Ana <{EMAIL}>\r\nTo: support@shop.example.com\r\nSubject: Pick-up\r\n"
        f"Message-ID: <ana-mail-1@example.com>\r\nDate: {format_datetime(at(30))}"
        "\r\n\r\nI will come by the Barcelona store."
    ).encode()
    mime = await channels["email"].post(
        "/v1/messages/mime", content=mail, headers={"X-API-Key": SECRET}
    )
    assert mime.status_code == 200, mime.text
    await profile.wait_for_entries(7)
    assert await profile.customer_of("phone", PHONE) != await profile.customer_of("email", EMAIL)

    receipt = await channels["store"].post(
        "/v1/receipts",
        headers={"X-API-Key": SECRET},
        json={
            "store_id": "BCN-01",
            "receipt_id": "R-1",
            "occurred_at": at(90).isoformat(),
            "currency": "EUR",
            "total": "59.90",
            "lines": [{"sku": "SKU-RED-42", "quantity": 1, "unit_price": "59.90"}],
            "customer": {"loyalty_id": "LOY-981", "phone": "+34 612 34 56 78", "email": EMAIL},
        },
    )
    assert receipt.status_code == 200, receipt.text
    await profile.wait_for_entries(8)

    ids = {
        await profile.customer_of(kind, value)
        for kind, value in [
            ("anonymous_id", "anon-ana"),
            ("email", EMAIL),
            ("phone", PHONE),
            ("whatsapp_id", WA_ID),
            ("loyalty_id", "LOY-981"),
        ]
    }
    assert len(ids) == 1
    [customer] = ids
    journey = (await profile.get(f"/v1/customers/{customer}/journey?limit=50"))["entries"]
    assert len(journey) == 8
    assert {entry["channel"] for entry in journey} == {
        "web",
        "whatsapp",
        "sms",
        "voice",
        "email",
        "store",
    }
    times = [entry["occurred_at"] for entry in journey]
    assert times == sorted(times)
    view = await profile.get(f"/v1/customers/{customer}")
    assert view["view"]["cart"] is None
    assert view["view"]["traits"]["first_name"]["value"] == "Ana"
    context = await profile.get(f"/v1/customers/{customer}/context")
    assert context["recent_orders"][0]["store_id"] == "BCN-01"


async def test_a_web_order_returned_in_a_store_comes_off_what_the_customer_spent(
    platform: tuple[dict[str, httpx.AsyncClient], RunningProfileService],
) -> None:
    """Bought online, brought back to a shop: the till names the web order and the customer's
    card; the profile, the context every channel reads, and the journey all show the refund.
    The shop's own refund of the rest, later, pays back what was left and no more."""
    channels, profile = platform
    products = [
        {"sku": "SKU-RED-42", "quantity": 1, "price": 59.9},
        {"sku": "SOCK-3", "quantity": 2, "price": 5},
    ]
    order = {"order_id": "W-77", "total": 69.9, "currency": "EUR", "products": products}
    identity = {"userId": "u-ana", "context": {"traits": {"email": EMAIL}}}
    await web(
        channels["web"],
        "track",
        {**identity, "messageId": "o1", "event": "Order Completed", "properties": order,
         "timestamp": at(0).isoformat()},
        key=SERVER,
    )  # fmt: skip
    await profile.wait_for_entries(1)
    returned = await channels["store"].post(
        "/v1/returns",
        headers={"X-API-Key": SECRET},
        json={
            "store_id": "BCN-01",
            "return_id": "RET-1",
            "occurred_at": at(60 * 24).isoformat(),
            "currency": "EUR",
            "order_id": "W-77",
            "lines": [{"sku": "SKU-RED-42", "quantity": 1, "unit_price": "59.90"}],
            "refund_total": "59.90",
            "reason": "too small",
            "customer": {"loyalty_id": "LOY-981", "email": EMAIL},
        },
    )
    assert returned.status_code == 200, returned.text
    await profile.wait_for_entries(2)
    customer = await profile.customer_of("email", EMAIL)
    assert await profile.customer_of("loyalty_id", "LOY-981") == customer
    after_return = await profile.get(f"/v1/customers/{customer}")
    context = await profile.get(f"/v1/customers/{customer}/context")

    await web(
        channels["web"],
        "track",
        {**identity, "messageId": "r2", "event": "Order Refunded",
         "properties": {"order_id": "W-77"}, "timestamp": at(60 * 25).isoformat()},
        key=SERVER,
    )  # fmt: skip
    await profile.wait_for_entries(3)
    after_all = await profile.get(f"/v1/customers/{customer}")
    journey = (await profile.get(f"/v1/customers/{customer}/journey?limit=10"))["entries"]

    [order_view] = after_return["view"]["orders"]
    assert order_view["refunded"] == {"amount": "59.90", "currency": "EUR"}
    assert order_view["returned_items"] == 1
    assert after_return["view"]["lifetime_value"] == {"EUR": "10.00"}
    assert context["recent_orders"][0]["refunded"] == order_view["refunded"]
    assert after_all["view"]["orders"][0]["refunded"] == {"amount": "69.90", "currency": "EUR"}
    assert after_all["view"]["lifetime_value"] == {}
    assert after_all["view"]["order_count"] == 1
    assert [(e["channel"], e["type"]) for e in journey] == [
        ("web", "order"),
        ("store", "refund"),
        ("web", "refund"),
    ]
    assert journey[1]["summary"] == (
        "Refund on order W-77: 59.90 EUR, 1 item(s) returned, in store BCN-01"
    )
