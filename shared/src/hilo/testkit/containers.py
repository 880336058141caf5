"""The docker-compose images under testcontainers, for machines with a Docker engine."""

from __future__ import annotations

from typing import Any

from hilo.testkit.local_infra import free_port

MONGO_IMAGE = "mongo:8.0"


def start_kafka_container(version: str) -> tuple[Any, str]:
    """`apache/kafka:<version>` in KRaft mode, advertised on a fixed free host port."""
    from testcontainers.core.container import DockerContainer  # noqa: PLC0415
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy  # noqa: PLC0415

    port = free_port()
    container = (
        DockerContainer(f"apache/kafka:{version}")
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
    from testcontainers.community.mongodb import MongoDbContainer  # noqa: PLC0415

    container = MongoDbContainer(MONGO_IMAGE)
    container.start()
    return container, container.get_connection_url()
