"""`docker compose up`, for real: the deployment ops run, built, started, played, scaled, crashed
and removed on this machine's Docker engine (`make compose-test`; not part of `make test`).

Where no registry answers, the images come from deploy/offline/build.sh and the override
deploy/compose.offline.yml swaps them in; `make compose-test` starts an engine and builds them
first. Each phase is timed; the report (`-s` shows it) has what was killed and the counts the
traffic simulator read back from the profile API: events lost, events duplicated.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from pymongo import MongoClient
from pymongo.errors import OperationFailure

from hilo_devkit import containers
from hilo_devkit.catalogue import SERVICES
from hilo_devkit.env_example import development_env
from hilo_devkit.local_platform import compose_images

pytestmark = pytest.mark.compose

ROOT = Path(__file__).resolve().parents[1]
HOST_PORTS = (
    "KAFKA_HOST_PORT",
    "MONGO_HOST_PORT",
    "PROFILE_HOST_PORTS",
    "WEB_HOST_PORT",
    "WHATSAPP_HOST_PORT",
    "SMS_HOST_PORT",
    "EMAIL_HOST_PORT",
    "STORE_HOST_PORT",
    "VOICE_HOST_PORT",
    "SOCIAL_HOST_PORT",
    "DESK_HOST_PORT",
    "OFFERS_HOST_PORT",
    "ANALYTICS_HOST_PORT",
    "PROMETHEUS_HOST_PORT",
    "GRAFANA_HOST_PORT",
)
"""Every published port, made ephemeral: the test never collides with a running `make run`."""
LONG_RUNNING = [spec.name for spec in SERVICES]
SCALE = 3
T = TypeVar("T")


@dataclass
class Stack:
    """One compose project of this test: its files, its `.env` and what it measured."""

    project: str
    env_file: Path
    files: list[str]
    offline: bool
    report: list[str] = field(default_factory=list)

    def command(self) -> list[str]:
        """`docker compose` for this project, its `.env` and its files."""
        files = [arg for file in self.files for arg in ("-f", file)]
        return ["docker", "compose", "-p", self.project, "--env-file", str(self.env_file), *files]

    def compose(self, *args: str, timeout: float = 900, check: bool = True) -> str:
        result = subprocess.run(
            [*self.command(), *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            pytest.fail(f"docker compose {' '.join(args)}:\n{result.stdout}\n{result.stderr}")
        return result.stdout + result.stderr

    def timed(self, what: str, *args: str, timeout: float = 900) -> str:
        started = time.monotonic()
        output = self.compose(*args, timeout=timeout)
        self.note(f"{what}: {time.monotonic() - started:.1f} s")
        return output

    def note(self, line: str) -> None:
        self.report.append(line)
        print(f"compose-test: {line}", flush=True)  # noqa: T201

    def containers(self, service: str) -> list[dict[str, Any]]:
        ids = self.compose("ps", "-a", "-q", service).split()
        if not ids:
            return []
        inspected: list[dict[str, Any]] = json.loads(
            subprocess.run(
                ["docker", "inspect", *ids], capture_output=True, text=True, check=True
            ).stdout
        )
        return inspected

    def container(self, service: str) -> dict[str, Any]:
        (found,) = self.containers(service)
        return found

    def host_port(self, service: str, port: int) -> int:
        address = self.compose("port", service, str(port)).strip().splitlines()[-1]
        return int(address.rsplit(":", 1)[1])

    def simulate(self, customers: int, seed: int, *, on_line: Callable[[str], None]) -> str:
        """The traffic simulator inside the compose network; every output line to `on_line`."""
        command = [
            *self.command(),
            "--profile", "demo", "run", "--rm", "-T",
            "-e", f"HILO_SIM_SEED={seed}", "-e", "HILO_SIM_READBACK_TIMEOUT_SECONDS=180",
            "traffic-simulator", "traffic-simulator", "--customers", str(customers),
        ]  # fmt: skip
        lines: list[str] = []
        with subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ) as process:
            assert process.stdout is not None
            for line in process.stdout:
                lines.append(line)
                on_line(line)
            assert process.wait(timeout=600) == 0, "".join(lines[-60:])
        return "".join(lines)


def count(report: str, label: str) -> str:
    found = re.search(rf"^\s+{label}\s+(\S+)", report, re.M)
    assert found, f"no {label!r} in the simulator's report:\n{report}"
    return found.group(1)


def eventually(find: Callable[[], T | None], what: str, timeout: float) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (found := find()) is not None:
            return found
        time.sleep(1)
    pytest.fail(f"not within {timeout:.0f} s: {what}")


def started_at(container: dict[str, Any], key: str = "StartedAt") -> datetime:
    stamp = re.sub(r"(\.\d{6})\d*", r"\1", container["State"][key])
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    unusable = containers.docker_unusable([])
    if unusable:
        pytest.fail(f"make compose-test needs a Docker engine: {unusable}")
    offline = os.environ.get("HILO_COMPOSE_OFFLINE") == "1" or (
        containers.docker_unusable(compose_images()) is not None
    )
    files = ["docker-compose.yml", *(["deploy/compose.offline.yml"] if offline else [])]
    tag = f"compose-test-{uuid.uuid4().hex[:8]}"
    env_file = tmp_path_factory.mktemp("compose") / ".env"
    ports = "".join(f"{name}=0\n" for name in HOST_PORTS)
    env_file.write_text(f"{development_env()}\nHILO_VERSION={tag}\n{ports}")
    stack = Stack(f"hilo-{tag}", env_file, files, offline)
    stack.note(f"files: {' + '.join(files)}")
    try:
        yield stack
    finally:
        stack.compose("--profile", "demo", "--profile", "observability", "down", "-v",
                      "--remove-orphans", check=False)  # fmt: skip
        subprocess.run(["docker", "rmi", "-f", f"hilo:{tag}"], capture_output=True, check=False)
        subprocess.run(
            ["docker", "image", "prune", "-f", "--filter",
             f"label=com.docker.compose.project={stack.project}"],
            capture_output=True, check=False,
        )  # fmt: skip


def test_compose_up_plays_scales_survives_crashes_and_leaves_nothing(stack: Stack) -> None:
    stack.timed("build + up --wait (every service healthy)", "up", "-d", "--build", "--wait")
    check_init_ran_first_and_every_service_is_healthy(stack)
    check_mongodb_requires_authentication(stack)
    check_the_demo_journeys(stack)
    stack.timed(f"scale customer-profile to {SCALE}", "up", "-d", "--wait",
                "--scale", f"customer-profile={SCALE}")  # fmt: skip
    check_the_consumer_group(stack)
    check_crashes_mid_traffic(stack)
    check_prometheus_scrapes_every_service(stack)
    check_down_leaves_nothing(stack)
    print("\n".join(["", "compose-test report:", *stack.report]))  # noqa: T201


def check_init_ran_first_and_every_service_is_healthy(stack: Stack) -> None:
    init = stack.container("init")
    assert init["State"]["ExitCode"] == 0, stack.compose("logs", "init")
    for infrastructure in ("kafka", "mongo"):
        assert started_at(stack.container(infrastructure)) < started_at(init)
    for service in LONG_RUNNING:
        container = stack.container(service)
        assert started_at(container) > started_at(init, "FinishedAt"), service
        assert container["State"]["Health"]["Status"] == "healthy", service
    stack.note(
        f"init: topics and indexes, exit 0, before all {len(LONG_RUNNING)} services; "
        "kafka, mongo and every service healthy"
    )
    web = stack.host_port("channel-web", 8081)
    contract = httpx.get(f"http://127.0.0.1:{web}/asyncapi.json", timeout=10).json()
    assert contract["asyncapi"] == "3.0.0"
    assert "journey" in contract["channels"], "the image serves the packaged AsyncAPI document"


def check_mongodb_requires_authentication(stack: Stack) -> None:
    """No one reads MongoDB without a password; Hilo's user reads and writes Hilo's databases
    and nothing else (no other database, no user administration)."""
    env = dict(
        line.split("=", 1) for line in stack.env_file.read_text().splitlines() if "=" in line
    )
    address = f"127.0.0.1:{stack.host_port('mongo', 27017)}"
    options = "directConnection=true&serverSelectionTimeoutMS=5000"
    anonymous: MongoClient[dict[str, Any]]
    hilo: MongoClient[dict[str, Any]]
    with (
        MongoClient(f"mongodb://{address}/?{options}") as anonymous,
        pytest.raises(OperationFailure, match="requires authentication"),
    ):
        anonymous.hilo.list_collection_names()
    user = f"hilo:{env['HILO_MONGO_PASSWORD']}"
    with MongoClient(f"mongodb://{user}@{address}/?{options}&authSource=admin") as hilo:
        assert "journey" in hilo.hilo.list_collection_names(), "init made the collections"
        with pytest.raises(OperationFailure):
            hilo.admin.command("usersInfo")
        with pytest.raises(OperationFailure):
            hilo.elsewhere.command("create", "probe")
    stack.note("mongo: authentication required; Hilo's user limited to its two databases")


def check_the_demo_journeys(stack: Stack) -> None:
    started = time.monotonic()
    report = stack.simulate(6, seed=7, on_line=lambda _line: None)
    assert count(report, "journeys complete") == "6/6", report
    assert count(report, "events lost") == "0", report
    assert count(report, "events duplicated") == "0", report
    assert "0 mismatches  ok" in report, report
    stack.note(
        f"make simulate's journeys (6 people): 6/6 complete, 0 lost, 0 duplicated, "
        f"{count(report, 'journey entries')} entries, {time.monotonic() - started:.1f} s"
    )


def check_the_consumer_group(stack: Stack) -> None:
    profiles = stack.containers("customer-profile")
    assert len(profiles) == SCALE
    assert all(p["State"]["Health"]["Status"] == "healthy" for p in profiles)

    def members() -> int | None:
        described = stack.compose(
            "exec", "-T", "kafka", "/opt/kafka/bin/kafka-consumer-groups.sh",
            "--bootstrap-server", "localhost:9092", "--describe", "--group", "customer-profile",
            "--members", check=False,
        )  # fmt: skip
        found = len(re.findall(r"^customer-profile\s+\S+", described, re.M))
        return found if found == SCALE else None

    eventually(members, f"{SCALE} members in the consumer group", timeout=90)
    stack.note(f"customer-profile x{SCALE}: {SCALE} healthy members of one consumer group")


def check_crashes_mid_traffic(stack: Stack) -> None:
    """SIGKILL of a channel and of one profile replica while 40 people's journeys are sent.

    The container's process is killed from the host, as a crash or the OOM killer would: Docker
    counts `docker kill` as an operator's stop, after which `restart: unless-stopped` does not
    restart (seen on this engine)."""
    victims = ["channel-web", "customer-profile"]
    killed: dict[str, tuple[str, int]] = {}
    sent = threading.Event()

    def on_line(line: str) -> None:
        if not sent.is_set() and re.match(r"\s+\[\s*4/40\]", line):
            sent.set()
            for service in victims:
                container = stack.containers(service)[0]
                os.kill(container["State"]["Pid"], 9)
                killed[service] = (container["Name"].lstrip("/"), container["RestartCount"])
            stack.note("killed (SIGKILL) mid-traffic: " + ", ".join(n for n, _ in killed.values()))

    started = time.monotonic()
    report = stack.simulate(40, seed=11, on_line=on_line)
    assert sent.is_set(), "the simulator never reached its 4th person"
    lost, duplicated = count(report, "events lost"), count(report, "events duplicated")
    assert count(report, "journeys complete") == "40/40", report
    assert (lost, duplicated) == ("0", "0"), report
    stack.note(
        f"40 people under the crashes: 40/40 complete, lost {lost}, duplicated {duplicated}, "
        f"refused {count(report, 'refused requests')}, requests sent again "
        f"{count(report, 'requests sent again')}, {time.monotonic() - started:.1f} s"
    )
    for service, (name, restarts) in killed.items():

        def back(name: str = name, restarts: int = restarts) -> dict[str, Any] | None:
            inspected = json.loads(
                subprocess.run(
                    ["docker", "inspect", name], capture_output=True, text=True, check=True
                ).stdout
            )[0]
            healthy = inspected["State"].get("Health", {}).get("Status") == "healthy"
            restarted = inspected["RestartCount"] > restarts
            return inspected if healthy and restarted else None

        again = eventually(back, f"{name} restarted and healthy", timeout=120)
        now = again["RestartCount"]
        stack.note(f"{service}: restarted by its restart policy ({now}x), healthy")


def check_prometheus_scrapes_every_service(stack: Stack) -> None:
    # `up` without --scale would scale customer-profile back to one.
    stack.timed("observability profile up", "--profile", "observability", "up", "-d", "--wait",
                "--scale", f"customer-profile={SCALE}")  # fmt: skip
    port = stack.host_port("prometheus", 9090)
    jobs = set(LONG_RUNNING)

    def scraped() -> dict[str, list[str]] | None:
        try:
            answer = httpx.get(f"http://127.0.0.1:{port}/api/v1/targets", timeout=5).json()
        except (httpx.HTTPError, ValueError):
            return None
        health: dict[str, list[str]] = {}
        for target in answer["data"]["activeTargets"]:
            health.setdefault(target["labels"]["job"], []).append(target["health"])
        hilo = {job: states for job, states in health.items() if job in jobs}
        every_one_up = set(hilo) == jobs and all(s == ["up"] * len(s) for s in hilo.values())
        return health if every_one_up and len(hilo["customer-profile"]) == SCALE else None

    health = eventually(scraped, "every Hilo service scraped and up", timeout=120)
    exporter = "kafka exporter not built offline" if stack.offline else f"kafka {health['kafka']}"
    stack.note(
        f"prometheus: all {len(jobs)} services up ({SCALE} customer-profile targets); {exporter}"
    )


def check_down_leaves_nothing(stack: Stack) -> None:
    stack.timed("down -v", "--profile", "demo", "--profile", "observability", "down", "-v",
                "--remove-orphans")  # fmt: skip
    label = f"label=com.docker.compose.project={stack.project}"
    left = {
        kind: subprocess.run(
            ["docker", kind, "ls", *(["-a"] if kind == "container" else []), "-q",
             "--filter", label],
            capture_output=True, text=True, check=True,
        ).stdout.split()
        for kind in ("container", "volume", "network")
    }  # fmt: skip
    assert left == {"container": [], "volume": [], "network": []}, left
    stack.note("down -v: no container, volume or network of the project left")
