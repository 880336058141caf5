"""What every channel app answers the same way, whatever its routes do."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta

import httpx
import pytest
from fastapi import APIRouter, Depends, Request
from prometheus_client import REGISTRY
from pydantic import BaseModel, Field, SecretStr

from hilo import kafka as kafka_module
from hilo.auth import require_api_key
from hilo.catch_up import ReadBack
from hilo.channel import Channel, ChannelSettings, create_channel_app, request_body
from hilo.contract import (
    DeliveryStatus,
    Identifiers,
    Interaction,
    MessageStatusChanged,
    new_interaction,
)
from hilo.kafka import aiokafka_producer
from hilo.settings import HiloSettings
from hilo.testkit.probes import eventually, read_topic
from hilo.testkit.samples import publishing_one_sample, sample_interaction
from hilo.testkit.serving import free_port
from hilo.topics import Topic, topic_name
from hilo_devkit.channel_contract import channel_client


class Strict(BaseModel):
    quantity: int = Field(gt=0)


def routes(channel: Channel) -> list[APIRouter]:
    router = APIRouter()

    @router.post("/translate")
    async def translate() -> dict[str, int]:
        return {"quantity": Strict(quantity=0).quantity}

    @router.post("/keyed", dependencies=[Depends(require_api_key([SecretStr("k-1")]))])
    async def keyed() -> dict[str, bool]:
        return {"ok": True}

    @router.post("/body")
    async def body(request: Request) -> dict[str, int]:
        return {"bytes": len(await request_body(request, channel.settings))}

    return [router]


def client() -> httpx.AsyncClient:
    app = create_channel_app(
        "test", ChannelSettings(environment="test"), routes, description="test"
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://channel")


async def test_a_translation_that_cannot_be_built_is_a_422_naming_the_field() -> None:
    async with client() as channel:
        response = await channel.post("/translate")

    assert response.status_code == 422
    assert response.json() == {
        "error": "invalid_body",
        "detail": "quantity: Input should be greater than 0",
    }


async def test_a_request_without_the_api_key_is_refused_and_counted_as_every_refusal() -> None:
    def refused() -> float:
        labels = {"channel": "test", "reason": "api_key"}
        return REGISTRY.get_sample_value("hilo_channel_requests_rejected_total", labels) or 0.0

    before = refused()
    async with client() as channel:
        missing = await channel.post("/keyed")
        wrong = await channel.post("/keyed", headers={"X-API-Key": "k-2"})
        right = await channel.post("/keyed", headers={"X-API-Key": "k-1"})

    for answer in (missing, wrong):
        assert answer.status_code == 401
        assert answer.json() == {
            "error": "api_key",
            "detail": "missing or unknown API key (header X-API-Key)",
        }
        assert answer.headers["www-authenticate"] == "APIKey"
    assert right.json() == {"ok": True}
    assert refused() == before + 2


async def test_a_content_length_of_non_ascii_digits_is_not_a_crash() -> None:
    async with client() as channel:
        response = await channel.post(
            "/body", content=b"{}", headers=[(b"content-length", "²".encode("latin-1"))]
        )

    assert response.status_code < 500


async def test_without_the_key_store_nothing_is_published_and_the_provider_is_told_to_retry(
    settings: HiloSettings, topics: list[str]
) -> None:
    """Events are sealed before they go out: no key store, no publishing (503, Retry-After)."""
    unreachable = ChannelSettings.model_validate(
        {**settings.model_dump(), "mongodb_url": f"mongodb://127.0.0.1:{free_port()}/"}
    )

    def refused(reason: str) -> float:
        labels = {"channel": "keyless", "reason": reason}
        return REGISTRY.get_sample_value("hilo_channel_requests_rejected_total", labels) or 0.0

    app = create_channel_app("keyless", unreachable, publishing_one_sample, description="test")
    async with channel_client(app) as channel:
        response = await channel.post("/event")

    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert (refused("store_unavailable"), refused("kafka_unavailable")) == (1, 0), (
        "the operator is pointed at MongoDB, not at Kafka"
    )
    records = await read_topic(
        settings.kafka_bootstrap_servers,
        topic_name(Topic.INTERACTIONS, settings),
        expected=1,
        timeout=3,
    )
    assert records == []


class NothingReadBack:
    """A provider log with nothing in it."""

    async def read_back(self, since: datetime) -> AsyncIterator[Sequence[Interaction]]:
        pages: list[Sequence[Interaction]] = []
        for page in pages:
            yield page

    async def close(self) -> None:
        return None


async def test_a_webhook_refused_without_the_key_store_is_noted_to_be_read_back(
    settings: HiloSettings, topics: list[str]
) -> None:
    """A provider that never retries keeps it in its log: the refusal is what to read back."""
    unreachable = ChannelSettings.model_validate(
        {**settings.model_dump(), "mongodb_url": f"mongodb://127.0.0.1:{free_port()}/"}
    )
    app = create_channel_app(
        "keyless",
        unreachable,
        publishing_one_sample,
        description="test",
        read_back=ReadBack(NothingReadBack(), 60, timedelta(hours=1)),
    )
    async with channel_client(app) as channel:
        before = app.state.channel.catch_up.missed_since
        response = await channel.post("/event")
        after = app.state.channel.catch_up.missed_since

    assert response.status_code == 503
    assert (before, after is not None) == (None, True)


async def test_a_producer_whose_sender_died_is_not_ready_and_stops_its_service(
    settings: HiloSettings, topics: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiokafka's sender task ending (a bug in its routine, aiokafka #907; a cancelled task,
    #1039) leaves a producer that buffers every record and sends none, while Kafka answers
    pings: the instance must say it is not ready, and stop, so that a new one is started."""
    stops: list[str] = []
    monkeypatch.setattr(kafka_module, "PRODUCER_WATCH_SECONDS", 0.05)
    monkeypatch.setattr(kafka_module, "stop_this_process", lambda: stops.append("stop"))
    channel_settings = ChannelSettings.model_validate(settings.model_dump())
    app = create_channel_app(
        "stalling", channel_settings, publishing_one_sample, description="test"
    )
    async with channel_client(app) as channel:
        # Ready once Kafka and MongoDB answer its pings in time (a loaded machine may take a few).
        before = await eventually(
            lambda: channel.get("/health/ready"), until=lambda answer: answer.status_code == 200
        )
        producer = aiokafka_producer(app.state.broker)
        producer._sender.sender_task.cancel()
        await eventually(lambda: _count(stops), until=lambda n: n == 1, timeout=10)
        after = await channel.get("/health/ready")

    assert before.status_code == 200
    assert after.status_code == 503
    assert after.json()["checks"]["kafka"] == "failing"
    assert stops == ["stop"]


