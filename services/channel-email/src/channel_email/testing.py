"""What the channel's tests share: the keys they configure it with, and its settings on the
test infrastructure built from them (each test module adds what its case needs)."""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from channel_email.settings import EmailSettings
from hilo.settings import HiloSettings

SIGNING_KEY = "key-mailgun-signing"
"""The Mailgun webhook signing key the tests sign routes and events with."""

API_KEY = "mta-key-1"
"""The key an MTA or SendGrid presents to the channel."""


def email_settings_for(settings: HiloSettings, **more: Any) -> EmailSettings:
    """The channel's settings on `settings`' infrastructure, with the tests' keys and `more`."""
    return EmailSettings.model_validate(
        {
            **settings.model_dump(),
            "mailgun_signing_key": SecretStr(SIGNING_KEY),
            "email_api_keys": [SecretStr(API_KEY)],
            **more,
        }
    )
