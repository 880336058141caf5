"""Settings of the social channel (environment variables, prefix `HILO_`)."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator

from hilo.providers.meta import MetaChannelSettings
from hilo.settings import CommaSeparated

MIN_REF_PREFIX = 3


class SocialSettings(MetaChannelSettings):
    service_name: str = "channel-social"
    http_port: int = Field(default=8087, ge=1, le=65535)
    meta_app_secret: SecretStr = Field(
        description="Meta app secret: verifies X-Hub-Signature-256 on every notification."
    )
    meta_verify_token: SecretStr = Field(
        description="The verify token typed in the Meta app's Messenger/Instagram webhook setup."
    )
    messenger_page_access_token: SecretStr | None = Field(
        default=None,
        description="Optional. The Page access token (pages_messaging) that sends agents' "
        "Messenger replies; without it Messenger replies are reported failed as not configured.",
    )
    instagram_access_token: SecretStr | None = Field(
        default=None,
        description="Optional. The token that sends agents' Instagram replies: the Page access "
        "token of the Page linked to the account (instagram_manage_messages), or an Instagram "
        "user token with HILO_INSTAGRAM_GRAPH_URL=https://graph.instagram.com; without it "
        "Instagram replies are reported failed as not configured.",
    )
    social_campaign_refs: CommaSeparated[str] = Field(
        default_factory=list,
        description="The `ref`s of your `m.me`/`ig.me` links (a flyer's QR code) that name a "
        "campaign: each exact, or a prefix ending in `*` (`spring-*`). A conversation opened by "
        "such a link carries it as its campaign, in the clear; any other `ref` (anyone can put "
        "one on a link, a customer's token too) names none.",
        examples=[["spring-flyer", "store-qr-*"]],
    )

    @field_validator("social_campaign_refs")
    @classmethod
    def _no_catch_all(cls, refs: list[str]) -> list[str]:
        """A prefix of fewer than 3 characters (`*` alone) would take nearly every ref, a
        customer's token in a link included, and publish it."""
        if short := [r for r in refs if r.endswith("*") and len(r) < MIN_REF_PREFIX + 1]:
            raise ValueError(
                f"a ref prefix needs at least {MIN_REF_PREFIX} characters before `*`: {short}"
            )
        return refs

    instagram_account_id: str = Field(
        default="me",
        pattern=r"^(me|\d{1,30})$",
        description="Who sends Instagram replies: `me` (the token's Page or account) or the "
        "Instagram professional account's ID.",
    )
    meta_graph_url: str = Field(
        default="https://graph.facebook.com",
        pattern=r"^https?://",
        description="Base URL of Meta's Graph API for Messenger (a local stand-in in tests).",
    )
    instagram_graph_url: str = Field(
        default="https://graph.facebook.com",
        pattern=r"^https?://",
        description="Base URL for Instagram replies: graph.facebook.com with a Page token, "
        "graph.instagram.com with an Instagram user token.",
    )
    meta_api_version: str = Field(
        default="v23.0", pattern=r"^v\d+\.\d+$", description="Graph API version sent to."
    )
    meta_human_agent: bool = Field(
        default=False,
        description="The Meta app was granted the Human Agent feature (App Review): agents' "
        "replies are tagged HUMAN_AGENT and reach the customer up to 7 days after their last "
        "message, not only 24 hours.",
    )
