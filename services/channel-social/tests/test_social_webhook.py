"""Messenger and Instagram webhooks against the real broker, with Meta's documented payloads."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from channel_social.app import create_app
from channel_social.settings import SocialSettings
from hilo.contract import interaction_id
from hilo.settings import HiloSettings
from hilo.testkit.contract_check import published_interactions
from hilo.testkit.signing import meta_signed
from hilo_devkit.channel_contract import (
    ProviderRequest,
    assert_channel_contract,
    assert_refused_while_kafka_is_down,
    channel_client,
)

SECRET = "social-app-secret"
PAGE_ID = "106540352242922"
PSID = "2417895048263577"
MESSENGER_TEXT: dict[str, Any] = {
    "object": "page",
    "entry": [
        {
            "id": PAGE_ID,
            "time": 1583173667623,
            "messaging": [
                {
                    "sender": {"id": PSID},
                    "recipient": {"id": PAGE_ID},
                    "timestamp": 1583173666767,
                    "message": {
                        "mid": "m_toDnmD9pjVNjSTV6Ec0zG9dqUXfxPN6nlyzlDqAj9w",
                        "text": "Can I return shoes bought online in your store?",
                        "reply_to": {"mid": "m_outbound_1"},
                    },
                }
            ],
        }
    ],
}
MESSENGER_MIXED: dict[str, Any] = {
    "object": "page",
    "entry": [
        {
            "id": PAGE_ID,
            "time": 1583173667700,
            "messaging": [
                {
                    "sender": {"id": PSID},
                    "recipient": {"id": PAGE_ID},
                    "timestamp": 1583173667001,
                    "message": {
                        "mid": "m_image_1",
                        "attachments": [
                            {"type": "image", "payload": {"url": "https://scontent.example/1.jpg"}}
                        ],
                    },
                },
                {
                    "sender": {"id": PSID},
                    "recipient": {"id": PAGE_ID},
                    "timestamp": 1583173667002,
                    "postback": {
                        "mid": "m_postback_1",
                        "title": "Track my order",
                        "payload": "TRACK_ORDER",
                    },
                },
                {
                    "sender": {"id": PAGE_ID},
                    "recipient": {"id": PSID},
                    "timestamp": 1583173667003,
                    "message": {
                        "mid": "m_echo_1",
                        "text": "Here is your tracking link",
                        "is_echo": True,
                        "app_id": 1517776481860111,
                    },
                },
                {
                    "sender": {"id": PSID},
                    "recipient": {"id": PAGE_ID},
                    "timestamp": 1583173667004,
                    "delivery": {"mids": ["m_echo_1"], "watermark": 1583173667003},
                },
                {
                    "sender": {"id": PSID},
                    "recipient": {"id": PAGE_ID},
                    "timestamp": 1583173667005,
                    "read": {"watermark": 1583173667003},
                },
                {
                    "sender": {"id": PSID},
                    "recipient": {"id": PAGE_ID},
                    "timestamp": 1583173667006,
                    "optin": {"ref": "newsletter"},
                },
            ],
        }
    ],
}
INSTAGRAM_TEXT: dict[str, Any] = {
    "object": "instagram",
    "entry": [
        {
            "id": "17841405822304914",
            "time": 1569262486134,
            "messaging": [
                {
                    "sender": {"id": "1283749182734"},
                    "recipient": {"id": "17841405822304914"},
                    "timestamp": 1569262485349,
                    "message": {"mid": "aWdfZAG1faXRlbTpJR01lc3NhZA", "text": "Is this in stock?"},
                }
            ],
        }
    ],
}


def signed(document: dict[str, Any], events: int = 1) -> ProviderRequest:
    body = json.dumps(document).encode()
    return ProviderRequest("/webhooks/social", body, meta_signed(body, SECRET), events)


@pytest.fixture
def social_settings(settings: HiloSettings) -> SocialSettings:
    return SocialSettings.model_validate(
        {
            **settings.model_dump(),
            "meta_app_secret": SecretStr(SECRET),
            "meta_verify_token": SecretStr("verify-social"),
            "max_body_bytes": 10_000,
        }
    )


async def test_a_flyers_link_names_its_campaign_as_the_deployment_listed_it(
    social_settings: SocialSettings, settings: HiloSettings, topics: list[str]
) -> None:
    """`HILO_SOCIAL_CAMPAIGN_REFS` reaches the translation: a listed ref names the campaign of
    the conversation it opened, another names none."""
    listed = social_settings.model_copy(update={"social_campaign_refs": ["spring-flyer"]})
    document = json.loads(json.dumps(MESSENGER_TEXT))
    message = document["entry"][0]["messaging"][0]["message"]
    message["referral"] = {"ref": "spring-flyer", "source": "SHORTLINK", "type": "OPEN_THREAD"}
    other = json.loads(json.dumps(document).replace("spring-flyer", "uid_8f3a9c21e0"))
    other["entry"][0]["messaging"][0]["message"]["mid"] = "m_other_ref"

    async with channel_client(create_app(listed)) as client:
        for request in (signed(document), signed(other)):
            answer = await client.post(request.path, content=request.body, headers=request.headers)
            assert answer.status_code == 200, answer.text

    flyer, unlisted = await published_interactions(settings, 2)
    assert flyer["payload"]["campaign"] == {
        "name": "spring-flyer",
        "source": "facebook",
        "medium": "link",
    }
    assert "campaign" not in unlisted["payload"]


@pytest.fixture
async def social(
    social_settings: SocialSettings, topics: list[str]
) -> AsyncIterator[httpx.AsyncClient]:
    async with channel_client(create_app(social_settings)) as client:
        yield client


async def test_messenger_and_instagram_honour_the_channel_contract(
    social: httpx.AsyncClient, settings: HiloSettings
) -> None:
    events = await assert_channel_contract(
        social,
        settings,
        [signed(MESSENGER_TEXT), signed(MESSENGER_MIXED, events=4), signed(INSTAGRAM_TEXT)],
    )

    by_id = {event["id"]: event for event in events}
    text = by_id[interaction_id("messenger", "m_toDnmD9pjVNjSTV6Ec0zG9dqUXfxPN6nlyzlDqAj9w")]
    assert text["identifiers"]["messenger_psid"] == PSID
    assert text["conversation"]["thread"] == f"{PAGE_ID}:{PSID}"
    assert text["occurred_at"] == "2020-03-02T18:27:46.767000Z"
    assert text["payload"]["reply_to_provider_message_id"] == "m_outbound_1"
    image = by_id[interaction_id("messenger", "m_image_1")]["payload"]
    assert image["attachments"][0]["kind"] == "image"
    postback = by_id[interaction_id("messenger", "m_postback_1")]["payload"]
    assert postback["interactive_reply"] == "TRACK_ORDER: Track my order"
    echo = by_id[interaction_id("messenger", "m_echo_1")]
    assert echo["payload"]["direction"] == "outbound"
    assert echo["identifiers"]["messenger_psid"] == PSID
    delivered = by_id[interaction_id("messenger", "m_echo_1:delivered")]["payload"]
    assert delivered == {**delivered, "kind": "message_status", "status": "delivered"}
    instagram = by_id[interaction_id("instagram", "aWdfZAG1faXRlbTpJR01lc3NhZA")]
    assert instagram["channel"] == "instagram"
    assert instagram["identifiers"]["instagram_sid"] == "1283749182734"


async def test_events_hilo_does_not_model_are_acknowledged_and_counted(
    social: httpx.AsyncClient,
) -> None:
    request = signed(MESSENGER_MIXED)

    response = await social.post(request.path, content=request.body, headers=request.headers)

    assert response.json() == {"published": 4, "ignored": 2}


async def test_a_message_meta_marks_unsupported_is_recorded_with_the_rest(
    social: httpx.AsyncClient, settings: HiloSettings
) -> None:
    """Instagram sends `is_unsupported` for what its API cannot show: the customer wrote
    something, and refusing it would refuse the whole notification."""
    document = json.loads(json.dumps(MESSENGER_TEXT))
    messaging = document["entry"][0]["messaging"]
    messaging.append(
        {**messaging[0], "message": {"mid": "m_unsupported_1", "is_unsupported": True}}
    )
    request = signed(document)

    response = await social.post(request.path, content=request.body, headers=request.headers)

    assert response.status_code == 200, response.text
    assert response.json() == {"published": 2, "ignored": 0}
    events = await published_interactions(settings, 2)
    unsupported = events[1]["payload"]
    assert unsupported["provider_message_id"] == "m_unsupported_1"
    assert [a["kind"] for a in unsupported["attachments"]] == ["other"]


async def test_an_odd_url_or_an_empty_text_is_read_not_a_refusal_of_the_notification(
    social: httpx.AsyncClient, settings: HiloSettings
) -> None:
    """An empty or overlong attachment URL (a link a customer shares), an empty story URL, or
    a text of "" with nothing else refused the whole batch with 422, other customers' messages
    too, and Meta drops it after its retries. The URL is left out (noted `unreadable`); the
    message is recorded."""
    document = json.loads(json.dumps(MESSENGER_TEXT))
    messaging = document["entry"][0]["messaging"]
    long_link = "https://lookaside.fbsbx.com/x?signature=" + "A" * 2_100
    odd = [
        {"mid": "m_long", "attachments": [{"type": "fallback", "payload": {"url": long_link}}]},
        {"mid": "m_empty", "attachments": [{"type": "image", "payload": {"url": ""}}]},
        {"mid": "m_story", "text": "Nice!", "reply_to": {"story": {"id": "s1", "url": ""}}},
        {"mid": "m_blank", "text": ""},
    ]
    messaging += [{**messaging[0], "message": message} for message in odd]
    request = signed(document)

    response = await social.post(request.path, content=request.body, headers=request.headers)

    assert response.status_code == 200, response.text
    assert response.json() == {"published": 5, "ignored": 0}
    events = {
        e["payload"]["provider_message_id"]: e for e in await published_interactions(settings, 5)
    }
    assert [a["url"] for a in events["m_long"]["payload"]["attachments"]] == [None]
    assert ("payload.attachments.url", "unreadable") in {
        (a["field"], a["reason"]) for a in events["m_long"]["adjustments"]
    }
    assert [a["url"] for a in events["m_empty"]["payload"]["attachments"]] == [None]
    assert events["m_story"]["payload"]["text"] == "Nice!"
    assert [a["caption"] for a in events["m_blank"]["payload"]["attachments"]] == ["unsupported"]


async def test_a_postback_with_meta_s_longest_payload_and_an_opt_in_without_sender_are_taken(
    social: httpx.AsyncClient, settings: HiloSettings
) -> None:
    """Meta allows a postback payload of 1,000 characters, and leaves `sender` out of a checkbox
    plugin's opt-in: neither may refuse the notification, whose retries would fail the same."""
    document = json.loads(json.dumps(MESSENGER_TEXT))
    messaging = document["entry"][0]["messaging"]
    messaging.append(
        {
            **messaging[0],
            "message": None,
            "postback": {"mid": "m_postback_long", "title": "Get Started", "payload": "P" * 1000},
        }
    )
    del messaging[-1]["message"]
    messaging.append(
        {
            "recipient": {"id": PAGE_ID},
            "timestamp": 1583173666800,
            "optin": {"ref": "checkbox", "user_ref": "UREF-1"},
        }
    )
    request = signed(document)

    response = await social.post(request.path, content=request.body, headers=request.headers)

    assert response.status_code == 200, response.text
    assert response.json() == {"published": 2, "ignored": 1}
    postback = (await published_interactions(settings, 2))[1]
    assert postback["payload"]["interactive_reply"] == "P" * 1000
    assert postback["adjustments"] == [
        {"field": "payload.interactive_reply", "reason": "truncated"}
    ]


