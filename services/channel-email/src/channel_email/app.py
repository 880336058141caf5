"""HTTP endpoints for inbound mail (Mailgun routes, SendGrid Inbound Parse, raw MIME), Mailgun's
event webhooks (`channel_email.events`), and outbound email through Mailgun when it is
configured (`channel_email.sending`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

import structlog
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from pydantic import ValidationError
from pymongo.errors import PyMongoError
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.types import Message

from channel_email.events import (
    COMMAND_ID,
    EventData,
    MailgunSignature,
    event_interaction,
    status_of,
)
from channel_email.mailgun import (
    MAILGUN_TOKENS,
    Claim,
    ReplayGuard,
    TokenInFlight,
    parse_route_post,
)
from channel_email.mime import InboundEmail, parse_mime
from channel_email.raw_fields import raw_field
from channel_email.sending import mailgun_provider
from channel_email.settings import EmailSettings
from channel_email.translate import translate
from hilo.auth import check_api_key, require_api_key
from hilo.channel import (
    BodyBudget,
    Channel,
    Rejected,
    create_channel_app,
    parse_json_object,
    raw_body,
    refused_if_unreadable,
    request_body,
    signature_rejection,
)
from hilo.webhook import SignatureError

log = structlog.get_logger(__name__)
BASIC = HTTPBasic(auto_error=False, description="SendGrid: credentials in the Parse URL.")


def routes(channel: Channel, settings: EmailSettings) -> list[APIRouter]:
    router = APIRouter(tags=["email"])
    if channel.database is None:
        raise RuntimeError("the email channel keeps Mailgun's tokens in MongoDB: no database")
    guard = ReplayGuard(
        settings.mailgun_signing_key.get_secret_value(),
        settings.mailgun_max_age_seconds,
        channel.database[MAILGUN_TOKENS],
    )
    keys = [key.get_secret_value() for key in settings.email_api_keys]
    unsigned = BodyBudget("email", settings.bodies_in_flight_bytes, settings.body_read_seconds)

    async def publish(read: Callable[[], InboundEmail]) -> dict[str, str]:
        try:
            with refused_if_unreadable():
                # Parsing MIME and HTML is CPU-bound and anyone can mail a large message: in a
                # thread, so other webhooks are answered meanwhile.
                mail = await asyncio.to_thread(read)
                if mail.automatic:
                    return await _ignored_automatic(channel, mail.automatic)
                interaction = translate(mail, datetime.now(UTC), settings.instance, settings.pepper)
        except RecursionError:
            # Parts nested a thousand deep: Python's email parser recurses per level.
            raise Rejected(422, "invalid_body", "MIME parts nested too deep") from None
        await channel.publish([interaction])
        return {"event_id": interaction.id}

    @router.post("/webhooks/mailgun")
    @router.post("/webhooks/mailgun/mime")
    async def mailgun(request: Request) -> dict[str, str]:
        """A Mailgun route's `forward()`: signed, fresh, each token published once. Mailgun
        posts the raw message (`body-mime`) to a URL ending in `mime`: the second path."""
        try:
            async with (
                unsigned.body(request, settings.max_body_bytes) as body,
                _parsed(request, body, settings.max_body_bytes) as posted,
            ):
                try:
                    token = guard.verify(posted.fields)
                except SignatureError as exc:
                    raise signature_rejection(exc) from None

                async def mail() -> dict[str, str]:
                    raw = posted.raw("body-mime")
                    return await publish(lambda: parse_route_post(posted.fields, raw))

                return await _publish_once(guard, token, mail)
        except Rejected as exc:
            raise never_again(exc) from None

    @router.post("/webhooks/mailgun/events")
    async def mailgun_events(request: Request) -> dict[str, str]:
        """Mailgun's event webhooks: delivered, permanently failed, opened, clicked,
        unsubscribed, complained (`channel_email.events`); signed, fresh, each token published
        once."""
        try:
            body = await raw_body(request, EVENT_BODY_LIMIT, within=settings.body_read_seconds)
            return await _record_event(channel, guard, settings, body)
        except Rejected as exc:
            raise never_again(exc) from None

    @router.post("/webhooks/sendgrid")
    async def sendgrid(
        request: Request, credentials: Annotated[HTTPBasicCredentials | None, Depends(BASIC)]
    ) -> dict[str, str]:
        """SendGrid Inbound Parse with "POST the raw, full MIME message" checked."""
        check_api_key(keys, credentials.password if credentials else None)
        async with _form(request, settings) as posted:
            raw = posted.raw("email")
        if not raw:
            raise Rejected(
                422, "invalid_body", "no `email` field: enable 'POST the raw, full MIME message'"
            )
        return await publish(lambda: parse_mime(raw))

    @router.post(
        "/v1/messages/mime", dependencies=[Depends(require_api_key(settings.email_api_keys))]
    )
    async def mime(request: Request) -> dict[str, str]:
        """A raw RFC 5322 message (`message/rfc822`), e.g. piped from an MTA."""
        body = await request_body(request, settings)
        return await publish(lambda: parse_mime(body))

    return [router]


async def _ignored_automatic(channel: Channel, header: str) -> dict[str, str]:
    """Acknowledge an automatic mail (`automatic_mark`) unpublished, counted as ignored: 200,
    so the provider does not post it again."""
    log.info("email_automatic_ignored", header=header)
    await channel.publish([], ignored=1)
    return {"ignored": "automatic", "header": header}


EVENT_BODY_LIMIT = 256 * 1024
"""An event is a few kilobytes: its headers and variables, never the message."""


async def _record_event(
    channel: Channel, guard: ReplayGuard, settings: EmailSettings, body: bytes
) -> dict[str, str]:
    """Publish what an event records, once per token. Every signed token is claimed, an event
    that records nothing and one refused for good included, and keeps its answer: a captured
    signature is worth nothing under another body, on this route or a route's."""
    document = parse_json_object(body)
    token = _verified_token(guard, document.get("signature"))

    async def recorded() -> dict[str, str]:
        with refused_if_unreadable():
            data = EventData.model_validate(document.get("event-data"))
            interaction = event_interaction(
                data,
                datetime.now(UTC),
                settings.instance,
                settings.pepper,
                reported_unconfirmed=await _reported_unconfirmed(channel, data),
            )
        if interaction is None:
            await channel.publish([], ignored=1)
            return {"ignored": data.event}
        await channel.publish([interaction])
        return {"event_id": interaction.id}

    return await _publish_once(guard, token, recorded)


