"""HTTP endpoints Twilio calls: incoming messages and status callbacks (form-encoded, signed)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar
from urllib.parse import parse_qsl

from fastapi import APIRouter, FastAPI, Request, Response
from pydantic import BaseModel, ValidationError

from channel_sms.settings import SmsSettings
from channel_sms.translate import inbound, status
from channel_sms.twilio import EMPTY_TWIML, InboundMessage, StatusCallback, verify_twilio
from hilo.channel import (
    Channel,
    Rejected,
    create_channel_app,
    raw_body,
    signature_rejection,
    validation_rejection,
)
from hilo.contract import Interaction
from hilo.webhook import SignatureError

Form = TypeVar("Form", bound=BaseModel)


def routes(channel: Channel, settings: SmsSettings) -> list[APIRouter]:
    router = APIRouter(prefix="/webhooks/twilio/sms", tags=["sms"])

    async def verified_form(request: Request, model: type[Form]) -> Form:
        body = await raw_body(request, settings.max_body_bytes)
        try:
            params = parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=bool(body))
        except (UnicodeDecodeError, ValueError):
            raise Rejected(
                400, "invalid_body", "body is not application/x-www-form-urlencoded"
            ) from None
        url = str(settings.public_base_url).rstrip("/") + request.url.path
        if request.url.query:
            url += "?" + request.url.query
        try:
            verify_twilio(
                settings.twilio_auth_token.get_secret_value(),
                url,
                params,
                request.headers.get("x-twilio-signature"),
            )
        except SignatureError as exc:
            raise signature_rejection(exc) from None
        try:
            return model.model_validate(dict(params))
        except ValidationError as exc:
            raise validation_rejection(exc) from None

    async def publish(make: Callable[[], Interaction | None]) -> Response:
        try:
            interaction = make()
        except ValueError as exc:  # an unreadable phone number
            raise Rejected(422, "invalid_body", str(exc)) from None
        await channel.publish([interaction] if interaction else [])
        return Response(EMPTY_TWIML, media_type="text/xml")

    @router.post("")
    async def incoming(request: Request) -> Response:
        """An incoming SMS/MMS; answered with empty TwiML once Kafka has it."""
        message = await verified_form(request, InboundMessage)
        return await publish(lambda: inbound(message, datetime.now(UTC), settings.instance))

    @router.post("/status")
    async def status_callback(request: Request) -> Response:
        """Delivery status of a message the company sent."""
        callback = await verified_form(request, StatusCallback)
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
