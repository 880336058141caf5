"""Settings of the email channel (environment variables, prefix `HILO_`)."""

from __future__ import annotations

from pydantic import Field, SecretStr

from hilo.channel import ChannelSettings
from hilo.settings import SecretList


class EmailSettings(ChannelSettings):
    service_name: str = "channel-email"
    http_port: int = Field(default=8084, ge=1, le=65535)
    max_body_bytes: int = Field(
        default=30_000_000, ge=1_024, description="Mail with attachments is large; 413 above this."
    )
    mailgun_signing_key: SecretStr = Field(
        description="Mailgun HTTP webhook signing key: verifies timestamp + token signatures."
    )
    mailgun_max_age_seconds: int = Field(
        default=900,
        ge=30,
        description="Signatures older (or further in the future) than this are refused, and "
        "tokens are remembered this long to refuse replays.",
    )
    email_api_keys: SecretList = Field(
        min_length=1,
        description="Keys for the raw MIME endpoint (X-API-Key) and SendGrid Inbound Parse "
        "(the password of the URL's HTTP Basic credentials).",
    )
