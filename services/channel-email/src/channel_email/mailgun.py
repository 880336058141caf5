"""Mailgun inbound routes: the `forward()` action posts the parsed message as a form.

Signature: hex HMAC-SHA256 of `timestamp + token` with the webhook signing key. A signature
proves Mailgun sent the request, not when: old timestamps are refused, and each token is
published once (remembered for the freshness window), so a captured request replayed does
nothing (see `ReplayGuard`). Mailgun sends a retry with its first signature, so the window
covers its 8 hours of retries, and a token already published is answered as it was the first
time: the 200 Mailgun missed, not a refusal it would retry for hours.
A route whose URL ends in `mime` gets the raw message in `body-mime` instead of parsed fields.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from pydantic_core import from_json
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError, OperationFailure, PyMongoError
from starlette.datastructures import FormData, UploadFile

from channel_email.mime import (
    AttachmentInfo,
    InboundEmail,
    automatic_mark,
    first_address,
    html_to_text,
    message_ids,
    parse_mime,
)
from hilo.contract import rfc2822_time, unix_time
from hilo.mongo import MongoDocument, as_stored
from hilo.webhook import SignatureError, verify_hex_signature

log = structlog.get_logger(__name__)
MAILGUN_TOKENS = "mailgun_tokens"


class ReplayGuard:
    """Mailgun's timestamp + token check, and each token's mail published once, for every
    instance of the channel (`mailgun_tokens` in MongoDB).

    Mailgun signs the timestamp and the token, not the body: a token is claimed before its mail
    is published, so a captured request replayed with another body, to any instance, after any
    restart, publishes nothing. A token published already is answered as it was the first time
    (Mailgun's retry of an answer it missed); one being published right now is answered 503
    (Mailgun retries); a claim left by a request that died mid-publish is taken over after
    `IN_FLIGHT`. Tokens expire with the freshness window (a TTL index), past which their
    signature is refused anyway.
    """

    IN_FLIGHT = timedelta(seconds=60)
    """Far above one publish's deadline: an older unanswered claim was left by a dead request."""

    def __init__(
        self, signing_key: str, max_age_seconds: int, tokens: AsyncCollection[MongoDocument]
    ) -> None:
        self._key = signing_key
        self._max_age = max_age_seconds
        self._tokens = tokens
        self._indexed = False
        self._next_try = 0.0

    def verify(self, form: FormData) -> str:
        """Check a route post's signature and freshness; return the token, to `claim`."""
        return self.verify_signed(
            _text(form, "timestamp"), _text(form, "token"), _text(form, "signature")
        )

    def verify_signed(self, timestamp: str | None, token: str | None, signature: str | None) -> str:
        """Check a signature and its freshness (a route's form fields, or an event webhook's
        `signature` object); return the token, to `claim`."""
        if not timestamp or not token:
            raise SignatureError("signature is missing: timestamp, token and signature required")
        verify_hex_signature(self._key, (timestamp + token).encode(), signature)
        seconds = _unix_seconds(timestamp)
        if seconds is None or abs(time.time() - seconds) > self._max_age:
            raise SignatureError("signature timestamp is too old or in the future")
        return token

    async def claim(self, token: str) -> Claim | dict[str, str]:
        """Claim the token for this request (`Claim`: its mail is this request's to publish),
        or the answer given when it was published or refused for good. `TokenInFlight` while
        another request publishes it."""
        await self._ensure_index()
        now = as_stored(datetime.now(UTC))  # matched later against what MongoDB kept
        try:
            await self._tokens.insert_one({"_id": token, "at": now, "answer": None})
        except DuplicateKeyError:
            pass
        else:
            return Claim(token, now)
        held = await self._tokens.find_one({"_id": token})
        if held is not None and held.get("answer") is not None:
            return dict(held["answer"])
        if held is not None and now - held["at"] < self.IN_FLIGHT:
            raise TokenInFlight(token)
        try:  # released meanwhile (None), or left by a dead request: take it over
            taken = await self._tokens.update_one(
                {"_id": token, "answer": None, "at": held["at"] if held else now},
                {"$set": {"at": now}},
                upsert=held is None,
            )
        except DuplicateKeyError:
            raise TokenInFlight(token) from None
        if taken.matched_count or taken.upserted_id is not None:
            return Claim(token, now)
        raise TokenInFlight(token)

    async def answered(self, claim: Claim, answer: dict[str, str]) -> None:
        """Record the answer, if the claim is still this request's (not taken over)."""
        await self._tokens.update_one(
            {"_id": claim.token, "answer": None, "at": claim.at}, {"$set": {"answer": answer}}
        )

    async def release(self, claim: Claim) -> None:
        """The mail was not published: Mailgun's retry may publish it (the claim is deleted
        only while it is still this request's)."""
        await self._tokens.delete_one({"_id": claim.token, "answer": None, "at": claim.at})

    async def _ensure_index(self) -> None:
        """The TTL index, once; never a reason to refuse mail. A window changed since the index
        was made (MongoDB refuses a second index on `at` with other options) replaces it: made
        again, not changed with `collMod`, which Hilo's database user (`readWrite`) may not run.
        After a failure it is tried again a minute later, not on every webhook."""
        if self._indexed or time.monotonic() < self._next_try:
            return
        try:
            try:
                await self._tokens.create_index("at", expireAfterSeconds=self._max_age)
            except OperationFailure as exc:
                if exc.code not in INDEX_OPTIONS_CONFLICT:
                    raise
                await self._tokens.drop_index([("at", 1)])
                await self._tokens.create_index("at", expireAfterSeconds=self._max_age)
        except PyMongoError as exc:
            log.warning("mailgun_tokens_index_not_made", error=type(exc).__name__)
            self._next_try = time.monotonic() + INDEX_RETRY_SECONDS
            return
        self._indexed = True


INDEX_RETRY_SECONDS = 60.0
INDEX_OPTIONS_CONFLICT = frozenset({85, 86})
"""IndexOptionsConflict, IndexKeySpecsConflict."""


@dataclass(frozen=True)
class Claim:
    """A request's claim of a token, told apart from a later take-over by its time."""

    token: str
    at: datetime


class TokenInFlight(Exception):
    """Another request is publishing this token's mail right now."""


def parse_route_post(form: FormData, raw_mime: bytes | None = None) -> InboundEmail:
    """The message of a route's POST: the raw MIME of `body-mime` (its bytes as sent, which
    the parsed form holds decoded as text), else the parsed fields."""
    if raw_mime:
        return parse_mime(raw_mime)
    headers = _headers(form)
    text = _text(form, "stripped-text") or _text(form, "body-plain")
    html = _text(form, "stripped-html") or _text(form, "body-html")
    own_id = message_ids(_text(form, "Message-Id") or headers.get("message-id"))
    return InboundEmail(
        message_id=own_id[0] if own_id else _content_id(form, headers.get("date")),
        sender=_sender(form),
        subject=_text(form, "subject"),
        text=text.strip() if text else (html_to_text(html) if html else None),
        date=rfc2822_time(headers.get("date")) or _epoch(_text(form, "timestamp")),
        in_reply_to=next(iter(message_ids(headers.get("in-reply-to"))), None),
        references=message_ids(headers.get("references")),
        attachments=tuple(
            AttachmentInfo(
                filename=upload.filename,
                mime_type=upload.content_type or "application/octet-stream",
                size_bytes=upload.size or 0,
            )
            for name, upload in form.multi_items()
            if name.startswith("attachment-") and isinstance(upload, UploadFile)
        ),
        automatic=automatic_mark(lambda name: headers.get(name, "")),
    )


def _sender(form: FormData) -> str:
    """The address of `from`, else of `sender` (the envelope's): a `from` Mailgun passes on
    with no address in it still leaves the mail its sender."""
    for field in ("from", "sender"):
        with contextlib.suppress(ValueError):
            return first_address(_text(form, field))
    raise ValueError("no sender address")


def _content_id(form: FormData, date: str | None) -> str:
    """The id of a mail that came without a Message-Id: a hash of what Mailgun parsed of it and
    its `Date` header, the same on every post of it (as `parse_mime` hashes a raw message
    without one). Not the post's `timestamp`: that is when Mailgun signed each post."""
    fields = ("from", "sender", "recipient", "subject", "body-plain", "body-html")
    content = "\x00".join([*(_text(form, name) or "" for name in fields), date or ""])
    return "sha256:" + hashlib.sha256(content.encode()).hexdigest()


def _headers(form: FormData) -> dict[str, str]:
    """`message-headers`: a JSON list of [name, value] pairs, in the message's order (what is
    not such a pair is skipped: the parsed fields still carry the mail)."""
    raw = _text(form, "message-headers")
    if not raw:
        return {}
    try:
        pairs = from_json(raw)
    except ValueError:
        raise ValueError("message-headers is not JSON") from None
    return {
        str(pair[0]).lower(): str(pair[1])
        for pair in (pairs if isinstance(pairs, list) else [])
        if isinstance(pair, list) and len(pair) == 2
    }


def _text(form: FormData, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) and value else None


def _epoch(timestamp: str | None) -> datetime | None:
    seconds = _unix_seconds(timestamp or "")
    return None if seconds is None else unix_time(seconds)


def _unix_seconds(text: str) -> int | None:
    """Mailgun's timestamp, or None: ASCII digits only (`str.isdigit` also takes `²`, which
    `int` refuses) and few enough of them for a date."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 12 else None
