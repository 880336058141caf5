"""A published schema version only ever gains what a tolerant reader ignores.

Each file under docs/schemas is compared with the file as it was first committed (its release):
a change that would break a reader of that release fails here, until the version is bumped (a new
file) and an upcaster is registered for the old one.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from hilo.contract.compatibility import breaking_changes
from hilo.contract.schema import interaction_json_schema
from hilo.contract.versions import UPCASTERS

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "docs" / "schemas"
ACCEPTED_BREAKS = {
    "interaction.sealed.v1.schema.json": {
        # ce48a7e, the day v1 of the sealed form was published (2836ffe) and before any release:
        # a page's path and title can carry an email or a name, so they moved into the sealed
        # part. A reader finds them there once it opens the record (hilo.sealing).
        "$.payload<page_view>.path: removed",
        "$.payload<page_view>.title: removed",
        # A provider's message id can give the person away (a WhatsApp wamid is base64 of a key
        # holding their number; Messenger builds ids from their page-scoped id), and it stayed
        # readable after an erasure deleted their keys. Sealed like the text: the opened record
        # (interaction.v1) is unchanged, and only a reader without keys loses the id.
        "$.payload<message>.provider_message_id: removed",
        "$.payload<message>.reply_to_provider_message_id: removed",
        "$.payload<message_status>.provider_message_id: removed",
        # A page's or screen's name is often its content (`analytics.page(document.title)`,
        # "Orders of Ana García"): sealed with its title, which it mostly repeats.
        "$.payload<page_view>.name: removed",
    },
    "outbound.sealed.v1.schema.json": {
        # The same: the message a reply answers is named by the provider's id.
        "$.payload.reply_to_provider_message_id: removed",
        # And the thread's earlier ids (email `References`): the desk sent up to 19 WhatsApp
        # wamids there with every reply, each holding the customer's number, readable on
        # `outbound` and `outbound.dlq` after an erasure. Sealed; the opened command is the same.
        "$.payload.references: removed",
    },
}
"""Breaks made knowingly, with why; anything else fails."""
VERSIONED = re.compile(r"^(?P<name>[a-z.]+)\.v(?P<version>\d+)\.schema\.json$")


def first_published(path: Path) -> dict[str, Any] | None:
    """The file as the commit that added it had it; None outside a git checkout."""
    git = shutil.which("git")
    relative = path.relative_to(ROOT).as_posix()
    if git is None or not (ROOT / ".git").exists():
        return None
    added = subprocess.run(
        [git, "log", "--diff-filter=A", "--format=%H", "--", relative],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    if not added:
        return None
    shown = subprocess.run(
        [git, "show", f"{added[-1]}:{relative}"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    document: dict[str, Any] = json.loads(shown)
    return document


@pytest.mark.parametrize("path", sorted(SCHEMAS.glob("*.schema.json")), ids=lambda p: p.name)
def test_no_published_schema_broke_its_readers(path: Path) -> None:
    released = first_published(path)
    if released is None:
        pytest.skip("not committed yet (or no git history): nothing released to break")
    found = breaking_changes(released, json.loads(path.read_text()))
    problems = [problem for problem in found if problem not in ACCEPTED_BREAKS.get(path.name, ())]
    assert not problems, (
        f"{path.name} would break readers of its release: bump the schema version (a new file), "
        "register an upcaster for the old one, and keep the old file:\n  " + "\n  ".join(problems)
    )


def test_every_superseded_interaction_version_has_an_upcaster() -> None:
    versions = sorted(
        int(match["version"])
        for path in SCHEMAS.glob("interaction.v*.schema.json")
        if (match := VERSIONED.match(path.name))
    )
    assert versions, "no interaction schema published"
    assert all(version in UPCASTERS for version in versions[:-1]), (versions, sorted(UPCASTERS))


@pytest.fixture
def schema() -> dict[str, Any]:
    return interaction_json_schema()


def test_a_removed_field_breaks_readers(schema: dict[str, Any]) -> None:
    changed = copy.deepcopy(schema)
    del changed["properties"]["source"]

    assert breaking_changes(schema, changed) == ["$.source: removed"]


def test_an_added_optional_field_does_not(schema: dict[str, Any]) -> None:
    changed = copy.deepcopy(schema)
    changed["properties"]["campaign"] = {"type": "string", "description": "new"}

    assert breaking_changes(schema, changed) == []


def test_a_required_field_made_optional_breaks_readers(schema: dict[str, Any]) -> None:
    changed = copy.deepcopy(schema)
    changed["required"] = [name for name in changed["required"] if name != "time"]

    assert breaking_changes(schema, changed) == ["$.time: was required, now optional"]


def test_a_type_change_inside_a_payload_kind_breaks_readers(schema: dict[str, Any]) -> None:
    changed = copy.deepcopy(schema)
    order = changed["$defs"]["OrderPlaced"]["properties"]
    order["order_id"] = {"type": "integer"}

    problems = breaking_changes(schema, changed)

    assert problems == ["$.payload<order>.order_id: type ['string'] became ['integer']"]


def test_a_removed_payload_kind_breaks_readers_and_a_new_one_does_not(
    schema: dict[str, Any],
) -> None:
    removed = copy.deepcopy(schema)
    del removed["properties"]["payload"]["discriminator"]["mapping"]["order"]
    added = copy.deepcopy(schema)
    added["properties"]["payload"]["discriminator"]["mapping"]["return"] = "#/$defs/OrderPlaced"

    assert breaking_changes(schema, removed) == ["$.payload: kind 'order' removed"]
    assert breaking_changes(schema, added) == []


UNION: dict[str, Any] = {
    "anyOf": [{"$ref": "#/$defs/Snapshot"}, {"$ref": "#/$defs/Alias"}],
    "$defs": {
        "Snapshot": {
            "type": "object",
            "properties": {
                "customer_id": {"type": "string"},
                "total": {"anyOf": [{"$ref": "#/$defs/Money"}, {"type": "null"}]},
            },
            "required": ["customer_id"],
        },
        "Alias": {"type": "object", "properties": {"merged_into": {"type": "string"}}},
        "Money": {"type": "object", "properties": {"amount": {"type": "string"}}},
    },
}


def test_a_field_removed_inside_a_union_or_an_optional_model_breaks_readers() -> None:
    removed = copy.deepcopy(UNION)
    del removed["$defs"]["Snapshot"]["properties"]["customer_id"]
    nested = copy.deepcopy(UNION)
    del nested["$defs"]["Money"]["properties"]["amount"]
    branch = copy.deepcopy(UNION)
    branch["anyOf"] = branch["anyOf"][:1]

    assert breaking_changes(UNION, removed) == ["$.customer_id: removed"]
    assert breaking_changes(UNION, nested) == ["$.total.amount: removed"]
    assert breaking_changes(UNION, branch) == ["$: branch Alias removed"]
    assert breaking_changes(UNION, copy.deepcopy(UNION)) == []


def test_a_type_no_longer_constrained_breaks_readers() -> None:
    old = {"type": "object", "properties": {"score": {"type": "integer"}}}
    new = {"type": "object", "properties": {"score": {}}}

    assert breaking_changes(old, new) == ["$.score: type ['integer'] no longer constrained"]
