"""The offers API refuses to run open outside an explicit development run."""

from __future__ import annotations

import contextvars

import pytest

from hilo.entrypoint import OpenApiRefused
from offers.api import QuoteRequest
from offers.app import create_service
from offers.settings import OffersSettings


def test_the_api_needs_keys_unless_the_run_says_it_is_a_development_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HILO_API_KEYS", raising=False)
    monkeypatch.delenv("HILO_ADMIN_API_KEYS", raising=False)
    monkeypatch.delenv("HILO_ENVIRONMENT", raising=False)

    pepper = "a-long-random-secret-value"
    assert OffersSettings(subject_pepper=pepper).open_api_refusal() is not None  # type: ignore[arg-type]
    with pytest.raises(OpenApiRefused):
        create_service(
            OffersSettings(environment="production", subject_pepper=pepper)  # type: ignore[arg-type]
        )
    assert OffersSettings(environment="development").open_api_refusal() is None
    assert OffersSettings(api_keys="k1,k2", subject_pepper=pepper).open_api_refusal() is not None  # type: ignore[arg-type]
    both = OffersSettings(api_keys="k1,k2", admin_api_keys="a1", subject_pepper=pepper)  # type: ignore[arg-type]
    assert both.open_api_refusal() is None


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HILO_API_KEYS", "k1, k2")
    monkeypatch.setenv("HILO_PROFILE_API_KEY", "p1")
    monkeypatch.setenv("HILO_ENVIRONMENT", "test")

    settings = OffersSettings()

    assert settings.http_port == 8095
    assert [key.get_secret_value() for key in settings.api_keys] == ["k1", "k2"]
    assert settings.profile_api_key.get_secret_value() == "p1"
    assert settings.service_name == "offers"


def test_quotes_read_a_national_phone_in_the_deployments_region() -> None:
    """A till sends `612 34 56 78`: without the region, the quote would be refused."""
    context = contextvars.copy_context()  # the region set stays in this test's context
    context.run(
        create_service, OffersSettings(environment="development", default_phone_region="ES")
    )

    quote = context.run(
        QuoteRequest.model_validate,
        {
            "identifiers": {"phone": "612 34 56 78"},
            "channel": "store",
            "currency": "EUR",
            "lines": [{"sku": "SKU-1", "quantity": 1}],
        },
    )

    assert quote.identifiers is not None
    assert quote.identifiers.phone == "+34612345678"
