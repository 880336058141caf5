"""The key store on the real MongoDB-wire server: one key per subject, however many processes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import ServerSelectionTimeoutError
from pymongo.read_preferences import PrimaryPreferred

from hilo.mongo import BULK_CHUNK, MongoDocument
from hilo.sealing import SubjectKeys
from hilo.settings import HiloSettings


def store(client: AsyncMongoClient[MongoDocument], settings: HiloSettings) -> SubjectKeys:
    collection = client[settings.mongodb_keys_database]["subject_keys"]
    return SubjectKeys(collection, cache_seconds=30, cache_size=1_000)


async def test_processes_making_keys_for_the_same_subjects_at_once_end_with_the_same_keys(
    mongo_client: AsyncMongoClient[MongoDocument], settings: HiloSettings
) -> None:
    subjects = [f"{n:064x}" for n in range(BULK_CHUNK + 20)]  # more than one bulk chunk
    processes = [store(mongo_client, settings) for _ in range(4)]

    made = await asyncio.gather(*(keys.get_or_create(subjects) for keys in processes))

    assert all(len(keys) == len(subjects) for keys in made)
    assert all(keys == made[0] for keys in made), "one key per subject, whoever made it"
    fresh = await store(mongo_client, settings).get(subjects)
    assert fresh == made[0], "what each process cached is what is stored"


async def test_forgetting_deletes_the_key_for_every_process_after_its_cache_time(
    mongo_client: AsyncMongoClient[MongoDocument], settings: HiloSettings
) -> None:
    subject = "ab" * 32
    one, other = store(mongo_client, settings), store(mongo_client, settings)
    await one.get_or_create([subject])

    assert await other.forget([subject], made_until=datetime.now(UTC)) == 1
    assert await store(mongo_client, settings).get([subject]) == {}
    assert await other.get([subject]) == {}, "the forgetting process drops its cached copy"
    assert subject in await one.get([subject]), "another process keeps its copy until it expires"


class Reads:
    """A collection whose `find` is counted, or refused (the primary while it is away)."""

    def __init__(self, collection: Any, *, refuse: bool = False) -> None:
        self._collection = collection
        self.refuse = refuse
        self.finds = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._collection, name)

    def find(self, *args: Any, **kwargs: Any) -> Any:
        self.finds += 1
        if self.refuse:
            raise ServerSelectionTimeoutError("no primary: injected")
        return self._collection.find(*args, **kwargs)


async def test_keys_to_seal_with_are_read_from_a_secondary_while_there_is_no_primary(
    mongo_client: AsyncMongoClient[MongoDocument], settings: HiloSettings
) -> None:
    """Written once, a key is as good on a secondary: a failover must not refuse the events of
    customers whose keys exist. Opening a record still reads the primary, which an erasure
    deletes keys from (the local server has no secondaries: which collection each read goes
    through is checked)."""
    subject = "cd" * 32
    made = await store(mongo_client, settings).get_or_create([subject])
    keys = store(mongo_client, settings)
    primary, reader = Reads(keys.collection, refuse=True), Reads(keys.reader)
    keys.collection, keys.reader = primary, reader  # type: ignore[assignment]

    sealing = await keys.get_or_create([subject])
    opening = store(mongo_client, settings)
    opening.collection = Reads(opening.collection, refuse=True)  # type: ignore[assignment]

    assert sealing == made
    assert (reader.finds, primary.finds) == (1, 0)
    assert reader._collection.read_preference.mode == PrimaryPreferred().mode
    assert reader._collection.read_preference.max_staleness == 90
    with pytest.raises(ServerSelectionTimeoutError):
        await opening.get([subject])
