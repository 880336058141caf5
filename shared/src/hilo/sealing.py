"""Crypto-shredding: personal fields on the long-retention topics, sealed with keys an erasure
deletes, so the records become unreadable without rewriting the topics.

- Every identifier (`kind:value`) has a *subject*: its HMAC-SHA256 under the deployment's secret
  pepper (`HILO_SUBJECT_PEPPER`). It says "the same identifier" without saying which, and is the
  Kafka key of `interactions`.
- Every subject has a random 256-bit key in the key store (MongoDB database
  `HILO_KEYS_DATABASE`, collection `subject_keys`), created the first time a channel sees it.
- Sealing takes a record's personal fields out (`hilo.contract.personal` lists them), encrypts
  them as one JSON object with a fresh data key (AES-256-GCM, bound to the event id), and keeps
  that data key wrapped under the key of each of the record's subjects (`sealed.keys`). Whoever
  holds any one of those keys can open the record.
- Erasure deletes the keys of every identifier the person held (or used, if nobody holds it):
  from then on nobody can open their records on `interactions`, `journey` and the dead-letter
  topic, wherever copies are.

Keys are cached for `HILO_KEY_CACHE_SECONDS` per process: a process that cached a key just before
an erasure may still use it that long (see the README for what that means).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from bson import Binary
from cachetools import TTLCache
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic_core import from_json, to_json
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.read_preferences import PrimaryPreferred

from hilo.contract.personal import Path, personal_paths
from hilo.mongo import MongoDocument, chunked, find_in, insert_once
from hilo.settings import HiloSettings

SEALED: Final = "sealed"
SEALED_VERSION: Final = 1
ALGORITHM: Final = "A256GCM"
_NONCE_BYTES = 12


class Unreadable(ValueError):
    """No key of the record's subjects exists any more (erased), or the record was altered."""

    def __init__(self, subjects: Sequence[str], reason: str) -> None:
        super().__init__(reason)
        self.subjects = list(subjects)
        self.reason = reason


def subject_of(identifier_key: str, pepper: bytes) -> str:
    """The pseudonym of an identifier: stable per deployment, not reversible without the pepper."""
    return hmac.new(pepper, identifier_key.encode(), hashlib.sha256).hexdigest()


class NoKeys(LookupError):
    """None of the identifiers asked for has a key, and none may be made: their person is
    being erased (an erasure deletes the keys first), or holds none."""


class KeyStore(Protocol):
    async def get_or_create(self, subjects: Iterable[str]) -> dict[str, bytes]:
        """The key of every subject, creating those that have none."""

    async def get(self, subjects: Iterable[str]) -> dict[str, bytes]:
        """The keys that exist (an erased subject has none)."""

    async def forget(self, subjects: Iterable[str], *, made_until: datetime) -> int:
        """Delete the keys made until `made_until` (the erasure), not any made since for the
        same identifier's new life; how many were deleted."""


class SharedCalls:
    """Callers that ask within `window` seconds of the first share one call for all they asked.

    Webhooks arrive one by one, each needing a key or two: on the local database a call for 8
    keys costs 40% per key of a call for 2 (docs/benchmarks.md). A caller cancelled meanwhile
    (its request timed out) leaves the shared call running for the others.
    """

    def __init__(
        self,
        call: Callable[[set[str]], Awaitable[dict[str, bytes]]],
        window: float,
    ) -> None:
        self._call = call
        self._window = window
        self._pending: set[str] = set()
        self._next: asyncio.Future[dict[str, bytes]] | None = None
        self._running: set[asyncio.Future[dict[str, bytes]]] = set()

    async def __call__(self, subjects: set[str]) -> dict[str, bytes]:
        if self._window <= 0:
            return await self._call(subjects)
        self._pending |= subjects
        if self._next is None:
            loop = asyncio.get_running_loop()
            self._next = loop.create_future()
            self._next.add_done_callback(_observed)
            loop.call_later(self._window, self._start)
        shared = await asyncio.shield(self._next)
        return {subject: shared[subject] for subject in subjects if subject in shared}

    def _start(self) -> None:
        future, subjects = self._next, self._pending
        self._next, self._pending = None, set()
        if future is None:  # pragma: no cover - _start is scheduled only with a future
            return
        task = asyncio.ensure_future(self._call(subjects))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        task.add_done_callback(lambda done: _settle(future, done))


