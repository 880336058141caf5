"""API keys for Hilo's own HTTP endpoints (the profile API, store and contact-centre feeds).

Keys travel in `X-API-Key`; several may be valid at once so they can be rotated without
downtime, and each is compared in constant time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated

from fastapi import HTTPException, Security
from fastapi.security import APIKeyHeader
from pydantic import SecretStr

from hilo.webhook import secrets_match

API_KEY_HEADER = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="One of the service's `HILO_API_KEYS`."
)


class ApiKeyRefused(HTTPException):
    """401: no key, or none of the service's. Its own class so that a channel app counts and
    answers it as every other refusal (`hilo.channel`); elsewhere it is FastAPI's 401."""

    def __init__(self) -> None:
        super().__init__(
            status_code=401,
            detail="missing or unknown API key (header X-API-Key)",
            headers={"WWW-Authenticate": "APIKey"},
        )


def check_api_key(keys: Sequence[str], given: str | None) -> None:
    """401 unless `given` is one of `keys`."""
    if not any(secrets_match(expected, given) for expected in keys):
        raise ApiKeyRefused


def require_api_key(keys: Sequence[SecretStr]) -> Callable[[str | None], None]:
    """A FastAPI dependency accepting any of `keys` in `X-API-Key`."""
    plain = [key.get_secret_value() for key in keys]

    def require(given: Annotated[str | None, Security(API_KEY_HEADER)]) -> None:
        check_api_key(plain, given)

    return require
