"""Checks that any channel's output honours the published contract.

Validating against the JSON Schema (not only the pydantic models) proves that consumers in other
languages, who only have the schema, can read what the channel publishes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from typing import Any

from aiokafka.structs import ConsumerRecord
from jsonschema import Draft202012Validator, FormatChecker

from hilo.contract import Identifiers
from hilo.contract.schema import (
    OUTBOUND_SCHEMA_FILE,
    SCHEMAS,
    SEALED_OUTBOUND_SCHEMA_FILE,
    interaction_json_schema,
    sealed_interaction_json_schema,
)
from hilo.mongo import create_mongo_client
from hilo.sealing import create_sealer
from hilo.settings import HiloSettings
from hilo.testkit.probes import read_topic
from hilo.topics import Topic, topic_name


@cache
def _validator(sealed: bool = False) -> Draft202012Validator:
    schema = sealed_interaction_json_schema() if sealed else interaction_json_schema()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FormatChecker())


def validate_against_schema(document: dict[str, Any], *, sealed: bool = False) -> None:
    """Raise `AssertionError` listing every way the document breaks the JSON Schema (the sealed
    one, as records are on `interactions`, or the interaction's, as they open)."""
    validator = _validator(sealed)
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        details = "; ".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)
        name = "sealed interaction" if sealed else "interaction"
        raise AssertionError(f"event does not match the {name} JSON Schema: {details}")


def validate_outbound_command(document: dict[str, Any], *, sealed: bool = False) -> None:
    """Raise `AssertionError` listing every way an outbound command breaks its JSON Schema (the
    sealed one, as records are on `outbound`, or the command's, as they open)."""
    file = SEALED_OUTBOUND_SCHEMA_FILE if sealed else OUTBOUND_SCHEMA_FILE
    validator = _file_validator(file)
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        details = "; ".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)
        raise AssertionError(f"command does not match {file}: {details}")


@cache
def _file_validator(file: str) -> Draft202012Validator:
    schema = SCHEMAS[file]()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FormatChecker())


async def opened_interactions(
    settings: HiloSettings, records: Sequence[ConsumerRecord[bytes, bytes]]
) -> list[dict[str, Any]]:
    """Records of `interactions` as a reader with the keys sees them, after checking each as a
    reader without them sees it: the sealed schema, no identifier in the key, the headers."""
    client = create_mongo_client(settings)
    try:
        sealer = create_sealer(settings, client)
        for record in records:
            validate_against_schema(json.loads(record.value or b"null"), sealed=True)
        opened = await sealer.open_all([record.value for record in records])
    finally:
        await client.close()
    documents = []
    for record, document in zip(records, opened, strict=True):
        assert isinstance(document, dict), f"a record does not open: {document}"
        validate_against_schema(document)
        headers = {name: value.decode() for name, value in record.headers}
        assert headers["ce_id"] == document["id"], "ce_id header differs from the event id"
        assert headers["ce_type"] == document["type"], "ce_type header differs from the type"
        assert headers["ce_source"] == document["source"], "ce_source header differs"
        assert headers["ce_specversion"] == "1.0", "ce_specversion header missing"
        strongest = Identifiers.model_validate(document["identifiers"]).partition_key()
        assert record.key == sealer.subject(strongest.decode()).encode(), (
            "record key is not the subject of the strongest identifier"
        )
        documents.append(document)
    return documents


async def published_interactions(settings: HiloSettings, expected: int) -> list[dict[str, Any]]:
    """What a channel put on `interactions`, checked and opened (`opened_interactions`)."""
    records = await read_topic(
        settings.kafka_bootstrap_servers,
        topic_name(Topic.INTERACTIONS, settings),
        expected=expected,
    )
    return await opened_interactions(settings, records)