def _settle(
    future: asyncio.Future[dict[str, bytes]], done: asyncio.Future[dict[str, bytes]]
) -> None:
    if done.cancelled():
        future.cancel()
    elif (error := done.exception()) is not None:
        future.set_exception(error)
    else:
        future.set_result(done.result())


def _observed(future: asyncio.Future[dict[str, bytes]]) -> None:
    """Mark a failure as seen: every waiter has it raised already, or there was none."""
    if not future.cancelled():
        future.exception()


class SubjectKeys:
    """The key store on MongoDB: one document per subject, created once (its unique `_id`)."""

    def __init__(
        self,
        collection: AsyncCollection[MongoDocument],
        *,
        cache_seconds: float,
        cache_size: int,
        share_window: float = 0.0,
    ) -> None:
        self.collection = collection
        self.reader = collection.with_options(
            read_preference=PrimaryPreferred(max_staleness=SECONDARY_STALENESS_SECONDS)
        )
        """Keys are written once: for sealing, they are read from a secondary while there is no
        primary (a failover, an outage), so returning customers' events are still sealed and a
        Twilio webhook, which is never retried, is not refused. Only for sealing (`get_or_create`):
        opening a record (`get`) reads the primary, which an erasure deletes keys from. A new
        subject still needs the primary for its key."""
        self._cache: TTLCache[str, bytes] | None = (
            TTLCache(maxsize=cache_size, ttl=cache_seconds) if cache_seconds > 0 else None
        )
        self._read_or_make = SharedCalls(self._read_or_make_now, share_window)

    async def get_or_create(self, subjects: Iterable[str]) -> dict[str, bytes]:
        """Cached keys, then one shared call for the rest (`SharedCalls`)."""
        wanted = set(subjects)
        found = {s: key for s in wanted if (key := self._cached(s)) is not None}
        if missing := wanted - found.keys():
            found.update(await self._read_or_make(missing))
        return found

    async def _read_or_make_now(self, subjects: set[str]) -> dict[str, bytes]:
        """One read, then one write for subjects seen for the first time: the keys this process
        made are known without reading them back, so a new subject costs two round trips and a
        known one one."""
        found = await self._read(subjects, self.reader)
        made = {subject: AESGCM.generate_key(256) for subject in subjects - found.keys()}
        if not made:
            return found
        # Inserts, not upserts: a duplicate `_id` tells who raced, and an insert costs a
        # fraction of an upsert on the database (measured in docs/benchmarks.md).
        at = datetime.now(UTC)
        raced = await insert_once(
            self.collection,
            [
                {"_id": subject, "key": Binary(key), "at": at}
                for subject, key in sorted(made.items())
            ],
        )
        ours = set(made) - raced
        found.update({subject: made[subject] for subject in ours})
        if self._cache is not None:
            self._cache.update({subject: made[subject] for subject in ours})
        if raced:  # another process made these a moment before
            found.update(await self._read(raced))
        return found

    async def get(self, subjects: Iterable[str]) -> dict[str, bytes]:
        wanted = set(subjects)
        found = {s: key for s in wanted if (key := self._cached(s)) is not None}
        if missing := wanted - found.keys():
            found.update(await self._read(missing))
        return found

    async def forget(self, subjects: Iterable[str], *, made_until: datetime) -> int:
        doomed = sorted(set(subjects))
        if self._cache is not None:
            for subject in doomed:
                self._cache.pop(subject, None)
        deleted = 0
        for chunk in chunked(doomed):
            found = await self.collection.delete_many(
                {"_id": {"$in": chunk}, "at": {"$lte": made_until}}
            )
            deleted += found.deleted_count
        if self._cache is not None:  # a read in flight meanwhile may have put one back
            for subject in doomed:
                self._cache.pop(subject, None)
        return deleted

    def _cached(self, subject: str) -> bytes | None:
        return self._cache.get(subject) if self._cache is not None else None

    async def _read(
        self, subjects: Iterable[str], source: AsyncCollection[MongoDocument] | None = None
    ) -> dict[str, bytes]:
        reading = self.collection if source is None else source
        found = {doc["_id"]: bytes(doc["key"]) async for doc in find_in(reading, "_id", subjects)}
        if self._cache is not None:
            self._cache.update(found)
        return found


