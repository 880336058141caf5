"""Crypto-shredding without I/O: what a sealed record shows, who opens it, after erasure nobody."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from jsonschema import Draft202012Validator

from hilo.contract import Identifiers, parse_interaction
from hilo.contract.personal import INTERACTION_FIELDS, JOURNEY_FIELDS, OUTBOUND_FIELDS
from hilo.contract.schema import sealed_interaction_json_schema
from hilo.kafka import KafkaPublisher, create_broker
from hilo.sealing import InMemoryKeys, Sealer, SharedCalls, Unreadable, seal, subject_of, unseal
from hilo.settings import HiloSettings
from hilo.testkit.samples import sample_command, sample_interaction, sample_payloads

PEPPER = b"a-pepper-for-tests-only"


def sealer() -> Sealer:
    return Sealer(InMemoryKeys(), PEPPER)


@pytest.mark.parametrize("kind", sorted(sample_payloads()))
async def test_a_sealed_interaction_shows_no_personal_field_and_opens_to_the_original(
    kind: str,
) -> None:
    interaction = sample_interaction(kind)
    original = interaction.model_dump(mode="json")
    seals = sealer()

    [sealed] = await seals.seal_all(
        [interaction.model_dump(mode="json")], INTERACTION_FIELDS, create=True
    )

    assert sealed is not None
    wire = json.dumps(sealed, ensure_ascii=False)  # "García" is not escaped away from the check
    for value in _personal_values(original):
        assert value not in wire, f"{value!r} readable on the wire"
    Draft202012Validator(sealed_interaction_json_schema()).validate(sealed)
    [opened] = await seals.open_all([wire.encode()])
    assert opened == original
    assert parse_interaction(json.dumps(opened)) == interaction


# Meta's own example: base64 of a message key that starts with the customer's number, 16503879439.
WAMID = "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA="


@pytest.mark.parametrize("kind", ["message", "message_status"])
async def test_a_provider_message_id_is_sealed_as_it_can_hold_the_customers_number(
    kind: str,
) -> None:
    interaction = sample_interaction(kind)
    update = {"provider_message_id": WAMID}
    if kind == "message":
        update["reply_to_provider_message_id"] = WAMID.replace("HBgL", "HBgM")
    interaction = interaction.model_copy(
        update={"payload": interaction.payload.model_copy(update=update)}
    )

    [sealed] = await sealer().seal_all(
        [interaction.model_dump(mode="json")], INTERACTION_FIELDS, create=True
    )

    wire = json.dumps(sealed)
    assert "HBgLMTY1MDM4Nzk0Mzk" not in wire
    assert "HBgMMTY1MDM4Nzk0Mzk" not in wire
    Draft202012Validator(sealed_interaction_json_schema()).validate(sealed)


async def test_once_the_keys_of_its_subjects_are_forgotten_nobody_can_open_it() -> None:
    interaction = sample_interaction("message").model_copy(
        update={
            "identifiers": Identifiers.model_validate(
                {"email": "ana@example.com", "phone": "+34612345678"}
            )
        }
    )
    seals = sealer()
    [sealed] = await seals.seal_all(
        [interaction.model_dump(mode="json")], INTERACTION_FIELDS, create=True
    )
    subjects = seals.subjects(interaction.model_dump(mode="json")["identifiers"])

    now = datetime.now(UTC)
    assert await seals.keys.forget(subjects[:1], made_until=now) == 1
    [still] = await seals.open_all([json.dumps(sealed).encode()])
    assert isinstance(still, dict), "any one identifier's key opens it"
    await seals.keys.forget(subjects, made_until=now)
    [gone] = await seals.open_all([json.dumps(sealed).encode()])

    assert isinstance(gone, Unreadable)
    assert gone.subjects == sorted(subjects)


async def test_a_sealed_part_moved_to_another_record_does_not_open() -> None:
    seals = sealer()
    one, two = (sample_interaction("message").model_dump(mode="json") for _ in range(2))
    two["id"] = "another-event"
    [first, second] = await seals.seal_all([one, two], INTERACTION_FIELDS, create=True)
    assert first is not None
    assert second is not None
    first["sealed"] = second["sealed"]

    [opened] = await seals.open_all([json.dumps(first).encode()])

    assert isinstance(opened, Unreadable)
    assert "do not open" in opened.reason


async def test_a_journey_entry_is_not_sealed_once_its_person_is_erased() -> None:
    seals = sealer()
    entry = {"id": "e1", "identifiers": {"email": "ana@example.com"}, "summary": "Inbound: hi"}

    [unknown] = await seals.seal_all([dict(entry)], JOURNEY_FIELDS, create=False)
    [sealed] = await seals.seal_all([dict(entry)], JOURNEY_FIELDS, create=True)

    assert unknown is None, "no key and none made: the entry is not published"
    assert sealed is not None
    assert "summary" not in sealed
    assert "identifiers" not in sealed


def test_a_subject_depends_on_the_pepper_and_shows_nothing_of_the_identifier() -> None:
    one = subject_of("email:ana@example.com", PEPPER)

    assert one == subject_of("email:ana@example.com", PEPPER)
    assert one != subject_of("email:ana@example.com", b"another-pepper-for-tests")
    assert "ana" not in one
    assert len(one) == 64


async def test_unsealed_and_unreadable_values_pass_through_as_they_are() -> None:
    plain = sample_interaction("order").model_dump_json().encode()

    opened = await sealer().open_all([plain, b"not json", b"[1]", None])

    assert isinstance(opened[0], dict)
    assert all(isinstance(value, ValueError) for value in opened[1:])


def _personal_values(document: dict[str, Any]) -> list[str]:
    """Strings a reader must not see: identifier values, the thread, sealed payload fields."""
    values = [value for value in document["identifiers"].values() if value]
    if (document.get("conversation") or {}).get("thread"):
        values.append(document["conversation"]["thread"])
    payload = document["payload"]
    fields = ["text", "subject", "transcript", "summary", "comment", "url", "referrer", "title"]
    if payload["kind"] == "page_view":  # "Orders of Ana García": a product's name is no one's
        fields.append("name")
    values += [payload[name] for name in fields if isinstance(payload.get(name), str)]
    values += [v for v in (payload.get("traits") or {}).values() if isinstance(v, str)]
    return [value for value in values if value and len(value) > 3]


async def test_an_erasure_never_deletes_a_key_made_after_it() -> None:
    """The same email back after its erasure is a new life: its new key must survive the
    erasure being completed again (a retry, a rebuild re-reading the `erasures` topic)."""
    keys = InMemoryKeys()
    [subject] = Sealer(keys, PEPPER).subjects({"email": "ana@example.com"})
    await keys.get_or_create([subject])
    erased_at = datetime.now(UTC)
    assert await keys.forget([subject], made_until=erased_at) == 1
    await keys.get_or_create([subject])  # Ana writes again after her erasure

    assert await keys.forget([subject], made_until=erased_at) == 0
    assert await keys.forget([subject], made_until=erased_at + timedelta(days=1)) == 1


class _CountingStore:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[set[str]] = []
        self.fail = fail

    async def __call__(self, subjects: set[str]) -> dict[str, bytes]:
        self.calls.append(set(subjects))
        await asyncio.sleep(0.01)
        if self.fail:
            raise RuntimeError("key store down")
        return {subject: subject.encode() for subject in subjects}


async def test_requests_within_the_window_share_one_key_store_call() -> None:
    store = _CountingStore()
    shared = SharedCalls(store, window=0.02)

    answers = await asyncio.gather(*(shared({f"s{n}", "common"}) for n in range(10)))

    assert len(store.calls) == 1
    assert store.calls[0] == {"common", *(f"s{n}" for n in range(10))}
    assert answers[3] == {"s3": b"s3", "common": b"common"}, "each gets what it asked for"


async def test_a_failed_shared_call_fails_every_caller_and_a_cancelled_one_stops_nobody() -> None:
    failing = SharedCalls(_CountingStore(fail=True), window=0.01)
    results = await asyncio.gather(failing({"a"}), failing({"b"}), return_exceptions=True)
    assert all(isinstance(result, RuntimeError) for result in results)

    store = _CountingStore()
    shared = SharedCalls(store, window=0.01)
    impatient = asyncio.create_task(shared({"a"}))
    patient = asyncio.create_task(shared({"b"}))
    await asyncio.sleep(0)
    impatient.cancel()
    assert await patient == {"b": b"b"}
    assert store.calls == [{"a", "b"}]


async def test_without_a_window_every_request_calls_on_its_own() -> None:
    store = _CountingStore()
    shared = SharedCalls(store, window=0)

    await asyncio.gather(shared({"a"}), shared({"b"}))

    assert store.calls == [{"a"}, {"b"}]


async def test_a_record_opens_with_any_of_its_keys_even_when_one_was_made_again() -> None:
    """One identifier's key was erased and made again (its new life): another key still opens."""
    first, second = sorted(["a" * 64, "b" * 64])
    keys = {first: AESGCM.generate_key(256), second: AESGCM.generate_key(256)}
    sealed = seal({"id": "e1", "identifiers": {"email": "x"}}, INTERACTION_FIELDS, keys, b"e1")
    made_again = {**keys, first: AESGCM.generate_key(256)}  # tried first, and does not open it

    opened = unseal(json.loads(json.dumps(sealed)), made_again, b"e1")

    assert opened["identifiers"] == {"email": "x"}
    with pytest.raises(Unreadable, match="do not open"):
        unseal(json.loads(json.dumps(sealed)), {first: made_again[first]}, b"e1")