async def test_what_the_customer_and_another_app_said_on_standby_is_recorded(
    social: httpx.AsyncClient, settings: HiloSettings
) -> None:
    """With Hilo as a secondary receiver (handover protocol), the conversation comes on
    `standby`: the customer's message and the primary app's reply are still the journey."""
    document = json.loads(json.dumps(MESSENGER_TEXT))
    entry = document["entry"][0]
    customer_said = entry.pop("messaging")[0]
    bot_said = {
        "sender": {"id": PAGE_ID},
        "recipient": {"id": PSID},
        "timestamp": customer_said["timestamp"] + 1_000,
        "message": {"mid": "m_bot_1", "is_echo": True, "app_id": 1517776481860111, "text": "Hi!"},
    }
    entry["standby"] = [customer_said, bot_said]
    request = signed(document)

    response = await social.post(request.path, content=request.body, headers=request.headers)

    assert response.status_code == 200, response.text
    assert response.json() == {"published": 2, "ignored": 0}
    customer, bot = await published_interactions(settings, 2)
    assert (customer["payload"]["direction"], bot["payload"]["direction"]) == (
        "inbound",
        "outbound",
    )
    assert customer["payload"]["text"] == customer_said["message"]["text"]
    assert bot["identifiers"]["messenger_psid"] == PSID


