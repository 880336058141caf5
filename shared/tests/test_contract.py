"""The interaction contract: what it accepts, what it refuses and how it says so."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import bson
import pytest
from jsonschema import Draft202012Validator
from pydantic import ValidationError

from hilo.contract import (
    SCHEMA_VERSION,
    Campaign,
    Direction,
    Identifiers,
    Interaction,
    Money,
    OrderPlaced,
    OrderRefunded,
    UnsupportedSchemaVersion,
    conversation_id,
    display_name,
    heading_identifier,
    interaction_id,
    parse_interaction,
    versions,
)
from hilo.contract.outbound import OutboundMessage, Template
from hilo.testkit.samples import sample_interaction, sample_payloads


def as_document(interaction: Interaction) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(interaction.model_dump_json())
    return document


def errors_of(exc: pytest.ExceptionInfo[ValidationError]) -> list[tuple[str, str]]:
    return [(".".join(str(p) for p in e["loc"]), e["msg"]) for e in exc.value.errors()]


@pytest.mark.parametrize("kind", sorted(sample_payloads()))
def test_every_payload_type_round_trips_through_json(kind: str) -> None:
    interaction = sample_interaction(kind)

    parsed = parse_interaction(interaction.model_dump_json().encode())

    assert parsed == interaction
    assert parsed.payload.kind == kind
    assert parsed.type == f"dev.hilo.interaction.{kind}"


def test_cloudevents_attributes_are_serialised() -> None:
    document = as_document(sample_interaction("order", channel="store"))

    assert document["specversion"] == "1.0"
    assert document["type"] == "dev.hilo.interaction.order"
    assert document["time"] == document["occurred_at"]
    assert document["source"] == "/channels/store/test"
    assert document["schema_version"] == SCHEMA_VERSION


def test_money_is_exact_and_serialised_as_a_string() -> None:
    document = as_document(sample_interaction("order"))

    assert document["payload"]["total"] == {"amount": "59.90", "currency": "EUR"}


def test_naive_datetime_is_rejected() -> None:
    document = as_document(sample_interaction())
    document["occurred_at"] = "2026-11-02T10:30:00"
    del document["time"]

    with pytest.raises(ValidationError) as exc:
        Interaction.model_validate(document)

    assert errors_of(exc) == [("occurred_at", "Input should have timezone info")]


def test_time_that_disagrees_with_occurred_at_is_rejected() -> None:
    document = as_document(sample_interaction())
    document["time"] = "2020-01-01T00:00:00Z"

    with pytest.raises(ValidationError, match="time does not equal occurred_at"):
        Interaction.model_validate(document)


def test_time_in_another_timezone_for_the_same_instant_is_accepted() -> None:
    interaction = sample_interaction()
    document = as_document(interaction)
    document["time"] = interaction.occurred_at.astimezone(timezone(timedelta(hours=2))).isoformat()

    assert Interaction.model_validate(document) == interaction


def test_type_that_disagrees_with_payload_is_rejected() -> None:
    document = as_document(sample_interaction("message"))
    document["type"] = "dev.hilo.interaction.order"

    with pytest.raises(ValidationError, match=r"type does not match payload\.kind"):
        Interaction.model_validate(document)


def test_unknown_payload_kind_is_rejected_with_the_allowed_kinds() -> None:
    document = as_document(sample_interaction())
    document["payload"] = {"kind": "teleport", "where": "mars"}
    del document["type"]

    with pytest.raises(ValidationError) as exc:
        Interaction.model_validate(document)

    [(location, message)] = errors_of(exc)
    assert location == "payload"
    assert "'teleport'" in message
    assert "'message'" in message
    assert "'order'" in message


def test_bad_phone_is_rejected_without_echoing_it() -> None:
    with pytest.raises(ValidationError) as exc:
        Identifiers(phone="+34 000")

    assert errors_of(exc) == [("phone", "not a valid phone number for its country")]
    assert "000" not in str(exc.value)


def test_bad_email_is_rejected_without_echoing_it() -> None:
    with pytest.raises(ValidationError) as exc:
        Identifiers(email="ana.example.com")

    [(location, message)] = errors_of(exc)
    assert location == "email"
    assert message.startswith("not a valid email address")
    assert "ana.example.com" not in str(exc.value)


def test_an_event_needs_at_least_one_identifier() -> None:
    with pytest.raises(ValidationError, match="at least one identifier is required"):
        Identifiers()


def test_negative_money_is_rejected() -> None:
    with pytest.raises(ValidationError) as exc:
        Money.model_validate({"amount": "-1.00", "currency": "EUR"})

    assert errors_of(exc) == [("amount", "Input should be greater than or equal to 0")]


def test_missing_currency_is_rejected() -> None:
    with pytest.raises(ValidationError) as exc:
        Money.model_validate({"amount": "10.00"})

    assert errors_of(exc) == [("currency", "Field required")]


def test_unknown_currency_is_rejected() -> None:
    with pytest.raises(ValidationError, match="Invalid ISO 4217 currency code"):
        Money.model_validate({"amount": "10.00", "currency": "XYZ"})


def test_money_is_never_a_float() -> None:
    money = Money.model_validate({"amount": "0.1", "currency": "EUR"})

    assert money.amount == Decimal("0.1")
    assert isinstance(money.amount, Decimal)


def test_order_mixing_currencies_is_rejected() -> None:
    order = sample_payloads()["order"].model_dump()
    order["total"] = {"amount": "10", "currency": "USD"}

    with pytest.raises(ValidationError, match="all amounts must share one currency, got EUR, USD"):
        OrderPlaced.model_validate(order)


def test_store_pickup_needs_a_store() -> None:
    order = sample_payloads()["order"].model_dump()
    order.update(fulfilment="store_pickup", store_id=None)

    with pytest.raises(ValidationError, match="store_id is required for store_pickup"):
        OrderPlaced.model_validate(order)


def test_a_refund_in_a_store_names_it_and_shares_one_currency() -> None:
    refund = sample_payloads()["refund"].model_dump()
    nowhere = {**refund, "store_id": None}
    dollars = {**refund, "amount": {"amount": "10", "currency": "USD"}}
    online = {**refund, "refunded_via": "online", "store_id": None, "amount": None, "items": []}

    with pytest.raises(ValidationError, match="store_id is required for a refund paid back in"):
        OrderRefunded.model_validate(nowhere)
    with pytest.raises(ValidationError, match="all amounts must share one currency, got EUR, USD"):
        OrderRefunded.model_validate(dollars)
    whole = OrderRefunded.model_validate(online)
    assert (whole.amount, whole.items) == (None, []), "the whole order, by its id alone"
    assert "receipt_id" in whole.model_dump(mode="json")
    assert "till_id" not in whole.model_dump(mode="json"), "absent when not given"


def test_a_survey_answer_names_its_response_only_when_the_tool_gave_one() -> None:
    survey = sample_payloads()["survey_answer"]
    answered = survey.model_copy(update={"response_id": "resp_8f2c1a"})

    assert "response_id" not in survey.model_dump(mode="json"), "records as before without one"
    assert answered.model_dump(mode="json")["response_id"] == "resp_8f2c1a"


def test_survey_score_outside_its_scale_is_rejected() -> None:
    survey = sample_payloads()["survey_answer"].model_dump()
    survey["score"] = 11

    with pytest.raises(ValidationError, match="NPS score must be between 0 and 10"):
        type(sample_payloads()["survey_answer"]).model_validate(survey)


@pytest.mark.parametrize("kind", ["custom", "identify"])
def test_a_whole_number_past_what_mongodb_stores_is_read_as_a_float_and_stored(kind: str) -> None:
    """`JSON.stringify(1e19)` is `10000000000000000000`: read as an integer, MongoDB refused it
    (8 bytes at most) and the profile dead-lettered an event its channel had answered 200."""
    document = as_document(sample_interaction(kind))
    field = "properties" if kind == "custom" else "traits"
    document["payload"][field] = {"card": 10**19, "below": -(2**63) - 1, "largest": 2**63 - 1}

    payload = parse_interaction(json.dumps(document)).model_dump(mode="python")["payload"]

    assert payload[field] == {"card": 1e19, "below": -(2.0**63), "largest": 2**63 - 1}
    assert isinstance(payload[field]["largest"], int)
    bson.encode(payload)


@pytest.mark.parametrize(("kind", "field"), [("call", "duration_seconds")])
def test_a_count_past_what_mongodb_stores_is_refused(kind: str, field: str) -> None:
    payload = sample_payloads()[kind].model_dump()

    with pytest.raises(ValidationError, match=field):
        type(sample_payloads()[kind]).model_validate({**payload, field: 2**63})


def test_unknown_fields_are_rejected() -> None:
    document = as_document(sample_interaction())
    document["colour"] = "blue"

    with pytest.raises(ValidationError, match="colour"):
        Interaction.model_validate(document)


def test_event_ids_are_deterministic_per_channel_and_provider_message() -> None:
    assert interaction_id("whatsapp", "wamid.1") == interaction_id("whatsapp", "wamid.1")
    assert interaction_id("whatsapp", "wamid.1") != interaction_id("whatsapp", "wamid.2")
    assert interaction_id("whatsapp", "x") != interaction_id("sms", "x")
    assert interaction_id("web", "a:b") != interaction_id("web:a", "b")


def test_a_provider_retry_builds_an_identical_event_id() -> None:
    first = sample_interaction(provider_event_id="SM123", channel="sms")
    retry = sample_interaction(provider_event_id="SM123", channel="sms")

    assert first.id == retry.id
    assert first.id == interaction_id("sms", "SM123")


def test_conversation_ids_are_deterministic() -> None:
    assert conversation_id("email", "<a@b>") == conversation_id("email", "<a@b>")
    assert conversation_id("email", "<a@b>") != conversation_id("sms", "<a@b>")


def test_a_thread_naming_the_customer_gets_an_id_only_the_pepper_reproduces() -> None:
    """Without the key, hashing every phone number would recover the customer's from the id."""
    thread = "+14155552671:+34612345678"
    keyed = conversation_id("sms", thread, b"pepper-one-0123456789")

    assert keyed == conversation_id("sms", thread, b"pepper-one-0123456789")
    assert keyed != conversation_id("sms", thread)
    assert keyed != conversation_id("sms", thread, b"pepper-two-0123456789")
    assert str(uuid.UUID(keyed)) == keyed


