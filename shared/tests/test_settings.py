"""Settings come from the environment under one prefix."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from hilo.settings import HiloSettings


def test_prefixed_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HILO_TOPIC_PREFIX", "acme.")
    monkeypatch.setenv("HILO_LOG_LEVEL", "debug")

    settings = HiloSettings()

    assert settings.topic_prefix == "acme."
    assert settings.log_level == "DEBUG"


def test_standard_connection_variables_are_understood(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    monkeypatch.setenv("MONGODB_URL", "mongodb://mongo:27017/")

    settings = HiloSettings()

    assert settings.kafka_bootstrap_servers == "kafka:9092"
    assert str(settings.mongodb_url) == "mongodb://mongo:27017/"


def test_invalid_values_are_refused_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HILO_DEFAULT_PHONE_REGION", "Spain")

    with pytest.raises(ValidationError, match="default_phone_region"):
        HiloSettings()
