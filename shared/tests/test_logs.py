"""Logs never hold raw personal data."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from hilo.logs import configure_logging, mask_personal_data
from hilo.settings import HiloSettings


def masked(**event: object) -> dict[str, object]:
    return dict(mask_personal_data(None, "info", dict(event)))


def test_personal_fields_are_masked_whatever_they_hold() -> None:
    event = masked(email="ana.garcia@example.com", phone="+34612345678", text="Hola, soy Ana")

    assert event == {
        "email": "a***@e***.com",
        "phone": "+34***78",
        "text": "[redacted 13 chars]",
    }


def test_personal_data_inside_free_text_is_masked() -> None:
    event = masked(event="lookup failed for ana.garcia@example.com from +34 612 34 56 78")

    assert event["event"] == "lookup failed for a***@e***.com from +34***78"


def test_nested_structures_are_masked() -> None:
    event = masked(
        identifiers={"email": "ana@example.com", "loyalty_id": "L-1"},
        errors=[{"loc": "phone", "msg": "bad +34612345678"}],
    )

    assert event["identifiers"] == {"email": "a***@e***.com", "loyalty_id": "L-1"}
    assert event["errors"] == [{"loc": "phone", "msg": "bad +34***78"}]


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-23T21:18:17.123Z",
        "batch took 2026 ms at 21:18:17",
        "listening on 127.0.0.1:38205",
        "event 6f0c5d8e-3a7b-5c1e-9d2f-4b8a1e7c0d93 stored",
        "offset 12345678",
    ],
)
def test_dates_times_addresses_and_ids_are_not_mistaken_for_phones(text: str) -> None:
    assert masked(event=text)["event"] == text


def test_ids_and_counts_pass_untouched() -> None:
    event = masked(event_id="6f0c5d8e-3a7b-5c1e-9d2f-4b8a1e7c0d93", count=3, topic="journey")

    assert event == {
        "event_id": "6f0c5d8e-3a7b-5c1e-9d2f-4b8a1e7c0d93",
        "count": 3,
        "topic": "journey",
    }


def test_configured_pipeline_masks_structlog_and_stdlib_records(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(HiloSettings(service_name="test-logs", log_format="json"))

    structlog.get_logger("hilo.test").info("customer_seen", email="ana@example.com")
    logging.getLogger("aiokafka").warning("could not reach ana@example.com")

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["email"] == "a***@e***.com"
    assert lines[0]["service"] == "test-logs"
    assert lines[1]["event"] == "could not reach a***@e***.com"
    assert "ana@example.com" not in json.dumps(lines)
