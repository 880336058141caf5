"""Settings of the SMS channel (environment variables, prefix `HILO_`)."""

from __future__ import annotations

from pydantic import Field, model_validator

from hilo.providers.twilio import TwilioChannelSettings


class SmsSettings(TwilioChannelSettings):
    service_name: str = "channel-sms"
    http_port: int = Field(default=8083, ge=1, le=65535)
    twilio_account_sid: str | None = Field(
        default=None,
        pattern=r"^AC[0-9a-fA-F]{32}$",
        description="Twilio account SID (AC...): with a sender below, outbound SMS are sent "
        "through Twilio's Messages API, authenticated with HILO_TWILIO_AUTH_TOKEN (unset, SMS "
        "replies are reported failed as not configured); and SMS whose webhooks were refused "
        "or unanswered are read back from Twilio's message log.",
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

    @model_validator(mode="after")
    def _sending_is_whole(self) -> SmsSettings:
        """A sender without an account is a typo: refuse to start rather than silently not
        send. An account alone reads back Twilio's message log; replies are then reported
        failed as not configured (said in the log at start)."""
        has_sender = bool(self.twilio_from_number or self.twilio_messaging_service_sid)
        if has_sender and not self.twilio_account_sid:
            raise ValueError(
                "outbound SMS needs HILO_TWILIO_ACCOUNT_SID beside its sender "
                "(HILO_TWILIO_FROM_NUMBER or HILO_TWILIO_MESSAGING_SERVICE_SID)"
            )
        return self

    def sends(self) -> bool:
        """Whether outbound SMS are configured (an account and a sender)."""
        sender = self.twilio_from_number or self.twilio_messaging_service_sid
        return bool(self.twilio_account_sid and sender)

    def catch_up_numbers(self) -> list[str]:
        """The numbers whose incoming messages are read back: those listed, else the sender
        when it is a number."""
        listed = super().catch_up_numbers()
        sender = self.twilio_from_number or ""
        return listed or ([sender] if sender.startswith(("+", "whatsapp:+")) else [])
