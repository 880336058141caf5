"""A change stored in MongoDB that Kafka did not take (the process died, Kafka failed, half a
version went out) is published later by the outbox, exactly as stored, and in version order."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from prometheus_client import REGISTRY
from pymongo import AsyncMongoClient

from hilo.kafka import KafkaPublisher, PublishFailed, Record, read_to_end
from hilo.mongo import MongoDocument
from hilo.offers.model import OfferRecord
from hilo.settings import HiloSettings
from hilo.testkit.probes import eventually
from hilo.topics import Topic, topic_name
from offers.app import OffersService
from offers.changes import kafka_record
from offers.outbox import PUBLISHER_LEASE
from offers.store import OffersStore
from offers.testing import RunningOffers, running_offers

REPUBLISHED = "hilo_offers_overtaken_records_republished_total"
PRICES = [
    {"sku": "SKU-1", "currency": "EUR", "amount": "100.00", "tax_included": True},
    {"sku": "SKU-2", "currency": "EUR", "amount": "59.90", "tax_included": True},
    {"sku": "SKU-3", "currency": "EUR", "amount": "5.00", "tax_included": True},
]


class HeldBack(KafkaPublisher):
    """Kafka confirms nothing until the test lets it through, so what the API answers does not
    depend on when the outbox loop happens to run next."""

    held = True

    def let_through(self) -> None:
        self.held = False


class FailingUntilLetThrough(HeldBack):
    """Kafka does not confirm a publish (nothing of it is written) until the test lets it."""

    async def publish_records(self, records: Sequence[Record]) -> None:
        if self.held:
            raise PublishFailed("injected")
        await super().publish_records(records)


class HalfThenFails(HeldBack):
    """The first publish writes its first record, then fails: half a version on the topic.
    Later ones fail whole until the test lets them through."""

    wrote_half = False

    async def publish_records(self, records: Sequence[Record]) -> None:
        if self.held:
            if not self.wrote_half:
                self.wrote_half = True
                await super().publish_records(records[:1])
            raise PublishFailed("injected after the first record")
        await super().publish_records(records)


def let_through(offers: RunningOffers) -> None:
    publisher = offers.service.outbox.publisher
    assert isinstance(publisher, HeldBack)
    publisher.let_through()


class KafkaGone(KafkaPublisher):
    async def publish_records(self, records: Sequence[Record]) -> None:
        raise PublishFailed("injected: Kafka unreachable")


async def on_topic(settings: HiloSettings) -> list[bytes]:
    records = await read_to_end(
        settings.kafka_bootstrap_servers, topic_name(Topic.OFFERS, settings)
    )
    return [record.value or b"" for record in records]


async def stored_bytes(store: OffersStore, version: int) -> list[bytes]:
    """The version's records as the outbox publishes them, from what MongoDB holds."""
    document = await store.changes.find_one({"_id": version})
    assert document is not None
    return [
        OfferRecord.model_validate(record).model_dump_json().encode()
        for record in document["records"]
    ]


async def all_published(offers: RunningOffers) -> bool:
    versions = await offers.versions()
    return bool(versions) and all(v["published"] for v in versions)


async def test_a_version_kafka_did_not_take_is_published_later_exactly_as_stored(
    settings: HiloSettings, topics: list[str], mongo_client: AsyncMongoClient[MongoDocument]
) -> None:
    async with running_offers(settings, publisher=FailingUntilLetThrough) as offers:
        answer = await offers.call("PUT", "/v1/prices", expect=202, json=PRICES)
        assert answer["published"] is False
        let_through(offers)
        await offers.call("PUT", "/v1/prices", json=[{**PRICES[0], "amount": "90.00"}])

        await eventually(lambda: all_published(offers))
        await offers.caught_up_to(2)

        expected = await stored_bytes(offers.service.store, 1) + await stored_bytes(
            offers.service.store, 2
        )
        assert await on_topic(settings) == expected, "the same records, version 1 first"
        prices = offers.service.follower.book.snapshot().prices
        assert prices[("SKU-1", "EUR")].points[-1].amount == 90


async def test_an_older_version_landing_after_a_later_one_is_followed_by_the_latest_again(
    settings: HiloSettings, topics: list[str]
) -> None:
    """The idempotent producer retries a publish that timed out until Kafka takes it: a
    process whose lease ran out meanwhile lands version 1 of SKU-1 after its successor's
    version 2 (injected: version 1's record published again). Compaction keeps a key's last
    record, so every reader started later would quote 100.00: the outbox puts version 2's
    record on the topic again, and the book never went back to 100.00."""
    async with running_offers(settings) as offers:
        await offers.call("PUT", "/v1/prices", json=PRICES[:1])
        await offers.call("PUT", "/v1/prices", json=[{**PRICES[0], "amount": "90.00"}])
        await eventually(lambda: all_published(offers))
        await offers.caught_up_to(2)
        republished = REGISTRY.get_sample_value(REPUBLISHED) or 0.0
        stored = await offers.service.store.changes.find_one({"_id": 1})
        assert stored is not None
        late = OfferRecord.model_validate(stored["records"][0])
        await offers.service.outbox.publisher.publish_records([kafka_record(late)])

        last = await eventually(
            lambda: last_versions(settings), until=lambda last: last.get(late.key) == 2
        )
        book = offers.service.follower.book
        assert book.snapshot().prices[("SKU-1", "EUR")].points[-1].amount == Decimal("90.00")
        assert last == {late.key: 2}
        assert REGISTRY.get_sample_value(REPUBLISHED) == republished + 1
        assert book.overtaken_on_topic() == []


