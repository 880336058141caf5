"""The Segment-compatible collector against the real broker, with Segment's documented calls."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr

from channel_web.app import create_app
from channel_web.settings import WebSettings
from hilo.contract import interaction_id
from hilo.settings import HiloSettings
from hilo.testkit.contract_check import published_interactions
from hilo_devkit.channel_contract import (
    ProviderRequest,
    assert_channel_contract,
    assert_refused_while_kafka_is_down,
    channel_client,
)

WRITE_KEY = "wk_test_2f7c"
SERVER_KEY = "wk_server_9d1e"


def public_id(channel: str, message_id: str) -> str:
    """The event id of a call sent with the public key: its messageId, in the public space."""
    return interaction_id(channel, f"unverified:{message_id}")


AUTH = {
    "Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode(),
    "Content-Type": "application/json",
}
IDENTIFY = {
    "userId": "019mr8mf4r",
    "traits": {
        "email": "PGibbons@Example.com",
        "name": "Peter Gibbons",
        "industry": "Technology",
        "address": {"city": "Austin", "country": "US"},
    },
    "context": {"ip": "24.5.68.47"},
    "timestamp": "2012-12-02T00:30:08.276Z",
    "messageId": "022bb90c-bbac-11e4-8dfc-aa07a5b093db",
}
TRACK = {
    "userId": "019mr8mf4r",
    "event": "Item Purchased",
    "properties": {"name": "Leap to Conclusions Mat", "revenue": 14.99},
    "context": {"ip": "24.5.68.47"},
    "timestamp": "2012-12-02T00:30:12.984Z",
    "messageId": "msg-track-1",
}
PAGE = {
    "anonymousId": "507f191e810c19729de860ea",
    "name": "Home",
    "properties": {"url": "https://shop.example.com/", "path": "/", "title": "Shop"},
    "timestamp": "2012-12-02T00:31:29.738Z",
    "messageId": "msg-page-1",
}
ORDER_COMPLETED = {
    "userId": "019mr8mf4r",
    "event": "Order Completed",
    "messageId": "msg-order-1",
    "timestamp": "2026-11-20T10:00:00Z",
    "properties": {
        "order_id": "50314b8e9bcf000000000000",
        "total": 27.5,
        "revenue": 25.0,
        "tax": 2,
        "discount": 2.5,
        "shipping": 3,
        "coupon": "hasbros",
        "currency": "EUR",
        "cart_id": "cart-77",
        "products": [
            {
                "product_id": "507f1f77bcf86cd799439011",
                "sku": "45790-32",
                "name": "Monopoly",
                "price": 19,
                "quantity": 1,
                "category": "Games",
            },
            {
                "product_id": "505bd76785ebb509fc183733",
                "sku": "46493-32",
                "name": "Uno",
                "price": 3.25,
                "quantity": 2,
                "category": "Games",
            },
        ],
    },
}
BATCH: dict[str, Any] = {
    "batch": [
        {
            "type": "identify",
            "userId": "019mr8mf4r",
            "traits": {"plan": "gold"},
            "messageId": "msg-b1",
            "timestamp": "2026-11-20T09:00:00Z",
        },
        {
            "type": "screen",
            "userId": "019mr8mf4r",
            "name": "Cart",
            "messageId": "msg-b2",
            "timestamp": "2026-11-20T09:00:01Z",
        },
    ],
    "context": {"device": {"id": "B5372DB0-C21E-11E4-8DFC-AA07A5B093DB"}, "app": {"name": "Shop"}},
}


def request(path: str, document: dict[str, Any], events: int = 1) -> ProviderRequest:
    return ProviderRequest(path, json.dumps(document).encode(), AUTH, events)


@pytest.fixture
def web_settings(settings: HiloSettings) -> WebSettings:
    return WebSettings.model_validate(
        {
            **settings.model_dump(),
            "web_write_keys": [SecretStr(WRITE_KEY)],
            "web_verified_write_keys": [SecretStr(SERVER_KEY)],
            "max_body_bytes": 5_000,
        }
    )


@pytest.fixture
async def web(web_settings: WebSettings, topics: list[str]) -> AsyncIterator[httpx.AsyncClient]:
    async with channel_client(create_app(web_settings)) as client:
        yield client


async def test_segment_calls_honour_the_channel_contract(
    web: httpx.AsyncClient, settings: HiloSettings
) -> None:
    events = await assert_channel_contract(
        web,
        settings,
        [
            request("/v1/identify", IDENTIFY),
            request("/v1/track", TRACK),
            request("/v1/page", PAGE),
            request(
                "/v1/alias",
                {
                    "previousId": "507f191e810c19729de860ea",
                    "userId": "019mr8mf4r",
                    "messageId": "msg-alias-1",
                },
            ),
            request("/v1/track", ORDER_COMPLETED),
            request("/v1/batch", BATCH, events=2),
        ],
    )

    by_id = {event["id"]: event for event in events}
    identify = by_id[public_id("web", "022bb90c-bbac-11e4-8dfc-aa07a5b093db")]
    assert identify["identifiers"] == {
        **identify["identifiers"],
        "customer_id": "019mr8mf4r",
        "email": "pgibbons@example.com",
    }
    assert identify["payload"]["traits"]["address_city"] == "Austin"
    assert identify["occurred_at"] == "2012-12-02T00:30:08.276000Z"
    alias = by_id[public_id("web", "msg-alias-1")]
    assert alias["identifiers"]["anonymous_id"] == "507f191e810c19729de860ea"
    assert alias["payload"]["previous_anonymous_id"] == "507f191e810c19729de860ea"
    screen = by_id[public_id("app", "msg-b2")]
    assert screen["channel"] == "app"
    assert screen["payload"] == {**screen["payload"], "kind": "page_view", "screen": True}
    assert screen["identifiers"]["device_id"] == "B5372DB0-C21E-11E4-8DFC-AA07A5B093DB"
    assert by_id[public_id("web", "msg-track-1")]["payload"] == {
        "kind": "custom",
        "name": "Item Purchased",
        "properties": {"name": "Leap to Conclusions Mat", "revenue": 14.99},
    }


async def test_ecommerce_events_become_typed_payloads(
    web: httpx.AsyncClient, settings: HiloSettings
) -> None:
    viewed = {
        "anonymousId": "anon-1",
        "event": "Product Viewed",
        "messageId": "m1",
        "properties": {
            "product_id": "p-1",
            "sku": "SKU-1",
            "name": "Shoe",
            "price": 59.9,
            "currency": "eur",
        },
    }
    added = {
        "anonymousId": "anon-1",
        "event": "Product Added",
        "messageId": "m2",
        "properties": {"cart_id": "cart-77", "sku": "SKU-1", "price": 59.9, "quantity": 2},
    }
    sparse = {
        "anonymousId": "anon-1",
        "event": "Product Viewed",
        "messageId": "m3",
        "properties": {"name": "no id"},
    }
    survey = {
        "anonymousId": "anon-1",
        "event": "Survey Answered",
        "messageId": "m4",
        "properties": {
            "survey_id": "after-call",
            "metric": "CSAT",
            "score": 4,
            "about_channel": "voice",
            "response_id": "resp-1",
        },
    }

    for document in (viewed, added, ORDER_COMPLETED, sparse, survey):
        assert (await web.post("/v1/track", json=document, headers=AUTH)).status_code == 200

    by_id = {event["id"]: event for event in await published_interactions(settings, 5)}
    assert by_id[public_id("web", "m4")]["payload"] == {
        "kind": "survey_answer",
        "survey_id": "after-call",
        "metric": "csat",
        "score": 4,
        "comment": None,
        "about_channel": "voice",
        "response_id": "resp-1",
    }
    product, cart, order, fallback = (
        by_id[public_id("web", message_id)] for message_id in ("m1", "m2", "msg-order-1", "m3")
    )
    assert product["payload"]["price"] == {"amount": "59.9", "currency": "EUR"}
    assert cart["payload"] == {
        **cart["payload"],
        "kind": "cart",
        "action": "item_added",
        "cart_id": "cart-77",
    }
    assert cart["payload"]["changed_items"][0]["quantity"] == 2
    assert cart["payload"]["changed_items"][0]["unit_price"]["currency"] == "USD"
    assert order["payload"] == {
        **order["payload"],
        "kind": "order",
        "order_id": "50314b8e9bcf000000000000",
        "sold_via": "online",
        "fulfilment": "delivery",
        "total": {"amount": "27.5", "currency": "EUR"},
        "tax": {"amount": "2", "currency": "EUR"},
        "shipping": {"amount": "3", "currency": "EUR"},
        "coupons": ["hasbros"],
        "cart_id": "cart-77",
    }
    assert [(i["sku"], i["quantity"]) for i in order["payload"]["items"]] == [
        ("45790-32", 1),
        ("46493-32", 2),
    ]
    assert fallback["payload"] == {
        "kind": "custom",
        "name": "Product Viewed",
        "properties": {"name": "no id"},
    }


async def test_a_checkout_or_cart_view_without_products_leaves_the_items_unknown(
    web: httpx.AsyncClient, settings: HiloSettings
) -> None:
    """Not an empty cart: a profile would drop the items the customer added before."""
    calls = [
        {"event": "Checkout Started", "properties": {"cart_id": "c-1", "value": 79.9}},
        {"event": "Cart Viewed", "properties": {"cart_id": "c-1"}},
        {"event": "Cart Viewed", "properties": {"cart_id": "c-1", "products": []}},
    ]
    for n, call in enumerate(calls):
        document = {"anonymousId": "anon-1", "messageId": f"cv{n}", **call}
        assert (await web.post("/v1/track", json=document, headers=AUTH)).status_code == 200

    by_id = {event["id"]: event for event in await published_interactions(settings, 3)}
    started, viewed, emptied = (by_id[public_id("web", f"cv{n}")] for n in range(3))
    assert started["payload"]["items"] is None
    assert started["payload"]["total"] == {"amount": "79.9", "currency": "USD"}
    assert viewed["payload"]["items"] is None
    assert emptied["payload"]["items"] == []


async def test_an_order_that_cannot_be_read_as_one_is_kept_as_custom_saying_so(
    web: httpx.AsyncClient, settings: HiloSettings
) -> None:
    """A price written `59,90` makes no order: the event is kept, and says it is no order."""
    products = [{**ORDER_COMPLETED["properties"]["products"][0], "price": "59,90"}]  # type: ignore[index]
    garbled = {
        **ORDER_COMPLETED,
        "messageId": "garbled",
        "properties": {**ORDER_COMPLETED["properties"], "products": products},  # type: ignore[dict-item]
    }

    assert (await web.post("/v1/track", json=garbled, headers=AUTH)).status_code == 200

    [event] = await published_interactions(settings, 1)
    assert event["payload"]["kind"] == "custom"
    assert {"field": "payload", "reason": "not_typed"} in event["adjustments"]


async def test_device_clock_skew_is_corrected_from_sent_at(
    web: httpx.AsyncClient, settings: HiloSettings
) -> None:
    device_now = datetime.now(UTC) + timedelta(hours=3)  # the phone's clock is 3 hours ahead
    call = {
        "anonymousId": "anon-skew",
        "event": "Offline Tap",
        "messageId": "skew-1",
        "timestamp": (device_now - timedelta(minutes=10)).isoformat(),
        "sentAt": device_now.isoformat(),
    }
    before = datetime.now(UTC)

    assert (await web.post("/v1/track", json=call, headers=AUTH)).status_code == 200

    [event] = await published_interactions(settings, 1)
    occurred = datetime.fromisoformat(event["occurred_at"])
    assert (
        before - timedelta(minutes=10, seconds=5)
        <= occurred
        <= datetime.now(UTC) - timedelta(minutes=10) + timedelta(seconds=5)
    )


@pytest.mark.parametrize("own_time", ["timestamp", "originalTimestamp"])
async def test_a_call_without_a_message_id_retried_later_gets_the_same_id(
    web: httpx.AsyncClient, settings: HiloSettings, own_time: str
) -> None:
    """Clients set `sentAt` afresh on every retry: it is no part of what the call is, whichever
    field holds the call's own time."""
    call = {"anonymousId": "anon-retry", "event": "Tap", own_time: "2026-11-23T10:00:00Z"}
    for sent in ("2026-11-23T10:00:05Z", "2026-11-23T10:00:35Z"):
        response = await web.post("/v1/track", json={**call, "sentAt": sent}, headers=AUTH)
        assert response.status_code == 200, response.text

    first, retry = await published_interactions(settings, 2)
    assert first["id"] == retry["id"]


