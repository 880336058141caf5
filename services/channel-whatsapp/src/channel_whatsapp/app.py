"""HTTP endpoints Meta calls: the verification handshake and signed notifications."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from channel_whatsapp.settings import WhatsAppSettings
from channel_whatsapp.translate import translate
from channel_whatsapp.webhook import Notification
from hilo.channel import Channel, create_channel_app, parse_json
from hilo.providers.meta import Translation, add_notification_route, add_verification_route


def routes(channel: Channel, settings: WhatsAppSettings) -> list[APIRouter]:
    router = APIRouter(prefix="/webhooks/whatsapp", tags=["whatsapp"])
    add_verification_route(router, settings.whatsapp_verify_token)

    def read(body: bytes) -> Translation:
        return translate(parse_json(Notification, body), settings.instance)

    add_notification_route(
        router,
        channel,
        app_secret=settings.whatsapp_app_secret,
        limit=settings.max_body_bytes,
        translate=read,
    )
    return [router]


def create_app(settings: WhatsAppSettings | None = None) -> FastAPI:
    settings = settings or WhatsAppSettings()
    return create_channel_app(
        "whatsapp",
        settings,
        lambda channel: routes(channel, settings),
        description="WhatsApp Cloud API webhook: the app's callback URL is /webhooks/whatsapp.",
    )
