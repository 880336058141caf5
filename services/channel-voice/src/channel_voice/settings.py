"""Settings of the voice channel (environment variables, prefix `HILO_`)."""

from __future__ import annotations

from pydantic import Field

from hilo.providers.twilio import TwilioChannelSettings
from hilo.settings import SecretList


class VoiceSettings(TwilioChannelSettings):
    service_name: str = "channel-voice"
    http_port: int = Field(default=8086, ge=1, le=65535)
    voice_api_keys: SecretList = Field(
        min_length=1,
        description="Comma-separated keys the contact centre sends in X-API-Key to /v1/calls.",
    )
