"""Records Kafka did not take, kept in MongoDB until it does: for providers that never retry.

A channel answers 503 when Kafka does not acknowledge a webhook's events, so the provider sends
it again. Twilio does not: by default it retries once, only when it could not connect, and
within 15 seconds in all, so an SMS or a call status arriving while Kafka is away would be lost.
Channels of such providers keep the request's records here instead (already sealed, so nothing
personal is stored in the clear), answer 200, and publish them oldest first once Kafka is back.
One Kafka does not take for now (its partition has no leader, say) waits `BEHIND` and the others
go out meanwhile, so requests (of one key too, and after an outage) may go out of order:
consumers order events by their time, not by arrival.

Each request's records are one document, published whole, then deleted. A crash between the two
publishes them again: they keep their event ids, and every consumer drops a repeated id. A drain
claims up to `DRAIN_BATCH` documents (`DRAIN_BYTES` of records) at once and publishes them
together (each its own publish, all in flight at once, in no order among them), so a backlog
goes out at Kafka's pace, not one acknowledgement at a time (23 requests a second before,
measured in docs/benchmarks.md), and a partition with no leader costs one publish deadline a
batch, not one per request on it. Several instances of a channel drain its documents; a lease
(under the claim's token) stops two from publishing one at once. A
document Kafka refuses for good (too large for the topic, a broken record) or that cannot be
read back is set aside (`refused`), counted and logged at ERROR, so it never holds up the rest;
a forbidden or unknown topic is the deployment's to fix, and the documents wait for it.

A document waits in its channel's `queue` (set aside: `<channel>:refused`), and every query is
served by the index on `queue`, `lease` and `_id`, or by `_id` alone, so a drain after an outage
of a hundred thousand webhooks costs the same per request as one of ten. Of what is free, the
oldest batch goes first, then what waited `BEHIND` or was left by a stopped instance.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import structlog
from prometheus_client import Counter, Gauge
from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import PyMongoError

from hilo.kafka import PublishFailed, Record, RecordPublisher
from hilo.logs import error_text
from hilo.mongo import MongoDocument, delete_in, find_in, update_in
from hilo.topics import Topic

log = structlog.get_logger(__name__)

SPOOL_COLLECTION: Final = "spooled_records"
LEASE: Final = timedelta(seconds=30)
"""How long a draining instance owns a document: far above one publish's deadline."""
FREE: Final = datetime(2000, 1, 1, tzinfo=UTC)
"""The lease of a document nobody is publishing."""
ADOPT_EVERY: Final = 60.0
"""Seconds between two looks for documents kept by an earlier release (`Spool.adopt_older`)."""
BUGS_BEFORE_BEHIND: Final = 3
"""Unexpected failures after which a kept request waits behind the others (`Spool._after_bug`)."""
BEHIND: Final = timedelta(seconds=10)
"""How long a document Kafka did not take for now waits before it is tried again."""
DRAIN_BATCH: Final = 500
"""Documents claimed and published at once by a drain, at most. SecantusDB reads every free
document's entry in the queue's index for a claim, whatever its limit (about 240 ms at 12,000
kept): 12,000 drained at 547 requests/s in batches of 200, 779 in batches of 500."""
DRAIN_BYTES: Final = 16 * 1024 * 1024
"""Bytes of records claimed at once, at most (one document however large): a channel runs in
512 MiB, and a kept email may hold close to a MiB."""
UNSIZED: Final = 1024 * 1024
"""What a document kept before sizes were recorded counts as."""

KEPT = Counter(
    "hilo_channel_requests_spooled_total",
    "Webhooks answered 200 while Kafka was away: their records kept in MongoDB",
    ["channel"],
)
WAITING = Gauge(
    "hilo_channel_spooled_requests",
    "Webhooks kept in MongoDB: waiting for Kafka, or set aside because it refused them for good",
    ["channel", "state"],
)


