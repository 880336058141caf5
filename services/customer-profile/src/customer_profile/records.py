"""What the customer-profile service publishes, as analytics reads it: one model per kind of
record on `identity.merges`, `identity.merge_requests` and `profiles`, and the `journey` entry.

The records are written by the functions next to the code that decides them (`merge_record`,
`split_record`, `profile_snapshot`, ...); these models describe them. A test holds every record
those functions write to its model (extra fields forbidden, so the two cannot drift), and
`make schema` publishes the models' JSON Schemas under docs/schemas, where the compatibility
check guards them like the interaction contract's.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from customer_profile.domain.journey import JourneyEntry
from customer_profile.domain.profile import ProfileView
from hilo.contract.personal import JOURNEY_FIELDS
from hilo.contract.schema import SEALED_PART, drop_property, published, render_schema

RECORDS_VERSION = 1
"""The version of these records' schemas (the file names carry it)."""


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class MergePublished(_Record):
    """Profiles merged into a survivor: their history is the survivor's from now on."""

    type: Literal["merge"]
    survivor: str = Field(description="The customer id that remains.")
    absorbed: list[str] = Field(description="Customer ids merged into it (now aliases of it).")
    event_id: str = Field(description="The interaction that proved them one person.")
    occurred_at: datetime


class SplitPublished(_Record):
    """A merge undone, or someone else's identifiers moved out: `restored` is a profile again."""

    type: Literal["split"]
    split_id: str
    kept: str = Field(description="The customer id that keeps the rest.")
    restored: str = Field(description="The customer id given back its own history.")
    undoes_event_id: str | None = Field(description="The merge's event, when a merge is undone.")
    by: str = Field(description="Who asked (an agent or an API client).")
    requested_at: datetime


IdentityMergeRecord = Annotated[MergePublished | SplitPublished, Field(discriminator="type")]
"""A record of `identity.merges` (key: the surviving or kept customer id)."""


class MergeRequested(_Record):
    """A merge that only an untrusted source asked for, waiting for a person to decide."""

    type: Literal["requested"]
    request_id: str
    reason: str = Field(
        description="Why it waits: `unverified_merge` or `kept_apart` (two or more customers), "
        "or `unverified_attach` (identifiers an unverified source would add to the one "
        "customer in `customer_ids`)."
    )
    customer_ids: list[str]
    event_id: str


class MergeDecided(_Record):
    """The decision on a request (its reason stays in MongoDB: free text may name a person), or
    its withdrawal: an erasure of a customer it involved deleted it, decided or not (`by` null,
    `at` when the erasure was asked for)."""

    type: Literal["confirmed", "rejected", "withdrawn"]
    request_id: str
    by: str | None
    at: datetime | None


MergeRequestRecord = Annotated[MergeRequested | MergeDecided, Field(discriminator="type")]
"""A record of `identity.merge_requests` (key: the request id)."""


class ProfileSnapshot(_Record):
    """The latest state of a customer on the compacted `profiles` topic (key: customer id)."""

    customer_id: str
    version: int = Field(
        description="Grows with every change of the profile in one database (a rebuild starts "
        "again from 1): the latest record of a key is the current one, as compaction keeps it."
    )
    identifiers: list[str] = Field(
        description="`kind:value` (e.g. `phone:+34612345678`): personal data, in the clear on "
        "this compacted topic; an erasure's tombstone removes them."
    )
    merged_from: list[str]
    view: ProfileView | None


class ProfileAlias(_Record):
    """A profile merged away, on `profiles` under its old id: read it as the profile it went
    into. That one may have been merged away since (its own record is then an alias too):
    follow `merged_into` until a record without it."""

    customer_id: str
    merged_into: str


ProfileRecord = ProfileSnapshot | ProfileAlias
"""A record of `profiles`; a null value (tombstone) is an erased or removed customer."""


class ErasureRecord(_Record):
    """An erasure, kept for good on the compacted `erasures` topic (key: the erased customer id):
    no personal data, enough for every instance and a rebuild to keep the person erased."""

    customer_id: str
    aliases: list[str] = Field(description="Customer ids merged into the erased one.")
    subjects: list[str] = Field(
        description="The subjects (HMAC-SHA256 pseudonyms) of the person's identifiers: their "
        "keys are deleted, so their sealed records cannot be opened any more."
    )
    erased_at: datetime


RECORDS: dict[str, Any] = {
    "identity.merges": IdentityMergeRecord,
    "identity.merge_requests": MergeRequestRecord,
    "profiles": ProfileRecord,
    "erasures": ErasureRecord,
}
"""Each topic's record type, by its registry name."""


def record_json_schema(topic: str) -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of one topic's records, as readers get them."""
    schema = TypeAdapter(RECORDS[topic]).json_schema(mode="serialization")
    return published(
        {"title": topic, **schema}, f"https://hilo.dev/schemas/{topic}.v{RECORDS_VERSION}.json"
    )


def journey_json_schema() -> dict[str, Any]:
    """JSON Schema of a `journey` record (key: customer id): a journey entry whose personal
    fields (`hilo.contract.personal.JOURNEY_FIELDS`: the identifiers, the summary, the thread,
    the payload's personal fields) are taken out and sealed."""
    schema = JourneyEntry.model_json_schema(mode="serialization")
    for path in JOURNEY_FIELDS:
        if len(path) == 1:
            drop_property(schema, path[0])
    schema["properties"]["sealed"] = SEALED_PART
    schema["required"] = sorted({*schema["required"], "sealed"})
    return published(
        {**schema, "title": "SealedJourneyEntry"},
        f"https://hilo.dev/schemas/journey.sealed.v{RECORDS_VERSION}.json",
    )


def schemas() -> dict[str, dict[str, Any]]:
    """Every record schema this service publishes, by the file name docs/schemas holds it in."""
    files = {
        f"{topic}.v{RECORDS_VERSION}.schema.json": record_json_schema(topic) for topic in RECORDS
    }
    return {**files, f"journey.sealed.v{RECORDS_VERSION}.schema.json": journey_json_schema()}


def write_schemas(directory: Path) -> list[Path]:
    written = []
    for file, schema in schemas().items():
        target = directory / file
        target.write_text(render_schema(schema), encoding="utf-8")
        written.append(target)
    return written


def parse_record(topic: str, value: bytes) -> Any:
    """A record of `topic` read into its model (ValidationError when it is not one)."""
    return TypeAdapter(RECORDS[topic]).validate_json(value)


def main() -> None:
    parser = argparse.ArgumentParser(description="Write the profile service's record schemas.")
    parser.add_argument("directory", type=Path, help="where to write " + ", ".join(schemas()))
    for target in write_schemas(parser.parse_args().directory):
        print(f"wrote {target}")  # noqa: T201


if __name__ == "__main__":
    main()
