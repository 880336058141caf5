"""Logs never hold raw personal data."""

from __future__ import annotations

import json
import logging

import httpx
import pytest
import structlog
from bson.errors import InvalidDocument
from pydantic import BaseModel, ConfigDict, ValidationError
from pymongo.errors import BulkWriteError, OperationFailure, WriteError

from hilo.contract.identifiers import IdentifierKind
from hilo.logs import (
    configure_logging,
    error_text,
    exception_text,
    mask_personal_data,
    mask_text,
)
from hilo.settings import HiloSettings

PHONE = "+34612345678"
EMAIL = "ana.garcia@example.com"


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


@pytest.mark.parametrize(
    "text",
    [
        "ana@example.com+bo@example.org",  # glued: the second starts where the first ends
        "see x..bo@example.org",
        "a." * 50_000 + " bo@example.org",  # a long run before it is no address of its own
        "k" * 100 + "bo@example.org",  # an address longer than any: its last 64 are masked
    ],
)
def test_every_address_in_a_text_is_masked_however_it_is_surrounded(text: str) -> None:
    masked = mask_text(text)

    assert "bo@example.org" not in masked
    assert "@example.org" not in masked


def test_nested_structures_are_masked() -> None:
    event = masked(
        identifiers={"email": "ana@example.com", "loyalty_id": "L-1"},
        errors=[{"loc": "phone", "msg": "bad +34612345678"}],
    )

    assert event["identifiers"] == {"email": "a***@e***.com", "loyalty_id": "[redacted 3 chars]"}
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


@pytest.mark.parametrize(
    "kind", [k for k in IdentifierKind if k is not IdentifierKind.CUSTOMER_ID], ids=str
)
def test_a_field_named_after_any_kind_of_identifier_is_masked(kind: IdentifierKind) -> None:
    """A kind added to the contract is masked in logs without anyone listing it again."""
    assert masked(**{kind.value: "opaque-7f3a"}) == {kind.value: "[redacted 11 chars]"}


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
    configure_logging(HiloSettings(environment="test", service_name="test-logs", log_format="json"))

    structlog.get_logger("hilo.test").info("customer_seen", email="ana@example.com")
    logging.getLogger("aiokafka").warning("could not reach ana@example.com")

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["email"] == "a***@e***.com"
    assert lines[0]["service"] == "test-logs"
    assert lines[1]["event"] == "could not reach a***@e***.com"
    assert "ana@example.com" not in json.dumps(lines)


def test_identifier_keys_in_free_text_are_masked() -> None:
    """Stored identifiers are `kind:value`, and database errors quote them like that."""
    event = masked(
        event=f'dup key: {{ _id: "phone:{PHONE}" }} whatsapp_id:34612345678 '
        f"loyalty_id:LOY-000981 email:{EMAIL}"
    )

    assert event["event"] == (
        'dup key: { _id: "phone:+34***78" } whatsapp_id:[redacted] '
        "loyalty_id:[redacted] email:a***@e***.com"
    )


@pytest.mark.parametrize(
    "encoded",
    [
        "q=%2B34+612+345+678",  # a form: spaces as plus signs
        "q=%252B34%2520612%2520345%2520678",  # encoded twice
        "Phone:%2B34612345678",  # an identifier key in another case
    ],
)
def test_form_encoded_twice_encoded_and_capitalised_personal_data_is_masked(encoded: str) -> None:
    assert "612" not in str(masked(event=encoded)["event"])


def test_decoding_mangles_nothing_and_cannot_forge_a_line() -> None:
    assert masked(event="GET /files/a%2Fb%25c?page=2")["event"] == "GET /files/a%2Fb%25c?page=2"
    forged = str(masked(event="x%0Aemail%3Aana%40example.com")["event"])
    assert "\n" not in forged
    assert "ana@" not in forged


def test_percent_encoded_personal_data_is_masked() -> None:
    event = masked(event="GET /v1/customers/%2B34%20612%20345%20678?e=ana.garcia%40example.com")

    assert PHONE not in json.dumps(event)
    assert "612%20345" not in event["event"]  # type: ignore[operator]
    assert "ana.garcia" not in event["event"]  # type: ignore[operator]


def test_sets_objects_and_keys_in_any_case_are_masked() -> None:
    class Contact:
        def __repr__(self) -> str:
            return f"Contact({EMAIL})"

        __str__ = __repr__

    event = masked(seen={EMAIL}, contact=Contact(), Email=EMAIL, LOYALTY_ID="LOY-000981")

    assert event == {
        "seen": ["a***@e***.com"],
        "contact": "Contact(a***@e***.com)",
        "Email": "a***@e***.com",
        "LOYALTY_ID": "[redacted 10 chars]",
    }


