"""The launcher: servers named in the environment win; what it starts, it stops."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hilo_devkit.local_infra import (
    Infrastructure,
    InfrastructureError,
    LocalKafka,
    kafka_version,
    new_cluster_id,
)


def test_cluster_ids_never_read_as_an_option_to_the_storage_tool() -> None:
    ids = {new_cluster_id() for _ in range(2000)}

    assert len(ids) == 2000
    assert all(len(cluster_id) == 22 and not cluster_id.startswith("-") for cluster_id in ids)


def test_servers_named_in_the_environment_are_used_as_they_are(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka.example:9092")
    monkeypatch.setenv("MONGODB_URL", "mongodb://mongo.example:27017/")
    infra = Infrastructure()

    with infra as endpoints:
        assert endpoints.kafka_bootstrap_servers == "kafka.example:9092"
        assert endpoints.mongodb_url == "mongodb://mongo.example:27017/"
        assert endpoints.provider == "environment"
        assert infra.pids() == []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_local_processes_serve_and_are_gone_afterwards(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("MONGODB_URL", raising=False)
    monkeypatch.setenv("HILO_INFRA", "local")
    infra = Infrastructure()

    with infra as endpoints:
        pids = infra.pids()
        workdir = infra.workdir
        assert endpoints.provider == "local processes"
        assert len(pids) == 2
        assert all(alive(pid) for pid in pids)

    assert not any(alive(pid) for pid in pids)
    assert workdir is not None
    assert not workdir.exists()


def test_a_missing_java_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    kafka = LocalKafka(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(InfrastructureError, match="`java` is needed to run Kafka"):
        kafka.format_storage()


def test_kafka_version_is_read_from_the_pom() -> None:
    assert kafka_version() == "4.1.1"
