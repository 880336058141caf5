"""Settings of the WhatsApp channel (environment variables, prefix `HILO_`)."""

from __future__ import annotations

from pydantic import Field, SecretStr

from hilo.channel import ChannelSettings


class WhatsAppSettings(ChannelSettings):
    service_name: str = "channel-whatsapp"
    http_port: int = Field(default=8082, ge=1, le=65535)
    whatsapp_app_secret: SecretStr = Field(
        description="Meta app secret: verifies X-Hub-Signature-256 on every notification."
    )
    whatsapp_verify_token: SecretStr = Field(
        description="The token you typed in the Meta developer console for the webhook."
    )
