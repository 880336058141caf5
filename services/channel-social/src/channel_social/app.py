"""HTTP endpoints Meta calls for Messenger and Instagram: the handshake and signed notifications."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from pydantic import ValidationError

from channel_social.settings import SocialSettings
from channel_social.translate import translate
from channel_social.webhook import Notification
from hilo.channel import Channel, create_channel_app, parse_json, validation_rejection
from hilo.providers.meta import add_verification_route, verified_body


def routes(channel: Channel, settings: SocialSettings) -> list[APIRouter]:
    router = APIRouter(prefix="/webhooks/social", tags=["social"])
    add_verification_route(router, settings.meta_verify_token)

    @router.post("")
    async def notify(request: Request) -> dict[str, int]:
        """A signed Messenger (`page`) or Instagram notification, published before 200."""
        body = await verified_body(request, settings.meta_app_secret, settings.max_body_bytes)
        notification = parse_json(Notification, body)
        try:
            interactions, ignored = translate(notification, settings.instance)
        except ValidationError as exc:
            raise validation_rejection(exc) from None
        await channel.publish(interactions)
        return {"published": len(interactions), "ignored": ignored}

    return [router]


def create_app(settings: SocialSettings | None = None) -> FastAPI:
    settings = settings or SocialSettings()
    return create_channel_app(
        "social",
        settings,
        lambda channel: routes(channel, settings),
        description="Messenger Platform and Instagram messaging webhooks: /webhooks/social.",
    )
