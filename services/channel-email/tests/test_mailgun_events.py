"""Mailgun's event webhooks against the real broker and database: what became of the email Hilo
sent, and a customer's unsubscribe or spam complaint (`channel_email.events`).

The events are built by the Mailgun stand-in (`hilo.testkit.standins.mailgun.event_body`), in
Mailgun's format, signed with the domain's webhook signing key.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic_core import to_json
from pymongo import AsyncMongoClient

from channel_email.app import create_app
from channel_email.settings import EmailSettings
from channel_email.testing import SIGNING_KEY, email_settings_for
from channel_email.translate import mail_reference
from hilo.contract import conversation_id, interaction_id
from hilo.contract.outbound import FAILURE_PREFIX
from hilo.mongo import MongoDocument
from hilo.outbound import INTERRUPTED, SENDS_COLLECTION
from hilo.settings import HiloSettings
from hilo.testkit.contract_check import opened_interactions, published_interactions
from hilo.testkit.standins.mailgun import (
    DOMAIN,
    AcceptedEmail,
    event_body,
    permanent_failure,
)
from hilo_devkit.channel_contract import (
    ProviderRequest,
    broker_of_its_own,
    channel_client,
    published_records,
)

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


def outcome_id(
    settings: HiloSettings, message: AcceptedEmail, name: str, recipient: str = ANA
) -> str:
    """An event's id: the message and recipient keyed with the pepper, and the outcome."""
    reference = mail_reference(settings.pepper, recipient, message.message_id.strip("<>"))
    return interaction_id("email", f"{reference}:{name}")


def mailgun_id(request: ProviderRequest) -> str:
    """Mailgun's own id of the event a request carries."""
    return str(json.loads(request.body)["event-data"]["id"])


async def post(client: httpx.AsyncClient, request: ProviderRequest) -> httpx.Response:
    return await client.post(request.path, content=request.body, headers=dict(request.headers))


