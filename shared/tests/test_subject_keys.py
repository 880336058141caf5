"""The key store on the real MongoDB-wire server: one key per subject, however many processes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from pymongo import AsyncMongoClient, ReadPreference

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


async def test_keys_are_read_from_a_secondary_while_there_is_no_primary(
    mongo_client: AsyncMongoClient[MongoDocument], settings: HiloSettings
) -> None:
    """Written once, a key is as good on a secondary: a failover must not refuse the events of
    customers whose keys exist (the local server has no secondaries: the reads are checked to
    allow them, and to work here)."""
    keys = store(mongo_client, settings)
    subject = "cd" * 32
    made = await keys.get_or_create([subject])

    assert keys.reader.read_preference == ReadPreference.PRIMARY_PREFERRED
    assert await store(mongo_client, settings).get([subject]) == made