SECONDARY_STALENESS_SECONDS = 90
"""How far behind the primary a secondary may be to be read for sealing (MongoDB's least):
during a failover, a key erased in the last 90 s may seal an event, which then never opens."""

KEY_CACHE_SIZE = 100_000
"""Keys a process keeps at most (32 bytes each, plus the subject)."""


def create_sealer(
    settings: HiloSettings, client: AsyncMongoClient[MongoDocument], *, share_window: float = 0.0
) -> Sealer:
    """The sealer of a service: its pepper, and the key store in `HILO_KEYS_DATABASE`; key-store
    calls within `share_window` seconds are shared (`SharedCalls`)."""
    keys = SubjectKeys(
        client[settings.mongodb_keys_database]["subject_keys"],
        cache_seconds=settings.key_cache_seconds,
        cache_size=KEY_CACHE_SIZE,
        share_window=share_window,
    )
    return Sealer(keys, settings.pepper)


class InMemoryKeys:
    """The key store in a dictionary: for unit tests of the code that seals and opens."""

    def __init__(self) -> None:
        self.keys: dict[str, tuple[bytes, datetime]] = {}

    async def get_or_create(self, subjects: Iterable[str]) -> dict[str, bytes]:
        wanted = list(subjects)
        for subject in wanted:
            self.keys.setdefault(subject, (AESGCM.generate_key(256), datetime.now(UTC)))
        return await self.get(wanted)

    async def get(self, subjects: Iterable[str]) -> dict[str, bytes]:
        return {s: self.keys[s][0] for s in subjects if s in self.keys}

    async def forget(self, subjects: Iterable[str], *, made_until: datetime) -> int:
        doomed = [s for s in set(subjects) if s in self.keys and self.keys[s][1] <= made_until]
        for subject in doomed:
            del self.keys[subject]
        return len(doomed)


class Sealer:
    """Seals and opens the records of one deployment: its pepper and its key store.

    Documents are interactions or journey entries as JSON objects: each has an `id` (what the
    sealed part is bound to) and `identifiers` (`{kind: value}`, whose subjects hold the keys).
    """

    def __init__(self, keys: KeyStore, pepper: bytes) -> None:
        self.keys = keys
        self._pepper = pepper

    def subject(self, identifier_key: str) -> str:
        return subject_of(identifier_key, self._pepper)

    def subjects(self, identifiers: Mapping[str, str | None]) -> list[str]:
        """The subjects of a document's `identifiers` (absent kinds are null), in their order."""
        return [
            self.subject(f"{kind}:{value}")
            for kind, value in identifiers.items()
            if value is not None
        ]

    async def seal_all(
        self,
        documents: Sequence[dict[str, Any]],
        envelope: tuple[Path, ...],
        *,
        create: bool,
    ) -> list[dict[str, Any] | None]:
        """Seal each document in place with its identifiers' keys, one key-store call for all.

        With `create`, subjects seen for the first time get a key (a channel publishing). Without,
        a document none of whose subjects has a key any more is None: its person was erased
        (the customer-profile service re-publishing an entry).
        """
        subjects = [self.subjects(document.get("identifiers") or {}) for document in documents]
        wanted = {subject for group in subjects for subject in group}
        keys = await (self.keys.get_or_create(wanted) if create else self.keys.get(wanted))
        sealed: list[dict[str, Any] | None] = []
        for document, group in zip(documents, subjects, strict=True):
            own = {subject: keys[subject] for subject in group if subject in keys}
            if not own:
                sealed.append(None)
                continue
            paths = personal_paths(document, envelope)
            sealed.append(seal(document, paths, own, str(document["id"]).encode()))
        return sealed

    async def open_all(self, values: Sequence[bytes | None]) -> list[dict[str, Any] | ValueError]:
        """Each record value as a JSON object with its sealed fields back in place.

        A value that is not a JSON object is a `ValueError`; a sealed one that no longer opens
        is `Unreadable` (a `ValueError` too). Unsealed values pass through as they are.
        """
        documents: list[dict[str, Any] | ValueError] = [_json_object(value) for value in values]
        wanted = {
            subject
            for document in documents
            if isinstance(document, dict)
            for subject in sealed_subjects(document)
        }
        keys = await self.keys.get(wanted) if wanted else {}
        return [_opened(document, keys) for document in documents]


