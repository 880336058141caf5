"""Agents' replies sent through Meta's Send API, against the real broker and database.

The Send API is a local stand-in speaking Meta's formats (`hilo.testkit.standins.meta_send`): it
checks the bearer token, knows only customers who wrote, enforces the messaging window (24 hours,
7 days for `HUMAN_AGENT`), refuses as Meta refuses, keeps what the customer received, and sends
the channel the page's echo and the receipts, signed with the app secret. The channel runs as in
production: over HTTP, consuming `outbound` for both Messenger and Instagram.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from faststream.kafka import KafkaBroker
from prometheus_client import REGISTRY
from pydantic import SecretStr
from pymongo import AsyncMongoClient

from channel_social.app import create_app
from channel_social.sending import SendApi, accepted_id, message_request, send_api
from channel_social.settings import SocialSettings
from hilo.contract import Identifiers, Purpose
from hilo.contract.outbound import OutboundCommand, OutboundMessage
from hilo.kafka import KafkaPublisher, create_broker
from hilo.mongo import MongoDocument
from hilo.outbound import (
    CHECK_FIRST,
    SENDS_COLLECTION,
    OutboundSender,
    RetryPolicy,
    SendRefused,
    SendUncertain,
    command_record,
)
from hilo.sealing import create_sealer
from hilo.settings import HiloSettings
from hilo.testkit.contract_check import published_interactions
from hilo.testkit.probes import eventually
from hilo.testkit.samples import sample_command
from hilo.testkit.serving import free_port, served
from hilo.testkit.standins.meta_send import MetaSendStandIn

SECRET = "social-app-secret"
PSID = "2417895048263577"
IGSID = "6581929751863812"
FAST = RetryPolicy(attempts=3, first_wait_seconds=0.01, max_wait_seconds=0.05)


@pytest.fixture
async def meta() -> AsyncIterator[MetaSendStandIn]:
    standin = MetaSendStandIn(app_secret=SECRET)
    async with standin.serving():
        yield standin


def social_settings(
    settings: HiloSettings, meta: MetaSendStandIn, **changes: Any
) -> SocialSettings:
    return SocialSettings.model_validate(
        {
            **settings.model_dump(),
            "meta_app_secret": SecretStr(SECRET),
            "meta_verify_token": SecretStr("verify-me"),
            "messenger_page_access_token": SecretStr(meta.page_access_token),
            "instagram_access_token": SecretStr(meta.instagram_access_token),
            "meta_graph_url": meta.graph_url,
            "instagram_graph_url": meta.graph_url,
            **changes,
        }
    )


@pytest.fixture
async def broker(settings: HiloSettings, topics: list[str]) -> AsyncIterator[KafkaBroker]:
    kafka = create_broker(settings)
    await kafka.start()
    yield kafka
    await kafka.stop()


async def publish(
    settings: HiloSettings, client: AsyncMongoClient[MongoDocument], *commands: OutboundCommand
) -> None:
    """Put commands on `outbound` as the agent desk does."""
    sealer = create_sealer(settings, client)
    records = [await command_record(command, sealer) for command in commands]
    kafka = create_broker(settings)
    await kafka.start()
    try:
        await KafkaPublisher(kafka, settings).publish_records(records)
    finally:
        await kafka.stop()


async def redelivered() -> float:
    """Messenger commands consumed again after they were sent (and not sent again)."""
    labels = {"channel": "messenger"}
    return REGISTRY.get_sample_value("hilo_outbound_redelivered_total", labels) or 0.0


def messenger_reply(text: str = "Yes, the red ones come in 42 too.") -> OutboundCommand:
    return sample_command("messenger", identifiers=Identifiers(messenger_psid=PSID), text=text)


def instagram_reply(text: str = "We open at 10 on Sundays.") -> OutboundCommand:
    return sample_command("instagram", identifiers=Identifiers(instagram_sid=IGSID), text=text)


async def test_a_messenger_reply_is_sent_once_and_recorded_once_with_its_receipt(
    settings: HiloSettings,
    topics: list[str],
    mongo_client: AsyncMongoClient[MongoDocument],
    meta: MetaSendStandIn,
) -> None:
    meta.customer_wrote("messenger", PSID)
    command = messenger_reply()
    port = free_port()
    meta.webhook_url = f"http://127.0.0.1:{port}/webhooks/social"
    before = await redelivered()

    async with served(create_app(social_settings(settings, meta)), port):
        await publish(settings, mongo_client, command, command)
        await eventually(redelivered, until=lambda n: n > before, timeout=60)
        [message] = meta.received(PSID)
        assert await meta.send_echo(message.id) == 200
        assert await meta.send_receipt(message.id, "delivered") == 200

    assert message.request == {
        "recipient": {"id": PSID},
        "messaging_type": "RESPONSE",
        "message": {"text": command.payload.text, "metadata": f"hilo:{command.id}"},
    }
    assert message.id.startswith("m_")
    sent, delivered = await published_interactions(settings, expected=2)
    assert sent["id"] == command.sent_interaction_id()
    assert sent["channel"] == "messenger"
    assert sent["payload"]["direction"] == "outbound"
    assert sent["payload"]["provider_message_id"] == message.id
    assert delivered["payload"] == {
        "kind": "message_status",
        "provider_message_id": message.id,
        "status": "delivered",
        "error": None,
    }


@pytest.mark.parametrize("purpose", ["service", "marketing"])
async def test_a_messenger_reply_graph_took_before_failing_is_recorded_from_its_echo(
    settings: HiloSettings,
    topics: list[str],
    mongo_client: AsyncMongoClient[MongoDocument],
    meta: MetaSendStandIn,
    purpose: Purpose,
) -> None:
    """Graph answers 500 after it took the message: the agent is told it may have been sent and
    to look at the conversation, where Meta's echo now puts it (before, the channel dropped
    every echo of a message it sent, so the agent found nothing there and sent it again). The
    echo keeps the message's purpose: a promotion answers nobody."""
    meta.customer_wrote("messenger", PSID)
    meta.take_then_fail(500)
    command = sample_command(
        "messenger", identifiers=Identifiers(messenger_psid=PSID), text="20% off", purpose=purpose
    )
    port = free_port()
    meta.webhook_url = f"http://127.0.0.1:{port}/webhooks/social"

    async with served(create_app(social_settings(settings, meta)), port):
        await publish(settings, mongo_client, command)
        [failed] = await published_interactions(settings, expected=1)
        [message] = meta.received(PSID)
        assert await meta.send_echo(message.id) == 200
        events = await published_interactions(settings, expected=2)

    assert failed["payload"]["status"] == "failed"
    assert CHECK_FIRST in failed["payload"]["error"]
    assert len(events) == 2, "the echo is the only word that the customer got it"
    [echo] = [e for e in events if e["id"] == command.sent_interaction_id()]
    assert echo["payload"]["purpose"] == purpose
    echoed = events[-1]
    assert echoed["id"] == command.sent_interaction_id(), "one id with the sender's own record"
    assert echoed["payload"]["direction"] == "outbound"
    assert echoed["payload"]["provider_message_id"] == message.id
    assert echoed["conversation"]["thread"].endswith(f":{PSID}")


