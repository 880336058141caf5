"""Every Kafka client reaches a broker that takes only SASL as the settings say, and a service
configured wrongly is refused at start, not at its first connection."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from aiokafka.errors import KafkaError
from faststream.security import SASLScram512
from pydantic import SecretStr, ValidationError

from hilo.kafka import KafkaPublisher, Record, create_broker, read_to_end
from hilo.kafka_security import client_options, kafka_security
from hilo.settings import HiloSettings
from hilo.topics import Topic, ensure_topics, topic_name
from hilo_devkit.local_infra import Endpoints, SecuredKafka


@pytest.fixture(autouse=True)
def _test_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test run: settings read here may use the public development pepper."""
    monkeypatch.setenv("HILO_ENVIRONMENT", "test")


def test_plaintext_is_the_default_and_adds_nothing() -> None:
    settings = HiloSettings(kafka_bootstrap_servers="kafka:9092")

    assert kafka_security(settings) is None
    assert client_options(settings) == {"bootstrap_servers": "kafka:9092"}


def test_sasl_over_tls_checks_the_brokers_certificates() -> None:
    """Confluent Cloud's shape: SASL_SSL, an API key and secret, the system's trusted CAs."""
    settings = HiloSettings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="api-key",
        kafka_sasl_password=SecretStr("api-secret"),
    )

    security = kafka_security(settings)
    options = client_options(settings)

    assert isinstance(security, SASLScram512)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == (
        "api-key",
        "api-secret",
    )
    context = options["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname


@pytest.mark.parametrize(
    ("given", "refusal"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "needs HILO_KAFKA_SASL_USERNAME"),
        (
            {"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_username": "u"},
            "needs HILO_KAFKA_SASL_USERNAME and HILO_KAFKA_SASL_PASSWORD",
        ),
        ({"kafka_ssl_cafile": "ca.pem"}, "need HILO_KAFKA_SECURITY_PROTOCOL SSL or SASL_SSL"),
        (
            {"kafka_sasl_username": "u", "kafka_sasl_password": "p"},
            "need HILO_KAFKA_SECURITY_PROTOCOL SASL_PLAINTEXT or SASL_SSL",
        ),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_certfile": "ca.pem"},
            "go together",
        ),
        ({"kafka_security_protocol": "SSL", "kafka_ssl_cafile": "missing.pem"}, "kafka_ssl_cafile"),
    ],
)
def test_incomplete_security_settings_are_refused_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: dict[str, str], refusal: str
) -> None:
    (tmp_path / "ca.pem").write_text("not read: the settings only check the file is there")
    monkeypatch.chdir(tmp_path)

    with pytest.raises(ValidationError, match=refusal):
        HiloSettings.model_validate(given)


def secured_settings(
    settings: HiloSettings,
    secured: SecuredKafka,
    protocol: str,
    mechanism: str = "PLAIN",
    password: str | None = None,
) -> HiloSettings:
    """`settings` reaching the local broker's listener for `protocol` as its user."""
    tls = protocol == "SASL_SSL"
    user, secret = secured.user
    return HiloSettings.model_validate(
        {
            **settings.model_dump(),
            "kafka_bootstrap_servers": secured.sasl_ssl if tls else secured.sasl,
            "kafka_security_protocol": protocol,
            "kafka_sasl_mechanism": mechanism,
            "kafka_sasl_username": user,
            "kafka_sasl_password": password or secret,
            "kafka_ssl_cafile": secured.cafile if tls else None,
            "subject_pepper": settings.subject_pepper.get_secret_value(),
        }
    )


def secured_listeners(infrastructure: Endpoints) -> SecuredKafka:
    if infrastructure.kafka_secured is None:
        pytest.skip("the broker is not the local one, whose secured listeners this test uses")
    return infrastructure.kafka_secured


@pytest.mark.parametrize(
    ("protocol", "mechanism"),
    [("SASL_PLAINTEXT", "PLAIN"), ("SASL_PLAINTEXT", "SCRAM-SHA-256"), ("SASL_SSL", "PLAIN")],
)
async def test_topics_are_created_published_to_and_read_through_a_secured_listener(
    infrastructure: Endpoints, settings: HiloSettings, protocol: str, mechanism: str
) -> None:
    """The admin client, the services' broker and a direct consumer, each with the credentials
    (and over TLS checking the broker's certificate) on a listener that takes nothing else
    (`test_a_wrong_password_is_refused_by_the_broker`)."""
    secured = secured_settings(settings, secured_listeners(infrastructure), protocol, mechanism)

    created = await ensure_topics(secured)
    broker = create_broker(secured)
    async with broker:
        await broker.start()
        publisher = KafkaPublisher(broker, secured)
        await publisher.publish_records([Record(Topic.PROFILES, b"c-1", b"{}", {})])
    records = await read_to_end(client_options(secured), topic_name(Topic.PROFILES, secured))

    assert topic_name(Topic.PROFILES, secured) in created
    assert [(r.key, r.value) for r in records] == [(b"c-1", b"{}")]


async def test_a_wrong_password_is_refused_by_the_broker(
    infrastructure: Endpoints, settings: HiloSettings
) -> None:
    listeners = secured_listeners(infrastructure)
    wrong = secured_settings(settings, listeners, "SASL_PLAINTEXT", password="not-the-secret")

    with pytest.raises(KafkaError):
        await ensure_topics(wrong)


async def test_a_broker_whose_certificate_is_not_trusted_is_not_talked_to(
    infrastructure: Endpoints, settings: HiloSettings
) -> None:
    """Without the CA that signed the local broker's certificate (the system's CAs did not),
    the TLS handshake fails before any credential is sent."""
    listeners = secured_listeners(infrastructure)
    untrusting = secured_settings(settings, listeners, "SASL_SSL").model_copy(
        update={"kafka_ssl_cafile": None}
    )

    with pytest.raises((KafkaError, ssl.SSLError)):
        await ensure_topics(untrusting)