class RefusingVersion3(HeldBack):
    """Kafka does not confirm version 3 until the test lets it; the rest goes out."""

    async def publish_records(self, records: Sequence[Record]) -> None:
        if self.held and any(r.headers.get("hilo_offers_version") == "3" for r in records):
            raise PublishFailed("injected")
        await super().publish_records(records)


async def test_an_overtaken_key_whose_catalogue_holds_a_later_version_waits_for_that_one(
    settings: HiloSettings, topics: list[str]
) -> None:
    """Version 1 of SKU-1 lands after version 2 while version 3 is stored but not on the topic
    yet: publishing version 2 again would go after 3 once Kafka takes it, so nothing is; the
    outbox's version 3 becomes the key's last record."""
    async with running_offers(settings, publisher=RefusingVersion3) as offers:
        for amount in ("100.00", "90.00"):
            await offers.call("PUT", "/v1/prices", json=[{**PRICES[0], "amount": amount}])
        await offers.caught_up_to(2)
        await offers.call("PUT", "/v1/prices", expect=202, json=[{**PRICES[0], "amount": "80.00"}])
        stored = await offers.service.store.changes.find_one({"_id": 1})
        assert stored is not None
        late = OfferRecord.model_validate(stored["records"][0])
        republished = REGISTRY.get_sample_value(REPUBLISHED) or 0.0
        await offers.service.outbox.publisher.publish_records([kafka_record(late)])
        book = offers.service.follower.book
        await eventually(lambda: _overtaken(book), until=lambda keys: keys == [late.key])

        assert await offers.service.outbox.republish_overtaken() == 0
        assert await last_versions(settings) == {late.key: 1}
        let_through(offers)
        last = await eventually(
            lambda: last_versions(settings), until=lambda last: last.get(late.key) == 3
        )
        assert last == {late.key: 3}
        assert REGISTRY.get_sample_value(REPUBLISHED) == republished


async def _overtaken(book: Any) -> list[str]:
    return [record.key for record in book.overtaken_on_topic()]


async def last_versions(settings: HiloSettings) -> dict[str, int]:
    """Each key's last record's version on the topic: what compaction keeps."""
    records = await read_to_end(
        settings.kafka_bootstrap_servers, topic_name(Topic.OFFERS, settings)
    )
    return {
        (record.key or b"").decode(): OfferRecord.model_validate_json(record.value or b"").version
        for record in records
    }


async def test_the_catalogue_says_a_change_kafka_has_not_taken_is_not_quoted_yet(
    settings: HiloSettings, topics: list[str]
) -> None:
    """A stored change shows in the catalogue at once; quotes use it only once published. A
    channel building a product page from the catalogue must be able to tell the two apart."""
    promotion = {
        "id": "p-1",
        "name": "10% off",
        "kind": "percent_off",
        "skus": ["SKU-1"],
        "currency": "EUR",
        "percent": "10",
        "valid_from": "2026-01-01T00:00:00Z",
        "valid_until": "2030-01-01T00:00:00Z",
    }
    async with running_offers(settings, publisher=FailingUntilLetThrough) as offers:
        await offers.call("PUT", "/v1/prices", expect=202, json=PRICES[:1])
        await offers.call("PUT", "/v1/promotions/p-1", expect=202, json=promotion)
        waiting = await offers.call("GET", "/v1/prices/SKU-1")
        waiting_promotions = await offers.call("GET", "/v1/promotions")
        let_through(offers)
        await eventually(lambda: all_published(offers))
        await offers.caught_up_to(2)
        quoted = await offers.call("GET", "/v1/prices/SKU-1")
        quoted_promotions = await offers.call("GET", "/v1/promotions")

    assert [p["quoted"] for p in waiting + waiting_promotions] == [False, False]
    assert [p["quoted"] for p in quoted + quoted_promotions] == [True, True]


async def test_a_version_a_restored_backup_holds_as_unpublished_never_follows_a_later_one(
    settings: HiloSettings, topics: list[str]
) -> None:
    """`mongorestore --drop` under a running service: the backup holds version 1 as
    unpublished, the topic has version 2 already. Published again after 2, compaction would
    keep version 1's price of SKU-1 for every reader started later."""
    async with running_offers(settings) as offers:
        await offers.call("PUT", "/v1/prices", json=PRICES[:1])
        await offers.call("PUT", "/v1/prices", json=[{**PRICES[0], "amount": "90.00"}])
        await eventually(lambda: all_published(offers))
        await offers.caught_up_to(2)
        before = await on_topic(settings)
        store = offers.service.store
        await store.changes.update_one({"_id": 1}, {"$set": {"published": False}})

        await offers.service.outbox.publish_pending()

        assert await on_topic(settings) == before
        assert await store.is_published(1)


