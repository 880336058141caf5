"""Identifiers are normalised so the same person compares equal on every channel."""

from __future__ import annotations

import pytest

from hilo.contract import Identifiers, normalise_email, normalise_phone
from hilo.contract.identifiers import DEFAULT_PHONE_REGION


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("+34 612 34 56 78", None, "+34612345678"),
        ("+34-612-345-678", None, "+34612345678"),
        ("0034612345678", None, "+34612345678"),
        ("34612345678", "ES", "+34612345678"),  # a country code without a plus, read in ES
        ("612 34 56 78", "ES", "+34612345678"),
        ("(415) 555-2671", "US", "+14155552671"),
        ("+1 415-555-2671", "GB", "+14155552671"),  # an explicit country code wins
        ("020 7946 0958", "GB", "+442079460958"),
        ("+55 11 91234-5678", None, "+5511912345678"),
        ("0011 34 612 345 678", "AU", "+34612345678"),  # Australia dials out with 0011
    ],
)
def test_phone_numbers_normalise_to_e164(raw: str, region: str | None, expected: str) -> None:
    assert normalise_phone(raw, region) == expected


def test_default_region_comes_from_the_service(monkeypatch: pytest.MonkeyPatch) -> None:
    token = DEFAULT_PHONE_REGION.set("ES")
    try:
        assert Identifiers(phone="612345678").phone == "+34612345678"
    finally:
        DEFAULT_PHONE_REGION.reset(token)


def test_a_number_without_country_code_or_region_is_refused_not_guessed() -> None:
    """Read as starting with a country code, a US national number is a valid Norwegian one."""
    with pytest.raises(ValueError, match="without its country code"):
        normalise_phone("(479) 857-0523")

    assert normalise_phone("(479) 857-0523", "US") == "+14798570523"


def test_a_value_longer_than_any_written_number_is_refused_before_it_is_read() -> None:
    """A million digits (with a trailing letter, the slowest case for the check of a national
    number) from the public web key: refused as too long to be a number, not read."""
    padded = "+34 612 345 678" + " " * 86  # 101 characters, trimmed to a valid number

    with pytest.raises(ValueError, match="not a phone number"):
        normalise_phone("1" * 1_000_000 + "x")
    with pytest.raises(ValueError, match="not a phone number"):
        normalise_phone("+34 " + "6" * 97)
    assert normalise_phone(padded) == "+34612345678"
    assert normalise_phone("+34 (612) 345-678 " + " " * 82) == "+34612345678"


@pytest.mark.parametrize("raw", ["12", "not a number", "+34 000", "+999 1234567"])
def test_invalid_phone_numbers_are_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="phone number") as exc:
        normalise_phone(raw)

    assert raw not in str(exc.value)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Ana@Example.COM", "ana@example.com"),
        ("  ana@example.com \n", "ana@example.com"),
        ("ANA.GARCIA+shop@Example.com", "ana.garcia+shop@example.com"),
        ("jose@xn--bcher-kva.example", "jose@bücher.example"),
        ("jose@BÜCHER.example", "jose@bücher.example"),
    ],
)
def test_emails_normalise(raw: str, expected: str) -> None:
    assert normalise_email(raw) == expected


@pytest.mark.parametrize("raw", ["", "ana", "ana@", "@example.com", "ana@@example.com", "a b@c.d"])
def test_invalid_emails_are_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="not a valid email address"):
        normalise_email(raw)


def test_numeric_ids_from_providers_are_compared_as_text() -> None:
    identifiers = Identifiers.model_validate({"loyalty_id": 981, "whatsapp_id": 34612345678})

    assert identifiers.loyalty_id == "981"
    assert identifiers.whatsapp_id == "34612345678"


def test_blank_tokens_are_refused() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        Identifiers(customer_id="   ")
