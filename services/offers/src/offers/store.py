"""MongoDB, the offers' source of truth: every version appended, never rewritten.

- `offers_changes`: one document per version, `{_id: version, at, by, keys, records,
  published, settled}`. The records are exactly what goes on the topic, so publishing a version
  again (after Kafka failed half-way) sends the same bytes.
- `offers_heads`: per key, its latest record; derived from the changes (`settle`), what the
  next version builds on and what the admin API reads.
- `offers_locks`: the publisher's lease, so that one process at a time puts versions on the
  topic, in order.

Versions are contiguous: a change takes the number after the highest stored one, and the unique
`_id` decides between two writers that read the same head (the loser builds again on the
winner's records). So each version is built on every earlier one, and two merchandisers changing
the same SKU at once cannot lose either price, whichever instance each one reached.

The `offers` topic holds the latest record of every key too (compacted). A catalogue behind it
(the database lost, or restored from an older backup) would number its next versions below what
every reader holds, and every reader would ignore them; versions a backup holds as unpublished
would go out again after newer ones, and compaction would keep them. So nothing is numbered
before the topic was read to its end (`commit` refuses with `CatalogueLoading`), and
`catch_up_with` takes back what the topic holds first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from pymongo import AsyncMongoClient, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

from hilo.kafka import record_size
from hilo.mongo import DUPLICATE_KEY, MongoDocument, bulk_write, find_in
from hilo.offers.model import OfferRecord, promotion_key
from offers.changes import Change, kafka_record

log = structlog.get_logger(__name__)

CHANGES = "offers_changes"
HEADS = "offers_heads"
LOCKS = "offers_locks"
COMMIT_ATTEMPTS = 20


@dataclass(frozen=True)
class TopicState:
    """What the `offers` topic holds, once read to its end."""

    version: int
    """The highest version on it, whole or not (a version Kafka took half of counts)."""
    records: Callable[[], list[OfferRecord]]
    """Each key's latest record, made when asked: the catalogue behind the topic takes them,
    and a start compares them with its own (`Outbox.restore_topic`)."""
    overtaken: Callable[[], list[OfferRecord]] = list
    """The latest record of each key whose last record on the topic is older: a publish that
    timed out landed after it (`Outbox.republish_overtaken`)."""


TopicHead = Callable[[], TopicState | None]
"""The topic's state; None until it was read to its end."""
NO_TOPIC: TopicHead = lambda: TopicState(0, list)  # noqa: E731 - a store alone: tools, tests
RESTORED_BY = "restored from the offers topic"

Build = Callable[[int, dict[str, OfferRecord]], list[OfferRecord]]
"""Given the version number and the current records of the keys, the version's records (or an
exception, and nothing is stored)."""


class CatalogueLoading(RuntimeError):
    """The topic is not read to its end yet: nothing may be numbered before it is."""


class VersionContention(RuntimeError):
    """Other writers took every version number this change tried: try again later."""


class RecordsTooLarge(ValueError):
    """A record of the change would be larger than Kafka takes: it could never be published."""


