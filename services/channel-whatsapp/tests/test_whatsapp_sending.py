"""Agents' replies sent through the WhatsApp Cloud API, against the real broker and database.

The Cloud API is a local stand-in speaking Meta's formats (`hilo.testkit.standins.whatsapp`):
it checks the bearer token, refuses as Meta refuses, keeps what the customer received, enforces
the 24-hour window by a `failed` status webhook, and signs its status webhooks with the app
secret. The channel runs as it does in production: over HTTP, consuming `outbound`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from faststream.kafka import KafkaBroker
from prometheus_client import REGISTRY
from pydantic import SecretStr
from pymongo import AsyncMongoClient

from channel_whatsapp.app import create_app
from channel_whatsapp.sending import CloudApiMessages, accepted_id, cloud_api, recipient
from channel_whatsapp.settings import WhatsAppSettings
from hilo.contract import Identifiers
from hilo.contract.outbound import OutboundCommand, OutboundMessage, Template
from hilo.kafka import KafkaPublisher, create_broker
from hilo.mongo import MongoDocument
from hilo.outbound import (
    INTERRUPTED,
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
from hilo.testkit.standins.whatsapp import WhatsAppStandIn

SECRET = "app-secret-for-tests"
WA_ID = "34600111222"
FAST = RetryPolicy(attempts=3, first_wait_seconds=0.01, max_wait_seconds=0.05)


@pytest.fixture
def cloud() -> Iterator[WhatsAppStandIn]:
    with WhatsAppStandIn(app_secret=SECRET) as standin:
        yield standin


def whatsapp_settings(settings: HiloSettings, cloud: WhatsAppStandIn) -> WhatsAppSettings:
    return WhatsAppSettings.model_validate(
        {
            **settings.model_dump(),
            "whatsapp_app_secret": SecretStr(SECRET),
            "whatsapp_verify_token": SecretStr("verify-me"),
            "whatsapp_access_token": SecretStr(cloud.access_token),
            "whatsapp_phone_number_id": cloud.phone_number_id,
            "whatsapp_graph_url": cloud.graph_url,
        }
    )


@pytest.fixture
async def channel(
    settings: HiloSettings, topics: list[str], cloud: WhatsAppStandIn
) -> AsyncIterator[None]:
    """channel-whatsapp sending through the stand-in, which sends it its status webhooks."""
    port = free_port()
    cloud.webhook_url = f"http://127.0.0.1:{port}/webhooks/whatsapp"
    async with served(create_app(whatsapp_settings(settings, cloud)), port):
        yield


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
    """Commands of this channel consumed again after they were sent (and not sent again)."""
    labels = {"channel": "whatsapp"}
    return REGISTRY.get_sample_value("hilo_outbound_redelivered_total", labels) or 0.0


def statuses_of(events: list[dict[str, Any]], message_id: str) -> list[tuple[str, str | None]]:
    return [
        (event["payload"]["status"], event["payload"]["error"])
        for event in events
        if event["payload"]["kind"] == "message_status"
        and event["payload"]["provider_message_id"] == message_id
    ]


async def test_a_reply_is_sent_once_in_its_thread_and_its_statuses_reach_interactions(
    settings: HiloSettings,
    mongo_client: AsyncMongoClient[MongoDocument],
    cloud: WhatsAppStandIn,
    channel: None,
) -> None:
    cloud.customer_wrote(WA_ID)
    command = sample_command(
        "whatsapp",
        identifiers=Identifiers(whatsapp_id=WA_ID),
        text="Yes, the red ones come in 42 too.",
        reply_to="wamid.inbound1",
    )
    before = await redelivered()

    await publish(settings, mongo_client, command, command)
    await eventually(redelivered, until=lambda n: n > before, timeout=60)

    [message] = cloud.received(WA_ID)
    assert message.request == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": WA_ID,
        "type": "text",
        "text": {"body": "Yes, the red ones come in 42 too.", "preview_url": False},
        "context": {"message_id": "wamid.inbound1"},
        "biz_opaque_callback_data": f"hilo-command:{command.id}",
    }
    [sent] = await published_interactions(settings, expected=1)
    assert sent["id"] == command.sent_interaction_id()
    assert sent["payload"]["direction"] == "outbound"
    assert sent["payload"]["provider_message_id"] == message.id
    assert sent["payload"]["reply_to_provider_message_id"] == "wamid.inbound1"

    assert await cloud.send_status(message.id, "delivered") == 200
    assert await cloud.send_status(message.id, "read") == 200

    events = await published_interactions(settings, expected=3)
    assert statuses_of(events, message.id) == [("delivered", None), ("read", None)]


async def test_statuses_of_a_reply_stopped_during_metas_answer_land_on_its_report(
    settings: HiloSettings,
    mongo_client: AsyncMongoClient[MongoDocument],
    cloud: WhatsAppStandIn,
    topics: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A deploy stops the channel while Meta answers: the reply went out, but its wamid was
    never recorded, so the agent is told it was perhaps not sent. Meta echoes the command id
    with each of its statuses (`biz_opaque_callback_data`): the next instance puts them on that
    report, where the agent reads that the reply did go out, instead of on a wamid no reply in
    the journey has."""
    monkeypatch.setattr("hilo.channel.STEP_SECONDS", 4.0)  # handlers get 1 s, not 7, to end
    cloud.customer_wrote(WA_ID)
    command = sample_command(
        "whatsapp", identifiers=Identifiers(whatsapp_id=WA_ID), text="It ships tomorrow."
    )
    cloud.answer_late(4)
    port = free_port()
    cloud.webhook_url = f"http://127.0.0.1:{port}/webhooks/whatsapp"
    sends = mongo_client[settings.mongodb_database][SENDS_COLLECTION]

    async with served(create_app(whatsapp_settings(settings, cloud)), port):
        await publish(settings, mongo_client, command)
        await eventually(lambda: _received(cloud), until=bool, timeout=60)
    stopped = await sends.find_one({"_id": command.id})
    async with served(create_app(whatsapp_settings(settings, cloud)), port):
        [message] = cloud.received(WA_ID)
        answers = [await cloud.send_status(message.id, status) for status in ("sent", "read")]
        events = await published_interactions(settings, expected=3)

    assert stopped is not None
    assert (stopped["state"], stopped["reason"]) == ("failed", INTERRUPTED)
    assert answers == [200, 200]
    report = command.failure_provider_id()
    # The report is published once the command comes again; the statuses may come first.
    assert sorted(statuses_of(events, report), key=str) == [
        ("failed", INTERRUPTED),
        ("read", None),
        ("sent", None),
    ]
    assert statuses_of(events, message.id) == []