async def _count(items: list[str]) -> int:
    return len(items)


class RecordingPublisher:
    """The publishing port, recording what it was given (records are the interactions)."""

    def __init__(self) -> None:
        self.published: list[Interaction] = []

    async def interaction_records(self, interactions: Sequence[Interaction]) -> list[Interaction]:
        return list(interactions)

    async def publish_records(self, records: Sequence[Interaction]) -> None:
        self.published.extend(records)


class SentOnly:
    """A sender that sent the messages of these provider ids, on any channel."""

    def __init__(self, *message_ids: str) -> None:
        self.message_ids = set(message_ids)

    async def sent_here(self, channel: str, provider_message_ids: Sequence[str]) -> set[str]:
        return self.message_ids & set(provider_message_ids)


def delivered(message_id: str) -> Interaction:
    return new_interaction(
        channel="sms",
        instance="test",
        provider_event_id=f"{message_id}:delivered",
        identifiers=Identifiers(phone="+34600111222"),
        payload=MessageStatusChanged(
            provider_message_id=message_id, status=DeliveryStatus.DELIVERED
        ),
        occurred_at=None,
    )


async def test_a_status_read_back_is_kept_only_for_a_message_this_service_sent() -> None:
    """A provider's log lists another tool's messages from the same number too: their statuses
    never came here as webhooks, and are not published from a read-back either."""
    publisher = RecordingPublisher()
    channel = Channel("sms", ChannelSettings(environment="test"), publisher)  # type: ignore[arg-type]
    message = sample_interaction(channel="sms")
    ours, theirs = delivered("SM-ours"), delivered("SM-theirs")

    await channel.publish_read_back([message, ours, theirs])
    sending_nothing = list(publisher.published)
    channel.sender = SentOnly("SM-ours")  # type: ignore[assignment]
    await channel.publish_read_back([message, ours, theirs])

    assert sending_nothing == [message], "a channel that sends nothing has no status of its own"
    assert publisher.published[1:] == [message, ours]
