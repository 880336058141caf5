"""MongoDB access through PyMongo's native async client (motor's official successor).

Everything Hilo stores stays within what both MongoDB and FerretDB 1.x support: no nested arrays,
no `$lookup`, no change streams, no multi-document transactions, no `$push` with `$slice`.
"""

from __future__ import annotations

from typing import Any

from pymongo import AsyncMongoClient

from hilo.settings import HiloSettings

MongoDocument = dict[str, Any]


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