async def _received(cloud: WhatsAppStandIn) -> list[Any]:
    return cloud.received(WA_ID)


async def test_a_customer_with_a_username_is_answered_at_their_business_scoped_id(
    settings: HiloSettings,
    mongo_client: AsyncMongoClient[MongoDocument],
    cloud: WhatsAppStandIn,
    channel: None,
) -> None:
    """Meta withheld their number: the reply goes to `recipient`, and its statuses, which name
    them the same way, reach their journey."""
    user_id = "US.13491208655302741918"
    cloud.customer_wrote(user_id)
    command = sample_command(
        "whatsapp", identifiers=Identifiers(whatsapp_user_id=user_id), text="It is in stock."
    )

    await publish(settings, mongo_client, command)
    [sent] = await published_interactions(settings, expected=1)

    [message] = cloud.received(user_id)
    assert message.request["recipient"] == user_id
    assert "to" not in message.request
    assert sent["payload"]["provider_message_id"] == message.id
    assert await cloud.send_status(message.id, "delivered") == 200
    events = await published_interactions(settings, expected=2)
    assert statuses_of(events, message.id) == [("delivered", None)]
    [status] = [event for event in events if event["payload"]["kind"] == "message_status"]
    assert status["identifiers"]["whatsapp_user_id"] == user_id


def test_a_reply_goes_to_the_number_when_there_is_one() -> None:
    """Meta's advice: a number where known keeps the number in its webhooks."""
    both = Identifiers(phone="+34612345678", whatsapp_user_id="ES.1502576394655843")

    assert recipient(both) == {"to": "34612345678"}
    with pytest.raises(SendRefused, match="no WhatsApp id, phone number or WhatsApp user id"):
        recipient(Identifiers(email="ana@example.com"))


async def test_free_text_outside_the_window_is_accepted_then_fails_with_131047(
    settings: HiloSettings,
    mongo_client: AsyncMongoClient[MongoDocument],
    cloud: WhatsAppStandIn,
    channel: None,
) -> None:
    command = sample_command("whatsapp", identifiers=Identifiers(phone="+34600111222"))

    await publish(settings, mongo_client, command)
    events = await published_interactions(settings, expected=2)

    [message] = cloud.received(WA_ID)
    assert message.failed_with == 131047
    sent = next(event for event in events if event["id"] == command.sent_interaction_id())
    assert sent["payload"]["provider_message_id"] == message.id
    assert statuses_of(events, message.id) == [("failed", "131047 Re-engagement message")]


async def test_templates_are_sent_as_the_cloud_api_takes_them(cloud: WhatsAppStandIn) -> None:
    provider = CloudApiMessages(
        SecretStr(cloud.access_token), cloud.phone_number_id, graph_url=cloud.graph_url
    )
    with_parameters = Template(name="order_ready", language="es_ES", parameters=["Ana", "BCN-01"])
    without = Template(name="hello_world", language="en_US")
    commands = [
        sample_command("whatsapp", identifiers=Identifiers(phone="+34600111222")).model_copy(
            update={"payload": OutboundMessage(template=template, reply_to_provider_message_id=r)}
        )
        for template, r in [(with_parameters, "wamid.inbound1"), (without, None)]
    ]

    try:
        sent = [await provider.send(command) for command in commands]
    finally:
        await provider.close()

    first, second = cloud.received(WA_ID)
    assert [s.provider_message_id for s in sent] == [first.id, second.id]
    assert first.id.startswith("wamid.")
    assert first.failed_with is None, "a template is delivered outside the window"
    assert first.request == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": WA_ID,
        "type": "template",
        "template": {
            "name": "order_ready",
            "language": {"code": "es_ES"},
            "components": [
                {
                    "type": "body",
                    "parameters": [
                        {"type": "text", "text": "Ana"},
                        {"type": "text", "text": "BCN-01"},
                    ],
                }
            ],
        },
        "context": {"message_id": "wamid.inbound1"},
        "biz_opaque_callback_data": f"hilo-command:{commands[0].id}",
    }
    assert second.request["template"] == {"name": "hello_world", "language": {"code": "en_US"}}


