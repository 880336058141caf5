"""Settings of the WhatsApp channel (environment variables, prefix `HILO_`)."""

from __future__ import annotations

from pydantic import Field, SecretStr

from hilo.channel import ChannelSettings


class WhatsAppSettings(ChannelSettings):
    service_name: str = "channel-whatsapp"
    http_port: int = Field(default=8082, ge=1, le=65535)
    max_body_bytes: int = Field(
        default=3_000_000,
        ge=1_024,
        description="Meta batches up to 1,000 changes in one notification, of up to 3 MB: one "
        "refused with 413 is posted again for 7 days, then dropped, every message in it.",
    )
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
