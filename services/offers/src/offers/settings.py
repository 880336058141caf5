"""Settings of the offers service (environment variables, prefix `HILO_`)."""

from __future__ import annotations

from pydantic import AnyHttpUrl, Field, SecretStr

from hilo.settings import HiloSettings, SecretList


class OffersSettings(HiloSettings):
    service_name: str = "offers"
    http_host: str = Field(default="0.0.0.0", description="Address the HTTP API listens on.")  # noqa: S104
    http_port: int = Field(default=8095, ge=1, le=65535)
    api_keys: SecretList = Field(
        default_factory=list,
        description="Comma-separated keys that may ask for quotes and a customer's offers "
        "(`X-API-Key`): what channels and tills get. Required outside development.",
    )
    admin_api_keys: SecretList = Field(
        default_factory=list,
        description="Comma-separated keys that may read and change prices and promotions (the "
        "admin API); the quote keys cannot. Required outside development.",
    )
    profile_api_url: AnyHttpUrl = Field(
        default=AnyHttpUrl("http://127.0.0.1:8080"),
        description="The customer-profile API, which quotes read customer facts from.",
    )
    profile_api_key: SecretStr = Field(
        default=SecretStr(""),
        description="One of the customer-profile service's API keys; of a comma-separated "
        "list (its `HILO_API_KEYS` during a rotation, the new key first), the first.",
    )
    offers_outbox_seconds: float = Field(
        default=5.0,
        gt=0,
        le=3_600,
        description="How often versions stored but not yet on the `offers` topic (Kafka failed "
        "after MongoDB took them) are published again.",
    )

    def open_api_refusal(self) -> str | None:
        """Why the API must not be served without keys, or None when it may.

        Anyone could change prices, and quotes read customers' profiles: without
        `HILO_API_KEYS` it is served only when the run says explicitly that it is a development
        or test one; an unset environment is not enough.
        """
        if self.api_keys and self.admin_api_keys:
            return None
        if self.explicitly_development:
            return None
        return (
            "HILO_API_KEYS or HILO_ADMIN_API_KEYS is empty: anyone could ask for quotes or change "
            "prices. Set both, or set HILO_ENVIRONMENT=development for a development run."
        )
