"""Reading interactions of any published schema version.

Events stay on Kafka for weeks and are replayed to rebuild journeys, so a consumer must read every
version ever published. Each breaking change bumps `SCHEMA_VERSION` and registers an upcaster that
turns a version-N document into version N+1; readers always see the current model.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pydantic import TypeAdapter, ValidationError

from hilo.contract.interaction import SCHEMA_VERSION, Interaction

Document = dict[str, Any]
Upcaster = Callable[[Document], Document]

UPCASTERS: dict[int, Upcaster] = {}
"""`UPCASTERS[n]` turns a version-n document into version n+1. Empty while only v1 exists."""

_ADAPTER: TypeAdapter[Interaction] = TypeAdapter(Interaction)


class UnsupportedSchemaVersion(ValueError):
    """The document claims a version this code cannot read (newer, or with no upcaster)."""


def upcast(document: Document) -> Document:
    """Bring a decoded document up to the current schema version."""
    version = document.get("schema_version", SCHEMA_VERSION)
    if not isinstance(version, int) or version > SCHEMA_VERSION or version < 1:
        raise UnsupportedSchemaVersion(f"schema_version {version!r} is not readable by this build")
    while version < SCHEMA_VERSION:
        step = UPCASTERS.get(version)
        if step is None:
            raise UnsupportedSchemaVersion(f"no upcaster from schema_version {version}")
        document = step(document)
        version += 1
        document["schema_version"] = version
    return document


def parse_interaction(raw: bytes | str) -> Interaction:
    """Validate one serialised interaction of any supported version.

    Raises `pydantic.ValidationError`, `UnsupportedSchemaVersion` or `ValueError` (not JSON).
    """
    try:
        return _ADAPTER.validate_json(raw)
    except ValidationError:
        document = json.loads(raw)
        if not isinstance(document, dict) or document.get("schema_version") == SCHEMA_VERSION:
            raise
        return _ADAPTER.validate_python(upcast(document))