async def _reported_unconfirmed(channel: Channel, data: EventData) -> bool:
    """Whether the event's status is about a reply this service reported not confirmed. While
    that reply's send is not settled, or MongoDB is away, 503: Mailgun posts it again later,
    every event but a delivery notification, which is kept on its own message id then."""
    command_id = data.variable(COMMAND_ID)
    if status_of(data) is None or command_id is None:
        return False
    retried = data.event != "delivered"
    return command_id in await channel.perhaps_sent([command_id], provider_retries=retried)


def _verified_token(guard: ReplayGuard, signature: object) -> str:
    """The token of an event webhook's `signature` object, checked as a route's signature is."""
    try:
        signed = MailgunSignature.model_validate(signature)
        return guard.verify_signed(signed.timestamp, signed.token, signed.signature)
    except ValidationError:
        missing = SignatureError("signature is missing: timestamp, token and signature required")
        raise signature_rejection(missing) from None
    except SignatureError as exc:
        raise signature_rejection(exc) from None


async def _publish_once(
    guard: ReplayGuard, token: str, publish: Callable[[], Awaitable[dict[str, str]]]
) -> dict[str, str]:
    """Publish the mail of a token not published before; else answer as the first time (a
    refusal for good included). The token store away is an outage like Kafka's: 503, which
    Mailgun retries. A publish is bounded well within the claim's `IN_FLIGHT`, so no other
    request takes the claim over while it may still succeed."""
    try:
        claim = await guard.claim(token)
    except TokenInFlight:
        raise Rejected(503, "in_flight", "this mail is being published: try again") from None
    except PyMongoError:
        raise Rejected(503, "store_unavailable", "MongoDB does not answer") from None
    if not isinstance(claim, Claim):
        if "refused" in claim:
            raise Rejected(int(claim["refused"]), claim["error"], claim["detail"])
        return claim
    try:
        async with asyncio.timeout(ReplayGuard.IN_FLIGHT.total_seconds() / 2):
            answer = await publish()
    except Rejected as exc:
        await _settle(guard, claim, exc)
        raise
    except BaseException:
        with suppress(PyMongoError):
            await guard.release(claim)
        raise
    with suppress(PyMongoError):  # published: a retry would only publish the same id again
        await guard.answered(claim, answer)
    return answer