class OffersStore:
    def __init__(
        self,
        client: AsyncMongoClient[MongoDocument],
        database: str,
        *,
        max_record_bytes: int,
        topic: TopicHead = NO_TOPIC,
    ) -> None:
        db = client[database]
        self._topic = topic
        self.changes: AsyncCollection[MongoDocument] = db[CHANGES]
        self.heads: AsyncCollection[MongoDocument] = db[HEADS]
        self.locks: AsyncCollection[MongoDocument] = db[LOCKS]
        self._max_record_bytes = max_record_bytes

    async def create_indexes(self) -> None:
        await self.changes.create_index([("published", 1), ("_id", 1)])
        await self.changes.create_index([("settled", 1), ("_id", 1)])
        await self.heads.create_index([("kind", 1), ("sku", 1)])
        await self.heads.create_index([("kind", 1), ("_id", 1)])

    async def commit(self, keys: Sequence[str], build: Build, *, at: datetime, by: str) -> Change:
        """Store a new version built on the current records of `keys`; answer it.

        Whatever `build` raises propagates and nothing is stored.
        """
        for _ in range(COMMIT_ATTEMPTS):
            if (topic := self._topic()) is None:
                raise CatalogueLoading("the offers topic is still being read: try again")
            head = await self.head_version()
            if topic.version > head:
                await self.catch_up_with(topic)
                continue
            await self.settle(upto=head)
            current = await self.current(keys)
            records = build(head + 1, current)
            self._publishable(records)
            change = Change(version=head + 1, at=at, by=by, records=tuple(records))
            try:
                await self.changes.insert_one(_document(change))
            except DuplicateKeyError:
                continue
            try:
                await self._settle(change)
            except PyMongoError as exc:
                # The version is stored and goes out: failing the request now would have the
                # caller store it again. The next commit settles it first (`settle`).
                log.warning("offers_heads_behind", version=change.version, error=type(exc).__name__)
            return change
        raise VersionContention(f"no version free after {COMMIT_ATTEMPTS} attempts")

    def _publishable(self, records: Sequence[OfferRecord]) -> None:
        """A version Kafka refuses would stop every later one: refuse it before storing."""
        for record in records:
            size = record_size(kafka_record(record))
            if size > self._max_record_bytes:
                raise RecordsTooLarge(
                    f"{record.key} would be {size} bytes on Kafka, more than "
                    f"{self._max_record_bytes}"
                )

    async def catch_up_with(self, topic: TopicState) -> bool:
        """Leave nothing behind the topic; whether the catalogue was behind it.

        Versions below the topic's highest are on it (or were overtaken there) even if the
        catalogue says otherwise (a backup taken before they went out): they are marked
        published, so that none goes out again after newer ones. A catalogue behind the topic
        takes each key's latest record into its heads (where newer than theirs), then a marker
        version numbered as the topic's highest, which the next change numbers after. The
        marker holds no records: a whole catalogue would not fit in one document."""
        await self.changes.update_many(
            {"_id": {"$lt": topic.version}, "published": False}, {"$set": {"published": True}}
        )
        if await self.head_version() >= topic.version:
            return False
        await self._settle_records(topic.records())
        marker = {
            **_document(Change(topic.version, datetime.now(UTC), RESTORED_BY, ())),
            "published": True,
            "settled": True,
        }
        try:
            await self.changes.insert_one(marker)
        except DuplicateKeyError:
            return False  # another instance, or a change, took it meanwhile
        return True

    async def head_version(self) -> int:
        """The highest stored version (0: none)."""
        latest = await self.changes.find_one({}, {"_id": 1}, sort=[("_id", -1)])
        return 0 if latest is None else int(latest["_id"])

    async def current(self, keys: Iterable[str]) -> dict[str, OfferRecord]:
        """The latest record of each key that has one."""
        return {
            document["_id"]: OfferRecord.model_validate(document["record"])
            async for document in find_in(self.heads, "_id", keys)
        }

    async def settle(self, upto: int | None = None) -> int:
        """Bring the heads up to date with every stored version (up to `upto`): a process that
        stopped between storing a version and updating the heads left that to its successors.
        Returns how many versions it settled."""
        query: MongoDocument = {"settled": False}
        if upto is not None:
            query["_id"] = {"$lte": upto}
        settled = 0
        async for document in self.changes.find(query).sort("_id", 1):
            await self._settle(_change(document))
            settled += 1
        return settled

    async def _settle(self, change: Change) -> None:
        """Each key's head becomes this version's record unless a later one is there already."""
        await self._settle_records(change.records)
        await self.changes.update_one({"_id": change.version}, {"$set": {"settled": True}})

    async def _settle_records(self, records: Sequence[OfferRecord]) -> None:
        operations = [
            UpdateOne(
                {"_id": record.key, "version": {"$lt": record.version}},
                {"$set": _head(record)},
                upsert=True,
            )
            for record in records
        ]
        try:
            await bulk_write(self.heads, operations)
        except BulkWriteError as exc:
            # A head already at this version or later: the upsert finds no match and its
            # insert collides with the existing key, which is what "leave it" looks like.
            if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
                raise

    async def unpublished(self, limit: int = 100) -> list[Change]:
        """The oldest versions not yet on the topic, in version order."""
        cursor = self.changes.find({"published": False}).sort("_id", 1).limit(limit)
        return [_change(document) async for document in cursor]

    def topic_state(self) -> TopicState | None:
        """What the topic holds; None until it was read to its end."""
        return self._topic()

    async def highest_published(self) -> int:
        """The highest version put on the topic that holds records (0: none): a marker
        `catch_up_with` numbered holds none."""
        cursor = self.changes.find({"published": True}, {"keys": 1}).sort("_id", -1)
        async for document in cursor:
            if document.get("keys"):
                await cursor.close()
                return int(document["_id"])
        return 0

    async def head_records(self) -> list[OfferRecord]:
        """Every key's latest record, in version order (parts in order): what a whole topic
        holds once compacted."""
        records = [OfferRecord.model_validate(d["record"]) async for d in self.heads.find({})]
        return sorted(records, key=lambda record: (record.version, record.part))

    def overtaken(self, version: int) -> bool:
        """Whether the topic holds a later version: this one went out before it (or a backup
        says it did not), and published now it would follow the later one, which compaction
        would then lose for that key."""
        topic = self._topic()
        return topic is not None and version < topic.version

    async def mark_published(self, version: int) -> None:
        await self.changes.update_one(
            {"_id": version}, {"$set": {"published": True, "published_at": datetime.now(UTC)}}
        )

    async def is_published(self, version: int) -> bool:
        document = await self.changes.find_one({"_id": version}, {"published": 1})
        return bool(document and document["published"])

    async def history(self, *, limit: int, before: int | None = None) -> list[MongoDocument]:
        """Versions newest first, without their records."""
        query: MongoDocument = {} if before is None else {"_id": {"$lt": before}}
        cursor = self.changes.find(query, {"records": 0}).sort("_id", -1).limit(limit)
        return [document async for document in cursor]

    async def prices_of(self, sku: str) -> list[OfferRecord]:
        """The SKU's price record in each currency it has one in."""
        cursor = self.heads.find({"kind": "price", "sku": sku}).sort("_id", 1)
        return [OfferRecord.model_validate(document["record"]) async for document in cursor]

    async def promotions(
        self, *, limit: int, after: str | None = None, active: bool | None = None
    ) -> list[OfferRecord]:
        """Promotions' latest records in id order, at most `limit`, those after the id `after`
        (a page), all or only the `active` (or retired) ones; on the `(kind, _id)` index."""
        query: MongoDocument = {"kind": "promotion"}
        if after is not None:
            query["_id"] = {"$gt": promotion_key(after)}
        if active is not None:
            query["record.promotion.active"] = active
        cursor = self.heads.find(query).sort("_id", 1).limit(limit)
        return [OfferRecord.model_validate(document["record"]) async for document in cursor]

    async def lease(self, name: str, holder: str, seconds: float) -> bool:
        """Take or renew the lease `name` for `seconds`; False while someone else holds it."""
        now = datetime.now(UTC)
        try:
            await self.locks.update_one(
                {"_id": name, "$or": [{"holder": holder}, {"until": {"$lt": now}}]},
                {"$set": {"holder": holder, "until": now + timedelta(seconds=seconds)}},
                upsert=True,
            )
        except DuplicateKeyError:
            return False
        return True

    async def release(self, name: str, holder: str) -> None:
        """Let another process take the lease at once (on a clean stop)."""
        await self.locks.update_one(
            {"_id": name, "holder": holder}, {"$set": {"until": datetime.fromtimestamp(0, UTC)}}
        )


def _document(change: Change) -> MongoDocument:
    return {
        "_id": change.version,
        "at": change.at,
        "by": change.by,
        "keys": change.keys,
        "records": [record.model_dump(mode="json") for record in change.records],
        "published": False,
        "settled": False,
    }


def _change(document: MongoDocument) -> Change:
    return Change(
        version=int(document["_id"]),
        at=document["at"],
        by=document["by"],
        records=tuple(OfferRecord.model_validate(record) for record in document["records"]),
        published=bool(document["published"]),
    )


def _head(record: OfferRecord) -> MongoDocument:
    head: MongoDocument = {
        "kind": "price" if record.price is not None else "promotion",
        "version": record.version,
        "record": record.model_dump(mode="json"),
    }
    if record.price is not None:
        head["sku"] = record.price.sku
    return head
