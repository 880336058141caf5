"""The WhatsApp webhook against the real broker, with Meta's documented payloads."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from pymongo import AsyncMongoClient

from channel_whatsapp.app import create_app
from channel_whatsapp.settings import WhatsAppSettings
from channel_whatsapp.translate import commands_of, translate
from channel_whatsapp.webhook import Notification
from hilo.contract import MessageExchanged, interaction_id, whatsapp_identifiers
from hilo.mongo import MongoDocument
from hilo.outbound import INTERRUPTED, SENDS_COLLECTION
from hilo.settings import HiloSettings
from hilo.testkit.contract_check import published_interactions
from hilo.testkit.signing import meta_signed
from hilo_devkit.channel_contract import ProviderRequest, assert_channel_contract

SAMPLES = Path(__file__).parent / "samples"
SECRET = "app-secret-for-tests"


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


@pytest.fixture
async def whatsapp(settings: HiloSettings, topics: list[str]) -> AsyncIterator[httpx.AsyncClient]:
    channel_settings = WhatsAppSettings.model_validate(
        {
            **settings.model_dump(),
            "whatsapp_app_secret": SecretStr(SECRET),
            "whatsapp_verify_token": SecretStr("verify-me"),
            "max_body_bytes": 10_000,
        }
    )
    app = create_app(channel_settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://whatsapp") as client:
            yield client


async def test_notifications_honour_the_channel_contract(
    whatsapp: httpx.AsyncClient, settings: HiloSettings
) -> None:
    requests = [
        ProviderRequest("/webhooks/whatsapp", body, meta_signed(body, SECRET), events)
        for body, events in [
            (sample("text_message.json"), 1),
            (sample("media_location_interactive.json"), 5),
            (sample("statuses.json"), 2),
            (sample("username_users.json"), 3),
        ]
    ]

    events = await assert_channel_contract(whatsapp, settings, requests)

    assert {event["identifiers"]["whatsapp_id"] for event in events} >= {"16505551234"}


async def test_the_verification_handshake_echoes_the_challenge(whatsapp: httpx.AsyncClient) -> None:
    ok = await whatsapp.get(
        "/webhooks/whatsapp",
        params={
            "hub.mode": "subscribe",
            "hub.verify_token": "verify-me",
            "hub.challenge": "1158201444",
        },
    )
    wrong = await whatsapp.get(
        "/webhooks/whatsapp",
        params={
            "hub.mode": "subscribe",
            "hub.verify_token": "guess",
            "hub.challenge": "1158201444",
        },
    )

    assert ok.status_code == 200
    assert ok.text == "1158201444"
    assert wrong.status_code == 403


async def test_a_text_message_is_published_with_phone_and_whatsapp_id(
    whatsapp: httpx.AsyncClient, settings: HiloSettings
) -> None:
    body = sample("text_message.json")

    response = await whatsapp.post(
        "/webhooks/whatsapp", content=body, headers=meta_signed(body, SECRET)
    )

    assert response.status_code == 200
    [event] = await published_interactions(settings, 1)
    assert event["id"] == interaction_id(
        "whatsapp", "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA="
    )
    assert event["identifiers"]["phone"] == "+16505551234"
    assert event["identifiers"]["whatsapp_id"] == "16505551234"
    assert event["payload"]["text"] == "Does it come in another color?"
    assert event["occurred_at"] == "2025-06-08T20:59:43Z"
    assert event["conversation"]["thread"] == "106540352242922:16505551234"


AD_REFERRAL = {
    "source_url": "https://fb.me/3cr4Wqqkv",
    "source_id": "120212345678901234",
    "source_type": "ad",
    "headline": "Spring sale: 20% off",
    "body": "Write to us on WhatsApp",
    "media_type": "image",
    "image_url": "https://scontent.xx.fbcdn.net/ad.jpg",
    "ctwa_clid": "ARAkLkA8rmlFeiCktEJQ-QTwRiyYHAFDLMNDBH0CD3qpjd0HR4irJ6LEkR7JwFF4XvnO2E4Nx0",
}


def message_with(referral: object) -> Notification:
    notification = json.loads(sample("text_message.json"))
    notification["entry"][0]["changes"][0]["value"]["messages"][0]["referral"] = referral
    return Notification.model_validate(notification)


@pytest.mark.parametrize(
    ("referral", "campaign"),
    [
        (AD_REFERRAL, {"name": "Spring sale: 20% off", "source": "meta", "medium": "ad"}),
        (
            {**AD_REFERRAL, "headline": "Follow @lumashop", "source_url": "https://fb.com/x"},
            {"name": "120212345678901234", "source": "facebook", "medium": "ad"},
        ),
        (
            {
                "source_url": "https://www.instagram.com/p/C1x/",
                "source_id": "178",
                "source_type": "post",
            },
            {"name": "178", "source": "instagram", "medium": "post"},
        ),
        ({"source_type": "ad"}, None),
        ("an ad", None),
        (None, None),
    ],
)
def test_a_conversation_from_a_click_to_whatsapp_ad_carries_its_campaign(
    referral: object, campaign: dict[str, str] | None
) -> None:
    """Meta puts `referral` on the first message after a click on an ad or a post: the campaign
    journey-analytics credits with what the customer buys later, in any channel. One naming
    neither headline nor id, or that is no object, gives none (a source alone would take the
    credit of a named campaign) and refuses nothing."""
    [interaction], ignored = translate(message_with(referral), "test", b"pepper")

    assert ignored == 0
    told = interaction.payload.model_dump(mode="json").get("campaign")
    assert told == campaign
    published = json.dumps(interaction.model_dump(mode="json"))
    assert not {AD_REFERRAL["ctwa_clid"], AD_REFERRAL["body"], AD_REFERRAL["image_url"]} & {
        value for value in AD_REFERRAL.values() if value in published
    }, "the ad's text, media and click id are not kept"


def test_only_the_customers_own_words_are_recorded_as_their_messages() -> None:
    """A reaction taken back (Meta leaves `emoji` out), a `system` notice of a changed number,
    and a message or status of a group were each recorded as a message of the customer's:
    waiting for an answer, with the 24-hour window opened again, and a group's id taken for a
    person. They are acknowledged and counted as ignored; a reaction given is kept."""
    notification = json.loads(sample("text_message.json"))
    value = notification["entry"][0]["changes"][0]["value"]
    base = {"from": "16505551234", "timestamp": "1749416383"}
    value["messages"] = [
        {
            **base,
            "id": "wamid.given",
            "type": "reaction",
            "reaction": {"message_id": "wamid.out", "emoji": "\u2764"},
        },
        {
            **base,
            "id": "wamid.taken-back",
            "type": "reaction",
            "reaction": {"message_id": "wamid.out"},
        },
        {
            **base,
            "id": "wamid.system",
            "type": "system",
            "system": {
                "body": "changed number",
                "type": "user_changed_number",
                "new_wa_id": "16505559999",
            },
        },
        {
            **base,
            "id": "wamid.group",
            "type": "text",
            "group_id": "Y2FwaV9ncm91cA==",
            "text": {"body": "hi all"},
        },
    ]
    value["statuses"] = [
        {
            "id": "wamid.to-group",
            "status": "delivered",
            "timestamp": "1749416390",
            "recipient_id": "Y2FwaV9ncm91cA==",
            "recipient_type": "group",
        },
    ]

    interactions, ignored = translate(Notification.model_validate(notification), "test", b"pepper")

    [given] = interactions
    assert isinstance(given.payload, MessageExchanged)
    assert given.payload.provider_message_id == "wamid.given"
    assert ignored == 4


def marketing_resumed() -> bytes:
    """Meta's `system` message of a user who resumed the business's marketing (the form it
    takes on the `messages` field, which every deployment subscribes to)."""
    notification = json.loads(sample("text_message.json"))
    notification["entry"][0]["changes"][0]["value"]["messages"] = [
        {
            "from": "16505551234",
            "id": "wamid.preference",
            "timestamp": "1731705800",
            "type": "system",
            "system": {
                "body": "User requested to resume marketing messages",
                "marketing": "resume",
                "type": "user_preference_changed",
            },
        }
    ]
    return json.dumps(notification).encode()


async def test_a_customer_stopping_or_resuming_marketing_on_whatsapp_is_their_consent(
    whatsapp: httpx.AsyncClient, settings: HiloSettings
) -> None:
    """WhatsApp's "Offers and announcements" setting: ignored, a customer who had agreed to
    marketing on the web stayed agreed on WhatsApp, and the desk went on offering it there."""
    stopped, resumed = sample("user_preferences.json"), marketing_resumed()

    answers = [
        await whatsapp.post("/webhooks/whatsapp", content=body, headers=meta_signed(body, SECRET))
        for body in (stopped, resumed, stopped)  # the first one posted again by Meta
    ]

    assert [a.json() for a in answers] == [{"published": 1, "ignored": 0}] * 3
    events = await published_interactions(settings, 3)
    assert events[2]["id"] == events[0]["id"], "Meta's retry is the same event (recorded once)"
    assert [(e["payload"], e["occurred_at"]) for e in events[:2]] == [
        (
            {
                "kind": "consent",
                "purpose": "marketing",
                "granted": granted,
                "channel": "whatsapp",
                "source": "whatsapp_user_preferences",
            },
            at,
        )
        for granted, at in [(False, "2024-11-15T21:22:01Z"), (True, "2024-11-15T21:23:20Z")]
    ]
    assert {e["identifiers"]["whatsapp_id"] for e in events} == {"16505551234"}
    assert "16505551234" not in events[0]["id"], "named by a keyed digest, not the number"


async def test_every_message_type_becomes_a_message(
    whatsapp: httpx.AsyncClient, settings: HiloSettings
) -> None:
    body = sample("media_location_interactive.json")

    response = await whatsapp.post(
        "/webhooks/whatsapp", content=body, headers=meta_signed(body, SECRET)
    )

    assert response.json() == {"published": 5, "ignored": 0}
    events = {
        e["payload"]["provider_message_id"]: e["payload"]
        for e in await published_interactions(settings, 5)
    }
    assert events["wamid.image1"]["attachments"][0]["kind"] == "image"
    assert events["wamid.image1"]["attachments"][0]["caption"] == "This one"
    assert events["wamid.location1"]["attachments"][0]["latitude"] == 41.3874
    assert events["wamid.reply1"]["interactive_reply"] == "pickup: Pick up in store"
    assert events["wamid.reply1"]["reply_to_provider_message_id"] == "wamid.outbound1"
    assert events["wamid.doc1"]["attachments"][0]["filename"] == "receipt.pdf"
    assert events["wamid.unsupported1"]["attachments"][0] == {
        **events["wamid.unsupported1"]["attachments"][0],
        "kind": "other",
        "caption": "unsupported",
    }


async def test_delivery_statuses_are_published(
    whatsapp: httpx.AsyncClient, settings: HiloSettings
) -> None:
    body = sample("statuses.json")

    await whatsapp.post("/webhooks/whatsapp", content=body, headers=meta_signed(body, SECRET))

    events = await published_interactions(settings, 2)
    assert [(e["payload"]["status"], e["payload"]["error"]) for e in events] == [
        ("delivered", None),
        ("failed", "131047 Re-engagement message"),
    ]


def test_a_status_is_put_on_a_report_only_for_hilos_own_tag_of_a_send_perhaps_not_sent() -> None:
    """`biz_opaque_callback_data` is any sender's on the business account: only Hilo's tag
    (`hilo-command:<id>`) names a command, and only a send reported perhaps not sent moves
    its statuses off the wamid."""
    notification = json.loads(sample("statuses.json"))
    delivered, failed = notification["entry"][0]["changes"][0]["value"]["statuses"]
    delivered["biz_opaque_callback_data"] = "hilo-command:c-1"
    failed["biz_opaque_callback_data"] = "c-2"  # another tool's own data
    parsed = Notification.model_validate(notification)

    reported, _ = translate(parsed, "test", b"pepper", perhaps_sent={"c-1", "c-2"})
    sent_normally, _ = translate(parsed, "test", b"pepper", perhaps_sent=set())

    assert commands_of(parsed) == {"c-1"}
    assert [e.payload.provider_message_id for e in reported] == [  # type: ignore[union-attr]
        "hilo-outbound:c-1",
        "wamid.outbound2",
    ]
    assert [e.payload.provider_message_id for e in sent_normally] == [  # type: ignore[union-attr]
        "wamid.outbound1",
        "wamid.outbound2",
    ]
    assert [e.id for e in reported] == [e.id for e in sent_normally]


async def test_a_status_of_a_reply_whose_send_is_not_settled_is_asked_for_again(
    whatsapp: httpx.AsyncClient,
    settings: HiloSettings,
    mongo_client: AsyncMongoClient[MongoDocument],
) -> None:
    """The channel was killed after Meta took the reply: its claim stays `sending` until the
    next attempt reports it perhaps not sent (`in_flight_seconds` later). Meta's statuses of it
    meanwhile get 503, so Meta posts them again (it does for days), and they then land on that
    report instead of on a wamid no reply in the journey has."""
    sends = mongo_client[settings.mongodb_database][SENDS_COLLECTION]
    await sends.insert_one({"_id": "c-1", "channel": "whatsapp", "state": "sending"})
    notification = json.loads(sample("statuses.json"))
    delivered, _ = notification["entry"][0]["changes"][0]["value"]["statuses"]
    delivered["biz_opaque_callback_data"] = "hilo-command:c-1"
    notification["entry"][0]["changes"][0]["value"]["statuses"] = [delivered]
    body = json.dumps(notification).encode()

    unsettled = await whatsapp.post(
        "/webhooks/whatsapp", content=body, headers=meta_signed(body, SECRET)
    )
    await sends.update_one({"_id": "c-1"}, {"$set": {"state": "failed", "reason": INTERRUPTED}})
    again = await whatsapp.post(
        "/webhooks/whatsapp", content=body, headers=meta_signed(body, SECRET)
    )

    assert (unsettled.status_code, unsettled.json()["error"]) == (503, "in_flight")
    assert again.status_code == 200
    [event] = await published_interactions(settings, 1)
    assert event["payload"]["provider_message_id"] == "hilo-outbound:c-1"


async def test_a_status_meta_adds_later_is_acknowledged_not_a_reason_to_refuse_the_rest(
    whatsapp: httpx.AsyncClient, settings: HiloSettings
) -> None:
    """Refusing the notification would lose the statuses Hilo models in it, and Meta may turn
    off a webhook that keeps failing."""
    notification = json.loads(sample("statuses.json"))
    value = notification["entry"][0]["changes"][0]["value"]
    value["statuses"].append({**value["statuses"][0], "status": "held_for_quality_assessment"})
    body = json.dumps(notification).encode()

    response = await whatsapp.post(
        "/webhooks/whatsapp", content=body, headers=meta_signed(body, SECRET)
    )

    assert response.status_code == 200, response.text
    assert response.json() == {"published": 2, "ignored": 1}
    events = await published_interactions(settings, 2)
    assert [e["payload"]["status"] for e in events] == ["delivered", "failed"]


async def test_the_answer_counts_the_events_and_is_documented(
    whatsapp: httpx.AsyncClient, settings: HiloSettings
) -> None:
    body = sample("statuses.json")

    response = await whatsapp.post(
        "/webhooks/whatsapp", content=body, headers=meta_signed(body, SECRET)
    )
    schema = (await whatsapp.get("/openapi.json")).json()

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"published": 2, "ignored": 0}
    assert len(await published_interactions(settings, 2)) == 2
    answer = schema["paths"]["/webhooks/whatsapp"]["post"]["responses"]["200"]
    assert answer["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Published"
    }


async def test_a_retried_delivery_gets_the_same_event_id(
    whatsapp: httpx.AsyncClient, settings: HiloSettings
) -> None:
    body = sample("text_message.json")

    for _ in range(2):
        assert (
            await whatsapp.post(
                "/webhooks/whatsapp", content=body, headers=meta_signed(body, SECRET)
            )
        ).status_code == 200

    events = await published_interactions(settings, 2)
    assert len({e["id"] for e in events}) == 1, "the customer-profile service stores it once"


@pytest.mark.parametrize(
    ("headers", "status", "detail"),
    [
        ({"Content-Type": "application/json"}, 401, "signature header is missing"),
        (meta_signed(b"something else", SECRET), 403, "signature does not match the body"),
        (
            meta_signed(sample("text_message.json"), "other"),
            403,
            "signature does not match the body",
        ),
    ],
)
async def test_unsigned_or_tampered_notifications_are_refused_and_not_published(
    whatsapp: httpx.AsyncClient,
    settings: HiloSettings,
    headers: dict[str, str],
    status: int,
    detail: str,
) -> None:
    response = await whatsapp.post(
        "/webhooks/whatsapp", content=sample("text_message.json"), headers=headers
    )

    assert response.status_code == status
    assert response.json() == {"error": "signature", "detail": detail}
    assert await published_interactions(settings, 0) == []


async def test_malformed_and_oversized_bodies_are_refused(
    whatsapp: httpx.AsyncClient, settings: HiloSettings
) -> None:
    not_whatsapp = json.dumps({"object": "page", "entry": []}).encode()
    not_json = b"{nope"
    huge = b"{" + b" " * 20_000 + b"}"

    wrong_shape = await whatsapp.post(
        "/webhooks/whatsapp", content=not_whatsapp, headers=meta_signed(not_whatsapp, SECRET)
    )
    broken = await whatsapp.post(
        "/webhooks/whatsapp", content=not_json, headers=meta_signed(not_json, SECRET)
    )
    too_large = await whatsapp.post(
        "/webhooks/whatsapp", content=huge, headers=meta_signed(huge, SECRET)
    )

    assert wrong_shape.status_code == 422
    assert "object" in wrong_shape.json()["detail"]
    assert broken.status_code == 422
    assert too_large.status_code == 413
    assert await published_interactions(settings, 0) == []


async def test_a_batched_notification_over_a_megabyte_is_taken_whole(
    settings: HiloSettings, topics: list[str]
) -> None:
    """Meta batches up to 1,000 changes in a notification of up to 3 MB: at the 1 MB every
    other channel takes, this one was refused with 413, posted again for 7 days, then dropped
    with every message in it."""
    document = json.loads(sample("text_message.json"))
    [message] = document["entry"][0]["changes"][0]["value"]["messages"]
    document["entry"][0]["changes"][0]["value"]["messages"] = [
        {**message, "id": f"wamid.batch-{n}", "text": {"body": f"{n} " + "x" * 4_000}}
        for n in range(300)
    ]
    body = json.dumps(document).encode()
    channel_settings = WhatsAppSettings.model_validate(
        {
            **settings.model_dump(exclude={"max_body_bytes"}),
            "whatsapp_app_secret": SecretStr(SECRET),
            "whatsapp_verify_token": SecretStr("verify-me"),
        }
    )
    app = create_app(channel_settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://whatsapp") as client:
            answer = await client.post(
                "/webhooks/whatsapp", content=body, headers=meta_signed(body, SECRET)
            )

    assert len(body) > 1_200_000
    assert answer.status_code == 200, answer.text
    assert len(await published_interactions(settings, 300)) == 300


async def test_a_non_ascii_signature_is_refused_as_a_mismatch(
    whatsapp: httpx.AsyncClient, settings: HiloSettings
) -> None:
    body = sample("text_message.json")

    response = await whatsapp.post(
        "/webhooks/whatsapp",
        content=body,
        headers={
            b"X-Hub-Signature-256": ("sha256=é" + "0" * 63).encode(),
            b"Content-Type": b"application/json",
        },
    )

    assert response.status_code == 403
    assert response.json() == {"error": "signature", "detail": "signature does not match the body"}
    assert await published_interactions(settings, 0) == []


def with_message_timestamp(timestamp: str) -> bytes:
    document = json.loads(sample("text_message.json"))
    document["entry"][0]["changes"][0]["value"]["messages"][0]["timestamp"] = timestamp
    return json.dumps(document).encode()


@pytest.mark.parametrize("timestamp", ["yesterday", "9" * 30, ""])
async def test_a_message_with_an_unreadable_timestamp_is_kept_at_its_receipt_time(
    whatsapp: httpx.AsyncClient, settings: HiloSettings, timestamp: str
) -> None:
    body = with_message_timestamp(timestamp)

    response = await whatsapp.post(
        "/webhooks/whatsapp", content=body, headers=meta_signed(body, SECRET)
    )

    assert response.json() == {"published": 1, "ignored": 0}
    [event] = await published_interactions(settings, 1)
    assert event["payload"]["text"] == "Does it come in another color?"
    assert event["occurred_at"] == event["received_at"]
    assert event["adjustments"] == [{"field": "occurred_at", "reason": "unreadable"}]


async def test_template_status_and_other_fields_are_acknowledged_and_counted_as_ignored(
    whatsapp: httpx.AsyncClient, settings: HiloSettings
) -> None:
    document = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "102290129340398",
                "time": 1749416383,
                "changes": [
                    {
                        "field": "message_template_status_update",
                        "value": {
                            "event": "APPROVED",
                            "message_template_id": 1234567890,
                            "message_template_name": "order_ready",
                            "message_template_language": "en_US",
                            "reason": "NONE",
                        },
                    },
                    {
                        "field": "phone_number_quality_update",
                        "value": {"display_phone_number": "15550783881", "event": "FLAGGED"},
                    },
                ],
            }
        ],
    }
    body = json.dumps(document).encode()

    response = await whatsapp.post(
        "/webhooks/whatsapp", content=body, headers=meta_signed(body, SECRET)
    )

    assert response.status_code == 200
    assert response.json() == {"published": 0, "ignored": 2}
    assert await published_interactions(settings, 0) == []


@pytest.mark.parametrize(
    ("wa_id", "phone"),
    [
        ("16505551234", "+16505551234"),
        ("5215512345678", "+525512345678"),  # Mexico: WhatsApp keeps the mobile '1'
        ("551187654321", "+5511987654321"),  # Brazil: a mobile from before its ninth digit
        ("551133334444", "+551133334444"),  # Brazil: a landline, already as dialled
        ("999", None),
    ],
)
def test_the_phone_is_the_number_as_dialled_today_and_the_whatsapp_id_as_sent(
    wa_id: str, phone: str | None
) -> None:
    """So the customer's SMS, store and web identities (+52 55…, +55 11 9…) meet it."""
    identifiers = whatsapp_identifiers(wa_id)

    assert identifiers is not None
    assert (identifiers.phone, identifiers.whatsapp_id) == (phone, wa_id)


