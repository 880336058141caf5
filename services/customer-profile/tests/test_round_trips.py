"""Database round trips per batch do not grow with the events in it, on the real server.

Every hot-path read and write is one command per chunk (`hilo.mongo.IN_CHUNK` values per `$in`,
`BULK_CHUNK` statements per bulk write), never one per event: a batch of 100 returning customers
costs exactly the commands of a batch of 10, and one of 400 at most one command per chunk more.
Counted with a PyMongo command listener on the service's own client.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import pytest

from customer_profile.adapters.store import ProfileStore
from customer_profile.service.pipeline import Pipeline
from customer_profile.testing import interaction, profile_settings, raw_records
from hilo.kafka import KafkaPublisher, create_broker
from hilo.mongo import IN_CHUNK, CommandCounter, create_mongo_client
from hilo.sealing import create_sealer
from hilo.settings import HiloSettings


@pytest.fixture
async def counted(
    settings: HiloSettings, topics: list[str]
) -> AsyncIterator[tuple[Pipeline, CommandCounter]]:
    commands = CommandCounter()
    mongo = create_mongo_client(settings, listeners=[commands])
    broker = create_broker(settings)
    await broker.start()
    store = ProfileStore(mongo, settings.mongodb_database)
    await store.create_indexes()
    sealer = create_sealer(settings, mongo)
    profile = profile_settings(settings)
    pipeline = Pipeline(
        store,
        KafkaPublisher(broker, settings, sealer=sealer),
        sealer,
        profile.identity_policy(),
        profile.conversation_window,
    )
    try:
        yield pipeline, commands
    finally:
        await broker.stop()
        await mongo.drop_database(settings.mongodb_database)
        await mongo.close()


async def returning_batch(pipeline: Pipeline, commands: CommandCounter, size: int) -> int:
    """Round trips of one batch of `size` returning customers (each known from a first batch)."""
    tag = f"s{size}"
    await pipeline.process(
        raw_records(
            [interaction(f"{tag}k{n}", email=f"{tag}c{n}@example.com") for n in range(size)]
        )
    )
    before = commands.count
    await pipeline.process(
        raw_records(
            [
                interaction(f"{tag}m{n}", minutes=1, kind="order", email=f"{tag}c{n}@example.com")
                for n in range(size)
            ]
        )
    )
    return commands.count - before


async def test_round_trips_per_batch_are_per_chunk_not_per_event(
    counted: tuple[Pipeline, CommandCounter],
) -> None:
    pipeline, commands = counted
    small = await returning_batch(pipeline, commands, 10)
    chunk = await returning_batch(pipeline, commands, IN_CHUNK)
    large = await returning_batch(pipeline, commands, 4 * IN_CHUNK)

    assert chunk == small, f"{IN_CHUNK} events cost {chunk} round trips, 10 cost {small}"
    assert large <= small * math.ceil(4 * IN_CHUNK / IN_CHUNK), (
        f"{4 * IN_CHUNK} events cost {large} round trips: more than one per chunk ({small} for 10)"
    )
