"""MongoDB access through PyMongo's native async client (motor's official successor).

Everything Hilo stores stays within what MongoDB itself does and every MongoDB-wire server used
in development supports: no nested arrays, no `$lookup`, no change streams, no multi-document
transactions, no `$push` with `$slice`. Bulk writes and `$in` lists go in bounded chunks
(`bulk_write`, `find_in`, `update_in`, `delete_in` below): a few more round trips on MongoDB,
and on servers whose cost grows with list length times matches (SecantusDB re-checks `$in` per
document) a batch of 500 costs a fifth.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter, Histogram
from pymongo import (
    AsyncMongoClient,
    DeleteOne,
    InsertOne,
    ReplaceOne,
    UpdateMany,
    UpdateOne,
    monitoring,
)
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, WriteConcernError

from hilo.settings import HiloSettings

MongoDocument = dict[str, Any]
_WriteOp = InsertOne[MongoDocument] | UpdateOne | UpdateMany | ReplaceOne[MongoDocument] | DeleteOne


def create_mongo_client(
    settings: HiloSettings, *, listeners: Sequence[monitoring.CommandListener] = ()
) -> AsyncMongoClient[MongoDocument]:
    """A client that returns timezone-aware datetimes and fails fast when the server is gone.
    Every command's time goes to `hilo_mongodb_command_seconds` (`COMMAND_TIMES`); `listeners`
    see every command too (benchmarks and tests count round trips)."""
    return AsyncMongoClient(
        str(settings.mongodb_url),
        tz_aware=True,
        appname=settings.client_id,
        serverSelectionTimeoutMS=5_000,
        connectTimeoutMS=5_000,
        retryWrites=True,
        event_listeners=[COMMAND_TIMES, *listeners],
    )


def as_stored(at: datetime) -> datetime:
    """`at` as MongoDB gives it back: in UTC (the client is `tz_aware`), to the millisecond (a
    BSON date keeps no finer). A time kept in memory beside what was stored (a fold of the
    stored journey, a claim matched by its time later) then compares equal to it."""
    utc = at.astimezone(UTC)
    return utc.replace(microsecond=utc.microsecond // 1000 * 1000)


BULK_CHUNK = 500
"""Statements per bulk write command: a whole batch's writes in one round trip. (It was 50 for
FerretDB 1.x, which stopped answering `update` commands of 100; on SecantusDB, 500 took a batch
of 500 events from 125 to 80 round trips at the same database CPU per event.)"""

IN_CHUNK = 100
"""Values per `$in` list. Measured on SecantusDB, 500 ids: one `$in` 330 ms, chunks of 100 or
50 about 60 ms, chunks of 200 140 ms. 100 rather than 50 because every round trip also costs the
service ~0.1-0.3 ms of PyMongo CPU (a batch of 500 went from 207 to 120 round trips)."""


COMMAND_SECONDS = Histogram(
    "hilo_mongodb_command_seconds",
    "Time MongoDB took to answer each command, as the driver saw it, by command and collection",
    ["command", "collection"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
COMMAND_FAILURES = Counter(
    "hilo_mongodb_command_failures_total",
    "Commands that failed (an error from MongoDB, a network error or timeout), by command and "
    "collection; a command its caller cancelled is in neither metric",
    ["command", "collection"],
)
MEASURED_COMMANDS = frozenset(
    {"find", "getMore", "insert", "update", "delete", "findAndModify", "aggregate", "count"}
)
"""The data commands; the driver's own (handshakes, session ends) are left out."""
COMMANDS_IN_FLIGHT = 10_000
"""Started commands remembered until their answer. PyMongo sends no event for a command whose
task was cancelled (a caller's timeout, a shutdown), so the oldest are forgotten past this."""


def command_target(event: monitoring.CommandStartedEvent) -> Any:
    """What a command works on: its collection's name (`getMore` names it in a field of its
    own), or what else the command names there (`1` for an aggregate of the whole database)."""
    field = "collection" if event.command_name == "getMore" else event.command_name
    return event.command.get(field)


class CommandTimes(monitoring.CommandListener):
    """Puts each data command's time into `COMMAND_SECONDS`: which collection and command a
    slow batch or request waited for, in production, on the real server."""

    def __init__(self) -> None:
        self._collections: dict[tuple[int, int], str] = {}

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name in MEASURED_COMMANDS:
            collection = str(command_target(event))
            self._collections[(event.request_id, event.operation_id or 0)] = collection
            if len(self._collections) > COMMANDS_IN_FLIGHT:
                del self._collections[next(iter(self._collections))]

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        collection = self._collections.pop((event.request_id, event.operation_id or 0), None)
        if collection is not None:
            COMMAND_SECONDS.labels(event.command_name, collection).observe(
                event.duration_micros / 1_000_000
            )

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        collection = self._collections.pop((event.request_id, event.operation_id or 0), None)
        if collection is not None:
            COMMAND_FAILURES.labels(event.command_name, collection).inc()