async def test_an_instagram_reply_goes_through_the_instagram_account_tagged_by_a_human_agent(
    settings: HiloSettings,
    topics: list[str],
    mongo_client: AsyncMongoClient[MongoDocument],
    meta: MetaSendStandIn,
) -> None:
    meta.customer_wrote("instagram", IGSID, at=datetime.now(UTC) - timedelta(days=3))
    command = instagram_reply()
    port = free_port()
    meta.webhook_url = f"http://127.0.0.1:{port}/webhooks/social"
    configured = social_settings(settings, meta, meta_human_agent=True)

    async with served(create_app(configured), port):
        await publish(settings, mongo_client, command)
        [sent] = await published_interactions(settings, expected=1)
        [message] = meta.received(IGSID)
        assert await meta.send_echo(message.id) == 200  # Instagram echoes every send
        assert await meta.send_receipt(message.id, "read") == 200

    assert message.channel == "instagram"
    assert message.request == {
        "recipient": {"id": IGSID},
        "messaging_type": "MESSAGE_TAG",
        "tag": "HUMAN_AGENT",
        "message": {"text": command.payload.text},
    }
    assert sent["id"] == command.sent_interaction_id()
    assert sent["channel"] == "instagram"
    assert sent["payload"]["provider_message_id"] == message.id
    events = await published_interactions(settings, expected=2)
    assert len(events) == 2, "the echo of a reply Hilo sent was recorded again"
    assert events[1]["payload"]["status"] == "read"
    assert events[1]["payload"]["provider_message_id"] == message.id


def sender(
    settings: HiloSettings,
    client: AsyncMongoClient[MongoDocument],
    broker: KafkaBroker,
    provider: SendApi,
) -> OutboundSender:
    publisher = KafkaPublisher(broker, settings, sealer=create_sealer(settings, client))
    sends = client[settings.mongodb_database][SENDS_COLLECTION]
    return OutboundSender(
        "social", "test", provider, publisher, sends, FAST, sends_for=("messenger", "instagram")
    )


