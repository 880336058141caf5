"""How every Kafka client of every service reaches the brokers: plaintext (the compose file's
own broker), TLS, SASL (PLAIN or SCRAM), or both, from the `HILO_KAFKA_SECURITY_*` settings.

One description, in FastStream's terms (`kafka_security`, for the brokers of the services), and
the same as aiokafka's keyword arguments (`client_options`, for the consumers, producers and
admin clients made directly: the live feed, the offers book, topic creation, rebuild, replay),
so that no client is left on plaintext when a managed cluster takes only TLS.
"""

from __future__ import annotations

import ssl
from typing import Any

from faststream.kafka.security import parse_security
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from hilo.settings import HiloSettings

_SASL = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}


def kafka_security(settings: HiloSettings) -> BaseSecurity | None:
    """FastStream's security for `settings`; None for plaintext."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    tls = _tls_context(settings) if protocol.endswith("SSL") else None
    if protocol == "SSL":
        return BaseSecurity(ssl_context=tls, use_ssl=True)
    password = settings.kafka_sasl_password
    if settings.kafka_sasl_username is None or password is None:  # refused by the settings
        raise ValueError(f"{protocol} needs HILO_KAFKA_SASL_USERNAME and _PASSWORD")
    sasl = _SASL[settings.kafka_sasl_mechanism]
    return sasl(
        settings.kafka_sasl_username,
        password.get_secret_value(),
        ssl_context=tls,
        use_ssl=tls is not None,
    )


def client_options(settings: HiloSettings) -> dict[str, Any]:
    """aiokafka's keyword arguments for the brokers and the security of `settings`."""
    return {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        **parse_security(kafka_security(settings)),
    }


def _tls_context(settings: HiloSettings) -> ssl.SSLContext:
    """Brokers' certificates checked against the CA bundle given, or the system's; this
    client's own certificate presented when one is given."""
    cafile = str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
    context = ssl.create_default_context(cafile=cafile)
    if settings.kafka_ssl_certfile and settings.kafka_ssl_keyfile:
        context.load_cert_chain(settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile)
    return context
