"""Sending outbound commands once, against the real broker and database.

The provider here is a scripted stand-in of the `Provider` port (each channel's tests drive its
real provider API through a local HTTP server); Kafka, MongoDB, sealing and the consumer are
real. Faults are injected where they can happen: the provider failing, the publish of the record
failing after the provider accepted, the same command arriving again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from faststream.kafka import KafkaBroker
from prometheus_client import REGISTRY
from pydantic_core import from_json, to_json
from pymongo import AsyncMongoClient
from pymongo.errors import AutoReconnect

from hilo import channel as channel_module
from hilo import topics
from hilo.channel import ChannelSettings, create_channel_app
from hilo.contract import Purpose, interaction_id
from hilo.contract.outbound import OutboundCommand
from hilo.kafka import KafkaPublisher, PublishFailed, Record, create_broker
from hilo.mongo import MongoDocument
from hilo.outbound import (
    CHECK_FIRST,
    INTERRUPTED,
    SENDS_COLLECTION,
    SENDS_KEPT,
    UNCONFIRMED,
    OutboundSender,
    RetryPolicy,
    SendInProgress,
    SendRefused,
    SendUnavailable,
    SendUncertain,
    Sent,
    command_record,
    failed_in_code,
    provider_call,
    retry_after,
)
from hilo.providers.meta import graph_throttled
from hilo.sealing import create_sealer
from hilo.settings import HiloSettings
from hilo.testkit.contract_check import opened_interactions, published_interactions
from hilo.testkit.probes import eventually, read_topic
from hilo.testkit.samples import sample_command
from hilo.testkit.topic_limits import limit_record_size
from hilo.topics import Topic, topic_name
from hilo_devkit.channel_contract import channel_client

FAST = RetryPolicy(attempts=3, first_wait_seconds=0.01, max_wait_seconds=0.05)


class ScriptedProvider:
    """Answers each send with the next scripted outcome (then accepts), counting the calls."""

    def __init__(self, *outcomes: Exception) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[OutboundCommand] = []

    async def send(self, command: OutboundCommand) -> Sent:
        self.calls.append(command)
        if self.outcomes:
            raise self.outcomes.pop(0)
        return Sent(provider_message_id=f"SM{len(self.calls):032d}")

    async def close(self) -> None:
        return None


class FailingOnce(KafkaPublisher):
    """A publisher whose first publish fails as if Kafka were gone."""

    failed = False

    async def publish_records(self, records: Any) -> None:
        if not self.failed:
            self.failed = True
            raise PublishFailed("injected")
        await super().publish_records(records)


async def _sender(
    settings: HiloSettings,
    client: AsyncMongoClient[MongoDocument],
    broker: KafkaBroker,
    provider: ScriptedProvider,
    publisher_class: Callable[..., KafkaPublisher] = KafkaPublisher,
) -> OutboundSender:
    publisher = publisher_class(broker, settings, sealer=create_sealer(settings, client))
    sends = client[settings.mongodb_database][SENDS_COLLECTION]
    return OutboundSender("sms", "test", provider, publisher, sends, FAST)


@asynccontextmanager
async def channel_reading(
    settings: HiloSettings,
    provider: ScriptedProvider,
    records: Sequence[Record],
    *,
    name: str = "sms",
    sends_for: Sequence[str] = (),
) -> AsyncIterator[None]:
    """A channel service (SMS by default) running, sending through `provider`, with `records`
    put on `outbound`."""
    app = create_channel_app(
        name,
        ChannelSettings(**settings.model_dump()),
        lambda _: [],
        description="t",
        provider=provider,
        sends_for=sends_for,
    )
    async with channel_client(app):
        broker = create_broker(settings)
        await broker.start()
        try:
            await KafkaPublisher(broker, settings).publish_records(records)
        finally:
            await broker.stop()
        yield


@pytest.fixture
async def broker(settings: HiloSettings, topics: list[str]) -> Any:
    kafka = create_broker(settings)
    await kafka.start()
    yield kafka
    await kafka.stop()


@pytest.mark.parametrize("purpose", ["service", "marketing"])
async def test_a_command_handled_twice_is_sent_once_and_recorded_once(
    settings: HiloSettings,
    mongo_client: AsyncMongoClient[MongoDocument],
    broker: KafkaBroker,
    purpose: Purpose,
) -> None:
    """Recorded with its purpose: a marketing message must not take a customer off the
    agents' queue."""
    provider = ScriptedProvider()
    sender = await _sender(settings, mongo_client, broker, provider)
    command = sample_command(purpose=purpose)

    first = await sender.handle(command)
    again = await sender.handle(command)

    assert len(provider.calls) == 1
    assert first["state"] == again["state"] == "sent"
    events = await published_interactions(settings, expected=1)
    assert [event["id"] for event in events] == [command.sent_interaction_id()]
    sent = events[0]["payload"]
    assert sent["direction"] == "outbound"
    assert sent["text"] == command.payload.text
    assert sent["provider_message_id"] == first["provider_message_id"]
    assert sent["purpose"] == purpose


