"""The Twilio SMS webhook against the real broker, with Twilio's documented parameters."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr
from pymongo import AsyncMongoClient

from channel_sms.app import create_app
from channel_sms.settings import SmsSettings
from hilo.contract import conversation_id, interaction_id
from hilo.mongo import MongoDocument
from hilo.outbound import INTERRUPTED, SENDS_COLLECTION
from hilo.settings import HiloSettings
from hilo.testkit.contract_check import published_interactions
from hilo.testkit.signing import twilio_signed
from hilo_devkit.channel_contract import (
    ProviderRequest,
    assert_channel_contract,
    assert_spooled_while_kafka_is_down,
    channel_client,
)

TOKEN = "12345"
PUBLIC = "https://hooks.example.com"
INCOMING = [
    ("ToCountry", "US"),
    ("ToState", "CA"),
    ("SmsMessageSid", "SM1f0e8ae6ade43cb3c0ce4525424e404f"),
    ("NumMedia", "1"),
    ("ToCity", "SAN FRANCISCO"),
    ("FromZip", ""),
    ("SmsSid", "SM1f0e8ae6ade43cb3c0ce4525424e404f"),
    ("FromState", ""),
    ("SmsStatus", "received"),
    ("FromCity", ""),
    ("Body", "Is my order ready for pick-up?"),
    ("FromCountry", "ES"),
    ("To", "+14155552671"),
    ("MessagingServiceSid", "MG9752274e9e519418a7406176694466fa"),
    ("ToZip", "94105"),
    ("NumSegments", "1"),
    ("MessageSid", "SM1f0e8ae6ade43cb3c0ce4525424e404f"),
    ("AccountSid", "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"),
    ("From", "+34612345678"),
    ("ApiVersion", "2010-04-01"),
    ("MediaContentType0", "image/jpeg"),
    ("MediaUrl0", "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1"),
]


STATUS = [
    ("MessageSid", "SM99"),
    ("From", "+14155552671"),
    ("To", "+34612345678"),
    ("AccountSid", "AC1"),
    ("MessageStatus", "delivered"),
]


def signed(path: str, params: list[tuple[str, str]]) -> ProviderRequest:
    return ProviderRequest(
        path, urlencode(params).encode(), twilio_signed(PUBLIC + path, params, TOKEN)
    )


@pytest.fixture
def sms_settings(settings: HiloSettings) -> SmsSettings:
    return SmsSettings.model_validate(
        {**settings.model_dump(), "twilio_auth_token": SecretStr(TOKEN), "public_base_url": PUBLIC}
    )


@pytest.fixture
async def sms(sms_settings: SmsSettings, topics: list[str]) -> AsyncIterator[httpx.AsyncClient]:
    async with channel_client(create_app(sms_settings)) as client:
        yield client


async def test_messages_and_statuses_honour_the_channel_contract(
    sms: httpx.AsyncClient, settings: HiloSettings
) -> None:
    events = await assert_channel_contract(
        sms,
        settings,
        [signed("/webhooks/twilio/sms", INCOMING), signed("/webhooks/twilio/sms/status", STATUS)],
    )

    assert {event["payload"]["kind"] for event in events} == {"message", "message_status"}


async def test_kept_while_kafka_is_down_and_published_once_it_is_back(
    sms_settings: SmsSettings, tmp_path: Path
) -> None:
    """Twilio never retries a 503: the one delivery must be enough."""
    events = await assert_spooled_while_kafka_is_down(
        create_app, sms_settings, signed("/webhooks/twilio/sms", INCOMING), tmp_path
    )

    assert {event["id"] for event in events} == {
        interaction_id("sms", "SM1f0e8ae6ade43cb3c0ce4525424e404f")
    }


async def post(
    client: httpx.AsyncClient, path: str, params: list[tuple[str, str]], token: str = TOKEN
) -> httpx.Response:
    headers = twilio_signed(PUBLIC + path, params, token)
    return await client.post(path, content=urlencode(params), headers=headers)


async def test_a_status_of_a_reply_reported_perhaps_not_sent_lands_on_that_report(
    sms: httpx.AsyncClient, settings: HiloSettings, mongo_client: AsyncMongoClient[MongoDocument]
) -> None:
    """The channel was stopped while Twilio answered: the reply went out but its SID was never
    recorded, so the agent is told it was perhaps not sent. Its StatusCallback URL names the
    command (`hilo_command`, signed by Twilio with the rest of the URL): Twilio's statuses then
    land on that report, where the agent reads that the reply did go out. A reply sent as
    usual keeps its statuses on its SID, and a command swapped into a signed URL is refused."""
    sends = mongo_client[settings.mongodb_database][SENDS_COLLECTION]
    await sends.insert_many(
        [
            {"_id": "c-stopped", "channel": "sms", "state": "failed", "reason": INTERRUPTED},
            {"_id": "c-sent", "channel": "sms", "state": "sent", "provider_message_id": "SM98"},
            {"_id": "c-sending", "channel": "sms", "state": "sending"},
        ]
    )
    path = "/webhooks/twilio/sms/status"
    sent_as_usual = [("MessageSid", "SM98"), *STATUS[1:]]
    forged_headers = twilio_signed(f"{PUBLIC}{path}?hilo_command=c-sent", sent_as_usual, TOKEN)

    # Still claimed: almost always a send whose answer is being stored. Twilio never posts a
    # status again, so it is not asked to: the status stays on its SID.
    while_sending = [("MessageSid", "SM97"), *STATUS[1:]]
    answers = [
        await post(sms, f"{path}?hilo_command=c-stopped", STATUS),
        await post(sms, f"{path}?hilo_command=c-sent", sent_as_usual),
        await post(sms, f"{path}?hilo_command=c-sending", while_sending),
        await sms.post(
            f"{path}?hilo_command=c-stopped",
            content=urlencode(sent_as_usual),
            headers=forged_headers,
        ),
    ]

    assert [answer.status_code for answer in answers] == [200, 200, 200, 403]
    events = await published_interactions(settings, 3)
    assert [(e["payload"]["provider_message_id"], e["payload"]["status"]) for e in events] == [
        ("hilo-outbound:c-stopped", "delivered"),
        ("SM98", "delivered"),
        ("SM97", "delivered"),
    ]


async def test_an_incoming_sms_is_published_and_answered_with_empty_twiml(
    sms: httpx.AsyncClient, settings: HiloSettings
) -> None:
    response = await post(sms, "/webhooks/twilio/sms", INCOMING)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/xml")
    assert response.text == '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
    [event] = await published_interactions(settings, 1)
    assert event["id"] == interaction_id("sms", "SM1f0e8ae6ade43cb3c0ce4525424e404f")
    assert event["identifiers"]["phone"] == "+34612345678"
    assert event["payload"]["text"] == "Is my order ready for pick-up?"
    assert event["payload"]["attachments"][0]["kind"] == "image"
    assert event["payload"]["attachments"][0]["url"].startswith("https://api.twilio.com/")
    assert event["conversation"]["thread"] == "+14155552671:+34612345678"
    assert event["conversation"]["id"] == conversation_id(
        "sms", "+14155552671:+34612345678", settings.pepper
    ), "keyed: the id is in the clear on the topic, and the thread holds the customer's number"


async def test_status_callbacks_are_published(
    sms: httpx.AsyncClient, settings: HiloSettings
) -> None:
    base = [
        ("MessageSid", "SM99"),
        ("From", "+14155552671"),
        ("To", "+34612345678"),
        ("AccountSid", "AC1"),
    ]

    queued = await post(sms, "/webhooks/twilio/sms/status", [*base, ("MessageStatus", "queued")])
    failed = await post(
        sms,
        "/webhooks/twilio/sms/status",
        [*base, ("MessageStatus", "undelivered"), ("ErrorCode", "30003")],
    )

    assert queued.status_code == 200
    assert failed.status_code == 200
    [event] = await published_interactions(settings, 1)
    assert event["payload"] == {
        **event["payload"],
        "status": "failed",
        "error": "Twilio error 30003",
    }


async def test_a_retried_webhook_gets_the_same_event_id(
    sms: httpx.AsyncClient, settings: HiloSettings
) -> None:
    for _ in range(2):
        assert (await post(sms, "/webhooks/twilio/sms", INCOMING)).status_code == 200

    assert len({e["id"] for e in await published_interactions(settings, 2)}) == 1


async def test_wrong_or_missing_signatures_and_tampered_forms_are_refused(
    sms: httpx.AsyncClient, settings: HiloSettings
) -> None:
    wrong_token = await post(sms, "/webhooks/twilio/sms", INCOMING, token="guess")
    headers = twilio_signed(PUBLIC + "/webhooks/twilio/sms", INCOMING, TOKEN)
    tampered = await sms.post(
        "/webhooks/twilio/sms",
        content=urlencode([*INCOMING[:-1], ("Body", "changed")]),
        headers=headers,
    )
    unsigned = await sms.post(
        "/webhooks/twilio/sms",
        content=urlencode(INCOMING),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )

    assert wrong_token.status_code == 403
    assert tampered.status_code == 403
    assert unsigned.status_code == 401
    assert await published_interactions(settings, 0) == []


async def test_during_a_token_rotation_webhooks_signed_with_either_token_are_taken(
    sms_settings: SmsSettings, settings: HiloSettings, topics: list[str]
) -> None:
    """Twilio signs with its primary token until the new (secondary) one is promoted: a
    webhook refused for its signature is never sent again, so both must pass meanwhile."""
    rotating = sms_settings.model_copy(
        update={
            "twilio_auth_token": SecretStr("the-new-token"),
            "twilio_previous_auth_token": SecretStr(TOKEN),
        }
    )
    second = [
        (k, "SM" + "2" * 32) if k.endswith("MessageSid") or k == "SmsSid" else (k, v)
        for k, v in INCOMING
    ]
    async with channel_client(create_app(rotating)) as client:
        old = await post(client, "/webhooks/twilio/sms", INCOMING)
        new = await post(client, "/webhooks/twilio/sms", second, token="the-new-token")
        other = await post(client, "/webhooks/twilio/sms", INCOMING, token="guess")

    assert (old.status_code, new.status_code, other.status_code) == (200, 200, 403)
    assert len(await published_interactions(settings, 2)) == 2


async def test_malformed_forms_are_refused_naming_the_problem(
    sms: httpx.AsyncClient, settings: HiloSettings
) -> None:
    missing_from = await post(
        sms, "/webhooks/twilio/sms", [(k, v) for k, v in INCOMING if k != "From"]
    )
    bad_phone = await post(
        sms,
        "/webhooks/twilio/sms",
        [(k, "+34 000") if k == "From" else (k, v) for k, v in INCOMING],
    )

    assert missing_from.status_code == 422
    assert missing_from.json()["detail"] == "From: Field required"
    assert bad_phone.status_code == 422
    assert "+34 000" not in bad_phone.text
    assert await published_interactions(settings, 0) == []


async def test_a_non_ascii_signature_is_refused_as_a_mismatch(
    sms: httpx.AsyncClient, settings: HiloSettings
) -> None:
    response = await sms.post(
        "/webhooks/twilio/sms",
        content=urlencode(INCOMING),
        headers={
            b"X-Twilio-Signature": "é".encode() * 28,
            b"Content-Type": b"application/x-www-form-urlencoded",
        },
    )

    assert response.status_code == 403
    assert response.json()["detail"] == "signature does not match the request"
    assert await published_interactions(settings, 0) == []


@pytest.mark.parametrize("sender", ["12345", "898287", "ACME Bank", "Hilo"])
async def test_messages_from_short_codes_and_sender_ids_are_acknowledged_not_recorded(
    sms: httpx.AsyncClient, settings: HiloSettings, sender: str
) -> None:
    from_service = [(k, sender) if k == "From" else (k, v) for k, v in INCOMING]
    status_to_service = [(k, sender) if k == "To" else (k, v) for k, v in STATUS]

    incoming = await post(sms, "/webhooks/twilio/sms", from_service)
    status = await post(sms, "/webhooks/twilio/sms/status", status_to_service)

    assert incoming.status_code == 200
    assert incoming.text == '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
    assert status.status_code == 200
    assert await published_interactions(settings, 0) == []


async def test_an_sms_with_nothing_in_it_is_acknowledged_and_counted_not_refused(
    sms: httpx.AsyncClient, settings: HiloSettings
) -> None:
    """No text, no media: no message to record. A 422 would only raise an alert in Twilio's
    console (it never sends a webhook again); the counter says it came."""
    empty = [
        (k, "" if k == "Body" else "0" if k == "NumMedia" else v)
        for k, v in INCOMING
        if not k.startswith("Media")
    ]
    labels = {"channel": "sms"}
    before = REGISTRY.get_sample_value("hilo_channel_events_ignored_total", labels) or 0.0

    response = await post(sms, "/webhooks/twilio/sms", empty)

    assert response.status_code == 200
    assert await published_interactions(settings, 0) == []
    after = REGISTRY.get_sample_value("hilo_channel_events_ignored_total", labels)
    assert after == before + 1
