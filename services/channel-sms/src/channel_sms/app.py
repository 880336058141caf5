"""HTTP endpoints Twilio calls: incoming messages and status callbacks (form-encoded, signed);
with Twilio credentials and a sender configured, the service also sends outbound SMS."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from fastapi import APIRouter, FastAPI, Request, Response

from channel_sms.message_log import Translators, TwilioMessageLog
from channel_sms.sending import COMMAND_PARAM, TwilioMessages
from channel_sms.settings import SmsSettings
from channel_sms.translate import incoming, recorded, status
from channel_sms.twilio import InboundMessage, StatusCallback
from hilo.catch_up import ProviderLog
from hilo.channel import Channel, create_channel_app, refused_if_unreadable
from hilo.contract import Interaction
from hilo.outbound import Provider, not_configured
from hilo.providers.twilio import answered_with_twiml, twilio_read_back, verified_form
from hilo.providers.twilio_api import TwilioLists

WEBHOOK_PATH = "/webhooks/twilio/sms"
STATUS_PATH = "/status"


def routes(channel: Channel, settings: SmsSettings) -> list[APIRouter]:
    router = APIRouter(prefix=WEBHOOK_PATH, tags=["sms"])

    async def publish(make: Callable[[], list[Interaction]]) -> Response:
        """Publish what the webhook holds; a webhook with nothing to record is acknowledged."""
        with refused_if_unreadable():  # an unreadable phone number
            interactions = make()
        return await answered_with_twiml(channel, interactions)

    @router.post("")
    async def incoming_message(request: Request) -> Response:
        """An incoming SMS/MMS (with the consent change of an opt-out or opt-in keyword);
        answered with empty TwiML once Kafka has it (at once from a short code or sender id:
        nobody to attribute it to)."""
        message = await verified_form(request, InboundMessage, settings)
        return await publish(
            lambda: incoming(message, datetime.now(UTC), settings.instance, settings.pepper)
        )

    @router.post(STATUS_PATH)
    async def status_callback(request: Request) -> Response:
        """Delivery status of a message the company sent."""
        callback = await verified_form(request, StatusCallback, settings)
        command = request.query_params.get(COMMAND_PARAM) if recorded(callback) else None
        # Twilio never posts a status again: without MongoDB it stays on the message's SID.
        reported = await channel.perhaps_sent([command] if command else [], provider_retries=False)
        return await publish(
            lambda: _listed(
                status(
                    callback,
                    datetime.now(UTC),
                    settings.instance,
                    settings.pepper,
                    perhaps_sent=command if command in reported else None,
                )
            )
        )

    return [router]


def _listed(interaction: Interaction | None) -> list[Interaction]:
    return [interaction] if interaction else []


def status_callback_url(settings: SmsSettings) -> str:
    """The public URL of the status webhook, given to Twilio with every message sent."""
    return str(settings.public_base_url).rstrip("/") + WEBHOOK_PATH + STATUS_PATH


def twilio_provider(settings: SmsSettings) -> Provider:
    """Twilio's Messages API when sending is configured; when it is not, a provider refusing
    every SMS reply with the reason (logged once here)."""
    if settings.twilio_account_sid is None:
        reason = "SMS replies are not configured: HILO_TWILIO_ACCOUNT_SID is not set"
        return not_configured("sms", reason)
    if not (settings.twilio_from_number or settings.twilio_messaging_service_sid):
        reason = (
            "SMS replies are not configured: set HILO_TWILIO_FROM_NUMBER or "
            "HILO_TWILIO_MESSAGING_SERVICE_SID"
        )
        return not_configured("sms", reason)
    return TwilioMessages(
        api_url=settings.twilio_api_url,
        account_sid=settings.twilio_account_sid,
        auth_token=settings.twilio_auth_token.get_secret_value(),
        status_callback_url=status_callback_url(settings),
        from_number=settings.twilio_from_number,
        messaging_service_sid=settings.twilio_messaging_service_sid,
    )


def message_log(settings: SmsSettings) -> Callable[[TwilioLists, list[str]], ProviderLog]:
    """Twilio's message log of the numbers, translated as the webhooks translate."""
    translators = Translators(
        incoming=lambda message, sent_at: incoming(
            message, datetime.now(UTC), settings.instance, settings.pepper, sent_at
        ),
        status=(
            lambda callback, changed_at: status(
                callback,
                datetime.now(UTC),
                settings.instance,
                settings.pepper,
                occurred_at=changed_at,
            )
        )
        if settings.sends()
        else None,
    )
    return lambda lists, numbers: TwilioMessageLog(lists, numbers, translators)


def create_app(settings: SmsSettings | None = None) -> FastAPI:
    settings = settings or SmsSettings()
    return create_channel_app(
        "sms",
        settings,
        lambda channel: routes(channel, settings),
        description="Twilio Messaging webhooks: /webhooks/twilio/sms and its /status callback; "
        "outbound SMS through Twilio's Messages API when configured.",
        provider=twilio_provider(settings),
        # Twilio never retries a webhook answered 503: keep it while Kafka is away, and read
        # back from Twilio's log what MongoDB's absence (or no instance running) made us miss.
        spool=True,
        read_back=twilio_read_back("sms", settings, message_log(settings)),
    )