async def test_the_verification_handshake(social: httpx.AsyncClient) -> None:
    params = {"hub.mode": "subscribe", "hub.verify_token": "verify-social", "hub.challenge": "42"}

    ok = await social.get("/webhooks/social", params=params)
    wrong = await social.get("/webhooks/social", params={**params, "hub.verify_token": "no"})

    assert (ok.status_code, ok.text) == (200, "42")
    assert wrong.status_code == 403


async def test_unsigned_tampered_and_malformed_notifications_are_refused(
    social: httpx.AsyncClient, settings: HiloSettings
) -> None:
    good = signed(MESSENGER_TEXT)
    unsigned = await social.post("/webhooks/social", content=good.body)
    tampered = await social.post(
        "/webhooks/social", content=good.body.replace(b"shoes", b"boots"), headers=good.headers
    )
    wrong_object = signed({**MESSENGER_TEXT, "object": "whatsapp_business_account"})
    malformed = await social.post(
        "/webhooks/social", content=wrong_object.body, headers=wrong_object.headers
    )
    big = signed({**MESSENGER_TEXT, "padding": "x" * 20_000})
    oversized = await social.post("/webhooks/social", content=big.body, headers=big.headers)

    assert unsigned.status_code == 401
    assert tampered.status_code == 403
    assert malformed.status_code == 422
    assert malformed.json()["detail"].startswith("object: Input should be 'page' or 'instagram'")
    assert oversized.status_code == 413
    assert await published_interactions(settings, 0) == []