def test_partition_key_is_the_strongest_identifier() -> None:
    identifiers = Identifiers(anonymous_id="anon-1", email="ana@example.com", loyalty_id="L-9")

    assert identifiers.partition_key() == b"loyalty_id:L-9"
    assert [kind.value for kind, _ in identifiers.pairs()] == [
        "loyalty_id",
        "email",
        "anonymous_id",
    ]


def test_a_newer_schema_version_is_refused_clearly() -> None:
    document = as_document(sample_interaction())
    document["schema_version"] = SCHEMA_VERSION + 1

    with pytest.raises(UnsupportedSchemaVersion, match="not readable by this build"):
        parse_interaction(json.dumps(document))


def test_upcasters_run_in_order_up_to_the_current_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(versions, "SCHEMA_VERSION", 3)
    monkeypatch.setitem(versions.UPCASTERS, 1, lambda doc: {**doc, "steps": ["1->2"]})
    monkeypatch.setitem(
        versions.UPCASTERS, 2, lambda doc: {**doc, "steps": [*doc["steps"], "2->3"]}
    )

    upcast = versions.upcast({"schema_version": 1})

    assert upcast == {"schema_version": 3, "steps": ["1->2", "2->3"]}


def test_a_missing_upcaster_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(versions, "SCHEMA_VERSION", 2)

    with pytest.raises(UnsupportedSchemaVersion, match="no upcaster from schema_version 1"):
        versions.upcast({"schema_version": 1})


