"""The email channel under test: its settings (Mailgun's signing key, the MTA's API key) and an
in-process client of its app, on the real broker and database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import SecretStr

from channel_email.app import create_app
from channel_email.settings import EmailSettings
from hilo.settings import HiloSettings
from hilo_devkit.channel_contract import channel_client

SIGNING_KEY = "key-mailgun-signing"
API_KEY = "mta-key-1"


@pytest.fixture
def email_settings(settings: HiloSettings) -> EmailSettings:
    return EmailSettings.model_validate(
        {
            **settings.model_dump(),
            "mailgun_signing_key": SecretStr(SIGNING_KEY),
            "email_api_keys": [SecretStr(API_KEY)],
            "max_body_bytes": 50_000,
        }
    )


@pytest.fixture
async def email(
    email_settings: EmailSettings, topics: list[str]
) -> AsyncIterator[httpx.AsyncClient]:
    async with channel_client(create_app(email_settings)) as client:
        yield client