async def test_a_value_json_cannot_carry_goes_on_the_wire_as_null() -> None:
    """A trait may hold NaN or Infinity (a channel's own float); a record carries valid JSON."""
    traits = {"score": float("nan"), "limit": float("inf"), "visits": 3}
    interaction = sample_interaction("identify").model_copy(
        update={"payload": sample_payloads()["identify"].model_copy(update={"traits": traits})}
    )
    settings, seals = HiloSettings(environment="test"), sealer()
    publisher = KafkaPublisher(create_broker(settings), settings, sealer=seals)

    [record] = await publisher.interaction_records([interaction])

    assert record.value is not None
    json.loads(record.value, parse_constant=_refuse)
    [opened] = await seals.open_all([record.value])
    assert isinstance(opened, dict)
    assert opened["payload"]["traits"] == {"score": None, "limit": None, "visits": 3}


def _refuse(constant: str) -> None:
    raise AssertionError(f"{constant} is not JSON")


async def test_the_threads_earlier_message_ids_of_a_reply_are_sealed() -> None:
    """A reply's `references` are earlier provider message ids (a wamid holds the number)."""
    command = sample_command("whatsapp")
    command = command.model_copy(
        update={"payload": command.payload.model_copy(update={"references": [WAMID]})}
    )

    [sealed] = await sealer().seal_all(
        [command.model_dump(mode="json")], OUTBOUND_FIELDS, create=True
    )

    assert "HBgLMTY1MDM4Nzk0Mzk" not in json.dumps(sealed)
