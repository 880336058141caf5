"""Mailgun's event webhooks against the real broker and database: what became of the email Hilo
sent, and a customer's unsubscribe or spam complaint (`channel_email.events`).

The events are built by the Mailgun stand-in (`hilo.testkit.standins.mailgun.event_body`), in
Mailgun's format, signed with the domain's webhook signing key.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from pydantic_core import to_json

from channel_email.app import create_app
from channel_email.settings import EmailSettings
from hilo.contract import conversation_id, interaction_id
from hilo.settings import HiloSettings
from hilo.testkit.contract_check import published_interactions
from hilo.testkit.standins.mailgun import (
    DOMAIN,
    AcceptedEmail,
    event_body,
    permanent_failure,
)
from hilo_devkit.channel_contract import (
    ProviderRequest,
    assert_refused_while_kafka_is_down,
    channel_client,
)

SIGNING_KEY = "key-mailgun-signing"
ANA = "ana.garcia@example.com"
CONVERSATION = conversation_id("email", "CAF=first-1@mail.example.com")


def sent_by_hilo(message_id: str = "<20261205101500.1.A1B2@mg.shop.example>") -> AcceptedEmail:
    """A reply as the email channel hands it to Mailgun (`channel_email.sending`)."""
    return AcceptedEmail(
        message_id,
        DOMAIN,
        (
            ("from", "Support <support@shop.example>"),
            ("to", ANA),
            ("subject", "Re: Where is my order ORD-1001?"),
            ("text", "It is ready for pickup."),
            ("v:hilo-command-id", "command-1"),
            ("v:hilo-conversation", CONVERSATION),
        ),
    )


def campaign_mail() -> AcceptedEmail:
    """A newsletter another system sent through the same Mailgun domain: no Hilo variables."""
    return AcceptedEmail(
        "<20261205090000.7.C3D4@mg.shop.example>",
        DOMAIN,
        (("from", "News <news@shop.example>"), ("to", ANA), ("subject", "Winter sale")),
    )


def event(message: AcceptedEmail, name: str, **details: Any) -> ProviderRequest:
    body = event_body(message, name, SIGNING_KEY, **details)
    return ProviderRequest(
        "/webhooks/mailgun/events", to_json(body), {"Content-Type": "application/json"}
    )


def outcome_id(message: AcceptedEmail, name: str) -> str:
    return interaction_id("email", f"{message.message_id.strip('<>')}:{name}")


async def post(client: httpx.AsyncClient, request: ProviderRequest) -> httpx.Response:
    return await client.post(request.path, content=request.body, headers=dict(request.headers))


@pytest.fixture
def email_settings(settings: HiloSettings) -> EmailSettings:
    return EmailSettings.model_validate(
        {
            **settings.model_dump(),
            "mailgun_signing_key": SecretStr(SIGNING_KEY),
            "email_api_keys": [SecretStr("mta-key-1")],
        }
    )


@pytest.fixture
async def email(
    email_settings: EmailSettings, topics: list[str]
) -> AsyncIterator[httpx.AsyncClient]:
    async with channel_client(create_app(email_settings)) as client:
        yield client


async def test_the_outcomes_of_hilos_mail_are_published_and_what_is_no_outcome_is_not(
    email: httpx.AsyncClient, settings: HiloSettings
) -> None:
    reply, newsletter = sent_by_hilo(), campaign_mail()
    bounced = sent_by_hilo("<20261205101501.2.E5F6@mg.shop.example>")
    bounce = permanent_failure(f"5.1.1 <{ANA}>: Recipient address rejected: User unknown")
    published = [
        await post(email, event(reply, "delivered")),
        await post(email, event(reply, "opened")),
        await post(email, event(reply, "opened")),
        await post(email, event(bounced, "failed", **bounce)),
    ]
    ignored = [
        await post(email, event(reply, "accepted")),
        await post(email, event(reply, "clicked", url="https://shop.example/orders")),
        await post(email, event(bounced, "failed", severity="temporary", reason="generic")),
        await post(email, event(newsletter, "delivered")),
    ]

    assert [answer.status_code for answer in published + ignored] == [200] * 8
    assert [answer.json() for answer in ignored] == [
        {"ignored": "accepted"},
        {"ignored": "clicked"},
        {"ignored": "failed"},
        {"ignored": "delivered"},
    ]
    events = await published_interactions(settings, 4)
    assert [e["id"] for e in events] == [
        outcome_id(reply, "delivered"),
        outcome_id(reply, "opened"),
        outcome_id(reply, "opened"),  # one id: opened twice is read once in the journey
        outcome_id(bounced, "failed"),
    ]
    assert [(e["payload"]["kind"], e["channel"], e["identifiers"]["email"]) for e in events] == [
        ("message_status", "email", ANA)
    ] * 4
    assert [e["payload"]["status"] for e in events] == ["delivered", "read", "read", "failed"]
    assert {e["payload"]["provider_message_id"] for e in events[:3]} == {
        reply.message_id.strip("<>")
    }
    assert events[3]["payload"]["error"] == (
        "550 5.1.1 <a***@e***.com>: Recipient address rejected: User unknown (bounce)"
    )
    assert {e["conversation"]["id"] for e in events} == {CONVERSATION}


async def test_an_unsubscribe_or_a_spam_complaint_withdraws_consent_whoever_sent_the_mail(
    email: httpx.AsyncClient, settings: HiloSettings
) -> None:
    unsubscribed = await post(email, event(campaign_mail(), "unsubscribed"))
    complained = await post(email, event(sent_by_hilo(), "complained"))

    assert (unsubscribed.status_code, complained.status_code) == (200, 200)
    events = await published_interactions(settings, 2)
    assert [(e["payload"]["kind"], e["identifiers"]["email"]) for e in events] == [
        ("consent", ANA)
    ] * 2
    assert [e["payload"] for e in events] == [
        {
            "kind": "consent",
            "purpose": "marketing",
            "granted": False,
            "channel": "email",
            "source": "mailgun_unsubscribed",
        },
        {
            "kind": "consent",
            "purpose": "contact",
            "granted": False,
            "channel": "email",
            "source": "mailgun_complained",
        },
    ]
    assert events[0]["conversation"] is None


async def test_forged_stale_and_replayed_events_publish_nothing_new(
    email: httpx.AsyncClient, settings: HiloSettings
) -> None:
    reply = sent_by_hilo()
    forged = event_body(reply, "complained", "guessed-key")
    stale = event_body(reply, "complained", SIGNING_KEY, timestamp=int(time.time()) - 10 * 3600)
    unsigned = {"event-data": event_body(reply, "complained")["event-data"]}
    captured = event_body(reply, "delivered", SIGNING_KEY, token="captured-token")
    replayed = {**captured, "event-data": event_body(campaign_mail(), "unsubscribed")["event-data"]}

    answers = [
        await email.post("/webhooks/mailgun/events", json=body)
        for body in (forged, stale, unsigned, captured, replayed)
    ]

    assert [answer.status_code for answer in answers] == [403, 403, 401, 200, 200]
    assert answers[4].json() == answers[3].json() == {"event_id": outcome_id(reply, "delivered")}
    [delivered] = await published_interactions(settings, 1)
    assert delivered["payload"]["status"] == "delivered"


async def test_an_event_that_can_never_be_read_is_refused_for_good_naming_the_problem(
    email: httpx.AsyncClient, settings: HiloSettings
) -> None:
    reply = sent_by_hilo()
    no_message_id = event_body(reply, "delivered", SIGNING_KEY)
    no_message_id["event-data"]["message"] = {"headers": {}}
    bad_recipient = event_body(reply, "unsubscribed", SIGNING_KEY)
    bad_recipient["event-data"]["recipient"] = "ana@@example"
    no_event = event_body(reply, "delivered", SIGNING_KEY)
    del no_event["event-data"]["event"]

    not_json = await email.post("/webhooks/mailgun/events", content=b"event=delivered")
    answers = [
        await email.post("/webhooks/mailgun/events", json=body)
        for body in (no_message_id, bad_recipient, no_event)
    ]

    assert [answer.status_code for answer in (not_json, *answers)] == [406] * 4
    assert not_json.json()["detail"] == "body is not JSON"
    assert "message-id and recipient" in answers[0].json()["detail"]
    assert "ana@@example" not in answers[1].text
    assert answers[2].json()["detail"].startswith("event: Field required")
    assert await published_interactions(settings, 0) == []


async def test_an_event_refused_while_kafka_is_down_is_published_by_mailguns_retry(
    email_settings: EmailSettings, tmp_path: Path
) -> None:
    """The refused post gives its token back: Mailgun's retry, same token, publishes."""
    reply = sent_by_hilo()
    events = await assert_refused_while_kafka_is_down(
        create_app, email_settings, event(reply, "delivered"), tmp_path
    )

    assert {e["id"] for e in events} == {outcome_id(reply, "delivered")}
