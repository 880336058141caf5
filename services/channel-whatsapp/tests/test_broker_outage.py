"""Kafka down: the webhook answers 503 (so Meta retries) and nothing is lost once it is back."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
from pydantic import SecretStr

from channel_whatsapp.app import create_app
from channel_whatsapp.settings import WhatsAppSettings
from hilo.contract import interaction_id
from hilo.settings import HiloSettings
from hilo.testkit.local_infra import LocalKafka
from hilo.testkit.probes import read_topic
from hilo.testkit.signing import meta_signed
from hilo.topics import Topic, ensure_topics, topic_name

SAMPLES = Path(__file__).parent / "samples"


async def test_503_while_kafka_is_down_and_the_retry_is_published(
    settings: HiloSettings, tmp_path: Path
) -> None:
    kafka = LocalKafka(tmp_path)
    await asyncio.to_thread(kafka.format_storage)
    await asyncio.to_thread(kafka.start)
    try:
        local = WhatsAppSettings.model_validate(
            {
                **settings.model_dump(),
                "kafka_bootstrap_servers": kafka.bootstrap_servers,
                "kafka_publish_timeout_seconds": 3.0,
                "whatsapp_app_secret": SecretStr("secret"),
                "whatsapp_verify_token": SecretStr("token"),
            }
        )
        await ensure_topics(local)
        body = (SAMPLES / "text_message.json").read_bytes()
        app = create_app(local)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://w") as client:
                await asyncio.to_thread(kafka.stop)
                down = await client.post(
                    "/webhooks/whatsapp", content=body, headers=meta_signed(body, "secret")
                )
                ready = await client.get("/health/ready")
                await asyncio.to_thread(kafka.start)
                retried = await client.post(
                    "/webhooks/whatsapp", content=body, headers=meta_signed(body, "secret")
                )

        assert down.status_code == 503
        assert down.headers["Retry-After"] == "5"
        assert ready.status_code == 503
        assert retried.status_code == 200
        records = await read_topic(
            kafka.bootstrap_servers, topic_name(Topic.INTERACTIONS, local), expected=1
        )
        ids = {json.loads(r.value)["id"] for r in records}
        assert ids == {
            interaction_id(
                "whatsapp", "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA="
            )
        }
    finally:
        kafka.stop()
