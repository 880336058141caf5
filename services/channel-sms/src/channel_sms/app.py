"""HTTP endpoints Twilio calls: incoming messages and status callbacks (form-encoded, signed)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from fastapi import APIRouter, FastAPI, Request, Response
from pydantic import ValidationError

from channel_sms.settings import SmsSettings
from channel_sms.translate import inbound, status
from channel_sms.twilio import InboundMessage, StatusCallback
from hilo.channel import Channel, Rejected, create_channel_app, validation_rejection
from hilo.contract import Interaction
from hilo.providers.twilio import EMPTY_TWIML, verified_form


def routes(channel: Channel, settings: SmsSettings) -> list[APIRouter]:
    router = APIRouter(prefix="/webhooks/twilio/sms", tags=["sms"])

    async def publish(make: Callable[[], Interaction | None]) -> Response:
        """Publish what the webhook holds; a webhook with nothing to record is acknowledged."""
        try:
            interaction = make()
        except ValidationError as exc:
            raise validation_rejection(exc) from None
        except ValueError as exc:  # an unreadable phone number
            raise Rejected(422, "invalid_body", str(exc)) from None
        await channel.publish([interaction] if interaction else [], ignored=0 if interaction else 1)
        return Response(EMPTY_TWIML, media_type="text/xml")

    @router.post("")
    async def incoming(request: Request) -> Response:
        """An incoming SMS/MMS; answered with empty TwiML once Kafka has it (at once from a short
        code or sender id: nobody to attribute it to)."""
        message = await verified_form(request, InboundMessage, settings)
        return await publish(lambda: inbound(message, datetime.now(UTC), settings.instance))

    @router.post("/status")
    async def status_callback(request: Request) -> Response:
        """Delivery status of a message the company sent."""
        callback = await verified_form(request, StatusCallback, settings)
        return await publish(lambda: status(callback, datetime.now(UTC), settings.instance))

    return [router]


def create_app(settings: SmsSettings | None = None) -> FastAPI:
    settings = settings or SmsSettings()
    return create_channel_app(
        "sms",
        settings,
        lambda channel: routes(channel, settings),
        description="Twilio Messaging webhooks: /webhooks/twilio/sms and its /status callback.",
    )
