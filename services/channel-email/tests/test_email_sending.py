"""Outbound email through Mailgun, against the real broker and database and a local stand-in of
Mailgun's messages API (`hilo.testkit.standins.mailgun`).

The reply a customer gets must thread in their mail client (In-Reply-To, References), land in
the conversation their email started, and be recognised when they answer it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from faststream.kafka import KafkaBroker
from prometheus_client import REGISTRY
from pydantic import SecretStr
from pymongo import AsyncMongoClient

from channel_email.app import create_app
from channel_email.sending import MailgunMessages, mailgun_provider, message_form
from channel_email.settings import EmailSettings
from channel_email.testing import API_KEY, SIGNING_KEY, email_settings_for
from hilo import outbound
from hilo.contract import Conversation, Identifiers, conversation_id
from hilo.contract.outbound import OutboundCommand, OutboundMessage, Template
from hilo.kafka import KafkaPublisher, create_broker
from hilo.mongo import MongoDocument
from hilo.outbound import (
    SENDS_COLLECTION,
    OutboundSender,
    RetryPolicy,
    SendRefused,
    command_record,
)
from hilo.sealing import create_sealer
from hilo.settings import HiloSettings
from hilo.testkit.contract_check import published_interactions
from hilo.testkit.logs import logs_of
from hilo.testkit.probes import eventually
from hilo.testkit.samples import sample_command
from hilo.testkit.serving import free_port, served
from hilo.testkit.standins.mailgun import (
    DOMAIN,
    INVALID_ADDRESS,
    AcceptedEmail,
    MailgunStandIn,
)
from hilo.webhook import hmac_sha256
from hilo_devkit.channel_contract import channel_client

SENDER = "Support <support@shop.example>"
CUSTOMER = "ana.garcia@example.com"
FIRST_ID = "CAF=first-1@mail.example.com"
DEFAULT_SUBJECT = "A message from Shop"
FAST = RetryPolicy(attempts=3, first_wait_seconds=0.01, max_wait_seconds=0.05)


def reply_command(
    *,
    conversation: Conversation | None = None,
    reply_to: str | None = FIRST_ID,
    references: tuple[str, ...] = (),
    subject: str | None = "Re: Where is my order ORD-1001?",
) -> OutboundCommand:
    """What the agent desk publishes to answer Ana's email."""
    return OutboundCommand(
        id=str(uuid.uuid4()),
        customer_id="cus-1",
        channel="email",
        identifiers=Identifiers(email=CUSTOMER),
        conversation=conversation,
        payload=OutboundMessage(
            text="It is ready for pickup in the Barcelona store.",
            subject=subject,
            reply_to_provider_message_id=reply_to,
            references=list(references),
        ),
        requested_by="agent-ana",
        requested_at=datetime.now(UTC),
    )


def first_email() -> bytes:
    """Ana's email as a Mailgun route's forward() posts it, signed."""
    stamp, token = str(int(time.time())), uuid.uuid4().hex
    return urlencode(
        {
            "sender": CUSTOMER,
            "from": f"Ana García <{CUSTOMER}>",
            "subject": "Where is my order ORD-1001?",
            "stripped-text": "Hi, where is my order?",
            "Message-Id": f"<{FIRST_ID}>",
            "message-headers": '[["Date", "Mon, 23 Nov 2026 18:00:00 +0100"]]',
            "timestamp": stamp,
            "token": token,
            "signature": hmac_sha256(SIGNING_KEY, (stamp + token).encode()).hex(),
        }
    ).encode()


def customer_answer(to: AcceptedEmail) -> bytes:
    """Ana's answer to the email she received, threaded as her mail client threads it."""
    references = f"{to.headers['References']} {to.message_id}"
    return (
        f"From: Ana García <{CUSTOMER}>\r\nTo: {SENDER}\r\n"
        f"Subject: Re: {to.get('subject')}\r\nDate: Tue, 24 Nov 2026 09:00:00 +0100\r\n"
        f"Message-ID: <CAF=answer-3@mail.example.com>\r\nIn-Reply-To: {to.message_id}\r\n"
        f"References: {references}\r\n\r\nGreat, I will be there at noon.\r\n"
    ).encode()