def test_received_at_defaults_to_now() -> None:
    before = datetime.now(UTC)
    interaction = sample_interaction()

    assert before <= interaction.received_at <= datetime.now(UTC)


def test_a_customer_without_a_name_is_called_by_what_a_person_recognises_never_a_cookie() -> None:
    held = [("anonymous_id", "a1"), ("phone", "+34612345678"), ("email", "ana@example.com")]

    assert heading_identifier(held) == ("email", "ana@example.com")
    assert heading_identifier(held[:2]) == ("phone", "+34612345678")
    assert heading_identifier([("email", "a@example.com"), ("email", "b@example.com")]) == (
        "email",
        "a@example.com",
    )
    assert heading_identifier([("anonymous_id", "a1"), ("device_id", "d1")]) is None


def test_a_customer_is_called_by_name_else_first_and_last_never_by_a_blank() -> None:
    assert display_name({"name": "Ana García", "first_name": "Ana"}) == "Ana García"
    assert display_name({"name": "", "first_name": "Ana", "last_name": "García"}) == "Ana García"
    assert display_name({"name": "  ", "last_name": " García "}) == "García"
    assert display_name({"name": "", "first_name": " "}) is None
    assert display_name({"email": "ana@example.com"}) is None


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"medium": "email"}, "campaign_unnamed"),
        ({"name": "spring", "source": "ana@example.com"}, "campaign_personal"),
        ({"name": "spring", "source": "ana%40example.com"}, "campaign_personal"),
        ({"name": "call +34 612 34 56 78"}, "campaign_personal"),
        ({"name": " "}, "string_too_short"),
    ],
)
def test_a_campaign_names_itself_and_nobody(fields: dict[str, str], error: str) -> None:
    """It is published in the clear: it must say which campaign, and hold no address."""
    with pytest.raises(ValidationError) as refused:
        Campaign.model_validate(fields)

    assert [e["type"] for e in refused.value.errors()] == [error]
    if error != "string_too_short":
        published = Draft202012Validator(Campaign.model_json_schema())
        assert not published.is_valid(fields), "the published schema refuses it too"


