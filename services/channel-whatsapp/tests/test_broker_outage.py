"""Kafka down: the webhook answers 503 (so Meta retries) and nothing is lost once it is back."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from channel_whatsapp.app import create_app
from channel_whatsapp.settings import WhatsAppSettings
from hilo.contract import interaction_id
from hilo.settings import HiloSettings
from hilo.testkit.signing import meta_signed
from hilo_devkit.channel_contract import ProviderRequest, assert_refused_while_kafka_is_down

SAMPLES = Path(__file__).parent / "samples"


async def test_503_while_kafka_is_down_and_the_retry_is_published(
    settings: HiloSettings, tmp_path: Path
) -> None:
    channel_settings = WhatsAppSettings.model_validate(
        {
            **settings.model_dump(),
            "whatsapp_app_secret": SecretStr("secret"),
            "whatsapp_verify_token": SecretStr("token"),
        }
    )
    body = (SAMPLES / "text_message.json").read_bytes()
    request = ProviderRequest("/webhooks/whatsapp", body, meta_signed(body, "secret"))

    events = await assert_refused_while_kafka_is_down(
        create_app, channel_settings, request, tmp_path
    )

    assert {event["id"] for event in events} == {
        interaction_id("whatsapp", "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=")
    }
