"""Meta webhooks (WhatsApp Cloud API, Messenger Platform, Instagram messaging).

All three share one subscription handshake (`GET` with `hub.mode`, `hub.verify_token`,
`hub.challenge`) and one signature: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body
with the app secret>`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any, Final

import httpx
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field, SecretStr, ValidationError
from pydantic_core import from_json

from hilo.channel import (
    Channel,
    ChannelSettings,
    Rejected,
    request_body,
    signature_rejection,
    validation_rejection,
)
from hilo.contract import Interaction
from hilo.direct_routes import DirectRoute
from hilo.webhook import SignatureError, hmac_sha256, secrets_match, verify_hex_signature


class MetaChannelSettings(ChannelSettings):
    """A channel Meta posts its webhooks to (WhatsApp, Messenger and Instagram)."""

    max_body_bytes: int = Field(
        default=3_000_000,
        ge=1_024,
        description="Meta batches up to 1,000 changes in one notification, of up to 3 MB: one "
        "refused with 413 is posted again for 7 days, then dropped, every message in it.",
    )


GRAPH_THROTTLING_CODES: Final = frozenset({4, 17, 32, 613, 80007, 130429, 131056})
"""Graph's rate limits (app, user, page, method, WhatsApp account, throughput, one customer's
pair rate): the message was not taken and will be once the limit passes. Meta advises handling
errors by code, not HTTP status, and answers some of these with 400."""


def graph_error(response: httpx.Response) -> dict[str, Any] | None:
    """The `error` object of a Graph API error answer (`code`, `message`, `error_data`...), or
    None when the body is not one."""
    try:
        error = from_json(response.content)["error"]
    except (ValueError, KeyError, TypeError):
        return None
    return error if isinstance(error, dict) and "code" in error else None


def graph_reason(error: dict[str, Any] | None) -> tuple[object, str] | None:
    """A Graph error's code and message (of `graph_error`), without the `(#code) ` Graph puts
    before messages; None for no error or one without a message."""
    if error is None or "message" not in error:
        return None
    code = error["code"]
    return code, str(error["message"]).removeprefix(f"(#{code}) ")


GRAPH_TEMPORARY_CODES: Final = frozenset({1200})
"""Messenger's "Temporary send message failure. Please try again later": not sent, to be sent
again (not a 5xx that may have been taken)."""


def graph_throttled(response: httpx.Response) -> bool:
    """True when a Graph API error answer says the message was not taken for now: one of its
    rate limits (`GRAPH_THROTTLING_CODES`) or a temporary failure (`GRAPH_TEMPORARY_CODES`)."""
    error = graph_error(response)
    return error is not None and error["code"] in GRAPH_THROTTLING_CODES | GRAPH_TEMPORARY_CODES


def signed_headers(body: bytes, app_secret: str) -> dict[str, str]:
    """Headers Meta sends with `body` (for simulators and tests that play Meta)."""
    return {
        "X-Hub-Signature-256": "sha256=" + hmac_sha256(app_secret, body).hex(),
        "Content-Type": "application/json",
    }


def add_verification_route(router: APIRouter, verify_token: SecretStr) -> None:
    """`GET` on the router's path: echo `hub.challenge` when the verify token matches."""

    @router.get("", response_class=PlainTextResponse)
    async def verify(
        mode: Annotated[str, Query(alias="hub.mode")],
        token: Annotated[str, Query(alias="hub.verify_token")],
        challenge: Annotated[str, Query(alias="hub.challenge", max_length=200)],
    ) -> str:
        """Meta's subscription handshake: echo the challenge when the verify token matches."""
        if mode != "subscribe" or not secrets_match(verify_token.get_secret_value(), token):
            raise Rejected(403, "verify_token", "hub.mode or hub.verify_token does not match")
        return challenge


Translation = tuple[Sequence[Interaction], int]
"""What a notification holds: the interactions to publish, and how many events were ignored."""


class Published(BaseModel):
    """The answer to a notification: every event in it is stored or deliberately ignored."""

    published: int = Field(description="Events published and acknowledged by Kafka.")
    ignored: int = Field(description="Events acknowledged but not published (not modelled).")


def add_notification_route(
    router: APIRouter,
    channel: Channel,
    *,
    app_secret: SecretStr,
    settings: ChannelSettings,
    translate: Callable[[bytes], Awaitable[Translation]],
) -> None:
    """`POST` on the router's path: verify, translate, publish, and only then answer 200.

    Events the channel does not model are acknowledged and counted, so Meta does not retry them.
    """

    async def notify(request: Request) -> Response:
        """A signed notification: every event in it is published before 200."""
        body = await verified_body(request, app_secret, settings)
        try:
            interactions, ignored = await translate(body)
        except ValidationError as exc:
            raise validation_rejection(exc) from None
        await channel.publish(interactions, ignored=ignored)
        return Response(
            f'{{"published":{len(interactions)},"ignored":{ignored}}}',
            media_type="application/json",
        )

    router.add_api_route(
        "", notify, methods=["POST"], response_model=Published, route_class_override=DirectRoute
    )


def meta_webhook_router(
    prefix: str,
    channel: Channel,
    *,
    app_secret: SecretStr,
    verify_token: SecretStr,
    settings: ChannelSettings,
    translate: Callable[[bytes], Awaitable[Translation]],
) -> APIRouter:
    """A Meta channel's whole HTTP face at `prefix`: the handshake and the notifications."""
    router = APIRouter(prefix=prefix, tags=[channel.name])
    add_verification_route(router, verify_token)
    add_notification_route(
        router, channel, app_secret=app_secret, settings=settings, translate=translate
    )
    return router


async def verified_body(
    request: Request, app_secret: SecretStr, settings: ChannelSettings
) -> bytes:
    """The raw body (within the channel's limit and read deadline), once
    `X-Hub-Signature-256` proves Meta sent it (401/403 otherwise)."""
    body = await request_body(request, settings)
    try:
        verify_hex_signature(
            app_secret.get_secret_value(),
            body,
            request.headers.get("x-hub-signature-256"),
            prefix="sha256=",
        )
    except SignatureError as exc:
        raise signature_rejection(exc) from None
    return body