async def test_a_record_kafka_did_not_take_is_published_on_redelivery_without_sending_again(
    settings: HiloSettings, mongo_client: AsyncMongoClient[MongoDocument], broker: KafkaBroker
) -> None:
    provider = ScriptedProvider()
    sender = await _sender(settings, mongo_client, broker, provider, FailingOnce)
    command = sample_command()

    with pytest.raises(PublishFailed):
        await sender.handle(command)
    await sender.handle(command)  # the redelivery after the failed attempt

    assert len(provider.calls) == 1
    events = await published_interactions(settings, expected=1)
    assert [event["id"] for event in events] == [command.sent_interaction_id()]


async def test_a_provider_failing_with_5xx_is_retried_until_it_accepts(
    settings: HiloSettings, mongo_client: AsyncMongoClient[MongoDocument], broker: KafkaBroker
) -> None:
    provider = ScriptedProvider(SendUnavailable("503"), SendUnavailable("timeout"))
    sender = await _sender(settings, mongo_client, broker, provider)

    state = await sender.handle(sample_command())

    assert len(provider.calls) == 3
    assert state["state"] == "sent"


async def test_retries_stop_well_before_another_delivery_would_take_the_send_for_dead(
    settings: HiloSettings, mongo_client: AsyncMongoClient[MongoDocument], broker: KafkaBroker
) -> None:
    """However many attempts are allowed, a send retries for at most half the in-flight time:
    past it another delivery reports the message not confirmed, and a late success would then
    tell the agent it was sent after they were told to look."""
    provider = ScriptedProvider(*(SendUnavailable("503") for _ in range(50)))
    publisher = KafkaPublisher(broker, settings, sealer=create_sealer(settings, mongo_client))
    sends = mongo_client[settings.mongodb_database][SENDS_COLLECTION]
    patient = RetryPolicy(
        attempts=50, first_wait_seconds=0.1, max_wait_seconds=0.1, in_flight_seconds=1.0
    )
    sender = OutboundSender("sms", "test", provider, publisher, sends, patient)

    state = await sender.handle(sample_command())

    assert state["state"] == "failed"
    assert 2 <= len(provider.calls) <= 7, len(provider.calls)


async def test_a_refusal_is_not_retried_and_is_recorded_with_the_providers_reason(
    settings: HiloSettings, mongo_client: AsyncMongoClient[MongoDocument], broker: KafkaBroker
) -> None:
    reason = "21610: Attempt to send to unsubscribed recipient"
    provider = ScriptedProvider(SendRefused(reason))
    sender = await _sender(settings, mongo_client, broker, provider)
    command = sample_command()

    state = await sender.handle(command)

    assert len(provider.calls) == 1
    assert state["state"] == "failed"
    (event,) = await published_interactions(settings, expected=1)
    assert event["payload"] == {
        "kind": "message_status",
        "provider_message_id": command.failure_provider_id(),
        "status": "failed",
        "error": reason,
    }


class TimedProvider(ScriptedProvider):
    """A `ScriptedProvider` that notes when each call came."""

    def __init__(self, *outcomes: Exception) -> None:
        super().__init__(*outcomes)
        self.times: list[float] = []

    async def send(self, command: OutboundCommand) -> Sent:
        self.times.append(time.monotonic())
        return await super().send(command)


async def test_a_provider_asking_to_retry_after_a_while_is_tried_again_no_sooner(
    settings: HiloSettings, mongo_client: AsyncMongoClient[MongoDocument], broker: KafkaBroker
) -> None:
    """A 429 with `Retry-After: 1` is tried again after a second, not after the 10 ms backoff
    (which the provider would refuse again, spending an attempt)."""
    provider = TimedProvider(SendUnavailable("provider answered 429", retry_after=1.0))
    sender = await _sender(settings, mongo_client, broker, provider)

    state = await sender.handle(sample_command())

    assert state["state"] == "sent"
    first, second = provider.times
    assert second - first >= 1.0


