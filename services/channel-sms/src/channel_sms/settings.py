"""Settings of the SMS channel (environment variables, prefix `HILO_`)."""

from __future__ import annotations

from pydantic import AnyHttpUrl, Field, SecretStr

from hilo.channel import ChannelSettings


class SmsSettings(ChannelSettings):
    service_name: str = "channel-sms"
    twilio_auth_token: SecretStr = Field(
        description="Twilio auth token: verifies X-Twilio-Signature."
    )
    public_base_url: AnyHttpUrl = Field(
        description="The base URL Twilio calls (as typed in the Twilio console), e.g. "
        "https://hooks.example.com: Twilio signs the full public URL, which a proxy hides."
    )