@pytest.fixture
def mailgun() -> Iterator[MailgunStandIn]:
    with MailgunStandIn() as standin:
        yield standin


@pytest.fixture
def email_settings(settings: HiloSettings, mailgun: MailgunStandIn) -> EmailSettings:
    return email_settings_for(
        settings,
        mailgun_api_key=SecretStr(mailgun.api_key),
        mailgun_domain=DOMAIN,
        mailgun_api_url=mailgun.url,
        email_from=SENDER,
        outbound_send_attempts=3,
        outbound_first_wait_seconds=0.01,
    )


@pytest.fixture
async def broker(settings: HiloSettings, topics: list[str]) -> AsyncIterator[KafkaBroker]:
    kafka = create_broker(settings)
    await kafka.start()
    yield kafka
    await kafka.stop()


def provider(mailgun: MailgunStandIn, api_key: str | None = None) -> MailgunMessages:
    key = api_key or mailgun.api_key
    return MailgunMessages(key, DOMAIN, SENDER, DEFAULT_SUBJECT, api_url=mailgun.url)


def sender(
    settings: HiloSettings,
    client: AsyncMongoClient[MongoDocument],
    broker: KafkaBroker,
    mailgun: MailgunMessages,
) -> OutboundSender:
    publisher = KafkaPublisher(broker, settings, sealer=create_sealer(settings, client))
    sends = client[settings.mongodb_database][SENDS_COLLECTION]
    return OutboundSender("email", "test", mailgun, publisher, sends, FAST)


async def redelivered() -> float:
    """Commands the email channel received again after sending them (and did not resend)."""
    return REGISTRY.get_sample_value("hilo_outbound_redelivered_total", {"channel": "email"}) or 0


async def test_a_reply_is_sent_once_threaded_into_the_conversation_its_answer_continues(
    email_settings: EmailSettings,
    settings: HiloSettings,
    mongo_client: AsyncMongoClient[MongoDocument],
    broker: KafkaBroker,
    mailgun: MailgunStandIn,
) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    async with channel_client(create_app(email_settings)) as email:
        started = await email.post("/webhooks/mailgun", content=first_email(), headers=form)
        assert started.is_success
        [inbound] = await published_interactions(settings, 1)
        command = reply_command(conversation=Conversation.model_validate(inbound["conversation"]))
        record = await command_record(command, create_sealer(settings, mongo_client))
        before = await redelivered()
        await KafkaPublisher(broker, settings).publish_records([record, record])
        await eventually(redelivered, until=lambda count: count > before, timeout=30)
        [sent] = mailgun.accepted
        answer = await email.post(
            "/v1/messages/mime",
            content=customer_answer(sent),
            headers={"X-API-Key": API_KEY, "Content-Type": "message/rfc822"},
        )
        assert answer.is_success

    assert mailgun.calls == 1
    assert (sent.get("from"), sent.get("to"), sent.get("subject")) == (
        SENDER,
        CUSTOMER,
        "Re: Where is my order ORD-1001?",
    )
    assert sent.get("text") == command.payload.text
    assert sent.headers == {"In-Reply-To": f"<{FIRST_ID}>", "References": f"<{FIRST_ID}>"}
    assert sent.variables == {
        "hilo-command-id": command.id,
        "hilo-conversation": command.conversation.id if command.conversation else None,
    }
    events = {event["id"]: event for event in await published_interactions(settings, 3)}
    reply = events[command.sent_interaction_id()]
    assert reply["payload"]["direction"] == "outbound"
    assert reply["payload"]["provider_message_id"] == sent.message_id.strip("<>")
    assert reply["payload"]["reply_to_provider_message_id"] == FIRST_ID
    [customer] = [e for e in events.values() if e["id"] not in (inbound["id"], reply["id"])]
    assert customer["payload"]["reply_to_provider_message_id"] == sent.message_id.strip("<>")
    conversation = conversation_id("email", FIRST_ID)
    assert {e["conversation"]["id"] for e in events.values()} == {conversation}