COMMAND_TIMES = CommandTimes()


class CommandCounter(monitoring.CommandListener):
    """Counts the commands a client sends, each one a round trip (for `create_mongo_client`'s
    `listeners`, or `pymongo.monitoring.register`)."""

    def __init__(self) -> None:
        self.count = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.count += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def chunked(values: Iterable[Any], size: int = IN_CHUNK) -> list[list[Any]]:
    """Distinct values in order, in lists of at most `size`."""
    distinct = list(dict.fromkeys(values))
    return [distinct[start : start + size] for start in range(0, len(distinct), size)]


async def find_in(
    collection: AsyncCollection[MongoDocument],
    field: str,
    values: Iterable[Any],
    projection: MongoDocument | None = None,
    *,
    batch_size: int = 0,
) -> AsyncGenerator[MongoDocument, None]:
    """Documents whose `field` is one of `values`, one bounded `$in` query per chunk, read
    `batch_size` at a time (0: the server's batches, up to 16 MB). A reader that stops early
    closes it (`aclose`), which closes the server's cursor too."""
    for chunk in chunked(values):
        query = collection.find({field: {"$in": chunk}}, projection, batch_size=batch_size)
        async with query as cursor:
            async for document in cursor:
                yield document


async def update_in(
    collection: AsyncCollection[MongoDocument],
    field: str,
    values: Iterable[Any],
    update: MongoDocument,
    where: MongoDocument | None = None,
) -> int:
    """`update_many` on documents whose `field` is one of `values` (and that match `where`),
    chunked; the count modified."""
    modified = 0
    for chunk in chunked(values):
        found = await collection.update_many({field: {"$in": chunk}, **(where or {})}, update)
        modified += found.modified_count
    return modified


async def delete_in(
    collection: AsyncCollection[MongoDocument],
    field: str,
    values: Iterable[Any],
    where: MongoDocument | None = None,
) -> int:
    """`delete_many` on documents whose `field` is one of `values` (and that match `where`),
    chunked; the count deleted."""
    deleted = 0
    for chunk in chunked(values):
        found = await collection.delete_many({field: {"$in": chunk}, **(where or {})})
        deleted += found.deleted_count
    return deleted


async def bulk_write(
    collection: AsyncCollection[MongoDocument],
    operations: Sequence[_WriteOp],
    *,
    ordered: bool = False,
) -> int:
    """`collection.bulk_write` in chunks; returns the number of documents modified or inserted.

    A `BulkWriteError` is raised after all chunks ran (unordered) with the write errors of every
    chunk, their `index` pointing into `operations`, so callers can tell which ones failed. A
    write concern the server could not satisfy raises `WriteConcernError` at once.
    """
    errors: list[dict[str, Any]] = []
    changed = 0
    for start in range(0, len(operations), BULK_CHUNK):
        chunk = list(operations[start : start + BULK_CHUNK])
        try:
            result = await collection.bulk_write(chunk, ordered=ordered)
        except BulkWriteError as exc:
            details = exc.details
            if concerns := details.get("writeConcernErrors"):
                # Applied on one node only: a failover may roll it back, so no caller may take
                # it as written (nor as a duplicate), whatever else the chunk did.
                raise WriteConcernError(
                    concerns[0].get("errmsg", "write concern not satisfied"),
                    concerns[0].get("code"),
                    details,
                ) from exc
            changed += (
                details.get("nInserted", 0)
                + details.get("nModified", 0)
                + details.get("nUpserted", 0)
            )
            errors += [
                {**error, "index": error["index"] + start}
                for error in details.get("writeErrors", [])
            ]
            if ordered:
                break
            continue
        changed += result.inserted_count + result.modified_count + result.upserted_count
    if errors:
        raise BulkWriteError({"writeErrors": errors, "nChanged": changed})
    return changed


DUPLICATE_KEY = 11000
INDEX_NOT_FOUND = 27


async def insert_once(
    collection: AsyncCollection[MongoDocument], documents: Sequence[MongoDocument]
) -> set[Any]:
    """Insert documents that may collide with stored ones on a unique index (`_id` or another);
    return the `_id`s of the documents that collided and were not inserted.

    The unique index decides: of several writers inserting the same key, exactly one succeeds.
    """
    try:
        await bulk_write(collection, [InsertOne(doc) for doc in documents])
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(error.get("code") != DUPLICATE_KEY for error in errors):
            raise
        return {documents[error["index"]]["_id"] for error in errors}
    return set()