async def test_a_provider_asking_to_wait_past_the_send_window_fails_the_send_now(
    settings: HiloSettings, mongo_client: AsyncMongoClient[MongoDocument], broker: KafkaBroker
) -> None:
    """Waiting longer than half the in-flight time would let another delivery report the
    message not confirmed while this one could still send it: the send fails at once, saying
    what the provider asked for."""
    provider = ScriptedProvider(SendUnavailable("provider answered 429", retry_after=600.0))
    publisher = KafkaPublisher(broker, settings, sealer=create_sealer(settings, mongo_client))
    sends = mongo_client[settings.mongodb_database][SENDS_COLLECTION]
    policy = RetryPolicy(attempts=5, first_wait_seconds=0.01, in_flight_seconds=60.0)
    sender = OutboundSender("sms", "test", provider, publisher, sends, policy)

    state = await sender.handle(sample_command())

    assert len(provider.calls) == 1
    assert state["reason"] == "provider answered 429 (after 1 attempts; it asked to wait 600 s)"


def _http_date(seconds_from_now: int) -> str:
    return format_datetime(datetime.now(UTC) + timedelta(seconds=seconds_from_now), usegmt=True)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (lambda: "120", 120.0),
        (lambda: _http_date(90), 90.0),
        (lambda: _http_date(-90), 0.0),
        (lambda: "soon", None),
        (lambda: "", None),
    ],
)
def test_retry_after_is_read_in_seconds_or_as_a_date(
    header: Callable[[], str], seconds: float | None
) -> None:
    value = header()
    response = httpx.Response(429, headers={"Retry-After": value} if value else {})
    waited = retry_after(response)
    if seconds is None:
        assert waited is None
    else:
        assert waited is not None
        assert abs(waited - seconds) < 2


async def test_a_429_carries_the_wait_the_provider_asked_for() -> None:
    transport = httpx.MockTransport(
        lambda _request: httpx.Response(429, headers={"Retry-After": "30"})
    )
    async with httpx.AsyncClient(transport=transport) as http:
        with pytest.raises(SendUnavailable) as raised:
            await provider_call(lambda: http.post("https://provider.test/send"), lambda r: "")
    assert raised.value.retry_after == 30.0


async def test_a_provider_down_for_every_attempt_is_reported_failed(
    settings: HiloSettings, mongo_client: AsyncMongoClient[MongoDocument], broker: KafkaBroker
) -> None:
    provider = ScriptedProvider(*(SendUnavailable("provider answered 503") for _ in range(3)))
    sender = await _sender(settings, mongo_client, broker, provider)

    state = await sender.handle(sample_command())

    assert len(provider.calls) == 3
    assert state["reason"] == "provider answered 503 (after 3 attempts)"


async def test_the_channel_consumes_its_own_commands_once_and_dead_letters_unreadable_ones(
    settings: HiloSettings, mongo_client: AsyncMongoClient[MongoDocument], topics: list[str]
) -> None:
    provider = ScriptedProvider()
    mine, theirs = sample_command("sms"), sample_command("email")
    sealer = create_sealer(settings, mongo_client)
    disguised_command = sample_command("email")
    disguised = await command_record(disguised_command, sealer)
    newer = sample_command("sms")
    newer_record = await command_record(newer, sealer)
    newer_form = to_json({**from_json(newer_record.value or b"{}"), "priority": "high"})
    records = [
        await command_record(mine, sealer),
        await command_record(mine, sealer),  # delivered again, as after a producer retry
        await command_record(theirs, sealer),
        Record(Topic.OUTBOUND, b"cus-1", b'{"not": "a command"}', {"hilo_channel": "sms"}),
        Record(Topic.OUTBOUND, disguised.key, disguised.value, {"hilo_channel": "sms"}),
        Record(Topic.OUTBOUND, newer_record.key, newer_form, {"hilo_channel": "sms"}),
    ]
    before = _redelivered("sms")
    async with channel_reading(settings, provider, records):
        await eventually(_redelivered_async("sms"), until=lambda n: n > before, timeout=60)
        dead = await read_topic(
            settings.kafka_bootstrap_servers, topic_name(Topic.OUTBOUND_DLQ, settings), expected=3
        )

    assert [call.id for call in provider.calls] == [mine.id]
    assert [dict(d.headers)["hilo_error_reason"] for d in dead] == [
        b"unreadable",
        b"wrong_channel",
        b"unreadable",
    ]
    # The agent is told what was not sent (the desk would show it sending for good); a record
    # that is no command at all names nobody to tell.
    events = {e["id"]: e for e in await published_interactions(settings, expected=3)}
    assert set(events) == {
        mine.sent_interaction_id(),
        interaction_id("email", f"outbound-failed:{disguised_command.id}"),
        interaction_id("sms", f"outbound-failed:{newer.id}"),
    }
    failed = events[interaction_id("sms", f"outbound-failed:{newer.id}")]["payload"]
    assert failed["status"] == "failed"
    assert failed["provider_message_id"] == newer.failure_provider_id()
    assert "outbound.dlq" in failed["error"]