async def test_a_version_stored_by_a_process_that_lost_kafka_is_published_by_its_successor(
    settings: HiloSettings, topics: list[str], mongo_client: AsyncMongoClient[MongoDocument]
) -> None:
    async with running_offers(settings, publisher=KafkaGone) as crashed:
        await crashed.call("PUT", "/v1/prices", expect=202, json=PRICES)
        stored = await stored_bytes(crashed.service.store, 1)
    assert await on_topic(settings) == []

    async with running_offers(settings) as successor:
        await eventually(lambda: all_published(successor))
        await successor.caught_up_to(1)

    assert await on_topic(settings) == stored


async def test_half_a_version_on_the_topic_is_never_half_applied_and_is_completed(
    settings: HiloSettings, topics: list[str], mongo_client: AsyncMongoClient[MongoDocument]
) -> None:
    async with running_offers(settings, publisher=HalfThenFails) as offers:
        await offers.call("PUT", "/v1/prices", expect=202, json=PRICES)
        book = offers.service.follower.book

        await eventually(lambda: _pending(book), until=lambda pending: pending == [1])
        assert book.snapshot().prices == {}, "part 1 of 3 arrived: nothing shows"

        let_through(offers)
        await offers.caught_up_to(1)
        assert set(book.snapshot().prices) == {("SKU-1", "EUR"), ("SKU-2", "EUR"), ("SKU-3", "EUR")}
    values = await on_topic(settings)
    store = OffersStore(mongo_client, settings.mongodb_database, max_record_bytes=1_000_000)
    assert values[1:] == await stored_bytes(store, 1), "then the whole version again"


async def _pending(book: Any) -> list[int]:
    pending: list[int] = book.pending_versions()
    return pending


async def test_one_process_at_a_time_holds_the_publishers_lease(
    settings: HiloSettings, mongo_client: AsyncMongoClient[MongoDocument]
) -> None:
    store = OffersStore(mongo_client, settings.mongodb_database, max_record_bytes=1_000_000)

    assert await store.lease(PUBLISHER_LEASE, "a", 30)
    assert await store.lease(PUBLISHER_LEASE, "a", 30), "renewed by its holder"
    assert not await store.lease(PUBLISHER_LEASE, "b", 30)
    await store.release(PUBLISHER_LEASE, "a")
    assert await store.lease(PUBLISHER_LEASE, "b", 30)
    assert not await store.lease(PUBLISHER_LEASE, "a", 30)
    assert await store.lease(PUBLISHER_LEASE, "a", 0) is False
    past = datetime(2000, 1, 1, tzinfo=UTC)
    await store.locks.update_one({"_id": PUBLISHER_LEASE}, {"$set": {"until": past}})
    assert await store.lease(PUBLISHER_LEASE, "a", 30), "an expired lease is taken over"


async def test_the_lease_is_released_only_once_kafka_has_what_was_in_flight(
    settings: HiloSettings, topics: list[str]
) -> None:
    """A version still in the producer when the lease goes could land after the next holder's
    later version on the compacted topic: stopping Kafka (which flushes) comes first."""
    async with running_offers(settings) as running:
        steps = stop_steps_of(running.service)

    assert steps == ["kafka stopped", "lease released"]


async def test_a_lease_whose_kafka_did_not_stop_in_time_is_left_to_expire(
    settings: HiloSettings, topics: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Released then, a version still in the producer could land after the next holder's."""
    monkeypatch.setattr("hilo.shutdown.STEP_SECONDS", 0.3)
    async with running_offers(settings) as running:
        steps = stop_steps_of(running.service, kafka_delay=1.0)
    await eventually(lambda: _done(steps), timeout=10)

    assert steps == ["kafka stopped"], "the lease was not released"


def stop_steps_of(service: OffersService, kafka_delay: float = 0.0) -> list[str]:
    """The list its stop will fill: Kafka stopped (once it has, after `kafka_delay`), the
    lease released."""
    steps: list[str] = []
    stop_kafka, release = service.broker.stop, service.outbox.release

    async def stopping_kafka(*args: Any, **kwargs: Any) -> None:
        await asyncio.sleep(kafka_delay)
        await stop_kafka(*args, **kwargs)
        steps.append("kafka stopped")

    async def releasing() -> None:
        steps.append("lease released")
        await release()

    service.broker.stop = stopping_kafka  # type: ignore[method-assign]
    service.outbox.release = releasing  # type: ignore[method-assign]
    return steps


async def _done(steps: list[str]) -> bool:
    return "kafka stopped" in steps
