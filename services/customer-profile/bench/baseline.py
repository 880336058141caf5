"""Baseline B: the least work that still consumes `interactions` durably into the same database.

aiokafka `getmany` (batches of 500) → one pydantic validation per record → one unordered bulk
upsert per batch keyed by event id → commit. No identity resolution, no journeys, no profiles,
nothing published: what any consumer of this stream must at least pay on this broker and database.
The customer-profile service is measured against it (`report.py`).
"""

from __future__ import annotations

import time
import uuid

from aiokafka import AIOKafkaConsumer
from pymongo import UpdateOne

from customer_profile.settings import ProfileSettings
from hilo import heap
from hilo.contract import parse_interaction
from hilo.mongo import bulk_write, create_mongo_client
from hilo.topics import Topic, topic_name


async def consume(settings: ProfileSettings, events: int) -> float:
    """Seconds to consume `events` records from the start of `interactions`."""
    mongo = create_mongo_client(settings)
    collection = mongo[settings.mongodb_database]["baseline"]
    consumer = AIOKafkaConsumer(
        topic_name(Topic.INTERACTIONS, settings),
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=f"baseline-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=settings.batch_max_records,
    )
    await consumer.start()
    heap.settle()  # tuned as the profile service is (`hilo.heap`)
    began = time.perf_counter()
    done = 0
    try:
        while done < events:
            fetched = await consumer.getmany(timeout_ms=200, max_records=settings.batch_max_records)
            records = [record for batch in fetched.values() for record in batch]
            if not records:
                continue
            documents = [parse_interaction(r.value) for r in records if r.value is not None]
            await bulk_write(
                collection,
                [
                    UpdateOne(
                        {"_id": event.id},
                        {"$setOnInsert": event.model_dump(mode="json", exclude={"id"})},
                        upsert=True,
                    )
                    for event in documents
                ],
            )
            await consumer.commit()
            done += len(records)
        return time.perf_counter() - began
    finally:
        heap.unsettle()
        await consumer.stop()
        await mongo.drop_database(settings.mongodb_database)
        await mongo.close()
