"""Outbound SMS through Twilio's Messages API, and opt-out keywords, against the real broker and
database, with Twilio stood in for by a local server speaking its API (`hilo.testkit.standins`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from urllib.parse import urlencode

import httpx
import pytest
from faststream.kafka import KafkaBroker
from prometheus_client import REGISTRY
from pydantic import SecretStr, ValidationError
from pymongo import AsyncMongoClient

from channel_sms.app import create_app, twilio_provider
from channel_sms.sending import TwilioMessages
from channel_sms.settings import SmsSettings
from channel_sms.translate import consent_keyword
from channel_sms.twilio import InboundMessage
from hilo.contract import Identifiers
from hilo.contract.outbound import OutboundMessage, Template
from hilo.kafka import KafkaPublisher, create_broker
from hilo.mongo import MongoDocument
from hilo.outbound import (
    SENDS_COLLECTION,
    NotConfigured,
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
from hilo.testkit.signing import twilio_signed
from hilo.testkit.standins.twilio import ACCOUNT_SID, AUTH_TOKEN, TwilioStandIn
from hilo_devkit.channel_contract import channel_client

FROM = "+14155552671"
PHONE = "+34600111222"
FAST = RetryPolicy(attempts=3, first_wait_seconds=0.01, max_wait_seconds=0.05)


@pytest.fixture
def twilio() -> Iterator[TwilioStandIn]:
    with TwilioStandIn(ACCOUNT_SID, AUTH_TOKEN) as standin:
        yield standin


@pytest.fixture
def channel_port() -> int:
    return free_port()


@pytest.fixture
def sms_settings(settings: HiloSettings, twilio: TwilioStandIn, channel_port: int) -> SmsSettings:
    return SmsSettings.model_validate(
        {
            **settings.model_dump(),
            "twilio_auth_token": SecretStr(AUTH_TOKEN),
            "public_base_url": f"http://127.0.0.1:{channel_port}",
            "twilio_account_sid": ACCOUNT_SID,
            "twilio_from_number": FROM,
            "twilio_api_url": twilio.url,
            "outbound_send_attempts": 3,
            "outbound_first_wait_seconds": 0.05,
        }
    )


@pytest.fixture
async def broker(settings: HiloSettings, topics: list[str]) -> AsyncIterator[KafkaBroker]:
    kafka = create_broker(settings)
    await kafka.start()
    yield kafka
    await kafka.stop()


def sender_through(
    sms_settings: SmsSettings,
    settings: HiloSettings,
    client: AsyncMongoClient[MongoDocument],
    broker: KafkaBroker,
) -> OutboundSender:
    """The sender the channel app runs, called directly (no consumer group to join)."""
    provider = twilio_provider(sms_settings)
    assert isinstance(provider, TwilioMessages)
    publisher = KafkaPublisher(broker, settings, sealer=create_sealer(settings, client))
    sends = client[settings.mongodb_database][SENDS_COLLECTION]
    return OutboundSender("sms", "test", provider, publisher, sends, FAST)


async def _redelivered() -> float:
    return REGISTRY.get_sample_value("hilo_outbound_redelivered_total", {"channel": "sms"}) or 0.0


async def test_a_command_published_twice_is_sent_once_and_its_delivery_comes_back(
    sms_settings: SmsSettings,
    settings: HiloSettings,
    mongo_client: AsyncMongoClient[MongoDocument],
    broker: KafkaBroker,
    twilio: TwilioStandIn,
    channel_port: int,
) -> None:
    command = sample_command("sms", identifiers=Identifiers(phone=PHONE), text="Ready for pickup")
    record = await command_record(command, create_sealer(settings, mongo_client))
    redelivered = await _redelivered()

    async with served(create_app(sms_settings), channel_port):
        await KafkaPublisher(broker, settings).publish_records([record, record])
        await eventually(lambda: _count(twilio.reports), until=lambda n: n >= 2, timeout=45)
        await eventually(_redelivered, until=lambda n: n > redelivered)

    [sms] = twilio.accepted
    assert twilio.calls == 1
    assert (sms.to, sms.from_, sms.body) == (PHONE, FROM, "Ready for pickup")
    assert sms.status_callback == (
        f"http://127.0.0.1:{channel_port}/webhooks/twilio/sms/status?hilo_command={command.id}"
    )
    assert [(r.status, r.answered) for r in twilio.reports] == [("sent", 200), ("delivered", 200)]
    events = await published_interactions(settings, expected=3)
    [sent] = [event for event in events if event["id"] == command.sent_interaction_id()]
    assert sent["payload"]["direction"] == "outbound"
    assert sent["payload"]["provider_message_id"] == sms.sid
    statuses = [
        event["payload"]["status"]
        for event in events
        if event["payload"]["kind"] == "message_status"
        and event["payload"]["provider_message_id"] == sms.sid
    ]
    assert statuses == ["sent", "delivered"]
    assert {event["identifiers"]["phone"] for event in events} == {PHONE}


async def test_without_twilio_settings_a_reply_is_reported_failed_saying_what_is_missing(
    sms_settings: SmsSettings,
    settings: HiloSettings,
    mongo_client: AsyncMongoClient[MongoDocument],
    broker: KafkaBroker,
    twilio: TwilioStandIn,
    channel_port: int,
) -> None:
    """A channel deployed without its provider's settings still answers the agent: the reply
    is `failed` with the reason, not left on "sending" to go out when credentials arrive."""
    receiving_only = sms_settings.model_copy(
        update={"twilio_account_sid": None, "twilio_from_number": None}
    )
    command = sample_command("sms", identifiers=Identifiers(phone=PHONE))
    record = await command_record(command, create_sealer(settings, mongo_client))

    async with served(create_app(receiving_only), channel_port):
        await KafkaPublisher(broker, settings).publish_records([record])
        [event] = await published_interactions(settings, expected=1)

    assert twilio.calls == 0
    assert event["payload"] == {
        "kind": "message_status",
        "provider_message_id": command.failure_provider_id(),
        "status": "failed",
        "error": "SMS replies are not configured: HILO_TWILIO_ACCOUNT_SID is not set",
    }


async def test_twilio_unavailable_is_retried_until_it_accepts(
    sms_settings: SmsSettings,
    settings: HiloSettings,
    mongo_client: AsyncMongoClient[MongoDocument],
    broker: KafkaBroker,
    twilio: TwilioStandIn,
) -> None:
    sender = sender_through(sms_settings, settings, mongo_client, broker)
    twilio.fail_next(1, status=429)
    twilio.fail_next(1, status=503)

    state = await sender.handle(sample_command("sms", identifiers=Identifiers(phone=PHONE)))

    assert twilio.calls == 3
    assert state["state"] == "sent"
    assert state["provider_message_id"] == twilio.accepted[0].sid


async def test_a_twilio_500_is_not_sent_again_and_the_agent_is_told_to_look(
    sms_settings: SmsSettings,
    settings: HiloSettings,
    mongo_client: AsyncMongoClient[MongoDocument],
    broker: KafkaBroker,
    twilio: TwilioStandIn,
) -> None:
    """Twilio's 20500: a message answered 500 may still reach the customer; sent again, it
    could reach them twice."""
    sender = sender_through(sms_settings, settings, mongo_client, broker)
    twilio.fail_next(1, status=500)

    state = await sender.handle(sample_command("sms", identifiers=Identifiers(phone=PHONE)))

    assert twilio.calls == 1
    assert state["state"] == "failed"
    assert "may have been sent" in state["reason"]


async def test_a_template_alone_is_refused_not_texted_as_its_name(
    sms_settings: SmsSettings,
    settings: HiloSettings,
    mongo_client: AsyncMongoClient[MongoDocument],
    broker: KafkaBroker,
    twilio: TwilioStandIn,
) -> None:
    sender = sender_through(sms_settings, settings, mongo_client, broker)
    command = sample_command("sms", identifiers=Identifiers(phone=PHONE))
    template = OutboundMessage(template=Template(name="order_update", language="en_US"))

    state = await sender.handle(command.model_copy(update={"payload": template}))

    assert twilio.calls == 0
    assert state["state"] == "failed"
    assert "needs text" in state["reason"]


async def test_an_unsubscribed_recipient_is_reported_failed_with_twilios_reason_once(
    sms_settings: SmsSettings,
    settings: HiloSettings,
    mongo_client: AsyncMongoClient[MongoDocument],
    broker: KafkaBroker,
    twilio: TwilioStandIn,
) -> None:
    sender = sender_through(sms_settings, settings, mongo_client, broker)
    twilio.refuse(PHONE, 21610)
    command = sample_command("sms", identifiers=Identifiers(phone=PHONE))

    state = await sender.handle(command)

    assert twilio.calls == 1
    assert twilio.accepted == []
    assert state["reason"] == "21610: Attempt to send to unsubscribed recipient"
    [event] = await published_interactions(settings, expected=1)
    assert event["payload"] == {
        "kind": "message_status",
        "provider_message_id": command.failure_provider_id(),
        "status": "failed",
        "error": "21610: Attempt to send to unsubscribed recipient",
    }


async def test_stop_and_start_change_the_consent_to_be_contacted_by_sms(
    sms_settings: SmsSettings, settings: HiloSettings, topics: list[str]
) -> None:
    stop = _incoming("SM" + "1" * 32, " Stop ")
    start = _incoming("SM" + "2" * 32, "ALTA", OptOutType="START")  # a service's own keyword
    help_ = _incoming("SM" + "3" * 32, "HELP", OptOutType="HELP")

    async with channel_client(create_app(sms_settings)) as client:
        for form in (stop, start, help_):
            assert (await _post(client, sms_settings, form)).status_code == 200

    events = await published_interactions(settings, expected=5)
    consents = [event for event in events if event["payload"]["kind"] == "consent"]
    assert [event["payload"] for event in consents] == [
        {
            "kind": "consent",
            "purpose": "contact",
            "granted": granted,
            "channel": "sms",
            "source": "sms_keyword",
        }
        for granted in (False, True)
    ]
    assert {event["identifiers"]["phone"] for event in consents} == {PHONE}
    assert sum(event["payload"]["kind"] == "message" for event in events) == 3


@pytest.mark.parametrize(
    ("body", "opt_out_type", "granted"),
    [
        ("STOP", None, False),
        ("  unsubscribe\n", None, False),
        ("stopall", None, False),
        ("Quit", None, False),
        ("start", None, True),
        ("UNSTOP", None, True),
        ("yes", None, True),
        ("Please stop sending me offers", None, None),
        ("HELP", None, None),
        ("BAJA", "STOP", False),
        ("hello", "START", True),
        ("INFO", "HELP", None),
    ],
)
def test_opt_out_and_opt_in_keywords(body: str, opt_out_type: str | None, granted: bool) -> None:
    extra = {"OptOutType": opt_out_type} if opt_out_type else {}
    message = InboundMessage.model_validate(dict(_incoming("SM1", body, **extra)))

    assert consent_keyword(message) is granted


async def test_refusals_carry_twilios_code_and_message_without_the_number(
    twilio: TwilioStandIn,
) -> None:
    def provider(token: str) -> TwilioMessages:
        return TwilioMessages(
            api_url=twilio.url,
            account_sid=ACCOUNT_SID,
            auth_token=token,
            status_callback_url="https://hooks.example.com/webhooks/twilio/sms/status",
            from_number=FROM,
        )

    twilio.refuse(PHONE, 21211)
    command = sample_command("sms", identifiers=Identifiers(phone=PHONE))
    wrong, right = provider("guessed"), provider(AUTH_TOKEN)
    try:
        with pytest.raises(SendRefused) as unauthenticated:
            await wrong.send(command)
        with pytest.raises(SendRefused) as invalid:
            await right.send(command)
        with pytest.raises(SendRefused) as no_phone:
            await right.send(sample_command("sms", identifiers=Identifiers(email="a@b.example")))
    finally:
        await wrong.close()
        await right.close()

    assert unauthenticated.value.reason == "20003: Authenticate"
    assert invalid.value.reason.startswith("21211: The 'To' number +34***22 is not")
    assert PHONE not in invalid.value.reason
    assert "no phone number" in no_phone.value.reason
    assert twilio.calls == 2


async def test_an_answer_without_a_message_sid_is_reported_as_maybe_sent(
    twilio: TwilioStandIn,
) -> None:
    """Not 'failed': Twilio answered 2xx, so it may have taken it, and an agent told it failed
    would send the customer a second SMS."""
    provider = TwilioMessages(
        api_url=twilio.url,
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        status_callback_url="https://hooks.example.com/webhooks/twilio/sms/status",
        from_number=FROM,
    )
    twilio.fail_next(1, status=201)  # a 201 whose body is no message resource
    try:
        with pytest.raises(SendUncertain, match="may have been sent"):
            await provider.send(sample_command("sms", identifiers=Identifiers(phone=PHONE)))
    finally:
        await provider.close()


def test_sending_needs_an_account_and_a_sender_and_an_account_alone_reads_back() -> None:
    """A sender without an account is a typo; an account alone (shared with channel-voice in
    compose) reads Twilio's message log back and reports replies not configured."""
    base = {
        "twilio_auth_token": "t",
        "public_base_url": "https://hooks.example.com",
        "environment": "test",
    }

    assert isinstance(twilio_provider(SmsSettings.model_validate(base)), NotConfigured)
    account_alone = SmsSettings.model_validate({**base, "twilio_account_sid": ACCOUNT_SID})
    assert isinstance(twilio_provider(account_alone), NotConfigured)
    with pytest.raises(ValidationError, match="needs HILO_TWILIO_ACCOUNT_SID"):
        SmsSettings.model_validate({**base, "twilio_from_number": FROM})


def _incoming(sid: str, body: str, **extra: str) -> list[tuple[str, str]]:
    return [
        ("MessageSid", sid),
        ("AccountSid", ACCOUNT_SID),
        ("From", PHONE),
        ("To", FROM),
        ("Body", body),
        ("NumMedia", "0"),
        *extra.items(),
    ]


async def _post(
    client: httpx.AsyncClient, settings: SmsSettings, form: list[tuple[str, str]]
) -> httpx.Response:
    path = "/webhooks/twilio/sms"
    headers = twilio_signed(str(settings.public_base_url).rstrip("/") + path, form, AUTH_TOKEN)
    return await client.post(path, content=urlencode(form), headers=headers)


async def _count(items: Sequence[object]) -> int:
    return len(items)
