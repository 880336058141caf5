"""HTTP endpoints Meta calls: the verification handshake and signed notifications."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from pydantic import ValidationError

from channel_whatsapp.settings import WhatsAppSettings
from channel_whatsapp.translate import translate
from channel_whatsapp.webhook import Notification
from hilo.channel import Channel, create_channel_app, parse_json, validation_rejection
from hilo.providers.meta import add_verification_route, verified_body


def routes(channel: Channel, settings: WhatsAppSettings) -> list[APIRouter]:
    router = APIRouter(prefix="/webhooks/whatsapp", tags=["whatsapp"])
    add_verification_route(router, settings.whatsapp_verify_token)

    @router.post("")
    async def notify(request: Request) -> dict[str, int]:
        """A signed notification: every message and status in it is published before 200."""
        body = await verified_body(request, settings.whatsapp_app_secret, settings.max_body_bytes)
        notification = parse_json(Notification, body)
        try:
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