async def test_mailgun_failing_with_5xx_is_retried_until_it_queues_the_message(
    settings: HiloSettings,
    mongo_client: AsyncMongoClient[MongoDocument],
    broker: KafkaBroker,
    mailgun: MailgunStandIn,
) -> None:
    mailgun.fail_next(2, status=503)
    mailgun_messages = provider(mailgun)
    command = reply_command(reply_to=None, subject=None)
    try:
        state = await sender(settings, mongo_client, broker, mailgun_messages).handle(command)
    finally:
        await mailgun_messages.close()

    assert mailgun.calls == 3
    [sent] = mailgun.accepted
    assert sent.get("subject") == DEFAULT_SUBJECT
    assert sent.headers == {}
    assert state["state"] == "sent"
    assert state["provider_message_id"] == sent.message_id.strip("<>")
    [event] = await published_interactions(settings, 1)
    assert event["payload"]["provider_message_id"] == sent.message_id.strip("<>")
    stored = await mongo_client[settings.mongodb_database][SENDS_COLLECTION].find_one(command.id)
    assert stored is not None
    assert (stored["recorded"], "thread" in stored) == (True, False), "no thread kept once recorded"


@pytest.mark.parametrize(
    ("api_key", "refusal", "reason"),
    [
        ("key-wrong", None, "401: Forbidden"),
        (
            None,
            INVALID_ADDRESS,
            "400: 'to' parameter is not a valid address. please check documentation",
        ),
        (
            None,
            f"{CUSTOMER} is on the suppression list",
            "400: a***@e***.com is on the suppression list",
        ),
    ],
    ids=["wrong-api-key", "recipient-refused", "recipient-quoted"],
)
async def test_a_refusal_is_not_retried_and_is_reported_with_mailguns_message(
    settings: HiloSettings,
    mongo_client: AsyncMongoClient[MongoDocument],
    broker: KafkaBroker,
    mailgun: MailgunStandIn,
    api_key: str | None,
    refusal: str | None,
    reason: str,
) -> None:
    if refusal is not None:
        mailgun.refuse(CUSTOMER, refusal)
    mailgun_messages = provider(mailgun, api_key)
    command = reply_command()
    try:
        state = await sender(settings, mongo_client, broker, mailgun_messages).handle(command)
    finally:
        await mailgun_messages.close()

    assert mailgun.calls == 1
    assert mailgun.accepted == []
    assert (state["state"], state["reason"]) == ("failed", reason)
    [event] = await published_interactions(settings, 1)
    assert event["payload"]["error"] == reason


def test_references_hold_the_thread_then_the_message_answered_and_email_needs_text() -> None:
    command = reply_command(
        reply_to="<reply-2@shop.example>",
        references=("first-1@mail.example.com", "<reply-2@shop.example>", "not an id"),
    )

    fields = message_form(command, SENDER, "Hello")

    assert fields["h:In-Reply-To"] == "<reply-2@shop.example>"
    assert fields["h:References"] == "<first-1@mail.example.com> <reply-2@shop.example>"
    with pytest.raises(SendRefused, match="no email address"):
        message_form(
            command.model_copy(update={"identifiers": Identifiers(phone="+34600111222")}),
            SENDER,
            "Hello",
        )
    template = OutboundMessage(template=Template(name="order_update", language="en_US"))
    with pytest.raises(SendRefused, match="needs text"):
        message_form(command.model_copy(update={"payload": template}), SENDER, "Hello")


async def test_without_api_key_domain_and_sender_email_replies_are_refused_saying_why() -> None:
    partial = EmailSettings(
        environment="test",
        mailgun_signing_key=SecretStr(SIGNING_KEY),
        email_api_keys=[SecretStr(API_KEY)],
        mailgun_api_key=SecretStr("key-1"),
    )
    reason = "email replies are not configured: HILO_MAILGUN_DOMAIN, HILO_EMAIL_FROM not set"

    with logs_of(outbound) as logs:
        provider = mailgun_provider(partial)

    with pytest.raises(SendRefused) as refused:
        await provider.send(sample_command("email"))
    assert refused.value.reason == reason
    assert logs == [
        {
            "event": "outbound_not_configured",
            "log_level": "warning",
            "channel": "email",
            "reason": reason,
        }
    ]


