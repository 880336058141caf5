"""The AsyncAPI document: generated from the code, committed, served, and whole."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from jsonschema import Draft202012Validator

from hilo import asyncapi
from hilo.topics import REGISTRY
from hilo_devkit.asyncapi import MEASURES_SCHEMA_FILE, generate, render, render_measures_schema

ROOT = Path(__file__).resolve().parents[2]
COPIES = (
    ROOT / "docs" / "asyncapi.json",
    ROOT / "shared" / "src" / "hilo" / "contract" / "asyncapi.json",
)


def resolve(document: dict[str, Any], ref: str) -> Any:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def test_the_committed_and_packaged_documents_are_what_the_code_generates() -> None:
    for copy in COPIES:
        assert copy.read_text(encoding="utf-8") == render(), f"run `make schema`: {copy} is stale"


def test_the_committed_measures_schema_is_the_models() -> None:
    committed = (ROOT / "docs" / "schemas" / MEASURES_SCHEMA_FILE).read_text(encoding="utf-8")
    assert committed == render_measures_schema(), "run `make schema`"


def test_every_topic_is_a_channel_with_its_key_retention_and_schemas() -> None:
    document = generate()

    assert document["asyncapi"] == "3.0.0"
    assert set(document["channels"]) == {spec.topic.value for spec in REGISTRY}
    for spec in REGISTRY:
        channel = document["channels"][spec.topic.value]
        kafka = channel["bindings"]["kafka"]
        assert kafka["topicConfiguration"]["cleanup.policy"] == [spec.cleanup_policy]
        if spec.cleanup_policy == "delete":
            assert kafka["topicConfiguration"]["retention.ms"] == spec.retention_ms
        for reference in channel["messages"].values():
            message = resolve(document, reference["$ref"])
            assert message["bindings"]["kafka"]["key"]["description"] == spec.key
            Draft202012Validator.check_schema(message["payload"]["schema"])


def test_every_operation_points_at_a_channel_and_its_messages() -> None:
    document = generate()

    for name, operation in document["operations"].items():
        assert operation["action"] in {"send", "receive"}, name
        channel = resolve(document, operation["channel"]["$ref"])
        for reference in operation["messages"]:
            assert reference["$ref"].startswith(operation["channel"]["$ref"] + "/messages/")
            assert resolve(document, reference["$ref"]) in channel["messages"].values()
    senders = {name.split(".send.")[1] for name in document["operations"] if ".send." in name}
    assert senders == {spec.topic.value for spec in REGISTRY}, "every topic has a writer"


async def test_a_service_serves_it() -> None:
    app = asyncapi.asyncapi_router()
    from fastapi import FastAPI  # noqa: PLC0415

    served = FastAPI()
    served.include_router(app)
    transport = httpx.ASGITransport(app=served)
    async with httpx.AsyncClient(transport=transport, base_url="http://hilo") as client:
        answer = await client.get("/asyncapi.json")

    assert answer.status_code == 200
    assert answer.json() == generate()
