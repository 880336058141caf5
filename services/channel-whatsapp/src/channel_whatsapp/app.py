"""HTTP endpoints Meta calls (the verification handshake, signed notifications), and the
Cloud API sender of agents' replies when it is configured."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from channel_whatsapp.sending import cloud_api
from channel_whatsapp.settings import WhatsAppSettings
from channel_whatsapp.translate import commands_of, translate
from channel_whatsapp.webhook import Notification
from hilo.channel import Channel, create_channel_app, parse_json
from hilo.providers.meta import Translation, meta_webhook_router


def routes(channel: Channel, settings: WhatsAppSettings) -> list[APIRouter]:
    async def read(body: bytes) -> Translation:
        notification = parse_json(Notification, body)
        perhaps_sent = await channel.perhaps_sent(commands_of(notification))
        return translate(notification, settings.instance, settings.pepper, perhaps_sent)

    return [
        meta_webhook_router(
            "/webhooks/whatsapp",
            channel,
            app_secret=settings.whatsapp_app_secret,
            verify_token=settings.whatsapp_verify_token,
            settings=settings,
            translate=read,
        )
    ]


def create_app(settings: WhatsAppSettings | None = None) -> FastAPI:
    settings = settings or WhatsAppSettings()
    return create_channel_app(
        "whatsapp",
        settings,
        lambda channel: routes(channel, settings),
        description="WhatsApp Cloud API webhook: the app's callback URL is /webhooks/whatsapp.",
        provider=cloud_api(settings),
    )
