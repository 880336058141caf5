"""Settings of the social channel (environment variables, prefix `HILO_`)."""

from __future__ import annotations

from pydantic import Field, SecretStr

from hilo.channel import ChannelSettings


class SocialSettings(ChannelSettings):
    service_name: str = "channel-social"
    http_port: int = Field(default=8087, ge=1, le=65535)
    meta_app_secret: SecretStr = Field(
        description="Meta app secret: verifies X-Hub-Signature-256 on every notification."
    )
    meta_verify_token: SecretStr = Field(
        description="The verify token typed in the Meta app's Messenger/Instagram webhook setup."
    )
