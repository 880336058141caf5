"""Settings of the web channel (environment variables, prefix `HILO_`)."""

from __future__ import annotations

from pydantic import Field, field_validator

from hilo.channel import ChannelSettings
from hilo.settings import CommaSeparated, SecretList


class WebSettings(ChannelSettings):
    service_name: str = "channel-web"
    http_port: int = Field(default=8081, ge=1, le=65535)
    max_body_bytes: int = Field(
        default=1_000_000,
        ge=1_024,
        description="Segment's SDKs fill a batch up to about 500 KB (analytics-java: 512,000 "
        "bytes, with its envelope); a batch refused with 413 is dropped, not retried.",
    )
    web_write_keys: SecretList = Field(
        min_length=1,
        description="Comma-separated write keys of your sources (analytics.js, iOS, Android): "
        "each SDK sends its key as HTTP Basic user name. These keys are public (they ship in "
        "the page or the app), so their calls are unverified: they never merge two known "
        "customers on their own.",
    )
    web_verified_write_keys: SecretList = Field(
        default_factory=list,
        description="Comma-separated write keys of server-side sources that keep them secret "
        "(your backend after sign-in): their calls are verified and may merge two known customers.",
    )
    web_cors_origins: CommaSeparated[str] = Field(
        default_factory=lambda: ["*"],
        description="Comma-separated origins whose pages may read the collector's answers "
        "(`*`: any, as Segment's API allows; `none`: no CORS headers at all). analytics.js sends "
        "every call again "
        "whose answer the browser hides from it. Write keys are public either way: this guards "
        "nothing but the reading of answers.",
    )

    @field_validator("web_cors_origins")
    @classmethod
    def _none_is_no_origin(cls, origins: list[str]) -> list[str]:
        """`none` turns CORS off: an empty variable means the default, as every setting's."""
        return [] if [origin.strip().lower() for origin in origins] == ["none"] else origins
