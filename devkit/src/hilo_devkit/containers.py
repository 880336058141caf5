"""The docker-compose images under testcontainers, for machines whose Docker engine has them.

A Docker engine that answers is not enough: on a machine with no registry in reach, the images
cannot be pulled, and the run would crash half-way. `docker_unusable` tells beforehand, so the
caller can fall back to local processes with one clear line instead.
"""

from __future__ import annotations

import os
import time
from typing import Any

from pymongo import MongoClient

from hilo.testkit.serving import free_port

MONGO_IMAGE = "mongo:8.0"
DOCKER_TIMEOUT_SECONDS = 3
PULL_TIMEOUT_SECONDS = 300
READY_TIMEOUT_SECONDS = 120.0


def kafka_image(version: str) -> str:
    """`apache/kafka:<version>`, or `HILO_KAFKA_IMAGE` (the offline build's, say)."""
    return os.environ.get("HILO_KAFKA_IMAGE") or f"apache/kafka:{version}"


def mongo_image() -> str:
    """`mongo:8.0`, or `HILO_MONGO_IMAGE` (the offline build's MongoDB-wire server, say)."""
    return os.environ.get("HILO_MONGO_IMAGE") or MONGO_IMAGE


def required_images(kafka_version: str) -> list[str]:
    """Kafka, MongoDB and, unless it is turned off, testcontainers' reaper (Ryuk), which removes
    the containers of a test run that was killed."""
    from testcontainers.core.config import testcontainers_config  # noqa: PLC0415

    images = [kafka_image(kafka_version), mongo_image()]
    if not testcontainers_config.ryuk_disabled:
        images.append(testcontainers_config.ryuk_image)
    return images


def docker_unusable(images: list[str]) -> str | None:
    """Why testcontainers cannot run these images here, or None when they can: no engine answers,
    or an image is neither on the engine nor pullable. Pulls what is missing."""
    import docker  # noqa: PLC0415 - testcontainers' dependency, only needed here
    from docker.errors import DockerException, ImageNotFound  # noqa: PLC0415

    try:
        client = docker.from_env(timeout=DOCKER_TIMEOUT_SECONDS)
        client.ping()
    except DockerException as exc:
        return f"no Docker engine answers ({_first_line(exc)})"
    try:
        for image in images:
            try:
                client.images.get(image)
            except ImageNotFound:
                reason = _pull(image)
                if reason:
                    return f"Docker answers, but {image} cannot be pulled ({reason})"
    finally:
        client.close()
    return None


def _pull(image: str) -> str | None:
    import docker  # noqa: PLC0415
    from docker.errors import DockerException  # noqa: PLC0415

    try:
        client = docker.from_env(timeout=PULL_TIMEOUT_SECONDS)
        try:
            client.images.pull(image)
        finally:
            client.close()
    except DockerException as exc:
        return _first_line(exc)
    return None


def _first_line(exc: BaseException) -> str:
    """The engine's own message where it gave one (a registry it cannot reach, say)."""
    explanation = getattr(exc, "explanation", None)
    text = str(explanation or exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def start_kafka_container(version: str) -> tuple[Any, str]:
    """The Kafka image in KRaft mode, advertised on a fixed free host port."""
    from testcontainers.core.container import DockerContainer  # noqa: PLC0415
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy  # noqa: PLC0415

    port = free_port()
    container = (
        DockerContainer(kafka_image(version))
        .with_bind_ports(9092, port)
        .with_env("KAFKA_NODE_ID", "1")
        .with_env("KAFKA_PROCESS_ROLES", "broker,controller")
        .with_env("KAFKA_LISTENERS", "PLAINTEXT://:9092,CONTROLLER://:9093")
        .with_env("KAFKA_ADVERTISED_LISTENERS", f"PLAINTEXT://127.0.0.1:{port}")
        .with_env("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER")
        .with_env(
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
        )
        .with_env("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9093")
        .with_env("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .with_env("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
        .with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
        .waiting_for(LogMessageWaitStrategy("Kafka Server started"))
    )
    container.start()
    return container, f"127.0.0.1:{port}"


def start_mongo_container() -> tuple[Any, str]:
    """The MongoDB image (or a MongoDB-wire one), ready once it answers a ping."""
    from testcontainers.core.container import DockerContainer  # noqa: PLC0415

    port = free_port()
    container = DockerContainer(mongo_image()).with_bind_ports(27017, port)
    container.start()
    url = f"mongodb://127.0.0.1:{port}/"
    _wait_for_ping(url)
    return container, url


def _wait_for_ping(url: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while True:
        try:
            client: MongoClient[dict[str, Any]]
            with MongoClient(url, serverSelectionTimeoutMS=1000) as client:
                client.admin.command("ping")
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
        else:
            return
