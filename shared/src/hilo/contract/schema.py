"""The published JSON Schemas of the contract: interactions and outbound commands, each as it
opens and as it is on its topic (sealed).

Analytics and channel teams in other languages build on the committed file under
`docs/schemas/`; a test fails when it and the models disagree. Regenerate with
`make schema` after a deliberate contract change (and bump the version if it breaks readers).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from hilo.contract.interaction import SCHEMA_VERSION, Interaction
from hilo.contract.outbound import OUTBOUND_SCHEMA_VERSION, OutboundCommand
from hilo.contract.personal import PAYLOAD_FIELDS

SCHEMA_FILE = f"interaction.v{SCHEMA_VERSION}.schema.json"
SEALED_SCHEMA_FILE = f"interaction.sealed.v{SCHEMA_VERSION}.schema.json"
OUTBOUND_SCHEMA_FILE = f"outbound.v{OUTBOUND_SCHEMA_VERSION}.schema.json"
SEALED_OUTBOUND_SCHEMA_FILE = f"outbound.sealed.v{OUTBOUND_SCHEMA_VERSION}.schema.json"


def published(schema: dict[str, Any], schema_id: str | None = None) -> dict[str, Any]:
    """A model's JSON Schema as Hilo publishes it: draft 2020-12, with its `$id` when given,
    and open. The models forbid fields they do not know (what Hilo writes is exact), but a
    published schema is what readers validate with, and a version may gain optional fields
    (`hilo.contract.compatibility`): a closed object would make a reader refuse them."""
    identity = {"$id": schema_id} if schema_id else {}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **identity,
        **open_schema(schema),
    }


def open_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with every `additionalProperties: false` left out (maps of values stay typed)."""
    opened: dict[str, Any] = _opened(schema)
    return opened


def _opened(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            key: _opened(value)
            for key, value in node.items()
            if not (key == "additionalProperties" and value is False)
        }
    if isinstance(node, list):
        return [_opened(value) for value in node]
    return node


def render_schema(document: dict[str, Any]) -> str:
    """A schema (or any published document) as the committed file holds it: stable key order,
    trailing newline, so that a test can compare it byte for byte."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def interaction_json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a serialised interaction, as consumers read it."""
    return published(Interaction.model_json_schema(mode="serialization"))


def sealed_interaction_json_schema() -> dict[str, Any]:
    """JSON Schema of an interaction as it is on `interactions`: the personal fields
    (`hilo.contract.personal`) taken out and sealed (`hilo.sealing`), the rest in the clear."""
    schema = interaction_json_schema()
    schema["title"] = "SealedInteraction"
    drop_property(schema, "identifiers")
    drop_property(schema["$defs"]["Conversation"], "thread")
    for definition in schema["$defs"].values():
        kind = definition.get("properties", {}).get("kind", {}).get("const")
        for name in PAYLOAD_FIELDS.get(kind, ()):
            drop_property(definition, name)
    schema["properties"]["sealed"] = SEALED_PART
    schema["required"] = sorted({*schema.get("required", []), "sealed"})
    return schema


def outbound_json_schema() -> dict[str, Any]:
    """JSON Schema of an outbound command (a message to send), as it opens."""
    return published(OutboundCommand.model_json_schema(mode="serialization"))


def sealed_outbound_json_schema() -> dict[str, Any]:
    """JSON Schema of an outbound command as it is on `outbound`: recipient, thread, text,
    subject and template sealed (`hilo.contract.personal.OUTBOUND_FIELDS`)."""
    schema = outbound_json_schema()
    schema["title"] = "SealedOutboundCommand"
    drop_property(schema, "identifiers")
    drop_property(schema["$defs"]["Conversation"], "thread")
    for name in (*PAYLOAD_FIELDS["message"], "template"):
        drop_property(schema["$defs"]["OutboundMessage"], name)
    schema["$defs"].pop("Template", None)
    schema["properties"]["sealed"] = SEALED_PART
    schema["required"] = sorted({*schema.get("required", []), "sealed"})
    return schema


SEALED_PART: dict[str, Any] = {
    "title": "Sealed",
    "description": "The personal fields as one AES-256-GCM encrypted JSON object (`data`, "
    "bound to the event id) whose data key is wrapped under the key of each subject (`keys`: "
    "subject -> nonce + wrapped key, base64). A subject is the HMAC-SHA256 of an identifier "
    "under the deployment's secret; erasing a person deletes their subjects' keys.",
    "type": "object",
    "properties": {
        "v": {"const": 1},
        "alg": {"const": "A256GCM"},
        "nonce": {"type": "string", "contentEncoding": "base64"},
        "data": {"type": "string", "contentEncoding": "base64"},
        "keys": {
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"pattern": "^[0-9a-f]{64}$"},
            "additionalProperties": {"type": "string", "contentEncoding": "base64"},
        },
    },
    "required": ["v", "alg", "nonce", "data", "keys"],
}


def drop_property(definition: dict[str, Any], name: str) -> None:
    """Take a property out of a schema definition (a field sealed away), required or not."""
    definition.get("properties", {}).pop(name, None)
    if name in definition.get("required", []):
        definition["required"] = [field for field in definition["required"] if field != name]


SCHEMAS = {
    SCHEMA_FILE: interaction_json_schema,
    SEALED_SCHEMA_FILE: sealed_interaction_json_schema,
    OUTBOUND_SCHEMA_FILE: outbound_json_schema,
    SEALED_OUTBOUND_SCHEMA_FILE: sealed_outbound_json_schema,
}


def render(file: str = SCHEMA_FILE) -> str:
    """A schema as the committed file holds it."""
    return render_schema(SCHEMAS[file]())


def main() -> None:
    parser = argparse.ArgumentParser(description="Write the contract's JSON Schemas.")
    parser.add_argument("directory", type=Path, help="where to write " + ", ".join(SCHEMAS))
    args = parser.parse_args()
    for file in SCHEMAS:
        target = args.directory / file
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(render(file), encoding="utf-8")
        print(f"wrote {target}")  # noqa: T201


if __name__ == "__main__":
    main()
