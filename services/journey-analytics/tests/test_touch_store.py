"""The touch store against a real MongoDB-wire server: stored once per entry id, merges and
erasures applied, and an erased person's entries read again are not stored again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pymongo import AsyncMongoClient

from hilo.mongo import MongoDocument
from hilo.settings import HiloSettings
from journey_analytics.measures import Touch
from journey_analytics.store import TouchStore

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
RANGE = (T0 - timedelta(days=1), T0 + timedelta(days=1))


def touch(n: int, customer: str) -> Touch:
    return Touch(f"e{n}", customer, T0 + timedelta(minutes=n), "web", "page_view")


async def test_redelivery_merge_and_erasure(
    settings: HiloSettings, mongo_client: AsyncMongoClient[MongoDocument]
) -> None:
    store = TouchStore(mongo_client, settings.mongodb_database)
    await store.create_indexes()

    await store.save([touch(1, "ana"), touch(2, "ana-2")])
    await store.save([touch(1, "ana"), touch(2, "ana-2")])  # redelivered
    assert len(await store.touches(*RANGE)) == 2

    await store.merge("ana", ["ana-2"])
    await store.save([touch(3, "ana-2")])  # published before the merge, read after it
    assert {t.customer_id for t in await store.touches(*RANGE)} == {"ana"}
    assert len(await store.touches(*RANGE, customer="ana-2")) == 3, "an old id reads as hers"

    await store.erase(["ana", "ana-2"])
    assert await store.touches(*RANGE) == []
    await store.save([touch(1, "ana"), touch(4, "ana-2")])  # read again after the erasure
    assert await store.touches(*RANGE) == []