async def test_the_standin_answers_as_mailgun_does(mailgun: MailgunStandIn) -> None:
    url = f"{mailgun.url}/v3/{DOMAIN}/messages"
    auth = ("api", mailgun.api_key)
    async with httpx.AsyncClient() as client:
        no_to = await client.post(url, auth=auth, data={"from": SENDER, "text": "hi"})
        multipart = await client.post(
            url,
            auth=auth,
            data={"from": SENDER, "to": CUSTOMER, "text": "hi", "h:X-Test": "1"},
            files={"attachment": ("a.txt", b"x", "text/plain")},
        )
        elsewhere = await client.post(
            f"{mailgun.url}/v3/other.example/messages", auth=auth, data={}
        )
        listed: Any = (await client.get(f"{mailgun.url}/_standin/messages")).json()

    assert (no_to.status_code, no_to.json()) == (400, {"message": "'to' parameter is missing"})
    [queued] = mailgun.accepted
    assert multipart.json() == {"id": queued.message_id, "message": "Queued. Thank you."}
    assert queued.headers == {"X-Test": "1"}
    assert (elsewhere.status_code, elsewhere.json()) == (
        404,
        {"message": "Domain not found: other.example"},
    )
    assert [message["id"] for message in listed] == [queued.message_id]


async def test_mailguns_delivery_and_bounce_of_replies_reach_their_conversation(
    email_settings: EmailSettings,
    settings: HiloSettings,
    mongo_client: AsyncMongoClient[MongoDocument],
    broker: KafkaBroker,
) -> None:
    """Mailgun's event webhooks, posted by the stand-in to the served channel as Mailgun posts
    them after queueing each reply: delivered to Ana, a hard bounce for an address that does
    not exist. The agent sees both on the replies, in the conversation they were sent in."""
    port = free_port()
    webhook = f"http://127.0.0.1:{port}/webhooks/mailgun/events"
    conversation = Conversation(id=conversation_id("email", FIRST_ID), thread=FIRST_ID)
    delivered = reply_command(conversation=conversation)
    bounced = reply_command(conversation=conversation).model_copy(
        update={"identifiers": Identifiers(email="nobody@example.com")}
    )
    with MailgunStandIn(webhook_url=webhook, signing_key=SIGNING_KEY) as mailgun:
        mailgun.bounce("nobody@example.com")
        local = email_settings.model_copy(update={"mailgun_api_url": mailgun.url})
        async with served(create_app(local), port):
            sealer = create_sealer(settings, mongo_client)
            records = [await command_record(command, sealer) for command in (delivered, bounced)]
            await KafkaPublisher(broker, settings).publish_records(records)
            await eventually(_reports(mailgun), until=lambda n: n >= 2, timeout=45)

    assert sorted((r.event, r.answered) for r in mailgun.reports) == [
        ("delivered", 200),
        ("failed", 200),
    ]
    events = await published_interactions(settings, 4)
    sent = {
        e["id"]: e["payload"]["provider_message_id"]
        for e in events
        if e["payload"]["kind"] == "message"
    }
    outcomes = {
        e["payload"]["provider_message_id"]: (e["payload"]["status"], e["payload"]["error"])
        for e in events
        if e["payload"]["kind"] == "message_status"
    }
    assert outcomes == {
        sent[delivered.sent_interaction_id()]: ("delivered", None),
        sent[bounced.sent_interaction_id()]: (
            "failed",
            "550 5.1.1 The email account that you tried to reach does not exist. (bounce)",
        ),
    }
    assert {e["conversation"]["id"] for e in events} == {conversation.id}


def _reports(mailgun: MailgunStandIn) -> Callable[[], Awaitable[int]]:
    async def count() -> int:
        return len(mailgun.reports)

    return count
