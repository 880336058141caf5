"""Records Kafka did not take, kept in MongoDB until it does: for providers that never retry.

A channel answers 503 when Kafka does not acknowledge a webhook's events, so the provider sends
it again. Twilio does not: by default it retries once, only when it could not connect, and
within 15 seconds in all, so an SMS or a call status arriving while Kafka is away would be lost.
Channels of such providers keep the request's records here instead (already sealed, so nothing
personal is stored in the clear), answer 200, and publish them in order once Kafka is back.

Each request's records are one document, published whole, then deleted. A crash between the two
publishes them again: they keep their event ids, and every consumer drops a repeated id. Several
instances drain the same collection; a lease stops two from publishing one document at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

import structlog
from prometheus_client import Counter, Gauge
from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import PyMongoError

from hilo.kafka import PublishFailed, Record
from hilo.mongo import MongoDocument
from hilo.topics import Topic

log = structlog.get_logger(__name__)

SPOOL_COLLECTION: Final = "spooled_records"
LEASE: Final = timedelta(seconds=30)
"""How long a draining instance owns a document: far above one publish's deadline."""
FREE: Final = datetime(2000, 1, 1, tzinfo=UTC)
"""The lease of a document nobody is publishing."""

KEPT = Counter(
    "hilo_channel_requests_spooled_total",
    "Webhooks answered 200 while Kafka was away: their records kept in MongoDB",
    ["channel"],
)
WAITING = Gauge(
    "hilo_channel_spooled_requests",
    "Webhooks whose records are kept in MongoDB, waiting for Kafka",
    ["channel"],
)


class Publisher(Protocol):
    async def publish_records(self, records: Sequence[Record]) -> None: ...


class Spool:
    """Keeps records Kafka refused, and publishes them once it takes them again."""

    def __init__(self, channel: str, collection: AsyncCollection[MongoDocument]) -> None:
        self.channel = channel
        self.collection = collection
        self._kept = KEPT.labels(channel)
        self._waiting = WAITING.labels(channel)

    async def keep(self, records: Sequence[Record]) -> None:
        """Store one request's records (raises `PyMongoError` if MongoDB is away too: then the
        request has to be refused)."""
        await self.collection.insert_one(
            {
                "channel": self.channel,
                "records": [_document(record) for record in records],
                "lease": FREE,
            }
        )
        self._kept.inc()
        log.warning("records_spooled", channel=self.channel, records=len(records))

    async def drain(self, publisher: Publisher) -> int:
        """Publish what is kept, oldest first, until nothing is left; how many requests were
        published. Raises `PublishFailed` while Kafka still refuses (the document stays)."""
        published = 0
        while (kept := await self._claim()) is not None:
            try:
                await publisher.publish_records([_record(doc) for doc in kept["records"]])
            except PublishFailed:  # let the next drain, ours or another's, take it first
                await self.collection.update_one({"_id": kept["_id"]}, {"$set": {"lease": FREE}})
                raise
            await self.collection.delete_one({"_id": kept["_id"]})
            published += 1
        return published

    async def drain_forever(self, publisher: Publisher, every: float) -> None:
        """`drain` every `every` seconds for as long as the service runs."""
        while True:
            try:
                if published := await self.drain(publisher):
                    log.info("spooled_records_published", channel=self.channel, requests=published)
                self._waiting.set(await self.collection.count_documents({}))
            except (PublishFailed, PyMongoError) as exc:
                log.warning("spooled_records_wait", channel=self.channel, error=type(exc).__name__)
            await asyncio.sleep(every)

    async def _claim(self) -> MongoDocument | None:
        now = datetime.now(UTC)
        claimed: MongoDocument | None = await self.collection.find_one_and_update(
            {"lease": {"$lte": now}},
            {"$set": {"lease": now + LEASE}},
            sort=[("_id", ASCENDING)],
            return_document=ReturnDocument.AFTER,
        )
        return claimed


def _document(record: Record) -> dict[str, Any]:
    return {
        "topic": record.topic.value,
        "key": record.key,
        "value": record.value,
        "headers": dict(record.headers),
    }


def _record(document: MongoDocument) -> Record:
    return Record(
        Topic(document["topic"]),
        bytes(document["key"]),
        None if document["value"] is None else bytes(document["value"]),
        document["headers"],
    )