def test_libraries_that_log_urls_or_documents_stay_quiet(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """httpx logs every request's URL at INFO: the agent desk's searches put phones there."""
    configure_logging(
        HiloSettings(
            environment="test", service_name="test-logs", log_format="json", log_level="DEBUG"
        )
    )
    client = httpx.Client(transport=httpx.MockTransport(lambda _: httpx.Response(404)))

    client.get("http://customer-profile/v1/customers/%2B34%20612%20345%20678")
    logging.getLogger("pymongo.command").debug('{"insert": "journey", "summary": "Ana Garcia"}')
    structlog.get_logger("hilo.test").debug("still_debugging")

    out = capsys.readouterr().out
    assert "HTTP Request" not in out  # httpx's line is not written at all
    # The phone's digits, not "612" alone: a timestamp's may hold that.
    assert "612 345" not in out
    assert "612%20345" not in out
    assert "Ana Garcia" not in out
    assert "still_debugging" in out


class _Customer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    age: int


def test_error_text_names_fields_and_codes_not_values() -> None:
    """What goes into dead-letter headers outlives every erasure."""
    refused = BulkWriteError(
        {
            "writeErrors": [
                {
                    "code": 11000,
                    "errmsg": f'E11000 duplicate key, dup key: {{ _id: "phone:{PHONE}" }}',
                    "keyValue": {"_id": f"phone:{PHONE}"},
                    "op": {"summary": "Ana Garcia wrote", "identifiers": {"email": EMAIL}},
                }
            ]
        }
    )
    failed = OperationFailure(f"bad document {EMAIL}", 2, {"errmsg": f"bad {EMAIL}"})
    try:
        _Customer.model_validate({"age": f"call {PHONE}", "name": "Ana Garcia"})
    except ValidationError as exc:
        invalid = exc

    unencodable = InvalidDocument(f"cannot encode object: {{'phone': '{PHONE}'}}, of type: X")
    texts = [error_text(refused), error_text(failed), error_text(invalid), error_text(unencodable)]

    assert texts[0] == "BulkWriteError: code 65, write errors 11000"
    assert texts[1] == "OperationFailure: code 2"
    assert texts[2].startswith("ValidationError: _Customer: age: Input should be a valid integer")
    assert "name: Extra inputs are not permitted" in texts[2]
    assert texts[3] == "InvalidDocument: cannot encode object"
    for text in texts:
        assert "612345" not in text
        assert "ana.garcia" not in text
        assert "Ana Garcia" not in text


def test_a_traceback_keeps_its_frames_but_not_the_documents_a_database_error_quotes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A write error's message quotes the documents it refused: a name and a street address
    that no pattern of `mask_text` recognises. uvicorn logs an unhandled one with its
    traceback ("Exception in ASGI application"), so the traceback is where it must go."""
    configure_logging(HiloSettings(environment="test", service_name="test-logs", log_format="json"))
    document = {"name": "Ana García", "address": "Calle Mayor 12, Madrid", "email": EMAIL}

    def find() -> None:
        raise KeyError("view")

    def store() -> None:
        try:
            find()
        except KeyError as missing:
            raise WriteError(f"write failed on {document}", 2, {"op": document}) from missing

    try:
        store()
    except WriteError:
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
        structlog.get_logger("hilo.test").exception("job_failed")

    out = capsys.readouterr().out
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 2
    for line in lines:
        assert "in store" in line["exception"], "the frames are kept"
        assert "WriteError: code 2" in line["exception"]
        assert "direct cause" in line["exception"]
    for quoted in ("Ana", "García", "Calle Mayor", "ana.garcia"):
        assert quoted not in out


def test_each_failure_of_an_exception_group_keeps_its_frames_and_loses_its_documents() -> None:
    document = {"name": "Ana García"}

    def save() -> None:
        raise WriteError(f"write failed on {document}", 2, {"op": document})

    def gather() -> None:
        failures: list[Exception] = []
        for task in (save, save):
            try:
                task()
            except WriteError as exc:
                failures.append(exc)
        raise ExceptionGroup("two saves failed", failures)

    try:
        gather()
    except ExceptionGroup as group:
        text = exception_text((type(group), group, group.__traceback__))

    assert "ExceptionGroup: two saves failed (2 sub-exceptions)" in text
    assert text.count("| WriteError: code 2") == 2
    assert text.count("in save") == 2
    assert "Ana" not in text


@pytest.mark.parametrize(
    "text",
    [
        "The 'To' number whatsapp:+34612345678 is not valid",  # Twilio's own words
        "calling tel:+34 612 34 56 78 failed",
        "SMS:34612345678",
        "to=whatsapp%3A%2B34612345678",
    ],
)
def test_a_number_behind_a_uri_scheme_is_masked(text: str) -> None:
    """The colon kept `_PHONE` off it: Twilio's WhatsApp party form went to the logs, and to
    the reason of a failed send the desk shows, whole."""
    assert "612345678" not in mask_text(text).replace(" ", "")


def test_keys_of_a_logged_map_and_a_from_field_are_masked() -> None:
    event = masked(counts={EMAIL: 1, f"phone:{PHONE}": 2}, From=PHONE)

    assert EMAIL not in json.dumps(event)
    assert PHONE not in json.dumps(event)
    assert event["From"] == "+34***78"
    alike = masked(counts={PHONE: 1, "+34600000078": 2})
    assert alike["counts"] == {"+34***78": 1, "+34***78 #2": 2}, "no entry lost"