async def _sent_count(provider: ScriptedProvider) -> int:
    return len(provider.calls)


def _redelivered(channel: str) -> float:
    """Commands found sent already when they came again (counted, not sent)."""
    value = REGISTRY.get_sample_value("hilo_outbound_redelivered_total", {"channel": channel})
    return value or 0.0


def _redelivered_async(channel: str) -> Callable[[], Awaitable[float]]:
    async def probe() -> float:
        return _redelivered(channel)

    return probe


async def test_a_claim_left_by_an_attempt_that_died_is_reported_unconfirmed_not_sent_again(
    settings: HiloSettings, mongo_client: AsyncMongoClient[MongoDocument], broker: KafkaBroker
) -> None:
    provider = ScriptedProvider()
    sender = await _sender(settings, mongo_client, broker, provider)
    died, in_flight = sample_command(), sample_command()
    sends = mongo_client[settings.mongodb_database][SENDS_COLLECTION]
    now = datetime.now(UTC)
    await sends.insert_many(
        [
            _claim(died, claimed_at=now - timedelta(minutes=10)),
            _claim(in_flight, claimed_at=now - timedelta(seconds=5)),
        ]
    )

    with pytest.raises(SendInProgress):
        await sender.handle(in_flight)
    state = await sender.handle(died)

    assert provider.calls == []
    assert state["reason"] == UNCONFIRMED
    (event,) = await published_interactions(settings, expected=1)
    assert event["payload"]["provider_message_id"] == died.failure_provider_id()
    assert event["payload"]["error"] == UNCONFIRMED


def _claim(command: OutboundCommand, *, claimed_at: datetime) -> MongoDocument:
    return {
        "_id": command.id,
        "state": "sending",
        "claim": "another-attempt",
        "channel": command.channel,
        "claimed_at": claimed_at,
    }


class FlakyCollection:
    """The sends collection, whose first `fails` updates fail as if MongoDB were away."""

    def __init__(self, collection: Any, fails: int) -> None:
        self._collection = collection
        self.fails = fails

    def __getattr__(self, name: str) -> Any:
        return getattr(self._collection, name)

    async def update_one(self, *args: Any, **kwargs: Any) -> Any:
        if self.fails:
            self.fails -= 1
            raise AutoReconnect("injected")
        return await self._collection.update_one(*args, **kwargs)


async def test_storing_what_the_provider_answered_is_retried_not_lost(
    settings: HiloSettings, mongo_client: AsyncMongoClient[MongoDocument], broker: KafkaBroker
) -> None:
    provider = ScriptedProvider()
    sends = FlakyCollection(mongo_client[settings.mongodb_database][SENDS_COLLECTION], fails=2)
    publisher = KafkaPublisher(broker, settings, sealer=create_sealer(settings, mongo_client))
    sender = OutboundSender("sms", "test", provider, publisher, sends, FAST)  # type: ignore[arg-type]
    command = sample_command()

    await sender.handle(command)
    again = await sender.handle(command)

    assert len(provider.calls) == 1
    assert again["state"] == "sent"
    assert sends.fails == 0


async def redelivered_after_a_failure(
    settings: HiloSettings,
    mongo_client: AsyncMongoClient[MongoDocument],
    broker: KafkaBroker,
    sends: Any,
) -> tuple[ScriptedProvider, OutboundCommand, MongoDocument]:
    """A command whose first handling fails on `sends` (MongoDB not answering), handled again
    by the same sender: the provider, the command, and the second handling's state."""
    provider = ScriptedProvider()
    publisher = KafkaPublisher(broker, settings, sealer=create_sealer(settings, mongo_client))
    sender = OutboundSender("sms", "test", provider, publisher, sends, FAST)
    command = sample_command()
    with pytest.raises(AutoReconnect):
        await sender.handle(command)
    return provider, command, await sender.handle(command)


