"""`OffersFollower` on the real `offers` topic: a version shows whole or not at all, a new
follower catches up from the beginning, and one half-written version at the end waits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions
from aiokafka.errors import KafkaConnectionError
from prometheus_client import REGISTRY
from pydantic_extra_types.currency_code import ISO4217

from hilo.kafka import KafkaPublisher, Record, create_broker, wire_headers
from hilo.offers.book import OffersFollower
from hilo.offers.model import OfferRecord, OffersSnapshot, PricePoint, PriceSchedule, price_key
from hilo.settings import HiloSettings
from hilo.testkit.probes import eventually
from hilo.topics import Topic, ensure_topics, topic_name
from offers.changes import kafka_record

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
SKUS = ["SKU-1", "SKU-2", "SKU-3"]


def version(number: int, amount: str, skus: list[str] = SKUS) -> list[OfferRecord]:
    """A version setting every SKU to `amount`, one part per SKU."""
    return [
        OfferRecord(
            key=price_key(sku, "EUR"),
            version=number,
            part=part,
            parts=len(skus),
            changed_at=T0,
            changed_by="test",
            price=PriceSchedule(
                sku=sku,
                currency=ISO4217("EUR"),
                points=[
                    PricePoint(
                        amount=Decimal(amount), tax_included=True, valid_from=T0, version=number
                    )
                ],
            ),
        )
        for part, sku in enumerate(skus, 1)
    ]


@pytest.fixture
async def publisher(settings: HiloSettings, topics: list[str]) -> AsyncIterator[KafkaPublisher]:
    broker = create_broker(settings)
    await broker.start()
    try:
        yield KafkaPublisher(broker, settings)
    finally:
        await broker.stop()


@pytest.fixture
async def follower(settings: HiloSettings, topics: list[str]) -> AsyncIterator[OffersFollower]:
    following = OffersFollower(settings, poll_ms=50)
    await following.start()
    try:
        await eventually(lambda: _ready(following), interval=0.05)
        yield following
    finally:
        await following.stop()


async def _ready(follower: OffersFollower) -> bool:
    return follower.ready.is_set()


async def publish(publisher: KafkaPublisher, records: list[OfferRecord]) -> None:
    await publisher.publish_records([kafka_record(record) for record in records])


def amounts(snapshot: OffersSnapshot) -> dict[str, Decimal]:
    return {sku: s.points[-1].amount for (sku, _), s in snapshot.prices.items()}


async def test_a_version_published_part_by_part_shows_whole_or_not_at_all(
    follower: OffersFollower, publisher: KafkaPublisher
) -> None:
    await publish(publisher, version(1, "10.00"))
    await eventually(lambda: _version(follower), until=lambda v: v == 1, interval=0.02)
    seen: list[OffersSnapshot] = []
    done = asyncio.Event()

    async def watch() -> None:
        while not done.is_set():
            seen.append(follower.book.snapshot())
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(watch())
    for record in version(2, "20.00"):
        await publish(publisher, [record])
        await asyncio.sleep(0.4)
    await eventually(lambda: _version(follower), until=lambda v: v == 2, interval=0.02)
    done.set()
    await watcher

    shown = {(s.version, tuple(sorted(amounts(s).items()))) for s in seen}
    assert shown == {
        (1, tuple((sku, Decimal("10.00")) for sku in SKUS)),
        (2, tuple((sku, Decimal("20.00")) for sku in SKUS)),
    }, "only whole versions were ever seen"
    assert len(seen) > 50, "snapshots were read while the parts trickled in"


async def _version(follower: OffersFollower) -> int:
    return follower.book.version


async def test_a_new_follower_reads_everything_and_waits_for_a_half_written_last_version(
    settings: HiloSettings, publisher: KafkaPublisher
) -> None:
    await publish(publisher, version(1, "10.00"))
    await publish(publisher, version(2, "20.00", ["SKU-1"]))
    await publish(publisher, version(3, "30.00")[:2])  # part 3 of 3 not written yet

    late = OffersFollower(settings, poll_ms=50)
    await late.start()
    try:
        await eventually(lambda: _ready(late), interval=0.05)
        assert late.book.version == 2
        assert amounts(late.book.snapshot()) == {
            "SKU-1": Decimal("20.00"),
            "SKU-2": Decimal("10.00"),
            "SKU-3": Decimal("10.00"),
        }
        assert late.book.pending_versions() == [3]

        await publish(publisher, version(3, "30.00")[2:])
        await eventually(lambda: _version(late), until=lambda v: v == 3, interval=0.02)
        assert amounts(late.book.snapshot()) == dict.fromkeys(SKUS, Decimal("30.00"))
    finally:
        await late.stop()


async def test_records_that_are_not_offers_are_skipped(
    follower: OffersFollower, publisher: KafkaPublisher
) -> None:
    await publisher.publish_records(
        [
            Record(Topic.OFFERS, key=b"price:x:EUR", value=b"{not json", headers={}),
            Record(Topic.OFFERS, key=b"price:x:EUR", value=None, headers={}),
        ]
    )
    await publish(publisher, version(1, "1.00"))

    await eventually(lambda: _version(follower), until=lambda v: v == 1, interval=0.02)
    assert follower.book.snapshot().version == 1


async def test_the_follower_waits_for_its_topic_and_reconnects_after_an_error(
    settings: HiloSettings,
) -> None:
    follower = OffersFollower(settings, retry_seconds=0.1, poll_ms=50)
    failures = 0
    apply = follower.book.apply

    def failing_once(record: OfferRecord) -> None:
        nonlocal failures
        if record.version == 2 and not failures:
            failures += 1
            raise RuntimeError("injected")
        apply(record)

    follower.book.apply = failing_once  # type: ignore[method-assign]
    await follower.start()
    try:
        await asyncio.sleep(0.3)
        assert not follower.ready.is_set(), "no topic yet"
        await ensure_topics(settings)
        await eventually(lambda: _ready(follower), interval=0.05)
        broker = create_broker(settings)
        await broker.start()
        try:
            publisher = KafkaPublisher(broker, settings)
            await publish(publisher, version(1, "10.00"))
            await publish(publisher, version(2, "20.00"))
            await eventually(lambda: _version(follower), until=lambda v: v == 2, interval=0.02)
        finally:
            await broker.stop()
    finally:
        await follower.stop()

    assert failures == 1
    assert amounts(follower.book.snapshot()) == dict.fromkeys(SKUS, Decimal("20.00"))


async def test_partitions_added_to_the_topic_are_followed_from_their_beginning(
    settings: HiloSettings, publisher: KafkaPublisher
) -> None:
    topic = topic_name(Topic.OFFERS, settings)
    following = OffersFollower(settings, poll_ms=50, metadata_seconds=0.5)
    await following.start()
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        await eventually(lambda: _ready(following), interval=0.05)
        await admin.create_partitions({topic: NewPartitions(total_count=2)})
        for record in map(kafka_record, version(1, "10.00")):
            await producer.send_and_wait(
                topic, record.value, key=record.key, partition=1, headers=wire_headers(record)
            )
        await eventually(lambda: _version(following), until=lambda v: v == 1, timeout=20)
    finally:
        await producer.stop()
        await admin.close()
        await following.stop()
    assert amounts(following.book.snapshot()) == dict.fromkeys(SKUS, Decimal("10.00"))


async def test_a_follower_says_how_long_since_kafka_confirmed_its_offers_are_the_latest(
    settings: HiloSettings, topics: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Quotes go on from the book while Kafka is away; the gauge says for how long nothing has
    confirmed it is the latest, so an operator can alert on it."""
    follower = OffersFollower(settings, confirm_seconds=0.2, poll_ms=50)
    await follower.start()
    try:
        await asyncio.wait_for(follower.ready.wait(), 30)
        first = follower.confirmed_at
        await eventually(lambda: _later(follower, first), interval=0.1)
        assert follower.unconfirmed_seconds() < 5

        async def away(*_: object) -> None:
            raise KafkaConnectionError("injected: Kafka away")

        monkeypatch.setattr(AIOKafkaConsumer, "end_offsets", away)
        monkeypatch.setattr(AIOKafkaConsumer, "getmany", away)  # reconnecting, out of its loop
        await asyncio.sleep(2.0)  # a request sent before it may still answer meanwhile
        stale = follower.unconfirmed_seconds()
        assert stale >= 1.0, "no confirmation while end offsets cannot be read"
        assert (REGISTRY.get_sample_value("hilo_offers_unconfirmed_seconds") or 0) >= stale
    finally:
        await follower.stop()


async def _later(follower: OffersFollower, than: float | None) -> bool:
    return follower.confirmed_at is not None and than is not None and follower.confirmed_at > than
