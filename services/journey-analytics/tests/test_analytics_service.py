"""journey-analytics against the real thing: interactions through the customer-profile service,
`journey` and `identity.merges` on Kafka, the touches in MongoDB, the measures over HTTP, on
`journey.metrics` and in Prometheus; a merge moves history and the measures follow; a second
instance reading the topics from the start gives the same numbers."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY
from pydantic import SecretStr
from pymongo.errors import OperationFailure

from customer_profile.testing import RunningProfileService, running_profile_service
from hilo.contract import (
    CallHappened,
    CallStatus,
    Campaign,
    Conversation,
    ConversationDone,
    Direction,
    Fulfilment,
    Identified,
    Identifiers,
    Interaction,
    MessageExchanged,
    OrderRefunded,
    PageViewed,
    SalesChannel,
    SurveyAnswered,
    SurveyMetric,
    new_interaction,
)
from hilo.dead_letters import ORIGINAL_TOPIC, REASON, WITHOUT_VALUE
from hilo.kafka import Record, read_to_end
from hilo.mongo import create_mongo_client
from hilo.settings import HiloSettings
from hilo.testkit.logs import logs_of
from hilo.testkit.probes import eventually, read_topic
from hilo.testkit.samples import MOVED_AT_MS, publish_entry_copies, sample_payloads
from hilo.testkit.serving import free_port, served
from hilo.testkit.topic_limits import limit_record_size
from hilo.topics import Topic, topic_name
from journey_analytics import consumer
from journey_analytics.app import create_service
from journey_analytics.measures import Measures, Touch
from journey_analytics.settings import AnalyticsSettings
from journey_analytics.store import TouchStore

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=7)
PHONE, WHATSAPP, EMAIL = "+34611222333", "34611222333", "ana.lopez@example.com"


def event(
    n: int, minutes: int, channel: str, identifiers: Identifiers, payload: object
) -> Interaction:
    return new_interaction(
        channel=channel,
        instance="test",
        provider_event_id=f"analytics-{n}",
        identifiers=identifiers,
        payload=payload,
        occurred_at=T0 + timedelta(minutes=minutes),
    )


def message(direction: Direction, n: int) -> MessageExchanged:
    return MessageExchanged(
        direction=direction, text="where is my order", provider_message_id=f"m{n}"
    )


ON_WHATSAPP = Identifiers(phone=PHONE, whatsapp_id=WHATSAPP)
DAY = 24 * 60


def call(status: CallStatus, n: int) -> CallHappened:
    return CallHappened(direction=Direction.INBOUND, status=status, provider_call_id=f"CA{n}")


CSAT = SurveyAnswered(survey_id="csat-1", metric=SurveyMetric.CSAT, score=4)
BEFORE_MERGE = [
    # A dropped call, WhatsApp half an hour later (continued), answered 35 minutes after the call.
    event(1, 0, "voice", Identifiers(phone=PHONE), call(CallStatus.DROPPED, 1)),
    event(2, 30, "whatsapp", ON_WHATSAPP, message(Direction.INBOUND, 2)),
    event(3, 35, "whatsapp", ON_WHATSAPP, message(Direction.OUTBOUND, 3)),
    event(4, 40, "whatsapp", ON_WHATSAPP, CSAT),
    # Five days on, an email from an address Hilo does not know is hers yet: a second customer.
    event(5, 5 * DAY, "email", Identifiers(email=EMAIL), message(Direction.INBOUND, 5)),
]
# A day and a half later a verified call that knows both: the two customers are one.
MERGE = [
    event(
        6,
        6 * DAY + DAY // 2,
        "voice",
        Identifiers(phone=PHONE, email=EMAIL),
        call(CallStatus.COMPLETED, 6),
    )
]
RANGE = {"from": (T0 - timedelta(hours=1)).isoformat(), "to": datetime.now(UTC).isoformat()}


@asynccontextmanager
async def analytics(
    settings: HiloSettings, name: str, *, keep: bool = False, **overrides: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """An instance with a consumer group and database of its own (`analytics_settings`),
    served on a real port; its database dropped at the end unless it is to `keep`."""
    config = analytics_settings(settings, name, **overrides)
    service = create_service(config)
    try:
        async with served(service.app) as url, httpx.AsyncClient(base_url=url) as client:
            yield client
    finally:
        if not keep:
            mongo = create_mongo_client(config)
            await mongo.drop_database(config.mongodb_database)
            await mongo.close()


def analytics_settings(settings: HiloSettings, name: str, **overrides: Any) -> AnalyticsSettings:
    """Settings of an instance with a consumer group and database of its own."""
    fields = settings.model_dump()
    fields |= {"mongodb_database": f"{settings.mongodb_database}_{name}", "environment": "test"}
    fields |= {"consumer_group": f"{settings.topic_prefix}{name}", "metrics_interval_seconds": 0.5}
    return AnalyticsSettings(**(fields | overrides))


@pytest.fixture
async def profile(
    settings: HiloSettings, topics: list[str]
) -> AsyncIterator[RunningProfileService]:
    async with running_profile_service(settings) as running:
        yield running


async def measures_once(client: httpx.AsyncClient, ready: Callable[[Measures], bool]) -> Measures:
    async def read() -> Measures:
        answer = await client.get("/v1/measures", params=RANGE)
        assert answer.status_code == 200, answer.text
        return Measures.model_validate(answer.json())

    return await eventually(read, until=ready, timeout=60)


async def test_measures_follow_the_journey_a_merge_and_a_replay(
    profile: RunningProfileService, settings: HiloSettings
) -> None:
    await profile.publish(BEFORE_MERGE)
    await profile.wait_for_entries(len(BEFORE_MERGE))
    async with analytics(settings, "analytics-a") as first:
        before = await measures_once(first, lambda m: m.entries == len(BEFORE_MERGE))
        assert before.customers == 2
        conversations = before.conversations
        assert (
            conversations.channel_switches,
            conversations.continued,
            conversations.restarted,
        ) == (1, 1, 0)
        assert conversations.mean_first_response_seconds == 35 * 60, "from the call"
        assert before.satisfaction.csat_by_channel_path == {"voice>whatsapp": 4.0}

        await profile.publish(MERGE)
        await profile.wait_for_entries(len(BEFORE_MERGE) + len(MERGE))
        after = await measures_once(first, lambda m: m.customers == 1 and m.entries == 6)
        assert (after.conversations.channel_switches, after.conversations.restarted) == (3, 2)
        assert after.conversations.continuity_rate == pytest.approx(1 / 3, abs=1e-4)
        ana = await profile.customer_of("phone", PHONE)
        mine = await first.get("/v1/measures", params={**RANGE, "customer": ana})
        stranger = await first.get("/v1/measures", params={**RANGE, "customer": "nobody"})
        assert Measures.model_validate(mine.json()).entries == 6, "one customer's measures"
        assert Measures.model_validate(stranger.json()).entries == 0
        exported = (await first.get("/metrics")).text
        assert "hilo_journey_continuity_ratio" in exported

    async with analytics(settings, "analytics-b") as replayed:
        again = await measures_once(replayed, lambda m: m.customers == 1 and m.entries == 6)
        assert again.model_dump(exclude={"window_end"}) == after.model_dump(exclude={"window_end"})

        # Erased, Ana leaves the measures (of this instance and of any that reads the topics).
        ana = await profile.customer_of("phone", PHONE)
        erased = await profile.http.delete(f"/v1/customers/{ana}")
        assert erased.status_code in {200, 202}, erased.text
        gone = await measures_once(replayed, lambda m: m.entries == 0)
        assert (gone.customers, gone.conversations.conversations) == (0, 0)

    published = await read_to_end(
        settings.kafka_bootstrap_servers, topic_name(Topic.JOURNEY_METRICS, settings)
    )
    latest: dict[str, Any] = {r.key.decode(): json.loads(r.value) for r in published if r.key}
    assert latest, "today's measures on journey.metrics"
    assert all(key.startswith("day:") for key in latest)
    assert all(Measures.model_validate(value).schema_version == 1 for value in latest.values())


async def test_a_call_carried_on_in_chat_days_later_is_one_conversation_as_the_desk_shows_it(
    profile: RunningProfileService, settings: HiloSettings
) -> None:
    """A dropped call, and three days later a WhatsApp message the contact centre linked to it
    (`continues`): customer-profile's open conversation (the desk's) and the measures both see
    one conversation that crossed channels."""
    phone = "+34611999000"
    dropped = event(30, 0, "voice", Identifiers(phone=phone), call(CallStatus.DROPPED, 30))
    call_id = "voice-conversation-30"
    journey = [
        dropped.model_copy(update={"conversation": Conversation(id=call_id)}),
        new_interaction(
            channel="whatsapp",
            instance="test",
            provider_event_id="analytics-31",
            identifiers=Identifiers(phone=phone, whatsapp_id=phone.removeprefix("+")),
            payload=message(Direction.INBOUND, 31),
            occurred_at=T0 + timedelta(days=3),
            conversation=Conversation(id="whatsapp-conversation-31", continues=call_id),
        ),
    ]
    await profile.publish(journey)
    await profile.wait_for_entries(len(journey))
    customer = await profile.customer_of("phone", phone)
    shown = await profile.get(f"/v1/customers/{customer}")
    assert shown["view"]["conversation"]["channels"] == ["voice", "whatsapp"], "as the desk shows"

    async with analytics(settings, "analytics-continues") as client:
        measured = await measures_once(client, lambda m: m.entries == len(journey))

    conversations = measured.conversations
    assert conversations.conversations == 1
    assert (conversations.continued, conversations.restarted) == (1, 0)


async def test_an_agents_done_mark_is_no_touch(
    profile: RunningProfileService, settings: HiloSettings
) -> None:
    """A question, an agent's done mark (the desk's `conversation_done`), then a reply: the
    measures count the question and the reply, not the mark, and no `desk` channel."""
    on_email = Identifiers(email="mark@example.com")
    journey = [
        event(40, 0, "email", on_email, message(Direction.INBOUND, 40)),
        event(41, 1, "desk", on_email, ConversationDone(agent_id="ana.agent", waiting_since=T0)),
        event(42, 2, "email", on_email, message(Direction.OUTBOUND, 42)),
    ]
    await profile.publish(journey)
    await profile.wait_for_entries(len(journey))

    async with analytics(settings, "analytics-done") as client:
        # The reply is read after the mark (one customer, one partition, in order).
        measured = await measures_once(
            client, lambda m: m.conversations.mean_first_response_seconds is not None
        )

    assert measured.entries == 2
    assert measured.channel_mix == {"email": 2}
    assert measured.conversations.mean_first_response_seconds == 120


async def test_a_web_order_returned_in_a_store_is_a_refund_across_channels(
    profile: RunningProfileService, settings: HiloSettings
) -> None:
    on_email = Identifiers(email=EMAIL)
    online = {"sold_via": SalesChannel.ONLINE, "fulfilment": Fulfilment.DELIVERY, "store_id": None}
    order = sample_payloads()["order"].model_copy(update={"order_id": "W-5", **online})
    back = OrderRefunded(order_id="W-5", refunded_via=SalesChannel.STORE, store_id="BCN-01")
    journey = [event(20, 0, "web", on_email, order), event(21, DAY, "store", on_email, back)]
    await profile.publish(journey)
    await profile.wait_for_entries(len(journey))

    async with analytics(settings, "analytics-returns") as client:
        measured = await measures_once(client, lambda m: m.entries == len(journey))

    assert measured.attribution.orders == 1, "the refund is no second order"
    assert (measured.returns.refunds, measured.returns.cross_channel) == (1, 1)
    assert measured.returns.by_sale_and_refund_channel == {"online>store": 1}


async def test_a_store_sale_is_credited_to_the_campaign_that_brought_the_visitor(
    profile: RunningProfileService, settings: HiloSettings
) -> None:
    """A visitor lands from the spring newsletter, anonymous; signs in on the web the next day;
    buys in a store with her email two days on. The campaign is credited with a store sale."""
    browsing = Identifiers(anonymous_id="anon-spring-1")
    landing = PageViewed(
        url="https://shop.example/?utm_campaign=spring",
        campaign=Campaign(name="spring", source="newsletter", medium="email"),
    )
    store = {"sold_via": SalesChannel.STORE, "fulfilment": Fulfilment.IN_STORE}
    sale = sample_payloads()["order"].model_copy(update={"order_id": "S-7", **store})
    journey = [
        event(30, 0, "web", browsing, landing),
        event(31, DAY, "web", Identifiers(anonymous_id="anon-spring-1", email=EMAIL), Identified()),
        event(32, 3 * DAY, "store", Identifiers(email=EMAIL), sale),
    ]
    await profile.publish(journey)
    await profile.wait_for_entries(len(journey))

    async with analytics(settings, "analytics-campaigns") as client:
        measured = await measures_once(client, lambda m: m.customers == 1 and m.entries == 3)

    assert measured.campaigns.visits == {"spring": 1}
    assert measured.campaigns.orders == {"spring": 1}
    assert measured.campaigns.orders_by_source_medium == {"newsletter / email": 1}
    assert measured.campaigns.sold_via == {"spring": {"store": 1}}


def page_view_entry(entry_id: str) -> dict[str, Any]:
    """A readable `journey` entry, as the profile service writes one (unsealed: no text)."""
    return {
        "id": entry_id,
        "customer_id": "c-9",
        "occurred_at": (T0 + timedelta(minutes=1)).isoformat(),
        "channel": "web",
        "type": "page_view",
        "payload": {},
    }


async def produce_raw(settings: HiloSettings, records: list[tuple[Topic, bytes]]) -> None:
    """Records as they are, keyed `c`, with a plain producer (no contract, no sealing)."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        for topic, value in records:
            await producer.send_and_wait(topic_name(topic, settings), value, key=b"c")
    finally:
        await producer.stop()