async def test_an_outcome_mongodb_did_not_take_in_time_is_stored_on_redelivery(
    settings: HiloSettings, mongo_client: AsyncMongoClient[MongoDocument], broker: KafkaBroker
) -> None:
    """MongoDB away for longer than the sender retries storing what the provider answered: the
    customer has the message, and the redelivery records it as sent, not as not confirmed."""
    sends = FlakyCollection(mongo_client[settings.mongodb_database][SENDS_COLLECTION], fails=8)
    provider, command, again = await redelivered_after_a_failure(
        settings, mongo_client, broker, sends
    )

    assert len(provider.calls) == 1
    assert again["state"] == "sent"
    stored = await sends.find_one({"_id": command.id})
    assert stored is not None
    assert (stored["state"], stored["recorded"]) == ("sent", True)


class SlowOutcome:
    """The sends collection, whose writes of an outcome (`state` set) take `delay` seconds: a
    deploy stops the handling meanwhile."""

    def __init__(self, collection: Any, delay: float) -> None:
        self._collection = collection
        self.delay = delay
        self.storing = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._collection, name)

    async def update_one(self, query: Any, update: Any, **kwargs: Any) -> Any:
        if "state" in update.get("$set", {}):
            self.storing.set()
            await asyncio.sleep(self.delay)
        return await self._collection.update_one(query, update, **kwargs)


async def test_a_send_stopped_while_its_outcome_is_stored_is_still_recorded_sent(
    settings: HiloSettings, mongo_client: AsyncMongoClient[MongoDocument], broker: KafkaBroker
) -> None:
    """Found by a review: the provider took the message, MongoDB was slow to store it, and the
    deploy's stop cancelled the store: the claim stayed `sending`, and the next delivery
    reported the message not confirmed minutes later (its statuses matched nothing)."""
    provider = ScriptedProvider()
    publisher = KafkaPublisher(broker, settings, sealer=create_sealer(settings, mongo_client))
    collection = mongo_client[settings.mongodb_database][SENDS_COLLECTION]
    sends = SlowOutcome(collection, delay=0.5)
    sender = OutboundSender("sms", "test", provider, publisher, sends, FAST)  # type: ignore[arg-type]
    command = sample_command()

    handling = asyncio.create_task(sender.handle(command))
    await sends.storing.wait()
    handling.cancel()
    with pytest.raises(asyncio.CancelledError):
        await handling

    await sender.finish_storing()  # the channel's stop waits for it before closing MongoDB
    stored = await collection.find_one({"_id": command.id})

    assert stored is not None
    assert stored["state"] == "sent"
    assert len(provider.calls) == 1


async def test_a_send_stopped_while_waiting_to_try_again_is_sent_by_the_next_delivery(
    settings: HiloSettings, mongo_client: AsyncMongoClient[MongoDocument], broker: KafkaBroker
) -> None:
    """A deploy while the provider is throttling: nothing is with the provider between two
    attempts, so the claim goes and the redelivery sends, instead of minutes of waiting and a
    message reported not confirmed that was never sent."""
    provider = ScriptedProvider(SendUnavailable("throttled"))
    patient = RetryPolicy(attempts=3, first_wait_seconds=30, max_wait_seconds=30)
    publisher = KafkaPublisher(broker, settings, sealer=create_sealer(settings, mongo_client))
    sends = mongo_client[settings.mongodb_database][SENDS_COLLECTION]
    stopping = OutboundSender("sms", "test", provider, publisher, sends, patient)
    command = sample_command()

    handling = asyncio.create_task(stopping.handle(command))
    await eventually(lambda: _calls(provider), until=lambda n: n == 1)
    handling.cancel()
    with pytest.raises(asyncio.CancelledError):
        await handling
    released = await sends.find_one({"_id": command.id})
    again = await OutboundSender("sms", "test", provider, publisher, sends, FAST).handle(command)

    assert released is None
    assert again["state"] == "sent"
    assert len(provider.calls) == 2


class HangingProvider(ScriptedProvider):
    """A provider whose call never answers (a deploy stops the channel during it); `calling`
    is set once the call is made."""

    def __init__(self) -> None:
        super().__init__()
        self.calling = asyncio.Event()

    async def send(self, command: OutboundCommand) -> Sent:
        self.calls.append(command)
        self.calling.set()
        await asyncio.sleep(3600)
        raise AssertionError("never answered")