@pytest.fixture
def email_settings(settings: HiloSettings) -> EmailSettings:
    return email_settings_for(settings)


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
        await post(email, event(reply, "stored")),
        await post(email, event(bounced, "failed", severity="temporary", reason="generic")),
        await post(email, event(newsletter, "delivered")),
    ]

    assert [answer.status_code for answer in published + ignored] == [200] * 8
    assert [answer.json() for answer in ignored] == [
        {"ignored": "accepted"},
        {"ignored": "stored"},
        {"ignored": "failed"},
        {"ignored": "delivered"},
    ]
    events = await published_interactions(settings, 4)
    assert [e["id"] for e in events] == [
        outcome_id(settings, reply, "delivered"),
        outcome_id(settings, reply, "opened"),
        outcome_id(settings, reply, "opened"),  # one id: opened twice is read once in the journey
        outcome_id(settings, bounced, "failed"),
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


async def test_a_link_clicked_in_a_newsletter_is_a_campaign_view_of_its_reader(
    email: httpx.AsyncClient, settings: HiloSettings
) -> None:
    """Whoever sent the mail: the reader is known by their address, where their visit to the
    shop may stay anonymous. Each click is seen; a security gateway's is not."""
    spring = (
        "https://shop.example/spring?utm_source=newsletter&utm_medium=email&utm_campaign=spring"
    )
    gateway = {"client-info": {"client-name": "unknown", "bot": "generic"}}
    answers = [
        await post(email, event(campaign_mail(), "clicked", url=spring, **gateway)),
        await post(email, event(campaign_mail(), "clicked", url=spring)),
        await post(email, event(campaign_mail(), "clicked", url=spring)),
        await post(email, event(campaign_mail(), "clicked", url="https://shop.example/")),
        await post(email, event(campaign_mail(), "clicked")),
    ]

    assert [a.status_code for a in answers] == [200, 200, 200, 200, 406], answers[4].text
    assert answers[0].json() == {"ignored": "clicked"}
    events = await published_interactions(settings, 3)
    assert len({e["id"] for e in events}) == 3, "the reader came back through the link"
    assert [(e["channel"], e["identifiers"]["email"]) for e in events] == [("email", ANA)] * 3
    assert events[0]["payload"] == {
        "kind": "page_view",
        "screen": False,
        "name": None,
        "url": spring,
        "path": "/spring",
        "referrer": None,
        "title": None,
        "campaign": {"name": "spring", "source": "newsletter", "medium": "email"},
    }
    assert "campaign" not in events[2]["payload"], "a link without a campaign is a view alone"


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
    assert (
        answers[4].json()
        == answers[3].json()
        == {"event_id": outcome_id(settings, reply, "delivered")}
    )
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


async def test_a_captured_signature_of_an_ignored_or_refused_event_is_worth_nothing(
    email: httpx.AsyncClient, settings: HiloSettings
) -> None:
    """Mailgun signs the timestamp and token, not the body: every signed token is claimed,
    whatever its event came to, so no forged body publishes under it, on either route."""
    victim = "victim@example.com"
    forged = AcceptedEmail(
        campaign_mail().message_id, DOMAIN, (("to", victim), ("subject", "Winter sale"))
    )
    clicked = event_body(campaign_mail(), "accepted", SIGNING_KEY, token="clicked-token")
    unreadable = event_body(sent_by_hilo(), "delivered", SIGNING_KEY, token="refused-token")
    unreadable["event-data"]["message"] = {"headers": {}}
    first = [
        await email.post("/webhooks/mailgun/events", json=body) for body in (clicked, unreadable)
    ]
    forgeries = [
        {**signed, "event-data": event_body(forged, "complained")["event-data"]}
        for signed in (clicked, unreadable)
    ]
    again = [await email.post("/webhooks/mailgun/events", json=body) for body in forgeries]
    as_route = await email.post(
        "/webhooks/mailgun",
        data={
            "from": f"Victim <{victim}>",
            "stripped-text": "Send the refund to my new account",
            "Message-Id": "<forged@example.com>",
            **clicked["signature"],
        },
    )

    assert [a.status_code for a in first] == [200, 406]
    assert [a.status_code for a in again] == [200, 406]
    assert again[0].json() == first[0].json() == {"ignored": "accepted"}
    assert again[1].json() == first[1].json()
    assert (as_route.status_code, as_route.json()) == (200, {"ignored": "accepted"})
    assert await published_interactions(settings, 0) == []


async def test_each_recipient_of_one_newsletter_is_heard(
    email: httpx.AsyncClient, settings: HiloSettings
) -> None:
    """A batch or mailing-list send gives every copy one Message-Id: the recipient is part of
    the event's id, or every unsubscribe after the first would be dropped as a repeat."""
    newsletter = campaign_mail()
    to_bob = AcceptedEmail(newsletter.message_id, DOMAIN, (("to", "bob@example.com"),))

    requests = [event(newsletter, "unsubscribed"), event(to_bob, "unsubscribed")]
    answers = [await post(email, request) for request in requests]

    assert [a.status_code for a in answers] == [200, 200]
    events = await published_interactions(settings, 2)
    assert [e["id"] for e in events] == [
        outcome_id(settings, newsletter, f"unsubscribed:{mailgun_id(requests[0])}"),
        outcome_id(
            settings, newsletter, f"unsubscribed:{mailgun_id(requests[1])}", "bob@example.com"
        ),
    ]
    assert len({e["id"] for e in events}) == 2
    assert [e["identifiers"]["email"] for e in events] == [ANA, "bob@example.com"]


async def test_events_and_mail_arriving_while_kafka_is_down_are_kept_then_published(
    email_settings: EmailSettings, settings: HiloSettings, tmp_path: Path
) -> None:
    """Mailgun never posts a delivery notification again after a 503: what arrives while
    Kafka is away is kept in MongoDB (`hilo.spool`), answered 200, and published once it is
    back; a retry of a kept post publishes nothing more."""
    reply = sent_by_hilo()
    delivered = event(reply, "delivered")
    async with (
        broker_of_its_own(email_settings, tmp_path, spool_drain_seconds=0.5) as (
            local,
            kafka,
        ),
        channel_client(create_app(local)) as running,
    ):
        await asyncio.to_thread(kafka.stop)
        ready = await running.get("/health/ready")
        down = [await post(running, delivered), await post(running, delivered)]
        mail = await running.post(
            "/v1/messages/mime",
            content=(Path(__file__).parent / "samples" / "reply_with_attachment.eml").read_bytes(),
            headers={"X-API-Key": "mta-key-1"},
        )
        await asyncio.to_thread(kafka.start)
        records = await published_records(local, 2)

    assert ready.status_code == 200
    assert ready.json()["status"] == "degraded"
    assert [a.status_code for a in (*down, mail)] == [200, 200, 200]
    assert (
        down[0].json() == down[1].json() == {"event_id": outcome_id(settings, reply, "delivered")}
    )
    # The producer may also deliver what it had queued when the first post was refused: the
    # same event twice, under one id (consumers drop repeats).
    kinds = {e["id"]: e["payload"]["kind"] for e in await opened_interactions(local, records)}
    assert sorted(kinds.values()) == ["message", "message_status"]


async def test_an_outcome_of_a_reply_reported_not_confirmed_lands_on_that_report(
    email: httpx.AsyncClient,
    settings: HiloSettings,
    mongo_client: AsyncMongoClient[MongoDocument],
) -> None:
    """The service was stopped while Mailgun answered (a deploy) or died: the reply is reported
    "perhaps not sent", with no message id recorded. Mailgun's later events for it say what
    became of it on that report, where the agent reads it, instead of on a message id that no
    reply in the journey has."""
    sends = mongo_client[settings.mongodb_database][SENDS_COLLECTION]
    await sends.insert_one({"_id": "command-1", "channel": "email", "state": "sending"})
    reply = sent_by_hilo()
    opened = event(reply, "opened")

    # The attempt died holding its claim: settled only after `in_flight_seconds`. Until then
    # Mailgun is asked to post again (it does for 8 hours), not told which id to use; but never
    # a delivery notification, which Mailgun posts once: that one is kept on its own message id
    # (it was answered 503 and lost).
    unsettled = await post(email, opened)
    delivered_unsettled = await post(email, event(reply, "delivered"))
    await sends.update_one(
        {"_id": "command-1"}, {"$set": {"state": "failed", "reason": INTERRUPTED}}
    )
    settled = await post(email, opened)

    assert (unsettled.status_code, delivered_unsettled.status_code) == (503, 200)
    assert settled.status_code == 200
    events = await published_interactions(settings, 2)
    assert [e["id"] for e in events] == [
        outcome_id(settings, reply, "delivered"),
        outcome_id(settings, reply, "opened"),
    ]
    assert [(e["payload"]["provider_message_id"], e["payload"]["status"]) for e in events] == [
        (reply.message_id.strip("<>"), "delivered"),
        (f"{FAILURE_PREFIX}command-1", "read"),
    ]