class Spool:
    """Keeps records Kafka refused, and publishes them once it takes them again."""

    def __init__(self, channel: str, collection: AsyncCollection[MongoDocument]) -> None:
        self.channel = channel
        self.collection = collection
        self._kept = KEPT.labels(channel)
        self._refused = f"{channel}:refused"
        self._indexed = False
        self._adopted_at = 0.0

    async def prepare(self) -> None:
        """The index, and the documents kept without a `queue` given theirs (`drain_forever`
        tries again each pass until MongoDB answers)."""
        await self.collection.create_index(
            [("queue", ASCENDING), ("lease", ASCENDING), ("_id", ASCENDING)]
        )
        self._indexed = True
        await self.adopt_older()

    async def adopt_older(self) -> None:
        """Give the documents an earlier release kept their `queue`: at start, and every
        `ADOPT_EVERY` while running, since an instance of that release may still be keeping
        them during a rolling upgrade. A scan of the collection, once a minute, not per
        webhook."""
        older = {"channel": self.channel, "queue": {"$exists": False}}
        await self.collection.update_many(
            {**older, "refused": None}, {"$set": {"queue": self.channel}}
        )
        await self.collection.update_many(
            {**older, "refused": {"$ne": None}}, {"$set": {"queue": self._refused}}
        )
        self._adopted_at = time.monotonic()

    async def keep(self, records: Sequence[Record]) -> None:
        """Store one request's records (raises `PyMongoError` if MongoDB is away too: then the
        request has to be refused)."""
        await self.collection.insert_one(
            {
                "channel": self.channel,
                "queue": self.channel,
                "records": [record_document(r) for r in records],
                "size": sum(len(r.key) + len(r.value or b"") for r in records),
                "lease": FREE,
            }
        )
        self._kept.inc()
        log.warning("records_spooled", channel=self.channel, records=len(records))

    async def drain(self, publisher: RecordPublisher) -> int:
        """Publish this channel's kept requests, oldest batch first (`_claim_batch`), until
        none is left; how many were published. A request Kafka does not take for now waits
        `BEHIND` while the others go out (several of one key on a partition with no leader too);
        once two have failed and more failed than went out, Kafka is taken to be away and
        `PublishFailed` is raised (the documents stay, every one that failed this pass waiting
        from then), so an outage costs one publish deadline a pass. A request that trips a bug
        is tried again (`_after_bug`), and the bug raised once its batch is done."""
        published = 0
        failed: list[MongoDocument] = []
        while batch := await self._claim_batch():
            went, away, bug = await self._publish_batch(publisher, batch)
            published += went
            failed += away
            if bug is not None:
                raise bug
            if len(failed) >= 2 and len(failed) > published:
                # All from now: one that failed early in the pass may be free again already (a
                # publish to a partition with no leader takes its whole deadline to fail).
                for kept in failed:
                    await self._later(kept)
                raise PublishFailed(f"Kafka did not take {len(failed)} kept requests")
        return published

    async def _publish_batch(
        self, publisher: RecordPublisher, batch: Sequence[MongoDocument]
    ) -> tuple[int, list[MongoDocument], Exception | None]:
        """Publish the batch's requests at once (each its own publish, in no order among
        them); delete those Kafka took and put the others where they belong (`_after_failures`).
        How many went, those Kafka did not take for now, and the first bug. A drain cancelled
        meanwhile (the service stopping) still deletes what went and frees the rest for the next
        drain at once (`_after_cancel`)."""
        readable = await self._readable(batch)
        tasks = [asyncio.ensure_future(publisher.publish_records(r)) for _, r in readable]
        try:
            if tasks:
                await asyncio.wait(tasks)
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            await asyncio.shield(self._after_cancel(readable, tasks))
            raise
        ended = _outcomes(readable, tasks)
        done = [kept for kept, failure in ended if failure is None]
        await self._delete(done)
        away, bug = await self._after_failures(
            [(kept, failure) for kept, failure in ended if failure is not None]
        )
        return len(done), away, bug

    async def _after_cancel(
        self,
        readable: Sequence[tuple[MongoDocument, list[Record]]],
        tasks: Sequence[asyncio.Future[None]],
    ) -> None:
        """Once the cancelled publishes end: delete what Kafka took, free the rest."""
        await asyncio.wait(tasks)
        ended = _outcomes(readable, tasks)
        try:
            await self._delete([kept for kept, failure in ended if failure is None])
            for kept, failure in ended:
                if failure is not None:
                    await self._lease_until(kept, FREE)
        except PyMongoError as exc:  # they wait out their lease, and what went goes again
            log.warning("spool_batch_left_leased", channel=self.channel, error=type(exc).__name__)

    async def drain_forever(self, publisher: RecordPublisher, every: float) -> None:
        """`drain` every `every` seconds for as long as the service runs; nothing stops it but
        cancellation."""
        while True:
            try:
                if not self._indexed:
                    await self.prepare()
                elif time.monotonic() - self._adopted_at >= ADOPT_EVERY:
                    await self.adopt_older()
                if published := await self.drain(publisher):
                    log.info("spooled_records_published", channel=self.channel, requests=published)
            except (PublishFailed, PyMongoError) as exc:
                log.warning("spooled_records_wait", channel=self.channel, error=type(exc).__name__)
            except Exception as exc:  # a bug must not end the drain: the records would wait
                log.exception("spool_drain_failed", channel=self.channel, error=error_text(exc))
            await self._count()
            await asyncio.sleep(every)

    async def _claim_batch(self) -> list[MongoDocument]:
        """The oldest free documents, up to `DRAIN_BATCH` and `DRAIN_BYTES`, leased to this
        drain: found on the queue's index, leased under a token of this claim where still free,
        and read back, keeping those the token leased (of two instances claiming at once, each
        gets those it leased first). The lease goes by `_id` in lists of 100 and the read back
        by `_id` alone: with the queue in the filter too SecantusDB scanned the collection (1.4 s
        a claim at 12,000 documents kept; 10 ms so). Later writes go by `_id` alone, as before
        batches: a batch outliving its 30 s lease (its publishes' deadline is 10 s) may move
        another drain's lease, which costs a duplicate the consumers drop, never a loss."""
        now = datetime.now(UTC)
        found = self.collection.find(
            {"queue": self.channel, "lease": {"$lte": now}},
            {"_id": 1, "size": 1},
            sort=[("lease", ASCENDING), ("_id", ASCENDING)],
            limit=DRAIN_BATCH,
        )
        ids = _within_bytes([document async for document in found])
        if not ids:
            return []
        token = uuid.uuid4().hex
        lease = {"$set": {"lease": datetime.now(UTC) + LEASE, "claim": token}}
        await update_in(self.collection, "_id", ids, lease, {"lease": {"$lte": now}})
        claimed = {
            document["_id"]: document
            async for document in find_in(self.collection, "_id", ids)
            if document.get("claim") == token and document.get("queue") == self.channel
        }
        return [claimed[i] for i in ids if i in claimed]

    async def _delete(self, published: Sequence[MongoDocument]) -> None:
        """Delete the documents Kafka took (by `_id` alone: if a batch outlived its lease and
        another drain claimed one of them, deleting it is still right, it went out)."""
        await delete_in(self.collection, "_id", [kept["_id"] for kept in published])

    async def _readable(
        self, batch: Sequence[MongoDocument]
    ) -> list[tuple[MongoDocument, list[Record]]]:
        """The documents with their records; one that cannot be read back is set aside."""
        readable: list[tuple[MongoDocument, list[Record]]] = []
        for kept in batch:
            try:
                readable.append((kept, [_record(document) for document in kept["records"]]))
            except (ValueError, KeyError, TypeError) as exc:
                await self._set_aside(kept, exc)
        return readable

    async def _after_failures(
        self, failures: Sequence[tuple[MongoDocument, BaseException]]
    ) -> tuple[list[MongoDocument], Exception | None]:
        """Each failed document where it belongs: set aside if Kafka refused it for good,
        behind the others if Kafka did not take it for now, first in line again after a bug
        (`_after_bug`). Those Kafka did not take for now, and the first bug."""
        away: list[MongoDocument] = []
        bug: Exception | None = None
        for kept, error in failures:
            if isinstance(error, PublishFailed) and error.for_good:
                await self._set_aside(kept, error)
            elif isinstance(error, PublishFailed):
                await self._later(kept)  # not first in line again: it would hold the rest up
                away.append(kept)
            elif isinstance(error, Exception):
                await self._after_bug(kept)
                bug = bug or error
            else:  # its publish alone was cancelled: for whoever drains next
                await self._lease_until(kept, FREE)
        return away, bug

    async def _later(self, kept: MongoDocument) -> None:
        await self._lease_until(kept, datetime.now(UTC) + BEHIND)

    async def _after_bug(self, kept: MongoDocument) -> None:
        """First in line again after a bug (one that happened once may pass on the next try),
        until it has tripped `BUGS_BEFORE_BEHIND`: then behind the others, as one Kafka does not
        take for now, since first in line it ended every pass and held every other up."""
        bugs = int(kept.get("bugs", 0)) + 1
        until = FREE if bugs < BUGS_BEFORE_BEHIND else datetime.now(UTC) + BEHIND
        await self.collection.update_one(
            {"_id": kept["_id"]}, {"$set": {"lease": until, "bugs": bugs}}
        )

    async def _lease_until(self, kept: MongoDocument, until: datetime) -> None:
        """Give up the document until `until` (`FREE`: for whoever drains next)."""
        await self.collection.update_one({"_id": kept["_id"]}, {"$set": {"lease": until}})

    async def _set_aside(self, kept: MongoDocument, error: Exception) -> None:
        reason = error_text(error.__cause__ or error)
        refused = {"reason": reason, "at": datetime.now(UTC)}
        await self.collection.update_one(
            {"_id": kept["_id"]}, {"$set": {"queue": self._refused, "refused": refused}}
        )
        log.error("spooled_request_refused", channel=self.channel, reason=reason)

    async def _count(self) -> None:
        """The gauges, after every drain, whether it succeeded or not."""
        try:
            waiting = await self.collection.count_documents({"queue": self.channel})
            refused = await self.collection.count_documents({"queue": self._refused})
        except PyMongoError:
            return
        WAITING.labels(self.channel, "waiting").set(waiting)
        WAITING.labels(self.channel, "refused").set(refused)


