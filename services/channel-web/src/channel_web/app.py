"""The Segment-compatible HTTP API: `/v1/identify|track|page|screen|alias|group` and `/v1/batch`,
and the short paths analytics.js and the mobile SDKs post to (`/v1/t`, `/v1/p`, ..., `/v1/b`).

Point analytics.js or a mobile SDK at this service (its `apiHost`) with one of the configured
write keys; answers are Segment's (`{"success": true}`) once Kafka has every event. Browsers may
read the answers from the origins in `HILO_WEB_CORS_ORIGINS`: analytics.js retries (sends again)
every call whose answer it cannot read.
"""

from __future__ import annotations

import zlib
from collections import Counter
from datetime import UTC, datetime
from operator import itemgetter
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from pydantic import ValidationError

from channel_web.segment import SHORT_PATHS, Batch, Call, CallPath
from channel_web.settings import WebSettings
from channel_web.translate import translate
from hilo.channel import (
    Channel,
    Rejected,
    create_channel_app,
    parse_json,
    parse_json_object,
    publish_those_that_fit,
    request_body,
    validation_rejection,
)
from hilo.contract import IdentityTrust, Interaction
from hilo.webhook import secrets_match

BASIC = HTTPBasic(auto_error=False, description="The source's write key as user name.")
Credentials = Annotated[HTTPBasicCredentials | None, Depends(BASIC)]


def routes(channel: Channel, settings: WebSettings) -> list[APIRouter]:
    router = APIRouter(prefix="/v1", tags=["segment"])
    public = [key.get_secret_value() for key in settings.web_write_keys]
    verified = [key.get_secret_value() for key in settings.web_verified_write_keys]

    def authorise(
        credentials: HTTPBasicCredentials | None, document: dict[str, Any]
    ) -> IdentityTrust:
        """The trust of the source whose key was given; 401 for a missing or unknown key."""
        given = credentials.username if credentials else document.get("writeKey")
        if isinstance(given, str):
            if any(secrets_match(key, given) for key in verified):
                return "verified"
            if any(secrets_match(key, given) for key in public):
                return "unverified"
        raise Rejected(401, "write_key", "missing or unknown write key (HTTP Basic user)")

    def interaction(
        document: dict[str, Any], where: str, trust: IdentityTrust, received_at: datetime
    ) -> Interaction:
        """The interaction of one call; `Rejected` naming where its problem is."""
        call = _validated(document, where)
        try:
            return translate(call, received_at, settings.instance, trust)
        except ValidationError as exc:
            raise _at(validation_rejection(exc), where) from None

    @router.post("/batch")
    @router.post("/import", include_in_schema=False)
    @router.post("/b", include_in_schema=False)
    async def batch(request: Request, credentials: Credentials) -> dict[str, Any]:
        """Many calls at once (SDKs flush their queue here). The valid calls are published and
        the others listed in the answer (`refused`: index, reason): an SDK drops a whole batch
        answered 4xx, so one bad call (invalid, not an object, or larger than Kafka takes)
        would cost the good ones beside it. A batch with no call published is refused as a
        single call is (422, or 413 when every call is too large)."""
        body = await segment_body(request, settings)
        document = parse_json_object(body)
        trust = authorise(credentials, document)
        envelope = parse_json(Batch, body)
        received_at = datetime.now(UTC)
        calls: list[tuple[int, Interaction]] = []
        refused: list[tuple[int, Rejected]] = []
        for index, item in enumerate(envelope.batch):
            try:
                call = _batch_call(item, index, envelope)
                calls.append((index, interaction(call, f"batch.{index}", trust, received_at)))
            except Rejected as exc:
                refused.append((index, exc))
        refused += await publish_those_that_fit(channel, calls)
        if len(refused) == len(envelope.batch):
            raise _nothing_published(refused)
        if not refused:
            return {"success": True}
        for reason, count in Counter(r.reason for _, r in refused).items():
            channel.refused_in_part(reason, count)
        return {
            "success": True,
            "refused": [
                {"index": i, "detail": r.detail} for i, r in sorted(refused, key=itemgetter(0))
            ],
        }

    @router.post("/{call_type}")
    async def single(
        call_type: CallPath, request: Request, credentials: Credentials
    ) -> dict[str, bool]:
        """One identify, track, page, screen, alias or group call (or `i`, `t`, `p`, `s`, `a`,
        `g`, as analytics.js names them)."""
        body = await segment_body(request, settings)
        document = parse_json_object(body)
        trust = authorise(credentials, document)
        call = {**document, "type": SHORT_PATHS.get(call_type, call_type)}
        await channel.publish([interaction(call, "", trust, datetime.now(UTC))])
        return {"success": True}

    return [router]


