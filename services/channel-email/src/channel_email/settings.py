"""Settings of the email channel (environment variables, prefix `HILO_`)."""

from __future__ import annotations

from email.utils import getaddresses

from pydantic import AnyHttpUrl, Field, SecretStr, field_validator, model_validator

from hilo.channel import ChannelSettings
from hilo.settings import SecretList


class EmailSettings(ChannelSettings):
    service_name: str = "channel-email"
    http_port: int = Field(default=8084, ge=1, le=65535)
    max_body_bytes: int = Field(
        default=30_000_000, ge=1_024, description="Mail with attachments is large; 413 above this."
    )
    bodies_in_flight_bytes: int = Field(
        default=60_000_000,
        ge=1_024,
        description="Bodies of Mailgun route posts one instance holds at once, in all, before "
        "their signatures are checked (Mailgun signs fields inside the form; parsing one "
        "costs up to 4 times its size): a post that would go past it is answered 503, and "
        "Mailgun posts it again minutes later. At least HILO_MAX_BODY_BYTES.",
    )
    body_read_seconds: float = Field(
        default=60.0,
        gt=0,
        le=3_600,
        description="How long a Mailgun post's body may take to arrive whole before it is "
        "answered 408 and what it held given back (a caller that sends part, then nothing).",
    )
    mailgun_signing_key: SecretStr = Field(
        description="Mailgun HTTP webhook signing key: verifies timestamp + token signatures."
    )
    mailgun_max_age_seconds: int = Field(
        default=9 * 3600,
        ge=30,
        description="Signatures older (or further in the future) than this are refused, and "
        "tokens are remembered this long so a replay publishes nothing. Mailgun retries with "
        "the first signature for 8 hours: a shorter window loses mail sent during an outage.",
    )
    email_api_keys: SecretList = Field(
        min_length=1,
        description="Keys for the raw MIME endpoint (X-API-Key) and SendGrid Inbound Parse "
        "(the password of the URL's HTTP Basic credentials).",
    )
    mailgun_api_key: SecretStr | None = Field(
        default=None,
        description="Mailgun private API key, to send outbound email (not the webhook signing "
        "key). Without this, HILO_MAILGUN_DOMAIN and HILO_EMAIL_FROM, email replies are "
        "reported failed as not configured.",
    )
    mailgun_domain: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$",
        description="Mailgun sending domain of outbound email, e.g. mg.shop.example.",
    )
    mailgun_api_url: AnyHttpUrl = Field(
        default=AnyHttpUrl("https://api.mailgun.net"),
        description="Mailgun's API; a domain in Mailgun's EU region: https://api.eu.mailgun.net.",
    )
    email_from: str | None = Field(
        default=None,
        max_length=320,
        description='Sender of outbound email, e.g. "Support <support@shop.example>": an '
        "address whose replies come back in through this channel.",
    )
    email_default_subject: str = Field(
        default="Message from customer service",
        min_length=1,
        max_length=998,
        description="Subject of an outbound email whose command gives none.",
    )

    @model_validator(mode="after")
    def _budget_takes_a_mail(self) -> EmailSettings:
        """A budget smaller than one mail would answer that mail 503 until Mailgun gives up
        (8 hours), where 413 would say at once that it is too large."""
        if self.bodies_in_flight_bytes < self.max_body_bytes:
            raise ValueError("HILO_BODIES_IN_FLIGHT_BYTES must be at least HILO_MAX_BODY_BYTES")
        return self

    @field_validator("email_from")
    @classmethod
    def _one_address(cls, value: str | None) -> str | None:
        """Refused at start rather than by Mailgun on every send."""
        if value is None:
            return None
        addresses = [address for _name, address in getaddresses([value]) if address]
        if len(addresses) != 1 or "@" not in addresses[0] or "\n" in value or "\r" in value:
            raise ValueError('must be one address, e.g. "Support <support@shop.example>"')
        return value
