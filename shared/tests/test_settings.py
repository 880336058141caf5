"""Settings come from the environment under one prefix."""

from __future__ import annotations

import pytest
from pydantic import Field, SecretStr, ValidationError
from pymongo.errors import InvalidURI
from pymongo.uri_parser import parse_uri

from hilo.settings import HiloSettings, SecretList


@pytest.fixture(autouse=True)
def _test_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test run (`HILO_ENVIRONMENT`): settings read from the environment may use the public
    development pepper only in one."""
    monkeypatch.setenv("HILO_ENVIRONMENT", "test")


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


@pytest.mark.parametrize(
    "url",
    [
        "mongodb+srv://hilo:s3cret@cluster0.abcd.mongodb.net/?retryWrites=true&w=majority",
        "mongodb://mongo-1:27017,mongo-2:27018/?replicaSet=rs0&tls=true",
        "mongodb://mongo/",
    ],
)
def test_a_connection_string_reaches_pymongo_as_given(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    """Atlas's `mongodb+srv://` string included: a port added to it makes PyMongo refuse it."""
    monkeypatch.setenv("HILO_MONGODB_URL", url)

    given = str(HiloSettings().mongodb_url)

    assert given == url
    if url.startswith("mongodb://"):
        assert parse_uri(given)["nodelist"]
    with pytest.raises(InvalidURI, match="port"):
        parse_uri("mongodb+srv://cluster0.abcd.mongodb.net:27017/")


def test_a_url_of_another_scheme_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HILO_MONGODB_URL", "postgresql://db/hilo")

    with pytest.raises(ValidationError, match="HILO_MONGODB_URL"):
        HiloSettings()


def test_invalid_values_are_refused_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HILO_DEFAULT_PHONE_REGION", "Spain")

    with pytest.raises(ValidationError, match="default_phone_region"):
        HiloSettings()


def test_a_publish_may_not_outlast_the_leases_that_wait_for_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The offers publisher's and the spool's leases are 30 s: a publish allowed longer could
    still land after another instance took the lease and published a newer version."""
    monkeypatch.setenv("HILO_KAFKA_PUBLISH_TIMEOUT_SECONDS", "45")

    with pytest.raises(ValidationError, match="kafka_publish_timeout_seconds"):
        HiloSettings()


def test_event_time_skew_and_record_size_are_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HILO_MAX_FUTURE_SKEW_SECONDS", "60")
    monkeypatch.setenv("HILO_KAFKA_MAX_RECORD_BYTES", "2097152")

    settings = HiloSettings()

    assert settings.max_future_skew_seconds == 60
    assert settings.kafka_max_record_bytes == 2_097_152
    assert HiloSettings.model_fields["kafka_max_record_bytes"].default == 1_048_576


def test_the_public_development_pepper_is_refused_unless_the_run_says_it_is_a_development_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A deployment outside compose that sets neither variable used to run with the public
    pepper: subjects, erased identifiers' included, could be reversed by hashing guesses."""
    monkeypatch.delenv("HILO_ENVIRONMENT")
    monkeypatch.delenv("HILO_SUBJECT_PEPPER", raising=False)

    with pytest.raises(ValidationError, match="HILO_SUBJECT_PEPPER"):
        HiloSettings()
    with pytest.raises(ValidationError, match="HILO_SUBJECT_PEPPER"):
        HiloSettings(environment="production")

    assert HiloSettings(environment="development").explicitly_development
    # A deployment that ran so keeps its pepper by naming it; production never takes it.
    public = "hilo-development-pepper-not-secret"
    assert (
        HiloSettings(subject_pepper=SecretStr(public)).subject_pepper.get_secret_value() == public
    )
    with pytest.raises(ValidationError, match="HILO_SUBJECT_PEPPER"):
        HiloSettings(environment="production", subject_pepper=SecretStr(public))
    monkeypatch.setenv("HILO_SUBJECT_PEPPER", "a-long-random-secret-of-this-deployment")
    assert HiloSettings().subject_pepper.get_secret_value().startswith("a-long")


class _WithSecrets(HiloSettings):
    signing_secret: SecretStr = SecretStr("")
    api_keys: SecretList = Field(default_factory=list)


LONG = SecretStr("0123456789abcdef0123456789abcdef")


@pytest.mark.parametrize(
    ("secrets", "refused"),
    [
        ({"signing_secret": SecretStr("x")}, "HILO_SIGNING_SECRET"),
        ({"api_keys": [LONG, SecretStr("key-1")]}, "HILO_API_KEYS"),
        ({"signing_secret": LONG, "api_keys": [LONG]}, None),
        ({}, None),  # empty: a secret not set, which each service refuses or goes without
    ],
)
def test_a_production_run_refuses_a_secret_short_enough_to_guess(
    secrets: dict[str, object], refused: str | None
) -> None:
    """Filled with `x` to get compose to start a channel nobody uses, a signing secret would let
    anyone sign that provider's webhooks, which are taken as verified."""
    production = {"environment": "production", "subject_pepper": LONG, **secrets}

    if refused is None:
        _WithSecrets(**production)  # type: ignore[arg-type]
    else:
        with pytest.raises(ValidationError, match=f"{refused} holds a secret of"):
            _WithSecrets(**production)  # type: ignore[arg-type]
    _WithSecrets(**{**production, "environment": "test"})  # type: ignore[arg-type]


class _WithPublicKeys(HiloSettings):
    web_write_keys: SecretList = Field(default_factory=list)
    whatsapp_verify_token: SecretStr = SecretStr("")


def test_public_write_keys_and_verify_tokens_are_not_refused_for_their_length() -> None:
    """A web write key ships in pages and released apps; a verify token signs nothing."""
    _WithPublicKeys(
        environment="production",
        subject_pepper=LONG,
        web_write_keys=[SecretStr("wk-1")],
        whatsapp_verify_token=SecretStr("hi"),
    )


def test_a_kafka_password_is_the_brokers_choice_and_not_refused_for_its_length() -> None:
    HiloSettings(
        environment="production",
        subject_pepper=LONG,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username="hilo",
        kafka_sasl_password=SecretStr("short"),
    )
