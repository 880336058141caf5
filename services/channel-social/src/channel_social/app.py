"""HTTP endpoints Meta calls for Messenger and Instagram (the handshake, signed notifications),
and the Send API sender of agents' replies on both when it is configured."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from channel_social.sending import CHANNELS, send_api
from channel_social.settings import SocialSettings
from channel_social.translate import translate
from channel_social.webhook import Notification
from hilo.channel import Channel, create_channel_app, parse_json
from hilo.providers.meta import Translation, meta_webhook_router


def routes(channel: Channel, settings: SocialSettings) -> list[APIRouter]:
    async def read(body: bytes) -> Translation:
        return translate(
            parse_json(Notification, body),
            settings.instance,
            settings.pepper,
            settings.social_campaign_refs,
        )

    return [
        meta_webhook_router(
            "/webhooks/social",
            channel,
            app_secret=settings.meta_app_secret,
            verify_token=settings.meta_verify_token,
            settings=settings,
            translate=read,
        )
    ]


def create_app(settings: SocialSettings | None = None) -> FastAPI:
    settings = settings or SocialSettings()
    return create_channel_app(
        "social",
        settings,
        lambda channel: routes(channel, settings),
        description="Messenger Platform and Instagram messaging webhooks: /webhooks/social.",
        provider=send_api(settings),
        sends_for=CHANNELS,
    )
