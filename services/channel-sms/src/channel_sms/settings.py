"""Settings of the SMS channel (environment variables, prefix `HILO_`)."""

from __future__ import annotations

from pydantic import AnyHttpUrl, Field, model_validator

from hilo.providers.twilio import TwilioChannelSettings
from hilo.settings import CommaSeparated


class SmsSettings(TwilioChannelSettings):
    service_name: str = "channel-sms"
    http_port: int = Field(default=8083, ge=1, le=65535)
    twilio_account_sid: str | None = Field(
        default=None,
        pattern=r"^AC[0-9a-fA-F]{32}$",
        description="Twilio account SID (AC...): with a sender below, outbound SMS are sent "
        "through Twilio's Messages API, authenticated with HILO_TWILIO_AUTH_TOKEN. Unset, SMS "
        "replies are reported failed as not configured.",
    )
    twilio_from_number: str | None = Field(
        default=None,
        min_length=3,
        max_length=20,
        description="The sender of outbound SMS: a Twilio number in E.164, a short code or an "
        "alphanumeric sender id.",
    )
    twilio_messaging_service_sid: str | None = Field(
        default=None,
        pattern=r"^MG[0-9a-fA-F]{32}$",
        description="Or a Messaging Service (MG...) that picks the sender from its pool; used "
        "instead of HILO_TWILIO_FROM_NUMBER when both are set.",
    )
    twilio_catch_up_numbers: CommaSeparated[str] = Field(
        default_factory=list,
        description="Twilio numbers (E.164, or whatsapp:+E.164) whose incoming messages are "
        "read back from Twilio's message log after webhooks were refused or found the service "
        "stopped (Twilio never posts them again). Empty: HILO_TWILIO_FROM_NUMBER when it is a "
        "number. Needs HILO_TWILIO_ACCOUNT_SID.",
    )
    catch_up_seconds: float = Field(
        default=15.0,
        gt=0,
        le=3_600,
        description="How often an instance moves the channel's watermark and reads "
        "back from Twilio's message log what refused or unanswered webhooks missed "
        "(hilo.catch_up).",
    )
    catch_up_max_hours: float = Field(
        default=72.0,
        gt=0,
        le=24 * 30,
        description="How far back a read-back goes at most (a channel stopped for a "
        "week reads back its last 72 hours).",
    )
    twilio_api_url: AnyHttpUrl = Field(
        default=AnyHttpUrl("https://api.twilio.com"),
        description="Base URL of Twilio's REST API (a stand-in's address in tests).",
    )

    @model_validator(mode="after")
    def _sending_is_whole(self) -> SmsSettings:
        """A sender without an account, or an account without a sender, is a typo: refuse to
        start rather than silently not send."""
        has_sender = bool(self.twilio_from_number or self.twilio_messaging_service_sid)
        if has_sender != bool(self.twilio_account_sid):
            raise ValueError(
                "outbound SMS needs both HILO_TWILIO_ACCOUNT_SID and a sender "
                "(HILO_TWILIO_FROM_NUMBER or HILO_TWILIO_MESSAGING_SERVICE_SID), or neither"
            )
        return self

    def catch_up_numbers(self) -> list[str]:
        """The numbers whose incoming messages are read back (none without an account)."""
        if self.twilio_account_sid is None:
            return []
        if self.twilio_catch_up_numbers:
            return [number.strip() for number in self.twilio_catch_up_numbers if number.strip()]
        sender = self.twilio_from_number or ""
        return [sender] if sender.startswith(("+", "whatsapp:+")) else []