async def _settle(guard: ReplayGuard, claim: Claim, refused: Rejected) -> None:
    """A mail refused for good keeps its token, with the refusal: the same signature with
    another body publishes nothing. Anything else (an outage) gives the token back."""
    with suppress(PyMongoError):
        if refused.status in NEVER_ACCEPTED:
            answer = {"refused": str(refused.status), "error": refused.reason}
            await guard.answered(claim, {**answer, "detail": refused.detail})
        else:
            await guard.release(claim)


def never_again(refused: Rejected) -> Rejected:
    """Mailgun posts anything but 200 and 406 again for 8 hours. A message that can never be
    taken (unreadable, too large, no sender: what it is, not an outage here) is answered 406
    with the same reason, so it is not posted again for nothing. A bad signature keeps its
    401/403 (a signing key being rotated can make a retry pass), an outage its 503."""
    if refused.status in NEVER_ACCEPTED:
        return Rejected(406, refused.reason, refused.detail)
    return refused


NEVER_ACCEPTED = frozenset({400, 413, 422})


@dataclass(frozen=True)
class PostedForm:
    """A form as parsed, and the body it came in: a field holding a raw message is read from
    the body, byte for byte (`raw_field`), where the parsed form holds it decoded as text."""

    fields: FormData
    body: bytes
    content_type: str

    def raw(self, name: str) -> bytes | None:
        if name not in self.fields:
            return None
        return raw_field(self.body, self.content_type, name)


@asynccontextmanager
async def _form(request: Request, settings: EmailSettings) -> AsyncIterator[PostedForm]:
    """The form of a caller that proved itself before its body (a key): read within the body
    limit; its uploaded files are closed on leaving.

    One field may take the whole limit: Mailgun's `body-mime` and SendGrid's `email` hold the
    raw message, attachments included (Starlette's own default is 1 MiB per field).
    """
    body = await request_body(request, settings)
    async with _parsed(request, body, settings.max_body_bytes) as posted:
        yield posted


@asynccontextmanager
async def _parsed(request: Request, body: bytes, limit: int) -> AsyncIterator[PostedForm]:
    """The form `body` holds, parsed as Starlette parses a request's."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    replay = Request(request.scope, receive)
    try:
        form = await replay.form(max_files=100, max_fields=1_000, max_part_size=limit)
    except (MultiPartException, HTTPException) as exc:
        raise Rejected(400, "invalid_body", f"unreadable form: {exc}") from None
    try:
        yield PostedForm(form, body, request.headers.get("content-type", ""))
    finally:
        await form.close()


def create_app(settings: EmailSettings | None = None) -> FastAPI:
    settings = settings or EmailSettings()
    return create_channel_app(
        "email",
        settings,
        lambda channel: routes(channel, settings),
        description="Inbound email: /webhooks/mailgun[/mime], /webhooks/sendgrid, "
        "/v1/messages/mime; Mailgun's events: /webhooks/mailgun/events.",
        provider=mailgun_provider(settings),
        spool=True,  # Mailgun never retries a delivery notification answered 503
    )