@pytest.mark.parametrize("status", [503, 429])
async def test_a_failing_send_api_is_retried_until_it_accepts(
    settings: HiloSettings,
    mongo_client: AsyncMongoClient[MongoDocument],
    broker: KafkaBroker,
    meta: MetaSendStandIn,
    status: int,
) -> None:
    meta.customer_wrote("messenger", PSID)
    meta.fail_next(2, status)
    provider = send_api(social_settings(settings, meta))

    try:
        state = await sender(settings, mongo_client, broker, provider).handle(messenger_reply())
    finally:
        await provider.close()

    assert meta.calls == 3
    [message] = meta.received(PSID)
    assert state["state"] == "sent"
    assert state["provider_message_id"] == message.id


WINDOW = (
    "10: This message is sent outside of allowed window. Learn more about the new policy here: "
    "https://developers.facebook.com/docs/messenger-platform/policy-overview"
)


@pytest.mark.parametrize(
    ("command", "wrote_hours_ago", "changes", "reason"),
    [
        (messenger_reply(), 25, {}, WINDOW),
        (
            instagram_reply(),
            8 * 24,
            {"meta_human_agent": True},
            "10: This message is sent outside of allowed window.",
        ),
        (messenger_reply(), None, {}, "100: No matching user found"),
        (
            messenger_reply(),
            1,
            {"messenger_page_access_token": SecretStr("EAAexpired")},
            "190: Invalid OAuth access token - Cannot parse access token",
        ),
    ],
    ids=["messenger-after-24h", "instagram-after-7-days", "unknown-user", "bad-token"],
)
async def test_a_refusal_is_reported_failed_with_metas_reason_and_not_retried(
    settings: HiloSettings,
    mongo_client: AsyncMongoClient[MongoDocument],
    broker: KafkaBroker,
    meta: MetaSendStandIn,
    command: OutboundCommand,
    wrote_hours_ago: int | None,
    changes: dict[str, Any],
    reason: str,
) -> None:
    scoped_id = command.identifiers.messenger_psid or command.identifiers.instagram_sid
    assert scoped_id is not None
    if wrote_hours_ago is not None:
        at = datetime.now(UTC) - timedelta(hours=wrote_hours_ago)
        meta.customer_wrote(command.channel, scoped_id, at)
    provider = send_api(social_settings(settings, meta, **changes))

    try:
        state = await sender(settings, mongo_client, broker, provider).handle(command)
    finally:
        await provider.close()

    assert meta.calls == 1
    assert meta.accepted == []
    assert state["reason"] == reason
    [event] = await published_interactions(settings, expected=1)
    assert event["channel"] == command.channel
    assert event["payload"] == {
        "kind": "message_status",
        "provider_message_id": command.failure_provider_id(),
        "status": "failed",
        "error": reason,
    }


async def test_a_channel_without_its_token_refuses_its_replies_saying_why(
    settings: HiloSettings, meta: MetaSendStandIn
) -> None:
    messenger_only = send_api(social_settings(settings, meta, instagram_access_token=None))
    nothing = social_settings(
        settings, meta, instagram_access_token=None, messenger_page_access_token=SecretStr("")
    )

    try:
        with pytest.raises(SendRefused, match="HILO_INSTAGRAM_ACCESS_TOKEN is not set"):
            await messenger_only.send(instagram_reply())
        with pytest.raises(SendRefused, match="not sms"):
            await messenger_only.send(sample_command("sms"))
    finally:
        await messenger_only.close()
    with pytest.raises(SendRefused, match="HILO_MESSENGER_PAGE_ACCESS_TOKEN is not set"):
        await send_api(nothing).send(sample_command("messenger"))
    assert meta.calls == 0


def test_marketing_is_never_tagged_and_templates_are_not_sent() -> None:
    marketing = messenger_reply().model_copy(
        update={"payload": OutboundMessage(text="20% off this weekend", purpose="marketing")}
    )
    body = message_request(marketing, human_agent=True)
    assert body["messaging_type"] == "RESPONSE"
    assert "tag" not in body

    with pytest.raises(SendRefused, match="templates are WhatsApp's"):
        message_request(
            messenger_reply().model_copy(
                update={
                    "payload": OutboundMessage.model_validate(
                        {"template": {"name": "order_update", "language": "en_US"}}
                    )
                }
            ),
            human_agent=False,
        )
    with pytest.raises(SendRefused, match="no page-scoped id"):
        message_request(
            sample_command("messenger", identifiers=Identifiers(instagram_sid=IGSID)),
            human_agent=False,
        )


@pytest.mark.parametrize("body", [b"{}", b'{"messages": []}', b"not json"])
def test_an_accepted_send_without_a_message_id_is_reported_as_maybe_sent(body: bytes) -> None:
    """Not 'failed': the agent sending it again could reach the customer twice."""
    with pytest.raises(SendUncertain, match="may have been sent"):
        accepted_id(httpx.Response(200, content=body))