async def test_a_send_stopped_during_the_providers_call_is_reported_not_confirmed_at_once(
    settings: HiloSettings, mongo_client: AsyncMongoClient[MongoDocument], broker: KafkaBroker
) -> None:
    """A deploy that outlasts the provider's answer: the call may have reached the provider, so
    it is not sent again; it is given up as not confirmed when it is stopped, so the next
    delivery reports it right away instead of waiting minutes for an attempt that is gone
    (and holding the partition's later replies meanwhile)."""
    provider = HangingProvider()
    calling = provider.calling
    publisher = KafkaPublisher(broker, settings, sealer=create_sealer(settings, mongo_client))
    sends = mongo_client[settings.mongodb_database][SENDS_COLLECTION]
    sender = OutboundSender("sms", "test", provider, publisher, sends, FAST)
    command = sample_command()

    handling = asyncio.create_task(sender.handle(command))
    await calling.wait()
    handling.cancel()
    with pytest.raises(asyncio.CancelledError):
        await handling
    kept = await sends.find_one({"_id": command.id})
    again = await OutboundSender("sms", "test", provider, publisher, sends, FAST).handle(command)

    assert kept is not None
    assert (kept["state"], kept["reason"]) == ("failed", INTERRUPTED)
    assert len(provider.calls) == 1
    assert (again["state"], again["recorded"]) == ("failed", True)
    [event] = await published_interactions(settings, expected=1)
    assert event["payload"]["provider_message_id"] == command.failure_provider_id()
    assert event["payload"]["error"] == INTERRUPTED
    assert CHECK_FIRST in INTERRUPTED, "the desk shows it as perhaps sent"


async def test_a_stop_waits_for_the_interrupted_mark_of_a_send_it_cut_short(
    settings: HiloSettings, mongo_client: AsyncMongoClient[MongoDocument], broker: KafkaBroker
) -> None:
    """A stop cancels a handler during the provider's call and goes on to its next step without
    waiting for the handler: the send's interrupted mark, slow to reach MongoDB (0.5 s), is
    stored before `finish_storing` returns, and so before MongoDB's client closes. Left to run on
    its own, it landed after the stop (the whatsapp channel's test read the send `sending`)."""
    provider = HangingProvider()

    class SlowToMark(OutboundSender):
        async def _interrupted(self, command: OutboundCommand, claim: str) -> None:
            await asyncio.sleep(0.5)
            await super()._interrupted(command, claim)

    publisher = KafkaPublisher(broker, settings, sealer=create_sealer(settings, mongo_client))
    sends = mongo_client[settings.mongodb_database][SENDS_COLLECTION]
    sender = SlowToMark("sms", "test", provider, publisher, sends, FAST)
    command = sample_command()

    handling = asyncio.create_task(sender.handle(command))
    await provider.calling.wait()
    handling.cancel()
    await asyncio.sleep(0)  # the handler meets its cancellation; the stop goes on
    await sender.finish_storing()
    kept = await sends.find_one({"_id": command.id})
    with pytest.raises(asyncio.CancelledError):
        await handling

    assert kept is not None
    assert (kept["state"], kept.get("reason")) == ("failed", INTERRUPTED)


async def test_a_defect_in_the_channels_send_code_is_reported_not_confirmed_at_once(
    settings: HiloSettings, mongo_client: AsyncMongoClient[MongoDocument], broker: KafkaBroker
) -> None:
    """A provider class that fails on an answer it does not expect (after the provider took
    the message, perhaps): reported now as not confirmed, not minutes later as a stopped
    service, and not sent again."""
    provider = ScriptedProvider(KeyError("sid"))
    sender = await _sender(settings, mongo_client, broker, provider)
    command = sample_command()

    state = await sender.handle(command)
    again = await sender.handle(command)

    assert len(provider.calls) == 1
    assert (state["state"], state["reason"]) == ("failed", failed_in_code(KeyError()))
    assert state["reason"].startswith("not confirmed: the channel service failed")
    assert CHECK_FIRST in state["reason"]
    assert again["state"] == "failed"
    [event] = await published_interactions(settings, expected=1)
    assert event["payload"]["error"] == state["reason"]


async def test_a_provider_client_closed_by_a_stopping_service_sent_nothing() -> None:
    async with httpx.AsyncClient() as http:
        pass

    with pytest.raises(SendUnavailable, match="stopping"):
        await provider_call(lambda: http.post("https://provider.test/send"), lambda r: r.text)


async def _calls(provider: ScriptedProvider) -> int:
    return len(provider.calls)


class ClaimAnswerLost:
    """The sends collection, whose first claim is stored but its answer lost (an election)."""

    def __init__(self, collection: Any) -> None:
        self._collection = collection
        self.lost = 0
        self.first_claimed_at: datetime | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._collection, name)

    async def find_one_and_update(self, *args: Any, **kwargs: Any) -> Any:
        answer = await self._collection.find_one_and_update(*args, **kwargs)
        if not self.lost:
            self.lost += 1
            self.first_claimed_at = answer["claimed_at"]
            await asyncio.sleep(0.01)  # the retry comes later: claimed_at is to the millisecond
            raise AutoReconnect("injected: applied, answer lost")
        return answer


