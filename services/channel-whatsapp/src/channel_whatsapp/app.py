"""HTTP endpoints Meta calls: the verification handshake and signed notifications."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import PlainTextResponse
from pydantic import ValidationError

from channel_whatsapp.settings import WhatsAppSettings
from channel_whatsapp.translate import translate
from channel_whatsapp.webhook import Notification
from hilo.channel import (
    Channel,
    Rejected,
    create_channel_app,
    raw_body,
    signature_rejection,
    validation_rejection,
)
from hilo.webhook import SignatureError, secrets_match, verify_hex_signature


def routes(channel: Channel, settings: WhatsAppSettings) -> list[APIRouter]:
    router = APIRouter(prefix="/webhooks/whatsapp", tags=["whatsapp"])

    @router.get("", response_class=PlainTextResponse)
    async def verify(
        mode: Annotated[str, Query(alias="hub.mode")],
        token: Annotated[str, Query(alias="hub.verify_token")],
        challenge: Annotated[str, Query(alias="hub.challenge", max_length=200)],
    ) -> str:
        """Meta's subscription handshake: echo the challenge when the verify token matches."""
        expected = settings.whatsapp_verify_token.get_secret_value()
        if mode != "subscribe" or not secrets_match(expected, token):
            raise Rejected(403, "verify_token", "hub.mode or hub.verify_token does not match")
        return challenge

    @router.post("")
    async def notify(request: Request) -> dict[str, int]:
        """A signed notification: every message and status in it is published before 200."""
        body = await raw_body(request, settings.max_body_bytes)
        try:
            verify_hex_signature(
                settings.whatsapp_app_secret.get_secret_value(),
                body,
                request.headers.get("x-hub-signature-256"),
                prefix="sha256=",
            )
        except SignatureError as exc:
            raise signature_rejection(exc) from None
        try:
            notification = Notification.model_validate_json(body)
            interactions = translate(notification, settings.instance)
        except ValidationError as exc:
            raise validation_rejection(exc) from None
        await channel.publish(interactions)
        return {"published": len(interactions)}

    return [router]


def create_app(settings: WhatsAppSettings | None = None) -> FastAPI:
    settings = settings or WhatsAppSettings()
    return create_channel_app(
        "whatsapp",
        settings,
        lambda channel: routes(channel, settings),
        description="WhatsApp Cloud API webhook: the app's callback URL is /webhooks/whatsapp.",
    )
