"""Where the platform is and the secrets it expects: the same variables the services read.

`make run` writes them to `.hilo/platform.env`; in docker-compose the `demo` profile passes the
same `.env` the services get, plus the services' addresses.
"""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from hilo.settings import DEVELOPMENT_PEPPER


def _url(service: str, default_port: int) -> Any:
    return Field(
        default=f"http://127.0.0.1:{default_port}",
        validation_alias=AliasChoices("HILO_URL_" + service.upper().replace("-", "_")),
    )


def _first_secret(name: str) -> Any:
    return Field(validation_alias=AliasChoices(name))


class SimulatorSettings(BaseSettings):
    model_config = SettingsConfigDict(
        extra="ignore", frozen=True, populate_by_name=True, env_ignore_empty=True
    )

    customers: int = Field(default=20, ge=1, le=10_000, validation_alias="HILO_SIM_CUSTOMERS")
    seed: int = Field(default=7, validation_alias="HILO_SIM_SEED")
    concurrency: int = Field(default=4, ge=1, le=64, validation_alias="HILO_SIM_CONCURRENCY")
    readback_timeout_seconds: float = Field(
        default=120.0, gt=0, validation_alias="HILO_SIM_READBACK_TIMEOUT_SECONDS"
    )

    profile_url: str = _url("customer-profile", 8080)
    web_url: str = _url("channel-web", 8081)
    whatsapp_url: str = _url("channel-whatsapp", 8082)
    sms_url: str = _url("channel-sms", 8083)
    email_url: str = _url("channel-email", 8084)
    store_url: str = _url("channel-store", 8085)
    voice_url: str = _url("channel-voice", 8086)
    social_url: str = _url("channel-social", 8087)
    offers_url: str = _url("offers", 8095)
    analytics_url: str = _url("journey-analytics", 8096)

    api_key: SecretStr = _first_secret("HILO_API_KEYS")
    web_write_key: SecretStr = _first_secret("HILO_WEB_WRITE_KEYS")
    whatsapp_app_secret: SecretStr = _first_secret("HILO_WHATSAPP_APP_SECRET")
    twilio_auth_token: SecretStr = _first_secret("HILO_TWILIO_AUTH_TOKEN")
    email_api_key: SecretStr = _first_secret("HILO_EMAIL_API_KEYS")
    store_api_key: SecretStr = _first_secret("HILO_STORE_API_KEYS")
    voice_api_key: SecretStr = _first_secret("HILO_VOICE_API_KEYS")
    meta_app_secret: SecretStr = _first_secret("HILO_META_APP_SECRET")
    offers_api_key: SecretStr = _first_secret("HILO_OFFERS_API_KEYS")
    subject_pepper: SecretStr = Field(
        default=SecretStr(DEVELOPMENT_PEPPER), validation_alias="HILO_SUBJECT_PEPPER"
    )
    """The deployment's pepper: the simulated contact centre names the chat a call continues
    by its conversation id, which the channels key with it."""
    sms_public_url: str | None = Field(default=None, validation_alias="HILO_SIM_SMS_PUBLIC_URL")
    voice_public_url: str | None = Field(default=None, validation_alias="HILO_SIM_VOICE_PUBLIC_URL")

    @field_validator(
        "api_key",
        "web_write_key",
        "email_api_key",
        "store_api_key",
        "voice_api_key",
        "offers_api_key",
        mode="before",
    )
    @classmethod
    def _first_of_list(cls, value: object) -> object:
        """Services accept comma-separated keys; the simulator uses the first."""
        return value.split(",")[0].strip() if isinstance(value, str) else value