def _opened(
    document: dict[str, Any] | ValueError, keys: Mapping[str, bytes]
) -> dict[str, Any] | ValueError:
    if not isinstance(document, dict) or not is_sealed(document):
        return document
    try:
        return unseal(document, keys, str(document.get("id", "")).encode())
    except Unreadable as exc:
        return exc


def _json_object(value: bytes | None) -> dict[str, Any] | ValueError:
    if value is None:
        return ValueError("the record has no value")
    try:
        document = from_json(value)
    except ValueError as exc:
        return ValueError(str(exc)[:300])
    if not isinstance(document, dict):
        return ValueError("the record is not a JSON object")
    return document


def seal(
    document: dict[str, Any], paths: Iterable[Path], keys: Mapping[str, bytes], aad: bytes
) -> dict[str, Any]:
    """Move the fields at `paths` into `document["sealed"]`, readable with any of `keys`.

    `aad` (the event id) binds the sealed part to its record: it cannot be moved to another.
    """
    personal: dict[str, Any] = {}
    for path in paths:
        value = _pop(document, path)
        if value is not _ABSENT:
            personal["/".join(path)] = value
    data_key = AESGCM.generate_key(256)
    nonce = os.urandom(_NONCE_BYTES)
    plain = to_json(personal)
    document[SEALED] = {
        "v": SEALED_VERSION,
        "alg": ALGORITHM,
        "nonce": _b64(nonce),
        "data": _b64(AESGCM(data_key).encrypt(nonce, plain, aad)),
        "keys": {subject: _wrap(key, data_key, subject) for subject, key in sorted(keys.items())},
    }
    return document


def sealed_subjects(document: Mapping[str, Any]) -> list[str]:
    """The subjects a sealed document can be opened with (none when it is not sealed)."""
    sealed = document.get(SEALED)
    keys = sealed.get("keys") if isinstance(sealed, Mapping) else None
    return list(keys) if isinstance(keys, Mapping) else []


def is_sealed(document: Mapping[str, Any]) -> bool:
    return SEALED in document


def unseal(document: dict[str, Any], keys: Mapping[str, bytes], aad: bytes) -> dict[str, Any]:
    """Put the sealed fields back with whichever of the subjects' keys still exists.

    Raises `Unreadable` when none does, or when the sealed part does not open (altered, or moved
    from another record).
    """
    sealed = document.pop(SEALED)
    subjects = sealed_subjects({SEALED: sealed})
    usable = [s for s in subjects if s in keys]
    if not usable:
        raise Unreadable(subjects, "no key of its subjects exists (erased)")
    plain: bytes | None = None
    failure = ""
    for subject in usable:  # a key made again since (the identifier's new life) does not open it
        try:
            data_key = _unwrap(keys[subject], sealed["keys"][subject], subject)
            nonce = base64.b64decode(sealed["nonce"])
            plain = AESGCM(data_key).decrypt(nonce, base64.b64decode(sealed["data"]), aad)
            break
        except (InvalidTag, KeyError, ValueError, TypeError) as exc:
            failure = type(exc).__name__
    if plain is None:
        raise Unreadable(subjects, f"the sealed fields do not open ({failure})")
    for joined, value in from_json(plain).items():
        _put(document, tuple(joined.split("/")), value)
    return document


def _wrap(key: bytes, data_key: bytes, subject: str) -> str:
    nonce = os.urandom(_NONCE_BYTES)
    return _b64(nonce + AESGCM(key).encrypt(nonce, data_key, subject.encode()))


def _unwrap(key: bytes, wrapped: str, subject: str) -> bytes:
    raw = base64.b64decode(wrapped)
    return AESGCM(key).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], subject.encode())


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


_ABSENT: Final = object()


def _pop(document: dict[str, Any], path: Path) -> Any:
    """The value at `path`, removed; `_ABSENT` when there is none (null is a value)."""
    parent: Any = document
    for name in path[:-1]:
        parent = parent.get(name) if isinstance(parent, dict) else None
    return parent.pop(path[-1], _ABSENT) if isinstance(parent, dict) else _ABSENT


def _put(document: dict[str, Any], path: Path, value: Any) -> None:
    parent = document
    for name in path[:-1]:
        child = parent.get(name)
        if not isinstance(child, dict):
            child = parent[name] = {}
        parent = child
    parent[path[-1]] = value
