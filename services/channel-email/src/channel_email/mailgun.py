"""Mailgun inbound routes: the `forward()` action posts the parsed message as a form.

Signature: hex HMAC-SHA256 of `timestamp + token` with the webhook signing key. A signature
proves Mailgun sent the request, not when: old timestamps are refused, and each token is
published once (remembered for the freshness window), so a captured request replayed does
nothing. Mailgun sends a retry with its first signature, so the window covers its 8 hours of
retries, and a token already published is answered as it was the first time: the 200 Mailgun
missed, not a refusal it would retry for hours.
A route whose URL ends in `mime` gets the raw message in `body-mime` instead of parsed fields.
"""

from __future__ import annotations

import time
from datetime import datetime

from cachetools import TTLCache
from pydantic_core import from_json
from starlette.datastructures import FormData, UploadFile

from channel_email.mime import (
    AttachmentInfo,
    InboundEmail,
    first_address,
    html_to_text,
    message_ids,
    parse_date,
    parse_mime,
)
from hilo.contract import unix_time
from hilo.webhook import SignatureError, verify_hex_signature


class ReplayGuard:
    """Mailgun's timestamp + token check, within one process.

    Instances behind a load balancer each remember their own tokens: a replay to another
    instance publishes the same event again, which every consumer drops (its id is the mail's).
    """

    def __init__(self, signing_key: str, max_age_seconds: int) -> None:
        self._key = signing_key
        self._max_age = max_age_seconds
        self._answers: TTLCache[str, dict[str, str]] = TTLCache(
            maxsize=1_000_000, ttl=max_age_seconds
        )

    def verify(self, form: FormData) -> str:
        """Check the signature and freshness; return the token, to `remember` the answer given
        once published."""
        timestamp, token = _text(form, "timestamp"), _text(form, "token")
        if not timestamp or not token:
            raise SignatureError("signature is missing: timestamp, token and signature required")
        verify_hex_signature(self._key, (timestamp + token).encode(), _text(form, "signature"))
        seconds = _unix_seconds(timestamp)
        if seconds is None or abs(time.time() - seconds) > self._max_age:
            raise SignatureError("signature timestamp is too old or in the future")
        return token

    def answered(self, token: str) -> dict[str, str] | None:
        """What a request with this token was answered once its mail was published."""
        return self._answers.get(token)

    def remember(self, token: str, answer: dict[str, str]) -> None:
        self._answers[token] = answer


def parse_route_post(form: FormData) -> InboundEmail:
    """The message of a route's POST (parsed fields, or raw MIME in `body-mime`)."""
    raw = _text(form, "body-mime")
    if raw:
        return parse_mime(raw.encode())
    headers = _headers(form)
    text = _text(form, "stripped-text") or _text(form, "body-plain")
    html = _text(form, "stripped-html") or _text(form, "body-html")
    own_id = message_ids(_text(form, "Message-Id") or headers.get("message-id"))
    if not own_id:
        raise ValueError("Message-Id is missing")
    return InboundEmail(
        message_id=own_id[0],
        sender=first_address(_text(form, "from") or _text(form, "sender")),
        subject=_text(form, "subject"),
        text=text.strip() if text else (html_to_text(html) if html else None),
        date=parse_date(headers.get("date")) or _epoch(_text(form, "timestamp")),
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
    )


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
