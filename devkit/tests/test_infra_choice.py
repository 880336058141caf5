"""HILO_INFRA, and the fall-back a machine with a Docker engine but no registry needs.

The Docker engine is outside Hilo: a local HTTP server speaking its API stands in for one that
answers but cannot pull (what a machine with no registry in reach does), so the choice is tested
without depending on whether this machine runs Docker.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse

from hilo.testkit.serving import ThreadedServer
from hilo_devkit import containers
from hilo_devkit.local_infra import Endpoints, Infrastructure, InfrastructureError, infra_choice
from hilo_devkit.local_platform import compose_files, compose_images, offline_images

NO_SUCH_HOST = (
    'Get "https://registry-1.docker.io/v2/": dial tcp: lookup registry-1.docker.io '
    "on 10.0.0.2:53: no such host"
)


def docker_engine(images: set[str]) -> FastAPI:
    """The parts of the Engine API the choice uses: ping, version, inspect an image, pull."""
    app = FastAPI()
    pulls: list[str] = []
    app.state.pulls = pulls

    @app.get("/_ping")
    @app.get("/v{api}/_ping")
    def ping() -> PlainTextResponse:
        return PlainTextResponse("OK")

    @app.get("/version")
    @app.get("/v{api}/version")
    def version() -> dict[str, str]:
        return {"Version": "20.10.24", "ApiVersion": "1.41", "MinAPIVersion": "1.12"}

    @app.get("/v{api}/images/{name:path}/json")
    def inspect(name: str) -> JSONResponse:
        if name in images:
            return JSONResponse({"Id": "sha256:" + "0" * 64, "RepoTags": [name]})
        return JSONResponse({"message": f"No such image: {name}"}, status_code=404)

    @app.post("/v{api}/images/create")
    def pull(fromImage: str, tag: str = "latest") -> JSONResponse:  # noqa: N803 - the API's name
        pulls.append(f"{fromImage}:{tag}")
        return JSONResponse({"message": NO_SUCH_HOST}, status_code=500)

    return app


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[FastAPI]:
    app = docker_engine({"mongo:8.0"})
    with ThreadedServer(app, name="docker-engine") as server:
        monkeypatch.setenv("DOCKER_HOST", server.url.replace("http://", "tcp://"))
        yield app


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Which way the infrastructure was started, instead of starting it."""
    ways: list[str] = []
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("MONGODB_URL", raising=False)

    def local(_self: Infrastructure, *_: object) -> Endpoints:
        ways.append("local")
        return Endpoints("kafka:9092", "mongodb://mongo/", "local processes")

    def docker(_self: Infrastructure, *_: object) -> Endpoints:
        ways.append("docker")
        return Endpoints("kafka:9092", "mongodb://mongo/", "testcontainers")

    monkeypatch.setattr(Infrastructure, "_start_local", local)
    monkeypatch.setattr(Infrastructure, "_start_containers", docker)
    return ways


def test_an_engine_that_cannot_pull_says_so_and_what(engine: FastAPI) -> None:
    reason = containers.docker_unusable(["mongo:8.0", "apache/kafka:4.1.1"])

    assert reason is not None
    assert reason.startswith("Docker answers, but apache/kafka:4.1.1 cannot be pulled")
    assert "no such host" in reason
    assert engine.state.pulls == ["apache/kafka:4.1.1"], "an image it has is not pulled"


def test_an_engine_with_every_image_is_usable(monkeypatch: pytest.MonkeyPatch) -> None:
    with ThreadedServer(docker_engine({"mongo:8.0", "apache/kafka:4.1.1"})) as server:
        monkeypatch.setenv("DOCKER_HOST", server.url.replace("http://", "tcp://"))

        assert containers.docker_unusable(["mongo:8.0", "apache/kafka:4.1.1"]) is None


def test_no_engine_is_named_as_such(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/docker.sock")

    reason = containers.docker_unusable([])

    assert reason is not None
    assert reason.startswith("no Docker engine answers")


def test_auto_falls_back_to_local_processes_with_one_line(
    engine: FastAPI,
    started: list[str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.delenv("HILO_INFRA", raising=False)
    infra = Infrastructure()

    infra.start()

    assert started == ["local"]
    lines = [r.getMessage() for r in caplog.records if r.name == "hilo.infra"]
    assert len(lines) == 1
    assert "local processes, because Docker answers, but apache/kafka" in lines[0]
    assert "cannot be pulled" in infra.fallback


def test_docker_when_asked_for_is_an_error_that_says_why(
    engine: FastAPI, started: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HILO_INFRA", "docker")

    with pytest.raises(InfrastructureError, match=r"HILO_INFRA=docker, but .* cannot be pulled"):
        Infrastructure().start()
    assert started == []


def test_local_never_asks_docker(started: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HILO_INFRA", "local")
    monkeypatch.setenv("DOCKER_HOST", "tcp://192.0.2.1:9")  # would time out if asked

    Infrastructure().start()

    assert started == ["local"]


def test_env_needs_both_servers(started: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HILO_INFRA", "env")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka.example:9092")

    with pytest.raises(InfrastructureError, match="needs both KAFKA_BOOTSTRAP_SERVERS and"):
        Infrastructure().start()
    assert started == []


def test_a_misspelt_choice_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HILO_INFRA", "dokcer")

    with pytest.raises(InfrastructureError, match="expected one of auto, env, docker, local"):
        infra_choice()


def test_make_run_uses_compose_only_when_the_engine_has_its_images(
    engine: FastAPI, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("HILO_INFRA", raising=False)

    assert compose_files() is None
    assert "make run: local processes, because Docker answers, but" in capsys.readouterr().out
    assert "python:3.11-slim-bookworm" in compose_images()


def test_make_run_uses_the_offline_images_where_they_are_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HILO_INFRA", raising=False)
    images = offline_images()
    with ThreadedServer(docker_engine(set(images))) as server:
        monkeypatch.setenv("DOCKER_HOST", server.url.replace("http://", "tcp://"))

        assert compose_files() == ["docker-compose.yml", "deploy/compose.offline.yml"]
    assert "hilo-offline/kafka:4.1.1" in images
    assert "hilo-offline/python:3.11-bookworm" in images