async def segment_body(request: Request, settings: WebSettings) -> bytes:
    """The body, inflated when the SDK gzipped it (`Content-Encoding: gzip`, as Segment's server
    libraries can): the body limit applies to the inflated size too, so a small bomb cannot
    expand. 408 when it has not come whole within `HILO_BODY_READ_SECONDS`: the write key may
    be in the body, so anyone could hold a connection and its buffer for good by sending part
    of one."""
    limit = settings.max_body_bytes
    body = await request_body(request, settings)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding != "gzip":
        raise Rejected(415, "content_encoding", f"Content-Encoding {encoding!r}: send gzip or none")
    inflater = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
    try:
        inflated = inflater.decompress(body, limit + 1)
    except zlib.error:
        raise Rejected(400, "invalid_body", "the body is not gzip") from None
    if len(inflated) > limit:
        raise Rejected(413, "too_large", f"body larger than {limit} bytes once inflated")
    if not inflater.eof:
        raise Rejected(400, "invalid_body", "the gzip body is cut short")
    return inflated


def _batch_call(item: object, index: int, envelope: Batch) -> dict[str, Any]:
    """One call of a batch with the batch's `context` under its own and `sentAt` if it has none."""
    if not isinstance(item, dict):
        raise Rejected(422, "invalid_body", f"batch.{index}: a call must be a JSON object")
    return {
        **item,
        "context": _merged_context(envelope.context, item.get("context")),
        "sentAt": item.get("sentAt") or envelope.sent_at,
    }


def _nothing_published(refused: list[tuple[int, Rejected]]) -> Rejected:
    """The answer to a batch none of whose calls was published: 413 if each was too large."""
    too_large = all(r.status == 413 for _, r in refused)
    details = (r.detail if r.status != 413 else f"batch.{i}: {r.detail}" for i, r in refused)
    return Rejected(
        413 if too_large else 422, "too_large" if too_large else "invalid_body", "; ".join(details)
    )


def _merged_context(shared: dict[str, Any], own: Any) -> Any:
    """The batch's context under the call's own; a call's context that is not an object is
    left for validation to refuse, naming the call."""
    if own is None:
        return shared
    return {**shared, **own} if isinstance(own, dict) else own


def _validated(document: dict[str, Any], where: str) -> Call:
    try:
        return Call.model_validate(document)
    except ValidationError as exc:
        raise _at(validation_rejection(exc), where) from None


def _at(rejection: Rejected, where: str) -> Rejected:
    """Name the batch item a problem is in: `batch.3.userId: ...`."""
    if where:
        rejection.detail = "; ".join(f"{where}.{part}" for part in rejection.detail.split("; "))
    return rejection


def create_app(settings: WebSettings | None = None) -> FastAPI:
    settings = settings or WebSettings()
    app = create_channel_app(
        "web",
        settings,
        lambda channel: routes(channel, settings),
        description="Segment HTTP Tracking API for the web shop and mobile apps: /v1/*.",
    )
    if settings.web_cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.web_cors_origins,
            allow_methods=["POST"],
            allow_headers=["Authorization", "Content-Type", "Content-Encoding"],
            max_age=86_400,
        )
    return app
