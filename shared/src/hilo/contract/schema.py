"""The published JSON Schema of the interaction contract.

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

SCHEMA_FILE = f"interaction.v{SCHEMA_VERSION}.schema.json"


def interaction_json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a serialised interaction, as consumers read it."""
    schema = Interaction.model_json_schema(mode="serialization")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def render() -> str:
    """The schema as the committed file holds it: stable key order, trailing newline."""
    return (
        json.dumps(interaction_json_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Write the interaction JSON Schema.")
    parser.add_argument("directory", type=Path, help="where to write " + SCHEMA_FILE)
    args = parser.parse_args()
    target = args.directory / SCHEMA_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render(), encoding="utf-8")
    print(f"wrote {target}")  # noqa: T201


if __name__ == "__main__":
    main()