async def test_a_claim_whose_answer_was_lost_is_taken_again_and_sent_once(
    settings: HiloSettings, mongo_client: AsyncMongoClient[MongoDocument], broker: KafkaBroker
) -> None:
    """Nothing was sent under the claim: the redelivery claims with the same token, finds its
    own claim and sends, instead of waiting minutes and reporting it not confirmed."""
    sends = ClaimAnswerLost(mongo_client[settings.mongodb_database][SENDS_COLLECTION])
    provider, command, again = await redelivered_after_a_failure(
        settings, mongo_client, broker, sends
    )

    assert sends.lost == 1
    assert len(provider.calls) == 1
    assert again["state"] == "sent"
    stored = await sends.find_one({"_id": command.id})
    assert sends.first_claimed_at is not None
    assert stored["claimed_at"] > sends.first_claimed_at, (
        "taken again, the claim counts from then: another delivery gives it the whole window"
    )


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (httpx.ConnectError("refused"), SendUnavailable),
        (httpx.ConnectTimeout("slow"), SendUnavailable),
        (httpx.ReadTimeout("no answer"), SendUncertain),
        (httpx.RemoteProtocolError("dropped"), SendUncertain),
        (httpx.Response(503), SendUnavailable),
        (httpx.Response(429), SendUnavailable),
        # Failed or timed out while handling it: the message may be out (Twilio's 20500).
        (httpx.Response(500), SendUncertain),
        (httpx.Response(502), SendUncertain),
        (httpx.Response(504), SendUncertain),
        (httpx.Response(400, text="21610"), SendRefused),
    ],
)
async def test_provider_failures_are_sorted_into_retry_refused_and_uncertain(
    answer: httpx.Response | Exception, expected: type[Exception]
) -> None:
    def respond(_request: httpx.Request) -> httpx.Response:
        if isinstance(answer, Exception):
            raise answer
        return answer

    async with httpx.AsyncClient(transport=httpx.MockTransport(respond)) as http:
        with pytest.raises(expected) as raised:
            await provider_call(lambda: http.post("https://provider.test/send"), lambda r: r.text)

    assert type(raised.value) is expected
    if expected is SendRefused:
        assert raised.value.reason == "21610"  # type: ignore[attr-defined]


async def test_a_service_sending_for_several_channels_records_each_under_its_own(
    settings: HiloSettings, mongo_client: AsyncMongoClient[MongoDocument], topics: list[str]
) -> None:
    provider = ScriptedProvider()
    messenger, instagram, sms = (
        sample_command(channel) for channel in ("messenger", "instagram", "sms")
    )
    sealer = create_sealer(settings, mongo_client)
    records = [await command_record(command, sealer) for command in (sms, messenger, instagram)]
    sends_for = ["messenger", "instagram"]
    async with channel_reading(settings, provider, records, name="social", sends_for=sends_for):
        await eventually(lambda: _sent_count(provider), until=lambda n: n >= 2, timeout=60)

    assert [call.id for call in provider.calls] == [messenger.id, instagram.id]
    events = await published_interactions(settings, expected=2)
    assert {(event["id"], event["channel"]) for event in events} == {
        (messenger.sent_interaction_id(), "messenger"),
        (instagram.sent_interaction_id(), "instagram"),
    }


@pytest.mark.parametrize(
    ("status", "code", "outcome"),
    [
        (400, 613, SendUnavailable),  # Messenger: calls to this API exceeded the rate limit
        (400, 131056, SendUnavailable),  # WhatsApp: pair rate limit
        (403, 4, SendUnavailable),  # app rate limit
        (400, 10, SendRefused),  # outside the messaging window: a refusal
        (400, None, SendRefused),  # no Graph error body
        (500, 1200, SendUnavailable),  # Messenger: temporary send message failure, try again
        (500, 1, SendUncertain),  # an unknown error answered 500: it may have been taken
    ],
)
async def test_graph_rate_limits_are_retried_whatever_the_status_and_refusals_are_not(
    status: int, code: int | None, outcome: type[Exception]
) -> None:
    body = {"error": {"code": code, "message": "(#x) limit"}} if code is not None else {}
    transport = httpx.MockTransport(lambda _request: httpx.Response(status, json=body))
    async with httpx.AsyncClient(transport=transport, base_url="http://graph") as graph:
        with pytest.raises(outcome):
            await provider_call(
                lambda: graph.post("/messages"), lambda r: "refused", graph_throttled
            )


