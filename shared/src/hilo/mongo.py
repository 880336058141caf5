"""MongoDB access through PyMongo's native async client (motor's official successor).

Everything Hilo stores stays within what both MongoDB and FerretDB 1.x support: no nested arrays,
no `$lookup`, no change streams, no multi-document transactions, no `$push` with `$slice`,
and bulk writes in chunks (`bulk_write` below). FerretDB 1.x also drops null and empty-array
values from `$setOnInsert`, so readers treat an absent field as null/empty, and it pushes only
`{"_id": <string>}` filters down to SQLite: anything else is a scan, fine for development data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymongo import AsyncMongoClient, DeleteOne, InsertOne, ReplaceOne, UpdateMany, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError

from hilo.settings import HiloSettings

MongoDocument = dict[str, Any]
_WriteOp = InsertOne[MongoDocument] | UpdateOne | UpdateMany | ReplaceOne[MongoDocument] | DeleteOne


def create_mongo_client(settings: HiloSettings) -> AsyncMongoClient[MongoDocument]:
    """A client that returns timezone-aware datetimes and fails fast when the server is gone."""
    return AsyncMongoClient(
        str(settings.mongodb_url),
        tz_aware=True,
        appname=settings.client_id,
        serverSelectionTimeoutMS=5_000,
        connectTimeoutMS=5_000,
        retryWrites=True,
    )


BULK_CHUNK = 50
"""FerretDB 1.x stalls on an `update` command of 100 or more statements that touch existing
documents (and then stops answering); MongoDB does not care. Bulk writes are therefore sent in
chunks of this size: a few more round trips, same semantics."""


async def bulk_write(
    collection: AsyncCollection[MongoDocument],
    operations: Sequence[_WriteOp],
    *,
    ordered: bool = False,
) -> int:
    """`collection.bulk_write` in chunks; returns the number of documents modified or inserted.

    A `BulkWriteError` is raised after all chunks ran (unordered) with the write errors of every
    chunk, their `index` pointing into `operations`, so callers can tell which ones failed.
    """
    errors: list[dict[str, Any]] = []
    changed = 0
    for start in range(0, len(operations), BULK_CHUNK):
        chunk = list(operations[start : start + BULK_CHUNK])
        try:
            result = await collection.bulk_write(chunk, ordered=ordered)
        except BulkWriteError as exc:
            details = exc.details
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


async def insert_once(
    collection: AsyncCollection[MongoDocument], documents: Sequence[MongoDocument]
) -> set[int]:
    """Insert documents whose `_id` may exist already; return the indexes of those that did.

    The unique `_id` decides: of several writers inserting the same id, exactly one succeeds.
    """
    try:
        await bulk_write(collection, [InsertOne(doc) for doc in documents])
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(error.get("code") != DUPLICATE_KEY for error in errors):
            raise
        return {error["index"] for error in errors}
    return set()