def ill_typed_entries() -> list[dict[str, Any]]:
    """Entries whose fields the measures or MongoDB cannot take: stored, a list where an id goes
    broke every measure reading it; a score past 8 bytes or a lone surrogate was refused by
    MongoDB, and the batch handed back for ever."""
    naive = (T0 + timedelta(minutes=1)).replace(tzinfo=None).isoformat()
    return [
        {"id": "e-5", "type": "survey_answer", "payload": {"score": 2**70}},
        {"id": "e-6", "type": "survey_answer", "payload": {"score": "9"}},
        {"id": "e-7", "type": "order", "payload": {"order_id": "W-\ud800"}},
        {"id": "e-8", "type": "call", "payload": {"provider_call_id": ["CA-1"]}},
        {"id": "e-9", "type": "message", "conversation": {"id": ["c"]}},
        {"id": "e-10", "payload": {"campaign": {"name": ["spring"]}}},
        {"id": "e-11", "channel": 7},
        {"id": "e-12", "occurred_at": naive},
    ]


async def test_unreadable_records_are_dead_lettered_and_the_measures_go_on(
    settings: HiloSettings, topics: list[str]
) -> None:
    """A broken entry, an erasure and a merge it cannot read go to journey-analytics.dlq as they
    were, with the reason; the readable entry after them is measured."""
    entry = page_view_entry("e-readable")
    broken_order = {"type": "order", "payload": {"order_id": [1]}}  # it would break the measures
    unreadable = [
        (Topic.JOURNEY, b"not json"),
        (Topic.ERASURES, json.dumps({"customer_id": "c-1", "aliases": None}).encode()),
        (Topic.IDENTITY_MERGES, json.dumps({"type": "merge", "survivor": "c-2"}).encode()),
        (Topic.JOURNEY, json.dumps(["not", "an", "object"]).encode()),
        (Topic.JOURNEY, json.dumps({**entry, "id": "e-2", "payload": "text"}).encode()),
        (Topic.JOURNEY, json.dumps({**entry, "id": "e-3", "customer_id": [1]}).encode()),
        (Topic.JOURNEY, json.dumps({**entry, "id": "e-4", **broken_order}).encode()),
        *((Topic.JOURNEY, json.dumps({**entry, **odd}).encode()) for odd in ill_typed_entries()),
        (Topic.JOURNEY, b'{"id": "e-deep", "payload": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
    ]
    await produce_raw(settings, [*unreadable, (Topic.JOURNEY, json.dumps(entry).encode())])

    async with analytics(settings, "analytics-dlq") as client:
        measured = await measures_once(client, lambda m: m.entries == 1)
        dead = await read_topic(
            settings.kafka_bootstrap_servers,
            topic_name(Topic.ANALYTICS_DLQ, settings),
            expected=len(unreadable),
        )

    assert measured.customers == 1
    assert sorted(
        (dict(r.headers)["hilo_original_topic"].decode(), r.value) for r in dead
    ) == sorted((topic_name(topic, settings), value) for topic, value in unreadable)
    assert all(dict(r.headers)["hilo_error_reason"] == b"unreadable" for r in dead)
    [erasure] = [r for r in dead if r.value == unreadable[1][1]]
    assert dict(erasure.headers)["hilo_error_detail"].startswith(b"TypeError")


async def test_an_entry_mongodb_cannot_store_is_dead_lettered_alone(
    settings: HiloSettings, topics: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One the checks of an entry miss (here: none made) and MongoDB's driver cannot encode is
    dead-lettered, and the entries stored with it in one write are stored."""
    monkeypatch.setattr(consumer, "_checked", lambda touch: None)
    entry = page_view_entry("e-readable")
    unstorable = json.dumps({**entry, "id": "e-x", "payload": {"order_id": "W-\ud800"}})
    await produce_raw(
        settings,
        [(Topic.JOURNEY, unstorable.encode()), (Topic.JOURNEY, json.dumps(entry).encode())],
    )

    async with analytics(settings, "analytics-unstorable") as client:
        measured = await measures_once(client, lambda m: m.entries == 1)
        [dead] = await read_topic(
            settings.kafka_bootstrap_servers,
            topic_name(Topic.ANALYTICS_DLQ, settings),
            expected=1,
        )

    assert measured.customers == 1
    assert dead.value == unstorable.encode()
    assert dict(dead.headers)["hilo_error_detail"].startswith(b"UnicodeEncodeError")


async def test_a_restored_backup_does_not_bring_back_an_erased_persons_touches(
    settings: HiloSettings, topics: list[str]
) -> None:
    """A backup of MongoDB from before ana's erasure is restored: her touches are back, and the
    consumer's offsets (in Kafka) are past her erasure. Each start erases again whom the
    `erasures` topic names."""
    ana, bo = page_view_entry("e-ana"), {**page_view_entry("e-bo"), "customer_id": "c-bo"}
    erased = {"customer_id": "c-9", "aliases": ["c-9"]}
    await produce_raw(
        settings,
        [(Topic.JOURNEY, json.dumps(ana).encode()), (Topic.JOURNEY, json.dumps(bo).encode())],
    )
    await produce_raw(settings, [(Topic.ERASURES, json.dumps(erased).encode())])
    async with analytics(settings, "analytics-restore", keep=True) as client:
        await measures_once(client, lambda m: m.entries == 1)

    mongo = create_mongo_client(settings)
    database = f"{settings.mongodb_database}_analytics-restore"
    for collection in ("analytics_erased", "analytics_erased_entries"):
        await mongo[database][collection].delete_many({})  # as the backup held them
    await TouchStore(mongo, database).save([consumer._touch(ana)])  # type: ignore[list-item]
    try:
        async with analytics(settings, "analytics-restore") as client:
            restored = await measures_once(client, lambda m: m.customers == 1)
    finally:
        await mongo.close()

    assert restored.entries == 1


async def test_a_record_too_large_for_the_dead_letter_topic_goes_without_its_value(
    settings: HiloSettings, topics: list[str]
) -> None:
    """An unreadable record the dead-letter topic refuses for good (too large with the
    letter's headers) would stop the partition for ever: its letter goes without the value,
    saying where the record is, and the entry after it is measured."""
    await limit_record_size(settings, Topic.ANALYTICS_DLQ, 10_000)
    too_large = os.urandom(9_900)  # random: the producer's compression cannot shrink it
    after = json.dumps(page_view_entry("e-after")).encode()
    await produce_raw(settings, [(Topic.JOURNEY, too_large), (Topic.JOURNEY, after)])

    async with analytics(settings, "analytics-large") as client:
        measured = await measures_once(client, lambda m: m.entries == 1)
        letters = await read_topic(
            settings.kafka_bootstrap_servers,
            topic_name(Topic.ANALYTICS_DLQ, settings),
            expected=2,  # the probe that saw the limit enforced, then the letter
        )

    (letter,) = [r for r in letters if r.key != b"probe"]
    headers = {k: v.decode() for k, v in letter.headers}
    assert letter.value is None
    assert headers[WITHOUT_VALUE] == str(len(too_large))
    assert headers[ORIGINAL_TOPIC] == topic_name(Topic.JOURNEY, settings)
    assert headers[REASON] == "unreadable"
    assert measured.customers == 1


async def test_of_two_copies_of_an_entry_the_one_published_later_is_measured(
    settings: HiloSettings, topics: list[str]
) -> None:
    """A split publishes an entry again under the restored id, keyed by it: read from the start
    the copies may come in either order, and the record's timestamp says which is right."""
    entry = {
        "id": "e-moved",
        "customer_id": "c-kept",
        "occurred_at": (T0 + timedelta(minutes=1)).isoformat(),
        "channel": "web",
        "type": "page_view",
        "payload": {},
    }
    await publish_entry_copies(settings, entry, restored="c-restored")

    async with analytics(settings, "analytics-copies") as client:
        await measures_once(client, lambda m: m.entries == 1)
        config = settings.model_copy(
            update={"mongodb_database": f"{settings.mongodb_database}_analytics-copies"}
        )
        mongo = create_mongo_client(config)
        try:
            store = TouchStore(mongo, config.mongodb_database)
            stored = await store.touches(T0 - timedelta(days=1), T0 + timedelta(days=1))
        finally:
            await mongo.close()

    assert [(t.id, t.customer_id, t.published_ms) for t in stored] == [
        ("e-moved", "c-restored", MOVED_AT_MS)
    ]


async def test_a_store_that_fails_is_told_paused_for_and_caught_up_with(
    settings: HiloSettings, topics: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """MongoDB refusing the writes (a lost privilege, an outage): the batch is handed back,
    which FastStream would fetch again at once and say nothing of; each failure is counted and
    logged, and once the store answers the entry is measured."""
    real_save = TouchStore.save
    failures = iter([OperationFailure("not authorized", code=13)] * 2)

    async def failing_twice(self: TouchStore, touches: Any) -> None:
        if touches and (failure := next(failures, None)) is not None:
            raise failure
        await real_save(self, touches)

    monkeypatch.setattr(TouchStore, "save", failing_twice)
    monkeypatch.setattr(consumer, "FIRST_PAUSE_SECONDS", 0.05)
    before = REGISTRY.get_sample_value(
        "hilo_analytics_batch_failures_total", {"error": "OperationFailure"}
    )
    entry = {
        "id": "e-after-outage",
        "customer_id": "c-1",
        "occurred_at": (T0 + timedelta(minutes=1)).isoformat(),
        "channel": "web",
        "type": "page_view",
        "payload": {},
    }
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        journey = topic_name(Topic.JOURNEY, settings)
        await producer.send_and_wait(journey, json.dumps(entry).encode(), key=b"c-1")
    finally:
        await producer.stop()

    with logs_of(consumer) as logs:
        async with analytics(settings, "analytics-failing") as client:
            measured = await measures_once(client, lambda m: m.entries == 1)

    after = REGISTRY.get_sample_value(
        "hilo_analytics_batch_failures_total", {"error": "OperationFailure"}
    )
    assert measured.customers == 1
    assert (after or 0) - (before or 0) == 2
    failed = [line for line in logs if line["event"] == "analytics_batch_failed"]
    assert [line["in_a_row"] for line in failed] == [1, 2]
    assert any(line["event"] == "analytics_batches_stored_again" for line in logs)


async def test_the_measures_need_a_key_and_a_sane_range(
    settings: HiloSettings, topics: list[str]
) -> None:
    fields = settings.model_dump() | {"environment": "test"}
    config = AnalyticsSettings(**fields, api_keys=[SecretStr("k-1")])
    service = create_service(config)
    transport = httpx.ASGITransport(app=service.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://analytics") as client:
        refused = await client.get("/v1/measures")
        backwards = await client.get(
            "/v1/measures",
            params={"from": "2026-12-02T00:00Z", "to": "2026-12-01T00:00Z"},
            headers={"X-API-Key": "k-1"},
        )
        ends = [
            await client.get(
                "/v1/measures", params={"from": start, "to": end}, headers={"X-API-Key": "k-1"}
            )
            for start, end in [
                ("0001-01-01T00:00Z", "0001-01-02T00:00Z"),
                ("9999-12-30T00:00Z", "9999-12-31T00:00Z"),
            ]
        ]
        ends.append(
            await client.get(
                "/v1/measures", params={"to": "0001-01-02T00:00Z"}, headers={"X-API-Key": "k-1"}
            )
        )
    assert refused.status_code == 401
    assert backwards.status_code == 422
    assert "before" in backwards.text
    # The windows reach past the calendar: these were 500s (OverflowError).
    assert [answer.status_code for answer in ends] == [422, 422, 422]
    assert "too near the calendar's ends" in ends[0].text


async def test_with_kafka_away_the_measures_are_served_and_readiness_says_degraded(
    settings: HiloSettings,
) -> None:
    """The measures are kept in MongoDB: an instance (re)started while Kafka is away serves
    them and reads `journey` once Kafka answers."""
    away = settings.model_copy(update={"kafka_bootstrap_servers": f"127.0.0.1:{free_port()}"})
    async with analytics(away, "away") as client:
        measures = await client.get("/v1/measures")
        ready = await client.get("/health/ready")

    assert measures.status_code == 200
    assert measures.json()["entries"] == 0
    assert ready.status_code == 200
    assert ready.json() == {"status": "degraded", "checks": {"mongodb": "ok", "kafka": "failing"}}


class RecordingPublisher:
    """Keeps the keys of each round's records; after `rounds` rounds, stops the loop."""

    def __init__(self, rounds: int) -> None:
        self.rounds: list[list[str]] = []
        self.values: dict[str, Measures] = {}
        self._left = rounds

    async def publish_records(self, records: list[Record]) -> None:
        self.rounds.append([record.key.decode() for record in records])
        self.values.update(
            {r.key.decode(): Measures.model_validate_json(r.value or b"") for r in records}
        )
        self._left -= 1
        if not self._left:
            raise asyncio.CancelledError


async def test_a_days_record_is_published_again_after_midnight_and_restated_hourly(
    settings: HiloSettings, topics: list[str]
) -> None:
    """The last record of a day holds all of it: yesterday is published with today every round
    (the last round before midnight missed what came after it), and once an hour the week before
    (a store's end-of-day upload, a merge or an erasure changes a past day)."""
    config = AnalyticsSettings(
        **settings.model_dump() | {"environment": "test"},
        metrics_interval_seconds=0.01,
        metrics_restated_days=3,
        conversion_days=1.5,
    )
    service = create_service(config)
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    day = timedelta(days=1)
    late = Touch("late-upload", "c-1", midnight - day / 2, "store", "order")
    await service.store.save([late])
    publisher = RecordingPublisher(rounds=2)
    try:
        with pytest.raises(asyncio.CancelledError):
            await service.keep_publishing(publisher)  # type: ignore[arg-type]
    finally:
        await service.mongo.drop_database(config.mongodb_database)
        await service.mongo.close()

    keys = [f"day:{(midnight - back * day).date().isoformat()}" for back in range(5)]
    assert publisher.rounds == [keys, keys[:2]], "hourly: today, yesterday and 3 more"
    assert publisher.values[keys[1]].entries == 1
    assert publisher.values[keys[0]].entries == 0


async def test_a_days_measures_see_what_followed_it(
    settings: HiloSettings, topics: list[str]
) -> None:
    """Conversion and conversations look forward: a web cart at 22:00 bought in store the next
    morning converted, and a message at 23:50 answered after midnight was answered, both in the
    day's record and in the API's answer for that day."""
    config = AnalyticsSettings(**settings.model_dump() | {"environment": "test"})
    service = create_service(config)
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    yesterday = midnight - timedelta(days=1)
    await service.store.save(
        [
            Touch("cart", "c-1", yesterday + timedelta(hours=22), "web", "cart", cart_id="k"),
            Touch("buy", "c-1", midnight + timedelta(minutes=1), "store", "order", order_id="o"),
            Touch("ask", "c-2", midnight - timedelta(minutes=10), "sms", "message", "inbound"),
            Touch("reply", "c-2", midnight + timedelta(minutes=1), "sms", "message", "outbound"),
        ]
    )
    publisher = RecordingPublisher(rounds=2)
    try:
        published = await service.publish_days(publisher, 2)  # type: ignore[arg-type]
        asked = await service.measures(yesterday, midnight)
    finally:
        await service.mongo.drop_database(config.mongodb_database)
        await service.mongo.close()

    record = publisher.values[f"day:{yesterday.date().isoformat()}"]
    for measured in (record, asked):
        assert measured.entries == 2, "only what happened that day is counted"
        assert measured.cross_channel_conversion.converted_elsewhere == 1
        assert measured.conversations.mean_first_response_seconds == 11 * 60
    assert (published.entries, published.conversations.conversations) == (2, 0)
    assert published.attribution.orders == 1


async def test_touches_past_retention_are_deleted_and_measures_reaching_them_refused(
    settings: HiloSettings, topics: list[str]
) -> None:
    """Retention at 50 days: a touch of 60 days ago, stored before the instance started, is
    deleted at its start and one of 10 days ago stays; measures from 21 days ago would read
    touches 51 days back (attribution's 30 days before `from`): refused, naming the earliest
    `from`; from 19 days ago they are served."""
    config = analytics_settings(settings, "retention", analytics_retention_days=50)
    now = datetime.now(UTC)
    mongo = create_mongo_client(config)
    store = TouchStore(mongo, config.mongodb_database)
    old, recent = (
        Touch(f"kept-{days}", "ana", now - timedelta(days=days), "web", "page_view")
        for days in (60, 10)
    )
    await store.save([old, recent])
    expired = REGISTRY.get_sample_value("hilo_analytics_touches_expired_total") or 0.0
    try:
        async with analytics(settings, "retention", keep=True, analytics_retention_days=50) as api:
            left = await eventually(
                lambda: store.touches(now - timedelta(days=90), now),
                until=lambda touches: len(touches) == 1,
                timeout=30,
            )
            too_early = await api.get(
                "/v1/measures", params={"from": (now - timedelta(days=21)).isoformat()}
            )
            served = await api.get(
                "/v1/measures", params={"from": (now - timedelta(days=19)).isoformat()}
            )
    finally:
        await mongo.drop_database(config.mongodb_database)
        await mongo.close()

    assert [touch.id for touch in left] == [recent.id]
    assert REGISTRY.get_sample_value("hilo_analytics_touches_expired_total") == expired + 1
    assert too_early.status_code == 422
    assert "HILO_ANALYTICS_RETENTION_DAYS" in too_early.text
    assert "the earliest `from` is" in too_early.text
    assert served.status_code == 200, served.text
    assert Measures.model_validate(served.json()).entries == 1
