"""Checks that any channel's output honours the published contract.

Validating against the JSON Schema (not only the pydantic models) proves that consumers in other
languages, who only have the schema, can read what the channel publishes.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

from hilo.contract.schema import interaction_json_schema
from hilo.settings import HiloSettings
from hilo.testkit.probes import read_topic
from hilo.topics import Topic, topic_name


@cache
def _validator() -> Draft202012Validator:
    schema = interaction_json_schema()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FormatChecker())


def validate_against_schema(document: dict[str, Any]) -> None:
    """Raise `AssertionError` listing every way the document breaks the JSON Schema."""
    errors = sorted(_validator().iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        details = "; ".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)
        raise AssertionError(f"event does not match the interaction JSON Schema: {details}")


async def published_interactions(settings: HiloSettings, expected: int) -> list[dict[str, Any]]:
    """What a channel put on `interactions`, each checked against the JSON Schema."""
    records = await read_topic(
        settings.kafka_bootstrap_servers,
        topic_name(Topic.INTERACTIONS, settings),
        expected=expected,
    )
    documents = [json.loads(record.value or b"null") for record in records]
    for document in documents:
        validate_against_schema(document)
    return documents
