"""Settings of the agent desk (environment variables, prefix `HILO_`)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import AnyHttpUrl, BeforeValidator, Field, SecretStr, model_validator
from pydantic_settings import NoDecode

from hilo.settings import CommaSeparated, HiloSettings

REPLY_CHANNELS = ["whatsapp", "sms", "email", "messenger", "instagram"]


_NEXT_AGENT = re.compile(r",\s*(?=[^,:$\s]+:)")
"""A comma that starts another `agent-id:` entry: argon2 hashes have commas of their own
(`$m=65536,t=3,p=4$`, never followed by a colon), so splitting on every comma would cut each
hash in three."""


def _split_agents(value: object) -> object:
    if isinstance(value, str):
        return [entry.strip() for entry in _NEXT_AGENT.split(value) if entry.strip()]
    return value


AgentList = Annotated[list[SecretStr], NoDecode, BeforeValidator(_split_agents)]


class DeskSettings(HiloSettings):
    service_name: str = "agent-desk"
    http_host: str = Field(default="0.0.0.0", description="Address to listen on.")  # noqa: S104
    http_port: int = Field(default=8090, ge=1, le=65535)
    desk_agents: AgentList = Field(
        default_factory=list,
        description="Comma-separated `agent-id:argon2-hash` pairs, one per agent who may sign in "
        "(make a hash with `agent-desk hash-password`).",
    )
    desk_session_secret: SecretStr = Field(
        default=SecretStr(""),
        description="Signs the session cookie; a long random value, the same on every desk "
        "instance. Required outside development (a random one is made per run otherwise).",
    )
    desk_session_hours: float = Field(
        default=12.0, gt=0, le=24 * 30, description="How long a sign-in lasts."
    )
    desk_secure_cookies: bool | None = Field(
        default=None,
        description="Send the session cookie over HTTPS only; default: on in production.",
    )
    profile_api_url: AnyHttpUrl = Field(
        default=AnyHttpUrl("http://127.0.0.1:8080"), description="The customer-profile API."
    )
    profile_api_key: SecretStr = Field(
        default=SecretStr(""), description="One of the customer-profile service's API keys."
    )
    desk_reply_channels: CommaSeparated[str] = Field(
        default_factory=lambda: list(REPLY_CHANNELS),
        description="Channels agents may reply on (their channel services send `outbound`).",
    )
    whatsapp_window_hours: float = Field(
        default=24.0,
        gt=0,
        description="WhatsApp's customer-service window: free-form replies only this long after "
        "the customer's last message; an approved template after that.",
    )
    desk_live_buffer: int = Field(
        default=20_000,
        ge=100,
        le=1_000_000,
        description="Journey entries kept in memory so a page that reconnects gets what it "
        "missed; older gaps reload the timeline.",
    )

    @model_validator(mode="after")
    def _secrets_in_production(self) -> DeskSettings:
        if self.environment == "production" and len(self.desk_session_secret) < 32:
            raise ValueError("set HILO_DESK_SESSION_SECRET to 32+ random characters in production")
        return self

    @property
    def secure_cookies(self) -> bool:
        if self.desk_secure_cookies is None:
            return self.environment == "production"
        return self.desk_secure_cookies

    @property
    def whatsapp_window(self) -> timedelta:
        return timedelta(hours=self.whatsapp_window_hours)