def _outcomes(
    readable: Sequence[tuple[MongoDocument, list[Record]]], tasks: Sequence[asyncio.Future[None]]
) -> list[tuple[MongoDocument, BaseException | None]]:
    """Each document with what its publish ended with (`_failure`)."""
    return [(kept, _failure(task)) for (kept, _), task in zip(readable, tasks, strict=True)]


def _failure(task: asyncio.Future[None]) -> BaseException | None:
    """What a publish ended with: None once Kafka took it."""
    if task.cancelled():
        return asyncio.CancelledError()
    return task.exception()


def _within_bytes(found: Sequence[MongoDocument]) -> list[Any]:
    """The ids of the first documents whose records come to `DRAIN_BYTES` at most (the first
    one whatever its size)."""
    ids: list[Any] = []
    total = 0
    for document in found:
        total += int(document.get("size", UNSIZED))
        if ids and total > DRAIN_BYTES:
            break
        ids.append(document["_id"])
    return ids


def record_document(record: Record) -> dict[str, Any]:
    """A record as a kept document holds it."""
    return {
        "topic": record.topic.value,
        "key": record.key,
        "value": record.value,
        "headers": dict(record.headers),
        "carried": [[name, value] for name, value in record.carried],
    }


def _record(document: MongoDocument) -> Record:
    return Record(
        Topic(document["topic"]),
        bytes(document["key"]),
        None if document["value"] is None else bytes(document["value"]),
        dict(document["headers"]),
        tuple((name, bytes(value)) for name, value in document.get("carried", ())),
    )