async def test_what_analytics_js_and_the_mobile_sdks_send_is_published_and_readable(
    web: httpx.AsyncClient, settings: HiloSettings
) -> None:
    """analytics-next posts each call as text/plain to its type's letter (`/v1/t`), the write
    key in the body, and batches to `/v1/b`; the browser shows it the answer only with CORS."""
    page = "https://shop.example.com"
    plain = {"Content-Type": "text/plain", "Origin": page}
    letters: dict[str, dict[str, Any]] = {
        "t": {**TRACK, "messageId": "sdk-t"},
        "p": {**PAGE, "messageId": "sdk-p"},
        "i": {**IDENTIFY, "messageId": "sdk-i"},
        "s": {**PAGE, "name": "Cart", "messageId": "sdk-s"},
        "g": {"userId": "019mr8mf4r", "groupId": "g-1", "messageId": "sdk-g"},
        "a": {
            "userId": "019mr8mf4r",
            "previousId": "507f191e810c19729de860ea",
            "messageId": "sdk-a",
        },
    }
    answers = [
        await web.post(
            f"/v1/{letter}", content=json.dumps({**call, "writeKey": WRITE_KEY}), headers=plain
        )
        for letter, call in letters.items()
    ]
    batched = await web.post(
        "/v1/b",
        content=json.dumps(
            {"writeKey": WRITE_KEY, "batch": BATCH["batch"], "sentAt": "2026-11-20T09:00:02Z"}
        ),
        headers=plain,
    )
    preflight = await web.options(
        "/v1/b",
        headers={
            "Origin": page,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )

    assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
    assert all(a.headers["access-control-allow-origin"] == "*" for a in answers)
    assert batched.status_code == 200, batched.text
    assert preflight.status_code == 200
    assert "POST" in preflight.headers["access-control-allow-methods"]
    events = {e["id"]: e for e in await published_interactions(settings, 8)}
    kinds = {
        letter: events[public_id("app" if letter == "s" else "web", f"sdk-{letter}")]["payload"][
            "kind"
        ]
        for letter in letters
    }
    assert kinds == {
        "t": "custom",
        "p": "page_view",
        "i": "identify",
        "s": "page_view",
        "g": "custom",
        "a": "identify",
    }
    assert events[public_id("app", "sdk-s")]["payload"]["screen"] is True


async def test_a_gzipped_body_is_inflated_within_the_size_limit(
    web: httpx.AsyncClient, settings: HiloSettings
) -> None:
    gzipped = {**AUTH, "Content-Encoding": "gzip"}
    call = gzip.compress(json.dumps({**TRACK, "messageId": "gz-1"}).encode())
    bomb = gzip.compress(json.dumps({**TRACK, "event": "x" * 50_000}).encode())

    inflated = await web.post("/v1/track", content=call, headers=gzipped)
    too_large = await web.post("/v1/track", content=bomb, headers=gzipped)
    not_gzip = await web.post("/v1/track", content=json.dumps(TRACK), headers=gzipped)
    cut_short = await web.post("/v1/track", content=call[:-12], headers=gzipped)
    brotli = await web.post("/v1/track", content=call, headers={**AUTH, "Content-Encoding": "br"})

    assert len(bomb) < 5_000  # under the limit as sent, over it once inflated
    assert inflated.status_code == 200, inflated.text
    assert too_large.status_code == 413
    assert "inflated" in too_large.json()["detail"]
    assert (not_gzip.status_code, cut_short.status_code, brotli.status_code) == (400, 400, 415)
    [event] = await published_interactions(settings, 1)
    assert event["id"] == public_id("web", "gz-1")


async def test_cors_answers_only_the_configured_origins(
    web_settings: WebSettings, topics: list[str]
) -> None:
    settings = web_settings.model_copy(update={"web_cors_origins": ["https://shop.example.com"]})
    async with channel_client(create_app(settings)) as client:
        ours = await client.post(
            "/v1/t",
            content=json.dumps({**TRACK, "writeKey": WRITE_KEY}),
            headers={"Origin": "https://shop.example.com"},
        )
        theirs = await client.post(
            "/v1/t",
            content=json.dumps({**TRACK, "writeKey": WRITE_KEY}),
            headers={"Origin": "https://elsewhere.example"},
        )

    assert (ours.status_code, theirs.status_code) == (200, 200)
    assert ours.headers["access-control-allow-origin"] == "https://shop.example.com"
    assert "access-control-allow-origin" not in theirs.headers


@pytest.mark.parametrize(
    ("variable", "origins"),
    [("none", []), (" None ", []), ("", ["*"]), ("https://a.example,https://b.example", None)],
)
def test_cors_is_turned_off_by_none_not_by_an_empty_value(
    monkeypatch: pytest.MonkeyPatch, variable: str, origins: list[str] | None
) -> None:
    """An empty variable is the default for every setting (`*` here): `none` turns CORS off."""
    monkeypatch.setenv("HILO_WEB_WRITE_KEYS", WRITE_KEY)
    monkeypatch.setenv("HILO_WEB_CORS_ORIGINS", variable)
    monkeypatch.setenv("HILO_ENVIRONMENT", "test")

    given = WebSettings().web_cors_origins

    assert given == (origins if origins is not None else variable.split(","))


async def test_write_keys_are_required(web: httpx.AsyncClient, settings: HiloSettings) -> None:
    missing = await web.post("/v1/track", json=TRACK)
    wrong_auth = "Basic " + base64.b64encode(b"guess:").decode()
    wrong = await web.post("/v1/track", json=TRACK, headers={"Authorization": wrong_auth})
    in_body = await web.post("/v1/track", json={**TRACK, "writeKey": WRITE_KEY})

    assert missing.status_code == 401
    assert wrong.status_code == 401
    assert in_body.status_code == 200
    assert len(await published_interactions(settings, 1)) == 1


async def test_only_a_server_side_key_vouches_for_the_identifiers_it_sends(
    web: httpx.AsyncClient, settings: HiloSettings
) -> None:
    server_auth = "Basic " + base64.b64encode(f"{SERVER_KEY}:".encode()).decode()
    public = await web.post("/v1/identify", json=IDENTIFY, headers=AUTH)
    server = await web.post(
        "/v1/identify",
        json={**IDENTIFY, "messageId": "server-1"},
        headers={"Authorization": server_auth},
    )

    assert (public.status_code, server.status_code) == (200, 200)
    trust = {e["id"]: e["identity_trust"] for e in await published_interactions(settings, 2)}
    assert sorted(trust.values()) == ["unverified", "verified"]
    assert trust[interaction_id("web", "server-1")] == "verified"


async def test_invalid_calls_are_refused_naming_the_problem_and_nothing_is_published(
    web: httpx.AsyncClient, settings: HiloSettings
) -> None:
    nobody = await web.post("/v1/track", json={"event": "Clicked"}, headers=AUTH)
    bad_user_id = await web.post(
        "/v1/identify",
        json={"userId": "ana.garcia@example.com " * 10, "traits": {"email": "ana@example.com"}},
        headers=AUTH,
    )
    no_time = await web.post(
        "/v1/page", json={"userId": "u1", "timestamp": "yesterday"}, headers=AUTH
    )
    all_bad_batch = await web.post(
        "/v1/batch",
        json={"batch": [{"type": "track", "userId": "u1"}, {"type": "page"}]},
        headers=AUTH,
    )
    not_json = await web.post("/v1/track", content=b"{nope", headers=AUTH)
    unknown_call = await web.post("/v1/purchase", json=TRACK, headers=AUTH)
    oversized = await web.post(
        "/v1/track", json={**TRACK, "properties": {"blob": "x" * 6_000}}, headers=AUTH
    )

    assert nobody.status_code == 422
    assert nobody.json()["detail"] == "(body): userId or anonymousId is required"
    assert bad_user_id.status_code == 422
    assert bad_user_id.json()["detail"] == "customer_id: must be at most 200 characters"
    assert "ana" not in bad_user_id.text
    assert no_time.status_code == 422
    assert "timestamp" in no_time.json()["detail"]
    assert all_bad_batch.status_code == 422
    assert all_bad_batch.json()["detail"] == (
        "batch.0.(body): track needs an event name; "
        "batch.1.(body): userId or anonymousId is required"
    )
    assert not_json.status_code == 400
    assert unknown_call.status_code == 422
    assert oversized.status_code == 413
    assert await published_interactions(settings, 0) == []


async def test_a_batch_keeps_its_valid_calls_and_names_the_refused_ones(
    web: httpx.AsyncClient, settings: HiloSettings
) -> None:
    """An SDK drops a whole batch answered 4xx: one bad call must not cost the good ones."""

    def refused() -> float:
        labels = {"channel": "web", "reason": "invalid_body"}
        return REGISTRY.get_sample_value("hilo_channel_requests_rejected_total", labels) or 0.0

    before = refused()
    answer = await web.post(
        "/v1/batch",
        json={
            "batch": [
                BATCH["batch"][0],
                {"type": "track", "userId": "u1"},
                {**BATCH["batch"][1], "context": ["app"]},
                BATCH["batch"][1],
                "not a call",
            ]
        },
        headers=AUTH,
    )

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["success"] is True
    assert [r["index"] for r in body["refused"]] == [1, 2, 4]
    assert body["refused"][0]["detail"] == "batch.1.(body): track needs an event name"
    assert body["refused"][1]["detail"].startswith("batch.2.context:")
    assert body["refused"][2]["detail"] == "batch.4: a call must be a JSON object"
    assert refused() - before == 3
    events = await published_interactions(settings, 2)
    assert {e["id"] for e in events} == {
        public_id("web", "msg-b1"),
        public_id("app", "msg-b2"),  # a screen call is the app's
    }


async def test_a_landing_publishes_its_campaign_and_unreadable_campaigns_cost_no_call(
    web: httpx.AsyncClient, settings: HiloSettings
) -> None:
    """analytics.js tags calls with `context.campaign`; a URL no parser reads, or a campaign
    that is no object, is anyone's to send with the public key: the calls are kept."""
    landing = {
        **PAGE,
        "messageId": "msg-landing",
        "context": {"campaign": {"name": "spring", "source": "newsletter", "medium": "email"}},
    }
    odd_url = {**PAGE, "messageId": "msg-odd-url", "properties": {"url": "http://[x/?utm_x=1"}}
    odd_campaign = {**TRACK, "messageId": "msg-odd-campaign", "context": {"campaign": "spring"}}
    calls = [landing, odd_url, odd_campaign]
    batch = [{**call, "type": "track" if call is odd_campaign else "page"} for call in calls]

    answer = await web.post("/v1/batch", json={"batch": batch}, headers=AUTH)

    assert answer.status_code == 200, answer.text
    assert "refused" not in answer.json()
    events = {e["id"]: e for e in await published_interactions(settings, 3)}
    assert events[public_id("web", "msg-landing")]["payload"]["campaign"] == {
        "name": "spring",
        "source": "newsletter",
        "medium": "email",
    }
    assert "campaign" not in events[public_id("web", "msg-odd-url")]["payload"]


async def test_503_while_kafka_is_down_and_the_retry_is_published(
    web_settings: WebSettings, tmp_path: Path
) -> None:
    events = await assert_refused_while_kafka_is_down(
        create_app, web_settings, request("/v1/batch", BATCH, events=2), tmp_path
    )

    assert {event["id"] for event in events} == {
        public_id("app", "msg-b1"),
        public_id("app", "msg-b2"),
    }


async def test_an_invalid_trait_phone_or_email_is_dropped_and_the_rest_of_the_call_kept(
    web: httpx.AsyncClient, settings: HiloSettings
) -> None:
    garbage_phone = {
        "userId": "u-ana",
        "messageId": "identify-bad-phone",
        "traits": {"email": "Ana@Example.com", "phone": "(+34) 612-345-678", "name": "Ana"},
    }
    garbage_email = {
        "anonymousId": "anon-ana",
        "messageId": "identify-bad-email",
        "traits": {"email": "ana@@example", "phone": "+34 612 34 56 78"},
        "context": {"device": {"id": ""}},
    }

    for call in (garbage_phone, garbage_email):
        response = await web.post("/v1/identify", json=call, headers=AUTH)
        assert response.status_code == 200, response.text

    by_id = {event["id"]: event for event in await published_interactions(settings, 2)}
    phone_dropped = by_id[public_id("web", "identify-bad-phone")]
    assert phone_dropped["identifiers"] == {
        **phone_dropped["identifiers"],
        "customer_id": "u-ana",
        "email": "ana@example.com",
        "phone": None,
    }
    assert phone_dropped["payload"]["traits"]["name"] == "Ana"
    assert phone_dropped["adjustments"] == [
        {"field": "identifiers.phone", "reason": "invalid_phone"}
    ]
    email_dropped = by_id[public_id("app", "identify-bad-email")]
    assert (email_dropped["identifiers"]["email"], email_dropped["identifiers"]["phone"]) == (
        None,
        "+34612345678",
    )
    assert email_dropped["adjustments"] == [
        {"field": "identifiers.device_id", "reason": "invalid_device_id"},
        {"field": "identifiers.email", "reason": "invalid_email"},
    ]


async def test_over_long_page_texts_and_event_names_are_cut_and_the_batch_kept(
    web_settings: WebSettings, topics: list[str], settings: HiloSettings
) -> None:
    long_url = "https://shop.example/search?q=" + "x" * 5_000
    batch = {
        "batch": [
            {
                "type": "page",
                "messageId": "page-long",
                "anonymousId": "anon-1",
                "name": "N" * 600,
                "context": {"page": {"url": long_url, "title": "Shoes"}},
            },
            {"type": "track", "messageId": "track-long", "userId": "u-1", "event": "E" * 400},
            {"type": "track", "messageId": "track-short", "userId": "u-1", "event": "Opened"},
        ]
    }

    roomy = web_settings.model_copy(update={"max_body_bytes": 50_000})
    async with channel_client(create_app(roomy)) as web:
        response = await web.post("/v1/batch", json=batch, headers=AUTH)

    assert response.status_code == 200, response.text
    by_id = {event["id"]: event for event in await published_interactions(settings, 3)}
    page = by_id[public_id("web", "page-long")]
    assert page["payload"]["url"] == long_url[:4_000]
    assert (page["payload"]["name"], page["payload"]["title"]) == ("N" * 500, "Shoes")
    assert page["adjustments"] == [
        {"field": "payload.name", "reason": "truncated"},
        {"field": "payload.url", "reason": "truncated"},
    ]
    track = by_id[public_id("web", "track-long")]
    assert track["payload"]["name"] == "E" * 300
    assert track["adjustments"] == [{"field": "payload.name", "reason": "truncated"}]
    assert by_id[public_id("web", "track-short")].get("adjustments", []) == []


async def test_event_times_in_the_future_or_off_the_calendar_become_the_receipt_time(
    web: httpx.AsyncClient, settings: HiloSettings
) -> None:
    future = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    calls = {
        "in-future": ({"timestamp": future}, "in_the_future"),
        "year-1": ({"timestamp": "0001-01-01T00:00:00+01:00"}, "too_old"),
        "year-9999": ({"timestamp": "9999-12-31T23:59:59-23:00"}, "in_the_future"),
        "skew-off-calendar": (
            {"timestamp": "0001-01-01T00:00:00Z", "sentAt": "9999-12-31T23:59:59Z"},
            "too_old",
        ),
    }
    before = datetime.now(UTC)

    for message_id, (times, _) in calls.items():
        call = {"anonymousId": "anon-t", "event": "Tap", "messageId": message_id, **times}
        response = await web.post("/v1/track", json=call, headers=AUTH)
        assert response.status_code == 200, f"{message_id}: {response.text}"
    huge_epoch = await web.post(
        "/v1/track",
        json={"anonymousId": "anon-t", "event": "Tap", "timestamp": 10**30},
        headers=AUTH,
    )

    assert huge_epoch.status_code == 422
    assert huge_epoch.json()["detail"].startswith("timestamp:")
    events = {event["id"]: event for event in await published_interactions(settings, 4)}
    for message_id, (_, reason) in calls.items():
        event = events[public_id("web", message_id)]
        assert before <= datetime.fromisoformat(event["occurred_at"]) <= datetime.now(UTC)
        assert event["occurred_at"] == event["received_at"]
        assert event["adjustments"] == [{"field": "occurred_at", "reason": reason}], message_id


async def test_malformed_batches_numbers_and_unicode_are_4xx_never_500(
    web: httpx.AsyncClient, settings: HiloSettings
) -> None:
    context_not_object = await web.post(
        "/v1/batch", json={"batch": [{**BATCH["batch"][1], "context": ["app"]}]}, headers=AUTH
    )
    lone_surrogate = await web.post(
        "/v1/track", content=b'{"userId": "\\ud800", "event": "Tap"}', headers=AUTH
    )
    surrogate_write_key = await web.post(
        "/v1/track",
        content=b'{"writeKey": "\\udfff", "userId": "u1", "event": "Tap"}',
        headers={"Content-Type": "application/json"},
    )
    surrogate_basic_auth = await web.post(
        "/v1/track",
        json=TRACK,
        headers={"Authorization": "Basic " + base64.b64encode(b"\xed\xa0\x80:").decode()},
    )
    infinite_quantity = await web.post(
        "/v1/track",
        content=(
            b'{"userId": "u1", "event": "Product Added", "messageId": "inf-qty",'
            b' "properties": {"sku": "SKU-1", "quantity": 1e999}}'
        ),
        headers=AUTH,
    )

    assert context_not_object.status_code == 422
    assert context_not_object.json()["detail"].startswith("batch.0.context:")
    assert lone_surrogate.status_code == 400
    assert surrogate_write_key.status_code == 400
    assert surrogate_basic_auth.status_code == 401
    assert infinite_quantity.status_code == 200
    [event] = await published_interactions(settings, 1)
    assert event["id"] == public_id("web", "inf-qty")
    assert event["payload"] == {
        "kind": "custom",
        "name": "Product Added",
        # JSON has no infinity: the value is left out (it was published as null).
        "properties": {"sku": "SKU-1"},
    }


async def test_an_event_larger_than_kafka_takes_is_refused_with_413_naming_the_limit(
    web_settings: WebSettings, topics: list[str], settings: HiloSettings
) -> None:
    """Alone, it is a 413; in a batch, the calls beside it are published once and it is named
    (an SDK drops a batch answered 4xx, good calls and all)."""
    small_records = web_settings.model_copy(
        update={"kafka_max_record_bytes": 4_096, "max_body_bytes": 50_000}
    )
    big = {**TRACK, "messageId": "big", "properties": {"notes": "x" * 3_000}}
    bigger = {**big, "messageId": "bigger", "properties": {"notes": "x" * 4_000}}
    limit = "event larger than 4096 bytes after translation"

    async with channel_client(create_app(small_records)) as client:
        alone = await client.post("/v1/track", json=big, headers=AUTH)
        every_call_too_large = await client.post(
            "/v1/batch",
            json={"batch": [{**big, "type": "track"}, {**bigger, "type": "track"}]},
            headers=AUTH,
        )
        beside_others = await client.post(
            "/v1/batch",
            json={
                "batch": [
                    {**big, "type": "track"},
                    {**TRACK, "type": "track"},
                    {**bigger, "type": "track"},
                    {**TRACK, "type": "track", "messageId": "small-2"},
                ]
            },
            headers=AUTH,
        )

    assert alone.status_code == 413
    assert alone.json() == {"error": "too_large", "detail": limit}
    assert every_call_too_large.status_code == 413
    assert every_call_too_large.json() == {
        "error": "too_large",
        "detail": f"batch.0: {limit}; batch.1: {limit}",
    }
    assert beside_others.status_code == 200, beside_others.text
    assert beside_others.json() == {
        "success": True,
        "refused": [{"index": 0, "detail": limit}, {"index": 2, "detail": limit}],
    }
    events = await published_interactions(settings, 2)
    assert sorted(e["id"] for e in events) == sorted(
        [public_id("web", "msg-track-1"), public_id("web", "small-2")]
    )


SERVER_AUTH = {"Authorization": "Basic " + base64.b64encode(f"{SERVER_KEY}:".encode()).decode()}


async def test_a_loyalty_card_given_as_a_trait_is_an_identifier_from_a_server_side_key(
    web: httpx.AsyncClient, settings: HiloSettings
) -> None:
    """A card typed at sign-up is how the online cart meets the till that only knows the card:
    as a plain trait it linked nothing, and the store's purchase made a second profile. From
    the public key it stays a trait: a card outranks an email and is easy to guess, so a
    stranger's browser naming Bo's card would have joined Bo's profile."""
    traits = {"email": "ana@example.com", "loyalty_id": "LOY-000981"}
    server = {"anonymousId": "anon-ana", "messageId": "identify-card", "traits": traits}
    public = {"anonymousId": "anon-x", "messageId": "identify-card-public", "traits": traits}

    for call, headers in ((server, SERVER_AUTH), (public, AUTH)):
        response = await web.post("/v1/identify", json=call, headers=headers)
        assert response.status_code == 200, response.text

    by_id = {e["id"]: e for e in await published_interactions(settings, 2)}
    from_server = by_id[interaction_id("web", "identify-card")]
    from_public = by_id[public_id("web", "identify-card-public")]
    assert from_server["identifiers"]["loyalty_id"] == "LOY-000981"
    assert from_server["identifiers"]["email"] == "ana@example.com"
    assert from_public["identifiers"]["loyalty_id"] is None
    assert from_public["payload"]["traits"]["loyalty_id"] == "LOY-000981"


async def test_an_invalid_loyalty_trait_is_dropped_and_the_call_kept(
    web: httpx.AsyncClient, settings: HiloSettings
) -> None:
    call = {
        "userId": "u-ana",
        "messageId": "identify-bad-card",
        "traits": {"loyalty_id": "x" * 500},
    }

    response = await web.post("/v1/identify", json=call, headers=SERVER_AUTH)

    assert response.status_code == 200, response.text
    [event] = await published_interactions(settings, 1)
    assert event["identifiers"]["loyalty_id"] is None
    assert event["adjustments"] == [
        {"field": "identifiers.loyalty_id", "reason": "invalid_loyalty_id"}
    ]


async def test_a_cancellation_or_a_refund_is_typed_only_from_a_server_side_key(
    web: httpx.AsyncClient, settings: HiloSettings
) -> None:
    """Segment's Order Cancelled and Order Refunded take money out of the customer's lifetime
    value: from the public key (anyone) they stay custom events. A refund names the whole order
    by its id alone, or part of it by the products that came back."""
    server_auth = SERVER_AUTH
    order = {
        "order_id": "W-1001",
        "total": 30,
        "currency": "EUR",
        "products": [{"product_id": "SKU-1", "quantity": 1, "price": 30}],
    }
    part: dict[str, Any] = {"order_id": "W-1001", "currency": "EUR", "reason": "damaged"}
    part["products"] = [{"sku": "SKU-2", "quantity": 2, "price": 4.5}]
    unpriced = {"order_id": "W-1001", "products": [{"sku": "SKU-2"}]}
    outgoing: dict[str, Any] = {"order_id": "W-1001", "currency": "EUR"}
    outgoing["products"] = [{"sku": "SKU-2", "quantity": -2, "price": "-4.50"}]
    calls = [
        ({"event": "Order Refunded", "messageId": "refund-1"}, server_auth, order),
        ({"event": "Order Refunded", "messageId": "refund-2"}, server_auth, {"order_id": "W-2"}),
        ({"event": "Order Refunded", "messageId": "refund-6"}, server_auth, {**part, "total": -9}),
        ({"event": "Order Refunded", "messageId": "refund-7"}, server_auth, outgoing),
        ({"event": "Order Refunded", "messageId": "refund-3"}, server_auth, part),
        ({"event": "Order Refunded", "messageId": "refund-4"}, server_auth, unpriced),
        ({"event": "Order Refunded", "messageId": "refund-5"}, AUTH, order),
        ({"event": "Order Cancelled", "messageId": "cancel-1"}, server_auth, order),
        ({"event": "Order Cancelled", "messageId": "cancel-2"}, AUTH, order),
    ]

    for call, headers, properties in calls:
        body = {**call, "userId": "u-ana", "properties": properties}
        response = await web.post("/v1/track", json=body, headers=headers)
        assert response.status_code == 200, response.text

    events = {e["id"]: e for e in await published_interactions(settings, len(calls))}
    by_id = {event_id: event["payload"] for event_id, event in events.items()}
    ids = {
        call["messageId"]: (interaction_id if headers is server_auth else public_id)(
            "web", call["messageId"]
        )
        for call, headers, _ in calls
    }
    refunded, whole, returned, unreadable, forged_refund, cancelled, forged = (
        by_id[ids[name]]
        for name in (
            "refund-1",
            "refund-2",
            "refund-3",
            "refund-4",
            "refund-5",
            "cancel-1",
            "cancel-2",
        )
    )
    assert (refunded["kind"], refunded["order_id"], refunded["refunded_via"]) == (
        "refund", "W-1001", "online",
    )  # fmt: skip
    assert refunded["amount"] == {"amount": "30", "currency": "EUR"}
    assert (whole["kind"], whole["order_id"], whole["amount"], whole["items"]) == (
        "refund", "W-2", None, [],
    )  # fmt: skip
    assert returned["amount"] == {"amount": "9.0", "currency": "EUR"}, "2 x 4.5, no total given"
    assert (returned["items"][0]["sku"], returned["reason"]) == ("SKU-2", "damaged")
    assert (unreadable["kind"], unreadable["name"]) == ("custom", "Order Refunded")
    assert {"field": "payload", "reason": "not_typed"} in events[ids["refund-4"]]["adjustments"]
    assert (forged_refund["kind"], forged_refund["name"]) == ("custom", "Order Refunded")
    negative = by_id[ids["refund-6"]]
    assert negative["amount"] == {"amount": "9", "currency": "EUR"}, "revenue going out"
    out = by_id[ids["refund-7"]]
    assert out["amount"] == {"amount": "9.00", "currency": "EUR"}, "2 x 4.50, all negative"
    assert [(i["quantity"], i["unit_price"]["amount"]) for i in out["items"]] == [(2, "4.50")]
    assert (cancelled["kind"], cancelled["status"], cancelled["order_id"]) == (
        "order", "cancelled", "W-1001",
    )  # fmt: skip
    assert (forged["kind"], forged["name"]) == ("custom", "Order Cancelled")


async def test_a_browsers_message_id_never_takes_the_place_of_the_servers_event(
    web: httpx.AsyncClient, settings: HiloSettings
) -> None:
    """The journey keeps one event per id. A public call sent first with the messageId of the
    shop server's cancellation (anyone may choose a browser's messageId) made the verified
    cancellation a duplicate, dropped."""
    forged = {"event": "Anything", "messageId": "order-1042-cancelled", "anonymousId": "x"}
    cancelled = {
        "event": "Order Cancelled",
        "messageId": "order-1042-cancelled",
        "userId": "C-1042",
        "properties": {
            "order_id": "1042",
            "total": 30,
            "currency": "EUR",
            "products": [{"product_id": "SKU-1", "quantity": 1, "price": 30}],
        },
    }

    for body, headers in [(forged, AUTH), (cancelled, SERVER_AUTH)]:
        response = await web.post("/v1/track", json=body, headers=headers)
        assert response.status_code == 200, response.text

    events = {e["id"]: e for e in await published_interactions(settings, 2)}
    assert len(events) == 2, "two events, not one id twice"
    server = events[interaction_id("web", "order-1042-cancelled")]
    assert (server["identity_trust"], server["payload"]["kind"]) == ("verified", "order")


async def test_a_consent_change_is_typed_only_from_a_server_side_key(
    web: httpx.AsyncClient, settings: HiloSettings
) -> None:
    """The shop's preference centre records Ana's marketing consent from its server: a
    `consent` every channel follows. From the public key anyone could grant marketing in her
    name, so there it stays a custom event."""
    change = {"purpose": "marketing", "granted": False, "channel": "email"}
    calls = [("consent-1", SERVER_AUTH), ("consent-2", AUTH)]

    for message_id, headers in calls:
        body = {
            "event": "Consent Changed",
            "messageId": message_id,
            "userId": "u-ana",
            "properties": change,
        }
        response = await web.post("/v1/track", json=body, headers=headers)
        assert response.status_code == 200, response.text

    by_id = {e["id"]: e["payload"] for e in await published_interactions(settings, len(calls))}
    assert by_id[interaction_id("web", "consent-1")] == {
        "kind": "consent",
        "purpose": "marketing",
        "granted": False,
        "channel": "email",
        "source": "web",
    }
    assert by_id[public_id("web", "consent-2")]["kind"] == "custom"


async def test_a_full_analytics_java_batch_is_taken_and_a_stalled_body_let_go(
    settings: HiloSettings, topics: list[str]
) -> None:
    """analytics-java fills a batch up to 512,000 bytes and drops one answered 413: at the 500 KB
    this channel took, its server-side orders were lost. A body that stops coming is answered
    408: the write key may be in it, so anyone held a connection and its buffer for good."""
    defaults = WebSettings.model_validate(
        {
            **settings.model_dump(),
            "web_write_keys": [SecretStr(WRITE_KEY)],
            "web_verified_write_keys": [SecretStr(SERVER_KEY)],
            "body_read_seconds": 0.5,
        }
    )
    order = {"order_id": "W-1", "total": 30, "currency": "EUR", "notes": "x" * 1_870}
    batch = {
        "batch": [
            {"type": "track", "event": "Order Completed", "userId": "u-ana",
             "messageId": f"java-{n}", "properties": {**order, "order_id": f"W-{n}"}}
            for n in range(250)
        ]
    }  # fmt: skip
    body = json.dumps(batch).encode()
    never = asyncio.Event()

    async def stalled() -> AsyncIterator[bytes]:
        yield b'{"batch": ['
        await never.wait()

    async with channel_client(create_app(defaults)) as web:
        taken = await web.post("/v1/batch", content=body, headers=SERVER_AUTH)
        slow = await web.post("/v1/batch", content=stalled(), headers=SERVER_AUTH)

    assert 500_000 < len(body) < 512_000
    assert taken.status_code == 200, taken.text
    assert (slow.status_code, slow.json()["error"]) == (408, "slow_body")
    assert len(await published_interactions(settings, 250)) == 250


async def test_times_without_a_zone_are_utc_and_null_objects_are_empty(
    web: httpx.AsyncClient, settings: HiloSettings
) -> None:
    """Segment's times are UTC: `datetime.utcnow().isoformat()` (no zone) was refused, the call
    lost, and a batch whose `sentAt` had none refused whole. `"properties": null` was taken in
    a batch and refused alone."""
    naive: dict[str, Any] = {"type": "track", "event": "Ordered", "userId": "u1"}
    naive |= {"messageId": "naive-1", "timestamp": "2026-11-20T10:00:00"}
    naive |= {"properties": None, "context": None}
    single = await web.post(
        "/v1/page",
        json={"userId": "u1", "messageId": "null-1", "properties": None, "traits": None},
        headers=AUTH,
    )
    batch = await web.post(
        "/v1/batch",
        json={"batch": [naive], "sentAt": "2026-11-20T10:00:05", "context": None},
        headers=AUTH,
    )

    assert (single.status_code, batch.status_code) == (200, 200), (single.text, batch.text)
    events = {e["id"]: e for e in await published_interactions(settings, 2)}
    ordered = events[public_id("web", "naive-1")]
    sent = datetime.fromisoformat(ordered["received_at"]) - timedelta(seconds=5)
    assert datetime.fromisoformat(ordered["occurred_at"]) == sent, "skew corrected, as UTC"
    assert events[public_id("web", "null-1")]["payload"]["kind"] == "page_view"
