"""Settings of the SMS channel (environment variables, prefix `HILO_`)."""

from __future__ import annotations

from hilo.providers.twilio import TwilioChannelSettings


class SmsSettings(TwilioChannelSettings):
    service_name: str = "channel-sms"