def test_the_published_schema_wants_a_name_or_a_source_not_two_nulls() -> None:
    """Records carry `"name": null` when there is none: `required` alone would take that."""
    published = Draft202012Validator(Campaign.model_json_schema())

    assert not published.is_valid({"name": None, "source": None, "medium": "email"})
    assert published.is_valid({"name": None, "source": "newsletter", "medium": None})


@pytest.mark.parametrize(
    "fields",
    [
        {"name": "spring"},
        {"source": "newsletter", "medium": "email"},
        {"name": "2026-12-01"},
        {"name": "12345678901", "source": "google"},
        {"name": "\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff19"},
    ],
)
def test_a_campaign_both_the_reader_and_the_published_schema_take(fields: dict[str, str]) -> None:
    Campaign.model_validate(fields)
    Draft202012Validator(Campaign.model_json_schema()).validate(fields)


def test_only_the_companys_message_has_a_purpose_and_says_it_only_when_given() -> None:
    """A marketing message answers nobody (the agents' queue), so readers need to tell it; an
    inbound message saying one is a channel's mistake, refused before it is published."""
    message = sample_payloads()["message"]
    outbound = message.model_copy(update={"direction": Direction.OUTBOUND})

    with pytest.raises(ValidationError) as refused:
        type(message).model_validate({**message.model_dump(), "purpose": "service"})

    assert [e["type"] for e in refused.value.errors()] == ["purpose_inbound"]
    assert "purpose" not in json.loads(outbound.model_dump_json())
    marketing = type(message).model_validate({**outbound.model_dump(), "purpose": "marketing"})
    assert json.loads(marketing.model_dump_json())["purpose"] == "marketing"


@pytest.mark.parametrize("subject", ["Hi\r\nBcc: everyone@example.com", "Hi\nthere"])
def test_an_outbound_subject_of_more_than_one_line_is_refused(subject: str) -> None:
    """A line break in a subject would make another header of the mail: a command carrying one
    is unreadable (the channel dead-letters it and tells the agent), never sent."""
    with pytest.raises(ValidationError, match="subject"):
        OutboundMessage(text="Hi", subject=subject)

    assert OutboundMessage(text="Hi", subject="Your refund: order 1001").subject


def test_an_outbound_message_is_text_or_a_template_never_both() -> None:
    """WhatsApp sends the template and the journey recorded the text: words the customer never
    received. Only the desk published commands, and it refused both; an automation did not."""
    with pytest.raises(ValidationError, match="a message is text or a template, not both"):
        OutboundMessage(
            text="Your refund is approved", template=Template(name="refund_ok", language="en")
        )

    assert OutboundMessage(template=Template(name="refund_ok", language="en")).text is None


@pytest.mark.parametrize(
    ("kind", "change"),
    [
        ("identify", {"traits": {"plan\u0000": "gold"}}),
        ("custom", {"properties": {"ratio": "NaN"}}),
        ("custom", {"properties": {"big": "1e400"}}),
        ("survey_answer", {"score": "true"}),
    ],
)
def test_what_mongodb_or_json_cannot_hold_is_refused_before_it_is_published(
    kind: str, change: dict[str, Any]
) -> None:
    """A key holding NUL was published and then dead-lettered by every consumer that stores
    it; NaN and infinity were published as `null`; `true` was a CSAT of 1."""
    document = as_document(sample_interaction(kind))
    payload = json.dumps({**document["payload"], **change})
    for raw in ("NaN", "1e400", "true"):  # JSON's own spelling: unquoted
        payload = payload.replace(json.dumps(raw), raw)
    text = json.dumps({**document, "payload": "PAYLOAD"}).replace('"PAYLOAD"', payload)

    with pytest.raises(ValidationError):
        Interaction.model_validate_json(text)
    assert (
        Interaction.model_validate_json(json.dumps(document)).payload.kind
        == document["payload"]["kind"]
    )


def test_a_survey_score_written_as_a_whole_float_is_a_score() -> None:
    """JSON Schema's integer, which the published schema says, counts `4.0` as one: a record
    from a producer in another language that writes it so must still be read."""
    document = as_document(sample_interaction("survey_answer"))
    text = json.dumps(document).replace('"score": 9', '"score": 9.0')
    assert '"score": 9.0' in text

    assert Interaction.model_validate_json(text).payload.model_dump()["score"] == 9