async def test_503_while_kafka_is_down_and_the_retry_is_published(
    social_settings: SocialSettings, tmp_path: Path
) -> None:
    events = await assert_refused_while_kafka_is_down(
        create_app, social_settings, signed(MESSENGER_TEXT), tmp_path
    )

    assert {event["id"] for event in events} == {
        interaction_id("messenger", "m_toDnmD9pjVNjSTV6Ec0zG9dqUXfxPN6nlyzlDqAj9w")
    }


async def test_a_timestamp_no_date_can_hold_is_kept_at_the_receipt_time(
    social: httpx.AsyncClient, settings: HiloSettings
) -> None:
    document = json.loads(json.dumps(MESSENGER_TEXT))
    document["entry"][0]["messaging"][0]["timestamp"] = 10**20
    request = signed(document)

    response = await social.post(request.path, content=request.body, headers=request.headers)

    assert response.json() == {"published": 1, "ignored": 0}
    [event] = await published_interactions(settings, 1)
    assert event["occurred_at"] == event["received_at"]
    assert event["adjustments"] == [{"field": "occurred_at", "reason": "unreadable"}]


async def test_a_delivery_receipt_as_meta_sends_it_without_a_timestamp_is_taken_with_the_rest(
    social: httpx.AsyncClient, settings: HiloSettings
) -> None:
    """Meta's `message_deliveries` event has no `timestamp` (its reference sample): refusing it
    would refuse the customer's message beside it, on every retry."""
    document = json.loads(json.dumps(MESSENGER_TEXT))
    document["entry"][0]["messaging"].append(
        {
            "sender": {"id": PSID},
            "recipient": {"id": PAGE_ID},
            "delivery": {"mids": ["m_outbound_7"], "watermark": 1458668856253},
        }
    )
    request = signed(document, events=2)

    response = await social.post(request.path, content=request.body, headers=request.headers)

    assert response.json() == {"published": 2, "ignored": 0}
    by_id = {event["id"]: event for event in await published_interactions(settings, 2)}
    delivered = by_id[interaction_id("messenger", "m_outbound_7:delivered")]
    assert delivered["occurred_at"] == "2016-03-22T17:47:36.253000Z"
    assert "adjustments" not in delivered
