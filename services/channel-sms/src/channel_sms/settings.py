"""Settings of the SMS channel (environment variables, prefix `HILO_`)."""

from __future__ import annotations

from pydantic import Field

from hilo.providers.twilio import TwilioChannelSettings


class SmsSettings(TwilioChannelSettings):
    service_name: str = "channel-sms"
    http_port: int = Field(default=8083, ge=1, le=65535)
