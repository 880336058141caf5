"""A customer merged many times over: the `merged_into` chain is followed to its end."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pymongo import AsyncMongoClient

from customer_profile.adapters.store import ProfileStore
from customer_profile.service.ports import MAX_ALIAS_DEPTH, AliasChainTooLong
from hilo.mongo import MongoDocument
from hilo.settings import HiloSettings

NOW = datetime(2026, 12, 7, tzinfo=UTC)


async def test_a_chain_longer_than_twenty_merges_reaches_its_survivor(
    mongo_client: AsyncMongoClient[MongoDocument], settings: HiloSettings
) -> None:
    """Each merge into an older profile adds a link: after 25, the events of the first profile
    went to a profile merged away, and its journey lost the first five (the walk stopped at
    20)."""
    store = ProfileStore(mongo_client, settings.mongodb_database)
    await store.create_indexes()
    await store.profiles.insert_many(
        [{"_id": f"c{n:02}", "merged_into": f"c{n + 1:02}", "created_at": NOW} for n in range(25)]
        + [{"_id": "c25", "merged_into": None, "created_at": NOW}]
    )

    assert await store.canonical(["c00", "c12"]) == {"c00": "c25", "c12": "c25"}
    [(customer, survivor)] = (await store.load(["c25"])).items()
    assert (customer, survivor.aliases) == ("c25", ["c25", *(f"c{n:02}" for n in range(25))])


async def test_a_cycle_is_an_error_not_a_profile_merged_away(
    mongo_client: AsyncMongoClient[MongoDocument], settings: HiloSettings
) -> None:
    """No merge makes one; met, the records are dead-lettered saying so (`BatchRunner`)."""
    store = ProfileStore(mongo_client, settings.mongodb_database)
    await store.profiles.insert_many(
        [{"_id": "a", "merged_into": "b"}, {"_id": "b", "merged_into": "a"}]
    )

    with pytest.raises(AliasChainTooLong, match=f"over {MAX_ALIAS_DEPTH} merges"):
        await store.canonical(["a"])
