"""Through the real MongoDB-wire server with PyMongo's async client."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pymongo import AsyncMongoClient, InsertOne, WriteConcern
from pymongo.errors import DuplicateKeyError, WriteConcernError

from hilo.mongo import MongoDocument, bulk_write, insert_once
from hilo.settings import HiloSettings


async def test_async_round_trip_keeps_timezone_aware_datetimes(
    settings: HiloSettings, mongo_client: AsyncMongoClient[MongoDocument]
) -> None:
    collection = mongo_client[settings.mongodb_database]["roundtrip"]
    when = datetime(2026, 11, 2, 10, 30, 15, 123000, tzinfo=UTC)

    await collection.insert_one({"_id": "e1", "channel": "web", "at": when})
    stored = await collection.find_one({"_id": "e1"})

    assert stored == {"_id": "e1", "channel": "web", "at": when}
    assert stored["at"].tzinfo is not None


async def test_a_unique_index_violation_surfaces_as_duplicate_key_error(
    settings: HiloSettings, mongo_client: AsyncMongoClient[MongoDocument]
) -> None:
    identities = mongo_client[settings.mongodb_database]["identities"]
    await identities.create_index([("kind", 1), ("value", 1)], unique=True)
    await identities.insert_one({"kind": "email", "value": "ana@example.com", "customer": "c1"})

    with pytest.raises(DuplicateKeyError):
        await identities.insert_one({"kind": "email", "value": "ana@example.com", "customer": "c2"})

    assert await identities.count_documents({}) == 1


async def test_a_write_concern_the_server_cannot_satisfy_is_never_taken_as_written(
    settings: HiloSettings, mongo_client: AsyncMongoClient[MongoDocument]
) -> None:
    """The server applies the write and reports the concern apart (`writeConcernErrors`): a
    key taken as made there could be rolled back by a failover after records were sealed with
    it. Five data-bearing nodes are more than the test server has."""
    keys = mongo_client[settings.mongodb_database]["keys"].with_options(
        write_concern=WriteConcern(w=5, wtimeout=100)
    )

    with pytest.raises(WriteConcernError) as raised:
        await insert_once(keys, [{"_id": "subject-1"}])
    with pytest.raises(WriteConcernError):
        await bulk_write(keys, [InsertOne({"_id": "subject-2"})])

    assert raised.value.code == 100  # UnsatisfiableWriteConcern: retried like an outage
