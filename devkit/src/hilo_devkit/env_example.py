"""`.env.example`, generated from the services' settings classes so it cannot drift from them.

`make env-example` rewrites it; a test fails when the committed file differs.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from hilo.settings import HiloSettings
from hilo_devkit.catalogue import (
    SERVICES,
    SignIn,
    development_sign_in,
    is_secret,
    settings_class,
    variable,
)

HEADER = """\
# Hilo configuration: copy to .env and fill in the secrets (docker compose reads .env).
# Generated from the services' settings classes by `make env-example`; do not edit by hand.
#
# Every setting is an environment variable with the prefix HILO_. docker-compose.yml passes each
# one below from .env to every service that reads it, but those marked "override file only" (a
# name several services read with defaults of their own, as HILO_MAX_BODY_BYTES): set those in
# that service's `environment:` in a docker-compose.override.yml. Values shown commented out are
# the defaults.
"""
COMPOSE = """
# --- docker compose: images, host ports, optional profiles ------------------------------------
# Tag of the Hilo image compose builds and runs.
# HILO_VERSION=local
# The environment: production (compose's default) refuses to start an API without its keys;
# development (what `make run` gives local processes) serves the profile, offers and analytics
# APIs without keys and the desk's cookies without `Secure`: never on a host others can reach.
# HILO_ENVIRONMENT=production
# Host address of the infrastructure's ports (Kafka, MongoDB, Prometheus, Grafana): loopback, so
# they are not reachable from other machines; Kafka speaks plaintext. Kafka's host listener tells
# its clients to come back at KAFKA_ADVERTISED_HOST: a name other machines resolve, if they are
# to reach it.
# INFRA_HOST_ADDRESS=127.0.0.1
# KAFKA_ADVERTISED_HOST=localhost
# The broker's JVM heap, below its container's 1g memory limit.
# KAFKA_HEAP_OPTS=-Xms256m -Xmx768m
# Host address of the APIs that hold personal data and answer plain HTTP (the profile API, the
# offers, the measures, the agent desk): loopback, for the TLS reverse proxy on this host (a
# proxy in the compose network reaches them without it).
# API_HOST_ADDRESS=127.0.0.1
# The channels' webhooks are published on every interface (IPv4 and IPv6), for their providers;
# behind a TLS proxy on this host, bind them to loopback in docker-compose.override.yml
# (docs/operations.md): they also answer /metrics, /docs and /asyncapi.json, in plain HTTP.
# The agent desk takes a client's address from X-Forwarded-For only from these addresses: your
# reverse proxy's, as the desk sees it. Otherwise every agent signs in from the proxy's address,
# and 5 mistyped passwords in 5 minutes lock them all out for 5 minutes.
# FORWARDED_ALLOW_IPS=127.0.0.1
# Host ports. The profile API takes a range so that `--scale customer-profile=N` works.
# KAFKA_HOST_PORT=29092
# MONGO_HOST_PORT=27017
# PROFILE_HOST_PORTS=18080-18089
# WEB_HOST_PORT=8081
# WHATSAPP_HOST_PORT=8082
# SMS_HOST_PORT=8083
# EMAIL_HOST_PORT=8084
# STORE_HOST_PORT=8085
# VOICE_HOST_PORT=8086
# SOCIAL_HOST_PORT=8087
# DESK_HOST_PORT=8090
# OFFERS_HOST_PORT=8095
# ANALYTICS_HOST_PORT=8096
# PROMETHEUS_HOST_PORT=9090
# GRAFANA_HOST_PORT=3000
# The agent desk: its argon2 hashes contain `$`, which compose expands in an unquoted value, so
# single-quote the value of HILO_DESK_AGENTS ('ana:$argon2id$v=19$...,bo:$argon2id$...'). An
# empty HILO_PROFILE_API_KEY (the desk's and the offers service's key to the profile API) means
# HILO_API_KEYS, of which they send the first: during a rotation, list the new key first.
# MongoDB's users, created on its first start: the root user (for ops) and Hilo's own, which the
# services connect as (read-write on HILO_MONGODB_DATABASE and HILO_MONGODB_KEYS_DATABASE only).
# Passwords: letters, digits, '-' and '_' only: HILO_MONGO_PASSWORD is both stored as the user's
# password and put in the services' connection URL, so an encoded one would never match.
# MONGO_ROOT_USERNAME=root
MONGO_ROOT_PASSWORD=
# HILO_MONGO_USERNAME=hilo
HILO_MONGO_PASSWORD=
# Grafana's admin password (profile observability).
GRAFANA_ADMIN_PASSWORD=
# How many customers the demo plays (profile demo; `offers-demo` seeds the demo catalogue first).
# HILO_SIM_CUSTOMERS=20
# KRaft cluster id of deploy/compose.cluster.yml (22 characters, base64url).
# KAFKA_CLUSTER_ID=5L6g3nShT-eMCtK--X86sw
# The secret the MongoDB replica set of deploy/compose.cluster.yml authenticates its members with.
MONGO_REPLICA_KEY=
"""

SKIPPED = {"service_name", "environment"}
"""`service_name` is fixed per service by its settings class; `environment` is in the compose
block below, with compose's default (production), not the settings' (development)."""
OPTIONAL_SECRETS = {"kafka_sasl_password", "twilio_previous_auth_token"}
"""Secrets only some deployments have (a managed Kafka's, a Twilio token being rotated out):
commented out, like a default, and not filled with a random value for `make run`."""


def default_text(field: FieldInfo) -> str | None:
    """The default as it would be written in the environment; None when required."""
    if field.default is PydanticUndefined and field.default_factory is None:
        return None
    value: Any = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]
    if value is None:
        return ""
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    if isinstance(value, dict):
        return "{" + ", ".join(f'"{key}": {item}' for key, item in value.items()) + "}"
    if isinstance(value, SecretStr):
        return ""
    return str(value)


COMPOSE_FILE = Path(__file__).resolve().parents[3] / "docker-compose.yml"
OVERRIDE_ONLY = (
    "# (Override file only: docker-compose.yml does not pass it from .env, where it would set it "
    "for every service reading the name.)"
)


def compose_passes() -> dict[str, set[str]]:
    """Per service of docker-compose.yml, the variables it gives the container."""
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    return {
        name: set(service.get("environment") or {}) for name, service in compose["services"].items()
    }


def section(
    title: str,
    fields: dict[str, FieldInfo],
    written: dict[str, str],
    renamed: Mapping[str, str] | None = None,
    passed: set[str] | None = None,
) -> list[str]:
    """One service's settings. Secrets and required values are set once for all services.

    `renamed`: a setting's variable -> the variable of `.env` compose gives it from (the offers
    service reads its keys as HILO_API_KEYS, which is the profile API's in `.env`). `passed`:
    what compose gives the service; a setting not in it is marked `OVERRIDE_ONLY`."""
    lines = ["", f"# --- {title} " + "-" * max(0, 90 - len(title))]
    for name, field in fields.items():
        if name in SKIPPED:
            continue
        setting = variable(name, field)
        env = (renamed or {}).get(setting, setting)
        default = default_text(field)
        to_set = default is None or (is_secret(field) and name not in OPTIONAL_SECRETS)
        if to_set and env in written:
            lines.append(f"# {env}: set above, for {written[env]} too")
            continue
        if description := (field.description or "").strip():
            lines.append(f"# {description}")
        if env != setting:
            lines.append(f"# (The service reads it as {setting}; compose passes it on.)")
        elif passed is not None and setting not in passed:
            lines.append(OVERRIDE_ONLY)
        if to_set:
            written[env] = title
            lines.append(f"{env}=")
        else:
            lines.append(f"# {env}={default}")
    return lines


def render() -> str:
    common = HiloSettings.model_fields
    lines = [HEADER.rstrip("\n")]
    written: dict[str, str] = {}
    passes = compose_passes()
    everywhere = set.intersection(*(passes[spec.name] for spec in SERVICES))
    lines += section("common: every service", dict(common), written, passed=everywhere)
    for spec in SERVICES:
        own = {
            name: field
            for name, field in settings_class(spec).model_fields.items()
            if name not in common
        }
        lines += section(spec.name, own, written, dict(spec.renamed), passes[spec.name])
    return "\n".join(lines) + "\n" + COMPOSE


def development_env(desk: tuple[str, SignIn] | None = None) -> str:
    """`.env.example` with every value to fill filled: random secrets, local URLs (for `make run`
    with Docker on a developer's machine; never for production).

    `desk` is HILO_DESK_AGENTS and the sign-in it allows (`development_sign_in()`, made here when
    not given); the password is noted in a comment, since nothing else could tell it. The desk
    calls the profile API with its key. Secrets are 32 random bytes: compose runs the services
    in production mode, where the desk wants a session secret of 32+ characters.
    """
    agents, sign_in = desk or development_sign_in()
    to_fill = [
        line[:-1]
        for line in render().splitlines()
        if line.endswith("=") and not line.startswith("#")
    ]
    values = {name: secrets.token_urlsafe(32) for name in to_fill}
    values |= {
        "HILO_PUBLIC_BASE_URL": "http://localhost",
        "HILO_PROFILE_API_KEY": values["HILO_API_KEYS"],
        # Single quotes: compose would expand the `$` of the hash in an unquoted value.
        "HILO_DESK_AGENTS": f"'{agents}'",
    }
    lines = [
        line + values[line[:-1]] if line.endswith("=") and not line.startswith("#") else line
        for line in render().splitlines()
    ]
    note = f"# Agent desk development sign-in: agent {sign_in.agent}, password {sign_in.password}"
    return "\n".join([*lines, note]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(prog="hilo-env-example", description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, nargs="?", default=Path(".env.example"))
    args = parser.parse_args()
    args.path.write_text(render())
    print(f"wrote {args.path}", file=sys.stderr)  # noqa: T201


if __name__ == "__main__":
    main()
