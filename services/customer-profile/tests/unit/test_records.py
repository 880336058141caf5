"""The records analytics read: every kind the service writes fits its model, and the committed
schemas under docs/schemas are the models' (`make schema` after a deliberate change)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from customer_profile.adapters.erasures import Erasure
from customer_profile.domain.identity import Conflict
from customer_profile.domain.profile import ProfileView
from customer_profile.records import (
    ErasureRecord,
    MergeDecided,
    MergePublished,
    MergeRequested,
    ProfileAlias,
    ProfileSnapshot,
    SplitPublished,
    parse_record,
    schemas,
)
from customer_profile.service.merge_requests import decided_record
from customer_profile.service.pipeline import (
    alias_record,
    merge_record,
    merge_request_record,
    profile_snapshot,
)
from customer_profile.service.ports import StoredProfile
from customer_profile.service.privacy import erasure_record
from customer_profile.service.resolver import Merge
from hilo.contract.schema import render_schema

SCHEMAS = Path(__file__).resolve().parents[4] / "docs" / "schemas"
AT = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize("file", sorted(schemas()))
def test_committed_record_schemas_match_the_models(file: str) -> None:
    committed = (SCHEMAS / file).read_text(encoding="utf-8")
    assert committed == render_schema(schemas()[file]), f"run `make schema`: {file} is stale"


def test_each_record_written_fits_its_model() -> None:
    merge = parse_record("identity.merges", merge_record(Merge("c-1", ("c-2",), "e-1", AT)))
    request = merge_request_record(
        "r-1", Conflict("unverified_merge", "email", ("c-1", "c-2")), "e-2"
    )
    decided = decided_record("r-1", "confirmed", {"by": "agent-9", "at": AT})
    profile = StoredProfile("c-1", 3, AT, ["email:ana@example.com"], ["c-2"], ProfileView())

    assert isinstance(merge, MergePublished)
    assert merge.absorbed == ["c-2"]
    assert isinstance(parse_record("identity.merge_requests", request), MergeRequested)
    assert isinstance(parse_record("identity.merge_requests", decided), MergeDecided)
    assert isinstance(parse_record("profiles", profile_snapshot(profile)), ProfileSnapshot)
    assert isinstance(parse_record("profiles", alias_record("c-2", "c-1")), ProfileAlias)


def test_an_erasure_record_fits_its_model() -> None:
    erasure = Erasure("c-1", ["c-2"], AT, done=False, subjects=["s-1"])

    assert isinstance(parse_record("erasures", erasure_record(erasure)), ErasureRecord)


def test_a_field_the_model_does_not_know_is_refused() -> None:
    """The models forbid extra fields: a writer that adds one fails here until the model (and so
    the published schema) says what it is."""
    record = json.loads(merge_record(Merge("c-1", ("c-2",), "e-1", AT)))

    with pytest.raises(ValidationError, match="extra_forbidden"):
        parse_record("identity.merges", json.dumps({**record, "note": "x"}).encode())


def test_a_split_record_reads_as_a_split() -> None:
    record = {
        "type": "split",
        "split_id": "s-1",
        "kept": "c-1",
        "restored": "c-2",
        "undoes_event_id": "e-1",
        "by": "agent-9",
        "requested_at": AT.isoformat(),
    }
    assert isinstance(parse_record("identity.merges", json.dumps(record).encode()), SplitPublished)
