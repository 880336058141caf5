"""Database round trips per batch do not grow with the events in it, on the real server.

Every hot-path read and write is one command per chunk (`hilo.mongo.IN_CHUNK` values per `$in`,
`BULK_CHUNK` statements per bulk write), never one per event: a batch of 100 returning customers
costs exactly the commands of a batch of 10, and one of 400 at most one command per chunk more.
Counted with a PyMongo command listener on the service's own client.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from pymongo import monitoring

from customer_profile.adapters.store import ProfileStore
from customer_profile.service.pipeline import Pipeline
from customer_profile.testing import interaction, profile_settings, raw_records
from hilo.kafka import KafkaPublisher, create_broker
from hilo.mongo import IN_CHUNK, CommandCounter, create_mongo_client
from hilo.sealing import create_sealer
from hilo.settings import HiloSettings
from hilo_devkit.database_time import CommandsByCaller, command_table


@pytest.fixture
async def counted(
    settings: HiloSettings, topics: list[str]
) -> AsyncIterator[tuple[Pipeline, CommandCounter]]:
    commands = CommandCounter()
    async with listened_pipeline(settings, commands) as pipeline:
        yield pipeline, commands


@asynccontextmanager
async def listened_pipeline(
    settings: HiloSettings, listener: monitoring.CommandListener
) -> AsyncIterator[Pipeline]:
    """A pipeline on the real servers whose client reports every command to `listener`."""
    mongo = create_mongo_client(settings, listeners=[listener])
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
        yield pipeline
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


async def test_database_time_names_the_step_and_operation_of_each_command(
    settings: HiloSettings, topics: list[str]
) -> None:
    """`make bench`'s database table (`hilo_devkit.database_time`) puts each command under the
    batch step and store operation that sent it, with the documents it wrote and returned."""
    times = CommandsByCaller()
    async with listened_pipeline(settings, times) as pipeline:
        await returning_batch(pipeline, CommandCounter(), 30)

    tallies = {key: tally for key, tally in times.tallies.items() if key[0] != "(outside a batch)"}
    journey = tallies[
        ("Pipeline._write_journey", "JourneyCollection.insert_entries", "insert journey")
    ]
    assert (journey.commands, journey.written) == (2, 60)
    heads = [
        tally
        for (step, operation, command), tally in tallies.items()
        if step == "Pipeline._resolve" and operation == "ProfileCollection.heads"
    ]
    assert heads
    assert all(t.returned > 0 and t.milliseconds > 0 for t in heads), heads
    settled = tallies[("ProfileStore.settle", "JourneyCollection.settle", "insert journey_settled")]
    assert settled.written == 60
    table = command_table(times, events=60, batches=2, top=50)
    assert (
        "| `Pipeline._write_journey` | `JourneyCollection.insert_entries` | insert journey |"
        in (table)
    )