async def test_threads_kept_by_sends_recorded_before_they_were_dropped_are_removed_at_start(
    settings: HiloSettings, mongo_client: AsyncMongoClient[MongoDocument], broker: KafkaBroker
) -> None:
    """Sends recorded by an earlier version still hold their thread (an SMS thread is the
    customer's number); the sender removes it when it starts, and keeps a pending send's."""
    sender = await _sender(settings, mongo_client, broker, ScriptedProvider())
    sends = mongo_client[settings.mongodb_database][SENDS_COLLECTION]
    thread = "+14155552671:+34600111222"
    await sends.insert_many(
        [
            {"_id": "old", "state": "sent", "recorded": True, "thread": thread},
            {"_id": "unrecorded", "state": "sent", "thread": thread},
        ]
    )

    await sender.create_indexes()
    await sends.insert_one({"_id": "after", "state": "sent", "recorded": True, "thread": thread})
    await sender.create_indexes()  # the next start: nothing left to clean, nothing scanned

    kept = {doc["_id"]: doc.get("thread") async for doc in sends.find({"state": "sent"})}
    assert kept == {"old": None, "unrecorded": thread, "after": thread}


async def test_sends_are_forgotten_after_a_while_longer_than_any_topic_keeps_their_commands(
    settings: HiloSettings, mongo_client: AsyncMongoClient[MongoDocument], broker: KafkaBroker
) -> None:
    """A send names its customer and the provider's message id (a WhatsApp id holds their
    number): MongoDB expires it, but only once no redelivered command can still need it."""
    sender = await _sender(settings, mongo_client, broker, ScriptedProvider())
    sends = mongo_client[settings.mongodb_database][SENDS_COLLECTION]

    await sender.create_indexes()

    indexes = await sends.index_information()
    [ttl] = [index for index in indexes.values() if index["key"] == [("claimed_at", 1)]]
    kept = timedelta(seconds=ttl["expireAfterSeconds"])
    assert kept == SENDS_KEPT
    for spec in topics.REGISTRY:
        if spec.topic in (Topic.OUTBOUND, Topic.OUTBOUND_DLQ):
            assert kept > timedelta(milliseconds=spec.retention_ms), spec.topic


async def test_the_sends_indexes_are_made_once_mongodb_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A channel started while MongoDB did not answer still gets the sends' TTL index."""

    class Sends:
        calls = 0

        async def create_indexes(self) -> None:
            self.calls += 1
            if self.calls < 3:
                raise AutoReconnect("mongo away")

    monkeypatch.setattr(channel_module, "INDEX_RETRY_SECONDS", 0.0)
    sends = Sends()

    await channel_module._index_sends(sends)  # type: ignore[arg-type]

    assert sends.calls == 3


async def test_a_sent_commands_record_kafka_refuses_for_good_is_dead_lettered_not_retried(
    settings: HiloSettings, mongo_client: AsyncMongoClient[MongoDocument], topics: list[str]
) -> None:
    """`interactions` takes records of at most 4,000 bytes (an operator's `max.message.bytes`):
    the record of a long reply, sent, is refused for good. It used to be retried every 2 s for
    ever, and every reply behind it on the partition waited; it goes to `outbound.dlq` now
    (`unrecorded`), sent once, and the next command is sent and recorded."""
    await limit_record_size(settings, Topic.INTERACTIONS, 4_000)
    provider = ScriptedProvider()
    long, short = sample_command(text="é" * 4_000), sample_command()
    sealer = create_sealer(settings, mongo_client)
    records = [await command_record(long, sealer), await command_record(short, sealer)]
    async with channel_reading(settings, provider, records):
        [dead] = await read_topic(
            settings.kafka_bootstrap_servers, topic_name(Topic.OUTBOUND_DLQ, settings), expected=1
        )
        await eventually(lambda: _sent_count(provider), until=lambda n: n >= 2, timeout=30)

    assert [call.id for call in provider.calls] == [long.id, short.id]
    assert dict(dead.headers)["hilo_error_reason"] == b"unrecorded"
    assert dead.value == records[0].value
    on_interactions = await read_topic(
        settings.kafka_bootstrap_servers, topic_name(Topic.INTERACTIONS, settings), expected=1
    )
    events = await opened_interactions(
        settings, [record for record in on_interactions if record.key != b"probe"]
    )
    assert short.sent_interaction_id() in {event["id"] for event in events}
    states = mongo_client[settings.mongodb_database][SENDS_COLLECTION]
    assert (await states.find_one({"_id": long.id}) or {}).get("state") == "sent"
