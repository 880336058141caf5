"""Settings of the agent desk (environment variables, prefix `HILO_`)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import AnyHttpUrl, BeforeValidator, Field, SecretStr, model_validator
from pydantic_settings import NoDecode

from agent_desk.policy import ADDRESS_KINDS
from hilo.contract import IdentifierKind
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
        "instance. Required unless HILO_ENVIRONMENT is development or test (a random one is "
        "made per run then).",
    )
    desk_session_hours: float = Field(
        default=12.0, gt=0, le=24 * 30, description="How long a sign-in lasts."
    )
    desk_secure_cookies: bool | None = Field(
        default=None,
        description="Send the session cookie over HTTPS only; default: on unless "
        "HILO_ENVIRONMENT is development or test.",
    )
    profile_api_url: AnyHttpUrl = Field(
        default=AnyHttpUrl("http://127.0.0.1:8080"), description="The customer-profile API."
    )
    profile_api_key: SecretStr = Field(
        default=SecretStr(""),
        description="One of the customer-profile service's API keys; of a comma-separated "
        "list (its `HILO_API_KEYS` during a rotation, the new key first), the first.",
    )
    desk_reply_channels: CommaSeparated[str] = Field(
        default_factory=lambda: list(REPLY_CHANNELS),
        description="Channels agents may reply on (their channel services send `outbound`).",
    )
    desk_reply_addresses: dict[str, list[IdentifierKind]] = Field(
        default_factory=dict,
        description="JSON object, per channel the identifier kinds it reaches a customer at, most "
        'specific first, merged over the built-in ones, e.g. {"rcs": ["phone"]}: a new sending '
        "channel needs no change to the desk.",
    )
    whatsapp_window_hours: float = Field(
        default=24.0,
        gt=0,
        description="WhatsApp's customer-service window: free-form replies only this long after "
        "the customer's last message; an approved template after that.",
    )
    meta_window_hours: float = Field(
        default=24.0,
        gt=0,
        description="Messenger's and Instagram's window for a reply after the customer's last "
        "message: 24 hours, or 168 (7 days) when channel-social sends with Meta's HUMAN_AGENT tag "
        "(HILO_META_HUMAN_AGENT). Meta refuses a reply after it.",
    )
    desk_reply_waiting_seconds: float = Field(
        default=60.0,
        gt=0,
        description="A queued reply its channel has not recorded after this long is shown as "
        "not confirmed yet, saying why it may wait (its service down, behind, or retrying).",
    )
    desk_first_reply_minutes: float = Field(
        default=60.0,
        ge=0,
        description="The company's target for answering a customer: one waiting longer is "
        "shown overdue in the queue and on their page. 0: no target.",
    )
    desk_queue_metrics_seconds: float = Field(
        default=30.0,
        ge=0,
        description="How often the desk reads the queue for its gauges (customers waiting, "
        "overdue, nobody's, the longest wait: `hilo_desk_queue_*` on /metrics). 0: never; "
        "else at least 1 (each read is up to 5 requests to the profile service).",
    )
    desk_live_buffer: int = Field(
        default=20_000,
        ge=100,
        le=1_000_000,
        description="Journey entries kept in memory so a page that reconnects gets what it "
        "missed; older gaps reload the timeline.",
    )

    @property
    def address_kinds(self) -> dict[str, tuple[str, ...]]:
        """Per channel, the identifier kinds a reply on it goes to (`policy.ADDRESS_KINDS`,
        with `desk_reply_addresses` over them)."""
        configured = {
            channel: tuple(kind.value for kind in kinds)
            for channel, kinds in self.desk_reply_addresses.items()
        }
        return {**ADDRESS_KINDS, **configured}

    @model_validator(mode="after")
    def _every_reply_channel_has_an_address(self) -> DeskSettings:
        """A reply channel the desk cannot address would never show in the reply box."""
        if missing := sorted(set(self.desk_reply_channels) - self.address_kinds.keys()):
            raise ValueError(
                f"HILO_DESK_REPLY_CHANNELS names {', '.join(missing)}: say which identifiers "
                'reach a customer there in HILO_DESK_REPLY_ADDRESSES, e.g. {"rcs": ["phone"]}'
            )
        return self

    @model_validator(mode="after")
    def _queue_read_now_and_then(self) -> DeskSettings:
        """Each read of the queue is up to 5 requests to the profile service, per replica."""
        if 0 < self.desk_queue_metrics_seconds < 1:
            raise ValueError("HILO_DESK_QUEUE_METRICS_SECONDS: 0 (never), or 1 or more")
        return self

    @model_validator(mode="after")
    def _secrets_unless_development(self) -> DeskSettings:
        """Outside a run that says it is a development one, as `HiloSettings` treats its pepper:
        a deployment that sets no environment is a real one."""
        if not self.explicitly_development and len(self.desk_session_secret) < 32:
            raise ValueError(
                "set HILO_DESK_SESSION_SECRET to 32+ random characters (a development run: "
                "HILO_ENVIRONMENT=development)"
            )
        return self

    @property
    def secure_cookies(self) -> bool:
        if self.desk_secure_cookies is None:
            return not self.explicitly_development
        return self.desk_secure_cookies

    @property
    def reply_windows(self) -> dict[str, timedelta]:
        """Per channel, how long after the customer's last message a free-form reply may go."""
        meta = timedelta(hours=self.meta_window_hours)
        whatsapp = timedelta(hours=self.whatsapp_window_hours)
        return {"whatsapp": whatsapp, "messenger": meta, "instagram": meta}
