"""Settings of the WhatsApp channel (environment variables, prefix `HILO_`)."""

from __future__ import annotations

from pydantic import Field, SecretStr

from hilo.providers.meta import MetaChannelSettings


class WhatsAppSettings(MetaChannelSettings):
    service_name: str = "channel-whatsapp"
    http_port: int = Field(default=8082, ge=1, le=65535)
    whatsapp_app_secret: SecretStr = Field(
        description="Meta app secret: verifies X-Hub-Signature-256 on every notification."
    )
    whatsapp_verify_token: SecretStr = Field(
        description="The token you typed in the Meta developer console for the webhook."
    )
    whatsapp_access_token: SecretStr | None = Field(
        default=None,
        description="Optional. Cloud API access token (a system user's) to send agents' replies; "
        "without it and HILO_WHATSAPP_PHONE_NUMBER_ID, replies are reported failed as not "
        "configured.",
    )
    whatsapp_phone_number_id: str | None = Field(
        default=None,
        pattern=r"^\d*$",
        max_length=30,
        description="Phone number ID of the business number that sends (WhatsApp Manager → API "
        "Setup), not the phone number itself.",
    )
    whatsapp_graph_url: str = Field(
        default="https://graph.facebook.com",
        pattern=r"^https?://",
        description="Base URL of Meta's Graph API (a local stand-in in tests).",
    )
    whatsapp_api_version: str = Field(
        default="v23.0", pattern=r"^v\d+\.\d+$", description="Graph API version sent to."
    )
