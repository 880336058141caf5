"""HTTP endpoints: Twilio's Voice status callback and the contact centre's call outcomes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from fastapi import APIRouter, Depends, FastAPI, Request, Response

from channel_voice.call_log import TwilioCallLog
from channel_voice.calls import CallOutcome, StatusCallback
from channel_voice.settings import VoiceSettings
from channel_voice.translate import call_conversation, from_contact_centre, from_twilio
from hilo.auth import require_api_key
from hilo.catch_up import ProviderLog
from hilo.channel import (
    Channel,
    create_channel_app,
    parse_json,
    refused_if_unreadable,
    request_body,
)
from hilo.contract import SECONDARY_CONTACTS, DropInvalid
from hilo.providers.twilio import answered_with_twiml, twilio_read_back, verified_form
from hilo.providers.twilio_api import TwilioLists


def routes(channel: Channel, settings: VoiceSettings) -> list[APIRouter]:
    twilio = APIRouter(prefix="/webhooks/twilio/voice", tags=["twilio"])
    contact_centre = APIRouter(
        prefix="/v1",
        tags=["contact centre"],
        dependencies=[Depends(require_api_key(settings.voice_api_keys))],
    )

    @twilio.post("/status")
    async def status_callback(request: Request) -> Response:
        """Twilio's call status callback; the final status is published before 200."""
        callback = await verified_form(request, StatusCallback, settings)
        # A withheld or unreadable number: nobody to attribute the call to.
        with refused_if_unreadable("customer number: "):
            interaction = from_twilio(callback, datetime.now(UTC), settings.instance)
        return await answered_with_twiml(channel, [interaction] if interaction else [])

    @contact_centre.post("/calls")
    async def call_outcome(request: Request) -> dict[str, str]:
        """The contact centre's word on a call: outcome, disposition, transcript or summary."""
        body = await request_body(request, settings)
        policy = DropInvalid(SECONDARY_CONTACTS)
        outcome = parse_json(CallOutcome, body, context=policy.context())
        interaction = from_contact_centre(
            outcome, datetime.now(UTC), settings.instance, policy.dropped
        )
        await channel.publish([interaction])
        return {
            "event_id": interaction.id,
            "conversation_id": call_conversation(outcome.call_id).id,
        }

    return [twilio, contact_centre]


def create_app(settings: VoiceSettings | None = None) -> FastAPI:
    settings = settings or VoiceSettings()
    return create_channel_app(
        "voice",
        settings,
        lambda channel: routes(channel, settings),
        description="Twilio Voice status callbacks (/webhooks/twilio/voice/status) and "
        "contact-centre call outcomes (POST /v1/calls); calls whose callbacks were refused or "
        "unanswered are read back from Twilio's call log.",
        # Twilio never retries a webhook answered 503: keep it while Kafka is away, and read
        # back from Twilio's log what MongoDB's absence (or no instance running) made us miss.
        spool=True,
        read_back=twilio_read_back("voice", settings, call_log(settings)),
    )


def call_log(settings: VoiceSettings) -> Callable[[TwilioLists, list[str]], ProviderLog]:
    """Twilio's call log of the numbers, translated as the status callback translates."""
    return lambda lists, numbers: TwilioCallLog(
        lists, numbers, lambda callback: from_twilio(callback, datetime.now(UTC), settings.instance)
    )
