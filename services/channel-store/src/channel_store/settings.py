"""Settings of the store channel (environment variables, prefix `HILO_`)."""

from __future__ import annotations

from pydantic import Field

from hilo.channel import ChannelSettings
from hilo.settings import SecretList


class StoreSettings(ChannelSettings):
    service_name: str = "channel-store"
    http_port: int = Field(default=8085, ge=1, le=65535)
    max_body_bytes: int = Field(
        default=20_000_000, ge=1_024, description="Larger uploads get 413 (split the CSV)."
    )
    store_api_keys: SecretList = Field(
        min_length=1, description="Comma-separated keys the POS systems send in X-API-Key."
    )