async def test_users_with_a_username_are_known_by_their_business_scoped_id(
    whatsapp: httpx.AsyncClient, settings: HiloSettings
) -> None:
    """Meta withholds the number of a user with a username: their events, and the rest of a
    notification that holds one, are published, named by the BSUID Meta sends for everyone."""
    body = sample("username_users.json")

    response = await whatsapp.post(
        "/webhooks/whatsapp", content=body, headers=meta_signed(body, SECRET)
    )

    assert (response.status_code, response.json()) == (200, {"published": 3, "ignored": 0})
    events = await published_interactions(settings, 3)
    ana, sheena, delivered = sorted(events, key=lambda event: event["occurred_at"])
    assert known(ana) == {"whatsapp_user_id": "US.13491208655302741918"}
    assert ana["conversation"]["thread"] == "106540352242922:US.13491208655302741918"
    assert known(sheena) == {
        "phone": "+16505551234",
        "whatsapp_id": "16505551234",
        "whatsapp_user_id": "US.27735512398855013301",
    }
    assert sheena["conversation"]["thread"] == "106540352242922:16505551234", "as before"
    assert known(delivered) == known(ana)
    assert delivered["conversation"]["id"] == ana["conversation"]["id"]


def known(event: dict[str, Any]) -> dict[str, str]:
    return {kind: value for kind, value in event["identifiers"].items() if value is not None}


async def test_an_event_naming_nobody_is_acknowledged_and_counted_not_refused(
    whatsapp: httpx.AsyncClient,
) -> None:
    """A `failed` status of a message sent to a number carries neither id once the number is
    withheld: nothing to attribute, and no reason to make Meta retry the notification."""
    notification = json.loads(sample("statuses.json"))
    for status in notification["entry"][0]["changes"][0]["value"]["statuses"]:
        del status["recipient_id"]
    body = json.dumps(notification).encode()

    response = await whatsapp.post(
        "/webhooks/whatsapp", content=body, headers=meta_signed(body, SECRET)
    )

    assert (response.status_code, response.json()) == (200, {"published": 0, "ignored": 2})
