"""SMS whose webhooks were refused (MongoDB away) or unanswered (the service stopped), read back
from Twilio's message log: against the real broker and a MongoDB-wire server of the test's own,
with Twilio stood in for by a local server speaking its Messages API (`hilo.testkit.standins`).

Twilio posts a webhook once: without the read-back, every SMS of these outages is lost.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from pydantic import SecretStr

from channel_sms.app import create_app
from channel_sms.settings import SmsSettings
from hilo.catch_up import WATERMARKS_COLLECTION
from hilo.contract import Identifiers, interaction_id
from hilo.kafka import KafkaPublisher, create_broker
from hilo.mongo import create_mongo_client
from hilo.outbound import command_record
from hilo.sealing import create_sealer
from hilo.settings import HiloSettings, MongoUrl
from hilo.testkit.probes import eventually
from hilo.testkit.samples import sample_command
from hilo.testkit.signing import twilio_signed
from hilo.testkit.standins.twilio import ACCOUNT_SID, AUTH_TOKEN, AcceptedSms, TwilioStandIn
from hilo_devkit.channel_contract import (
    ProviderRequest,
    assert_read_back_after_outages,
    channel_client,
    everything_published,
    published_with,
)
from hilo_devkit.local_infra import LocalSecantusDB

PUBLIC = "https://hooks.example.com"
WEBHOOK = "/webhooks/twilio/sms"
FROM = "+14155552671"
OTHER_NUMBER = "+14155550000"
ANA = "+34600111222"
LUIS = "+34600333444"
MARIA = "+34600555666"
"""Not seen before the outage: no key of hers is cached, so her SMS cannot be sealed."""


@pytest.fixture
def twilio() -> Iterator[TwilioStandIn]:
    with TwilioStandIn(ACCOUNT_SID, AUTH_TOKEN, status_callbacks=False) as standin:
        yield standin


@pytest.fixture
def database(tmp_path: Path) -> Iterator[LocalSecantusDB]:
    server = LocalSecantusDB(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sms_settings(
    settings: HiloSettings, topics: list[str], twilio: TwilioStandIn, database: LocalSecantusDB
) -> SmsSettings:
    return SmsSettings.model_validate(
        {
            **settings.model_dump(),
            "mongodb_url": MongoUrl(database.url),
            "twilio_auth_token": SecretStr(AUTH_TOKEN),
            "public_base_url": PUBLIC,
            "twilio_account_sid": ACCOUNT_SID,
            "twilio_from_number": FROM,
            "twilio_api_url": twilio.url,
            "catch_up_seconds": 0.5,
        }
    )


@pytest.fixture
async def watermark(sms_settings: SmsSettings) -> AsyncIterator[Any]:
    """The channel's watermark document, read from the test's database."""
    mongo = create_mongo_client(sms_settings)
    collection = mongo[sms_settings.mongodb_database][WATERMARKS_COLLECTION]

    async def read() -> Any:
        return await collection.find_one({"_id": "sms"})

    yield read
    await mongo.close()


async def post(client: httpx.AsyncClient, params: list[tuple[str, str]]) -> httpx.Response:
    headers = twilio_signed(PUBLIC + WEBHOOK, params, AUTH_TOKEN)
    return await client.post(WEBHOOK, content=urlencode(params), headers=headers)


def sid_of(params: list[tuple[str, str]]) -> str:
    return dict(params)["MessageSid"]


async def test_sms_refused_while_mongodb_was_away_are_read_back_once_it_is_back(
    sms_settings: SmsSettings,
    twilio: TwilioStandIn,
    database: LocalSecantusDB,
    watermark: Any,
) -> None:
    before = twilio.receive(LUIS, FROM, "sent before the deployment", date_sent=_hours_ago(5))
    async with channel_client(create_app(sms_settings)) as sms:
        first = await eventually(watermark, until=lambda found: found is not None)
        delivered = twilio.receive(ANA, FROM, "delivered by its webhook")
        assert (await post(sms, delivered)).status_code == 200

        await asyncio.to_thread(database.stop)
        refused = twilio.receive(MARIA, FROM, "Hola, ¿tenéis la talla 42?")
        photo = twilio.receive(MARIA, FROM, "", media=("image/jpeg",))
        answers = [(await post(sms, params)).status_code for params in (refused, photo)]
        elsewhere = twilio.receive(LUIS, OTHER_NUMBER, "to a number Hilo does not serve")
        await asyncio.to_thread(database.start)

        read_back = {sid_of(refused), sid_of(photo)}
        expected = {*read_back, sid_of(delivered)}
        events = await published_with(sms_settings, {interaction_id("sms", s) for s in expected})
        later = await watermark()

    assert answers == [503, 503], "refused while MongoDB was away (Twilio will not retry)"
    by_sid = {event["payload"]["provider_message_id"]: event for event in events}
    assert set(by_sid) == {*read_back, sid_of(delivered)}, (
        "both refused messages read back; nothing from another number or before the deployment"
    )
    assert sid_of(before) not in by_sid
    assert sid_of(elsewhere) not in by_sid
    assert by_sid[sid_of(refused)]["id"] == interaction_id("sms", sid_of(refused)), (
        "the id its webhook would have had: a repeat is dropped by every consumer"
    )
    assert by_sid[sid_of(refused)]["payload"]["text"] == "Hola, ¿tenéis la talla 42?"
    assert by_sid[sid_of(refused)]["occurred_at"] == _sent_at(twilio, sid_of(refused))
    attachments = by_sid[sid_of(photo)]["payload"]["attachments"]
    assert [(a["kind"], a["url"], a["mime_type"]) for a in attachments] == [
        ("image", dict(photo)["MediaUrl0"], "image/jpeg")
    ], "an MMS read back points at the media its webhook named"
    assert later["through"] > first["through"], "the watermark moves on"


async def test_sms_refused_or_unanswered_are_read_back_as_every_such_channel_must(
    sms_settings: SmsSettings, twilio: TwilioStandIn, tmp_path: Path
) -> None:
    senders = (f"+3460077{n:04d}" for n in itertools.count())

    def arrive() -> tuple[ProviderRequest, str]:
        params = twilio.receive(next(senders), FROM, "¿Seguís abiertos?")
        request = ProviderRequest(
            WEBHOOK, urlencode(params).encode(), twilio_signed(PUBLIC + WEBHOOK, params, AUTH_TOKEN)
        )
        return request, interaction_id("sms", sid_of(params))

    events = await assert_read_back_after_outages(
        create_app, sms_settings, tmp_path / "own", arrive
    )

    assert [event["payload"]["text"] for event in events[:3]] == ["¿Seguís abiertos?"] * 3


async def test_a_delivery_status_refused_while_mongodb_was_away_is_read_back(
    sms_settings: SmsSettings, twilio: TwilioStandIn, database: LocalSecantusDB
) -> None:
    """The channel sends a reply; its `delivered` callback is refused (MongoDB away, and no key
    of the customer cached here: `HILO_KEY_CACHE_SECONDS` 0, as on an instance that did not send
    it, or hours later). The status is read back from the log once MongoDB answers; the status of
    a message another tool sent from the same number, which Twilio never posted here, is not."""
    local = sms_settings.model_copy(update={"key_cache_seconds": 0})
    command = sample_command("sms", identifiers=Identifiers(phone=ANA), text="Order ready")
    broker = create_broker(local)
    await broker.start()
    try:
        async with channel_client(create_app(local)) as sms:
            mongo = create_mongo_client(local)
            record = await command_record(command, create_sealer(local, mongo))
            await mongo.close()
            await KafkaPublisher(broker, local).publish_records([record])
            [ours] = await eventually(accepted(twilio), timeout=60)
            await published_with(local, {command.sent_interaction_id()})
            sent_answer = await post_status(sms, ours, twilio.progress(ours.sid, "sent"))
            other = AcceptedSms("SM" + "f" * 32, LUIS, "from another tool", FROM, None, None)
            twilio.accepted.append(other)
            twilio.progress(other.sid, "delivered")

            await asyncio.to_thread(database.stop)
            refused = await post_status(sms, ours, twilio.progress(ours.sid, "delivered"))
            await asyncio.to_thread(database.start)

            delivered_id = interaction_id("sms", f"{ours.sid}:delivered")
            await published_with(local, {delivered_id})
            # Published in one call with the status read back, if it were: on the topic now.
            events = await everything_published(local)
    finally:
        await broker.stop()

    assert (sent_answer.status_code, refused.status_code) == (200, 503)
    by_id = {event["id"]: event for event in events}
    delivered = by_id[delivered_id]
    assert delivered["payload"]["provider_message_id"] == ours.sid
    assert delivered["payload"]["status"] == "delivered"
    assert delivered["occurred_at"] == _changed_at(twilio, ours.sid)
    assert interaction_id("sms", f"{ours.sid}:sent") in by_id, "the webhook that came"
    assert interaction_id("sms", f"{other.sid}:delivered") not in by_id, (
        "Twilio posted no status of another tool's message here: none is read back"
    )


def accepted(twilio: TwilioStandIn) -> Callable[[], Awaitable[list[AcceptedSms]]]:
    async def probe() -> list[AcceptedSms]:
        return list(twilio.accepted)

    return probe


async def post_status(
    client: httpx.AsyncClient, sms: AcceptedSms, params: list[tuple[str, str]]
) -> httpx.Response:
    """Post a status callback to the URL the channel gave Twilio with the message."""
    url = str(sms.status_callback)
    headers = twilio_signed(url, params, AUTH_TOKEN)
    return await client.post(url.removeprefix(PUBLIC), content=urlencode(params), headers=headers)


def _changed_at(twilio: TwilioStandIn, sid: str) -> str:
    [resource] = [twilio._resource(sms) for sms in twilio.accepted if sms.sid == sid]
    changed = parsedate_to_datetime(resource["date_updated"]).astimezone(UTC)
    return changed.isoformat().replace("+00:00", "Z")


def _hours_ago(hours: float) -> datetime:
    return datetime.now(UTC) - timedelta(hours=hours)


def _sent_at(twilio: TwilioStandIn, sid: str) -> str:
    sent = next(sms.date_sent for sms in twilio.received if sms.sid == sid)
    return sent.isoformat().replace("+00:00", "Z")