def sender(
    settings: HiloSettings,
    client: AsyncMongoClient[MongoDocument],
    broker: KafkaBroker,
    provider: CloudApiMessages,
) -> OutboundSender:
    publisher = KafkaPublisher(broker, settings, sealer=create_sealer(settings, client))
    sends = client[settings.mongodb_database][SENDS_COLLECTION]
    return OutboundSender("whatsapp", "test", provider, publisher, sends, FAST)


@pytest.mark.parametrize(
    "status", [503, 429, 400], ids=["unavailable", "throughput", "pair-rate-limit"]
)
async def test_a_failing_cloud_api_is_retried_until_it_accepts(
    settings: HiloSettings,
    mongo_client: AsyncMongoClient[MongoDocument],
    broker: KafkaBroker,
    cloud: WhatsAppStandIn,
    status: int,
) -> None:
    cloud.customer_wrote(WA_ID)
    cloud.fail_next(2, status)
    whatsapp = cloud_api(whatsapp_settings(settings, cloud))
    assert isinstance(whatsapp, CloudApiMessages)

    try:
        state = await sender(settings, mongo_client, broker, whatsapp).handle(
            sample_command("whatsapp", identifiers=Identifiers(whatsapp_id=WA_ID))
        )
    finally:
        await whatsapp.close()

    assert cloud.calls == 3
    [message] = cloud.received(WA_ID)
    assert state["state"] == "sent"
    assert state["provider_message_id"] == message.id


@pytest.mark.parametrize(
    ("token", "to", "refused", "reason"),
    [
        (
            "EAAexpired",
            WA_ID,
            False,
            "190: Invalid OAuth access token - Cannot parse access token",
        ),
        (
            None,
            WA_ID,
            True,
            "131026: Message Undeliverable (Unable to deliver message. Reasons can include: the "
            "recipient phone number is not a WhatsApp phone number, the recipient has not "
            "accepted the new Terms of Service, or uses an old WhatsApp version.)",
        ),
        (
            None,
            "1234",
            False,
            "100: Invalid parameter (Invalid parameter: to is not a phone number)",
        ),
    ],
    ids=["bad-token", "not-on-whatsapp", "malformed-recipient"],
)
async def test_a_refusal_is_reported_failed_with_metas_reason_and_not_retried(
    settings: HiloSettings,
    mongo_client: AsyncMongoClient[MongoDocument],
    broker: KafkaBroker,
    cloud: WhatsAppStandIn,
    token: str | None,
    to: str,
    refused: bool,
    reason: str,
) -> None:
    if refused:
        cloud.refuse(to)
    whatsapp = CloudApiMessages(
        SecretStr(token or cloud.access_token), cloud.phone_number_id, graph_url=cloud.graph_url
    )
    command = sample_command("whatsapp", identifiers=Identifiers(whatsapp_id=to))

    try:
        state = await sender(settings, mongo_client, broker, whatsapp).handle(command)
    finally:
        await whatsapp.close()

    assert cloud.calls == 1
    assert cloud.accepted == []
    assert state["reason"] == reason
    [event] = await published_interactions(settings, expected=1)
    assert event["payload"] == {
        "kind": "message_status",
        "provider_message_id": command.failure_provider_id(),
        "status": "failed",
        "error": reason,
    }


async def test_without_an_access_token_and_a_phone_number_id_replies_are_refused_saying_why(
    settings: HiloSettings, cloud: WhatsAppStandIn
) -> None:
    configured = whatsapp_settings(settings, cloud)
    whatsapp = cloud_api(configured)

    for missing in ({"whatsapp_access_token": None}, {"whatsapp_phone_number_id": ""}):
        provider = cloud_api(configured.model_copy(update=missing))
        with pytest.raises(SendRefused, match="WhatsApp replies are not configured"):
            await provider.send(sample_command("whatsapp"))
    assert cloud.calls == 0
    assert isinstance(whatsapp, CloudApiMessages)
    await whatsapp.close()


@pytest.mark.parametrize("body", [b"{}", b'{"messages": []}', b"not json"])
def test_an_accepted_send_without_a_message_id_is_reported_as_maybe_sent(body: bytes) -> None:
    """Not 'failed': the agent sending it again could reach the customer twice."""
    with pytest.raises(SendUncertain, match="may have been sent"):
        accepted_id(httpx.Response(200, content=body))
