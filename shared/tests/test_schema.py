"""The committed JSON Schema is the published contract: it must match the models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hilo.contract.personal import PAYLOAD_FIELDS
from hilo.contract.schema import SCHEMAS, interaction_json_schema, render
from hilo.outbound import command_record
from hilo.sealing import InMemoryKeys, Sealer
from hilo.testkit.contract_check import validate_against_schema, validate_outbound_command
from hilo.testkit.samples import sample_command, sample_interaction, sample_payloads

SCHEMA_DIRECTORY = Path(__file__).resolve().parents[2] / "docs" / "schemas"


@pytest.mark.parametrize("file", SCHEMAS)
def test_committed_schema_matches_the_models(file: str) -> None:
    assert (SCHEMA_DIRECTORY / file).read_text(encoding="utf-8") == render(file), (
        "the contract changed: run `make schema`, review the diff, and bump the schema version "
        "if existing readers would break"
    )


def test_every_payload_kind_says_which_of_its_fields_are_personal() -> None:
    assert set(PAYLOAD_FIELDS) == set(sample_payloads())


def test_schema_names_every_payload_kind() -> None:
    schema = interaction_json_schema()
    kinds = set(schema["properties"]["payload"]["discriminator"]["mapping"])

    assert kinds == set(sample_payloads())


def test_schema_requires_the_cloudevents_attributes() -> None:
    required = set(interaction_json_schema()["required"])

    assert {"id", "source", "type", "time", "specversion", "occurred_at", "payload"} <= required


def test_serialised_events_validate_against_the_schema() -> None:
    for kind in sample_payloads():
        validate_against_schema(json.loads(sample_interaction(kind).model_dump_json()))


@pytest.mark.parametrize("file", sorted(p.name for p in SCHEMA_DIRECTORY.glob("*.json")))
def test_a_field_added_later_in_the_version_is_accepted_by_a_reader_of_the_schema(
    file: str,
) -> None:
    """Readers validate with the published files, and a version may gain optional fields
    (`hilo.contract.compatibility`): no object of a published schema is closed to them."""
    closed = [
        path
        for path, node in _objects(json.loads((SCHEMA_DIRECTORY / file).read_text()))
        if node.get("additionalProperties") is False
    ]
    event = json.loads(sample_interaction("message").model_dump_json())

    validate_against_schema({**event, "added_later": 1, "payload": {**event["payload"], "x": 2}})
    assert closed == []


def _objects(node: object, path: str = "$") -> list[tuple[str, dict[str, object]]]:
    if isinstance(node, dict):
        found = [(path, node)]
        for key, value in node.items():
            found += _objects(value, f"{path}.{key}")
        return found
    if isinstance(node, list):
        return [found for i, item in enumerate(node) for found in _objects(item, f"{path}[{i}]")]
    return []


async def test_outbound_commands_validate_sealed_on_the_topic_and_opened() -> None:
    sealer = Sealer(InMemoryKeys(), b"pepper-for-the-schema-test")
    command = sample_command("whatsapp", text="Your order is ready, Ana.")
    record = await command_record(command, sealer)
    sealed = json.loads(record.value or b"null")

    validate_outbound_command(sealed, sealed=True)
    (opened,) = await sealer.open_all([record.value])
    assert isinstance(opened, dict)
    validate_outbound_command(opened)
    assert "Ana" not in (record.value or b"").decode()
    with pytest.raises(AssertionError, match="payload"):
        validate_outbound_command({**opened, "payload": {"kind": "message"}})
