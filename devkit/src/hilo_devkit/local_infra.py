"""Real Kafka and a real MongoDB-wire database for tests and local runs, with or without Docker.

`HILO_INFRA` chooses (`auto` when unset):

- `env`: the servers named by `KAFKA_BOOTSTRAP_SERVERS` and `MONGODB_URL` (both must be set).
- `docker`: testcontainers start the images docker-compose uses (`HILO_KAFKA_IMAGE` and
  `HILO_MONGO_IMAGE` name others, such as deploy/offline's); an error if the engine cannot.
- `local`: local processes (below), even where Docker answers.
- `auto`: the servers named in the environment where both are; else testcontainers where a Docker
  engine answers *and* has or can pull every image; else local processes, saying why in one line
  (a Docker engine with no registry in reach must not crash the run).

Local processes: Apache Kafka from its Maven Central jars (resolved with Maven from
   `deploy/local/kafka/pom.xml`) as a single-node KRaft broker, and SecantusDB (a MongoDB-wire
   server on WiredTiger with real secondary indexes, installed from PyPI into its own virtual
   environment from `deploy/local/secantusdb/requirements.txt`; GPL-2.0, so it only ever runs as
   a separate process and is never imported).

Downloads and builds are cached under `~/.cache/hilo` (or `$HILO_CACHE_DIR`); every run gets fresh
data directories; everything started is stopped on exit, and child processes die with their
parent even if it is killed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import ctypes
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from aiokafka.admin import AIOKafkaAdminClient
from pymongo import MongoClient

from hilo.testkit.serving import free_port
from hilo_devkit import containers
from hilo_devkit.certificates import make_server_certificate

log = logging.getLogger("hilo.infra")

READY_TIMEOUT_SECONDS = 120.0
SECURED_KAFKA_VARIABLE = "HILO_TEST_KAFKA_SECURED"
"""Where `make infra-up` says its broker's secured listeners are (`SecuredKafka`, as JSON), for
tests run against it."""
_PR_SET_PDEATHSIG = 1


class InfrastructureError(RuntimeError):
    """The infrastructure could not be provided; the message says what to install or set."""


@dataclass(frozen=True)
class SecuredKafka:
    """The local broker's listeners that take only SASL (PLAIN and SCRAM-SHA-256, for `user`):
    over plaintext, and over TLS with a certificate of an authority made for the run (`cafile`).
    What the tests of Hilo's Kafka security settings connect to."""

    sasl: str
    sasl_ssl: str
    cafile: str
    user: tuple[str, str] = ("hilo-test", "hilo-test-secret")


@dataclass(frozen=True)
class Endpoints:
    kafka_bootstrap_servers: str
    mongodb_url: str
    provider: str
    kafka_secured: SecuredKafka | None = None
    """None for a broker named by the environment (unless `make infra-up` started it) or run in
    a container."""


def cache_dir() -> Path:
    base = (
        os.environ.get("HILO_CACHE_DIR")
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hilo"
    )
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


def deploy_dir() -> Path:
    """`deploy/local` of the Hilo checkout, found from the environment, cwd or this file."""
    if env := os.environ.get("HILO_DEPLOY_DIR"):
        return Path(env)
    for start in (Path.cwd(), Path(__file__).resolve()):
        for parent in (start, *start.parents):
            candidate = parent / "deploy" / "local"
            if (candidate / "kafka" / "pom.xml").is_file():
                return candidate
    raise InfrastructureError(
        "cannot find deploy/local (with kafka/pom.xml): run from a Hilo checkout "
        "or set HILO_DEPLOY_DIR"
    )


def kafka_version() -> str:
    """The Kafka version pinned in deploy/local/kafka/pom.xml (also the compose image tag)."""
    pom = (deploy_dir() / "kafka" / "pom.xml").read_text(encoding="utf-8")
    match = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom)
    if not match:
        raise InfrastructureError("deploy/local/kafka/pom.xml does not set kafka.version")
    return match.group(1)


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def require_tool(name: str, purpose: str, install_hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise InfrastructureError(
            f"`{name}` is needed {purpose} but is not on PATH: {install_hint}, "
            "or point KAFKA_BOOTSTRAP_SERVERS and MONGODB_URL at running servers"
        )
    return path


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Serialise cache builds between concurrent runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def die_with_parent() -> None:
    """Runs in the child before exec: the kernel kills it when the test process dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class ManagedProcess:
    """A server process in its own process group, stopped with the whole group."""

    name: str
    command: list[str]
    log_path: Path
    tied_to_parent: bool = True
    env: dict[str, str] | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _log: IO[bytes] | None = field(default=None, init=False)

    def start(self) -> None:
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent if self.tied_to_parent else None,  # noqa: PLW1509
            env={**os.environ, **(self.env or {})},
        )

    @property
    def pid(self) -> int:
        if self.process is None:
            raise InfrastructureError(f"{self.name} was never started")
        return self.process.pid

    def exited(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is not None and self.process.poll() is None:
            stop_process_group(self.process.pid, timeout)
            self.process.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None


def stop_process_group(pid: int, timeout: float = 20.0) -> None:
    """SIGTERM the group, then SIGKILL whatever is left after `timeout`."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _group_alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie leader still counts as a group member until reaped.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pgid, os.WNOHANG)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait(predicate: Any, what: str, process: ManagedProcess, timeout: float) -> None:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process.exited():
            raise InfrastructureError(f"{what} exited during start-up:\n{process.log_tail()}")
        with contextlib.suppress(Exception):
            if predicate():
                return
        time.sleep(0.2)
    raise InfrastructureError(f"{what} not ready after {timeout:.0f}s:\n{process.log_tail()}")


def new_cluster_id() -> str:
    """A random KRaft cluster id, as Kafka's own `Uuid.randomUuid` makes it: base64url of 16 bytes.

    Like Kafka, redraw ids that start with `-`: the storage tool's argument parser would read one
    as an option (a fresh-clone CI run failed on exactly that, once in 64 runs).
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


class _LocalServer:
    """Lifecycle shared by the local servers: launch, wait until it answers, stop."""

    name = "server"

    def __init__(self, workdir: Path, *, tied_to_parent: bool) -> None:
        self.workdir = workdir
        self.tied_to_parent = tied_to_parent
        self.process: ManagedProcess | None = None
        self.ready_seconds = 0.0
        self._launched_at = 0.0

    def command(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def launch(self) -> None:
        self.process = ManagedProcess(
            self.name,
            self.command(),
            self.workdir / f"{self.name.lower()}.log",
            tied_to_parent=self.tied_to_parent,
        )
        self._launched_at = time.monotonic()
        self.process.start()

    def wait_ready(self) -> None:
        assert self.process is not None
        _wait(self._ready, self.name, self.process, READY_TIMEOUT_SECONDS)
        self.ready_seconds = time.monotonic() - self._launched_at

    def start(self) -> None:
        self.launch()
        self.wait_ready()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


class LocalKafka(_LocalServer):
    """Apache Kafka, single-node KRaft (broker + controller), run from Maven Central jars."""

    name = "Kafka"

    def __init__(self, workdir: Path, *, tied_to_parent: bool = True) -> None:
        super().__init__(workdir, tied_to_parent=tied_to_parent)
        self.version = kafka_version()
        self.port = free_port()
        self.sasl_port = free_port()
        self.sasl_ssl_port = free_port()
        self.controller_port = free_port()
        self.cafile, self.keystore = workdir / "ca.pem", workdir / "server.pem"

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def secured(self) -> SecuredKafka:
        return SecuredKafka(
            f"127.0.0.1:{self.sasl_port}", f"127.0.0.1:{self.sasl_ssl_port}", str(self.cafile)
        )

    def libs(self) -> Path:
        """Resolve the broker's jars once into the cache (Maven Central via `mvn`)."""
        target = cache_dir() / f"kafka-{self.version}" / "libs"
        if (target / ".complete").exists():
            return target
        mvn = require_tool("mvn", "to fetch Kafka's jars", "install Maven (apt-get install maven)")
        with _file_lock(cache_dir() / f"kafka-{self.version}.lock"):
            if (target / ".complete").exists():
                return target
            staging = target.with_name("libs.partial")
            shutil.rmtree(staging, ignore_errors=True)
            result = subprocess.run(
                [
                    mvn,
                    "-q",
                    "-B",
                    "-f",
                    str(deploy_dir() / "kafka" / "pom.xml"),
                    "dependency:copy-dependencies",
                    "-DincludeScope=runtime",
                    f"-DoutputDirectory={staging}",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                raise InfrastructureError(f"Maven could not fetch Kafka's jars:\n{result.stdout}")
            (staging / ".complete").touch()
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
        return target

    def _write_config(self) -> Path:
        data = self.workdir / "data"
        if not self.keystore.exists():
            make_server_certificate(self.workdir)
        user, password = SecuredKafka.user
        config = self.workdir / "server.properties"
        config.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                    f"listeners=PLAINTEXT://127.0.0.1:{self.port},"
                    f"SASL_PLAINTEXT://127.0.0.1:{self.sasl_port},"
                    f"SASL_SSL://127.0.0.1:{self.sasl_ssl_port},"
                    f"CONTROLLER://127.0.0.1:{self.controller_port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port},"
                    f"SASL_PLAINTEXT://127.0.0.1:{self.sasl_port},"
                    f"SASL_SSL://127.0.0.1:{self.sasl_ssl_port}",
                    "controller.listener.names=CONTROLLER",
                    "inter.broker.listener.name=PLAINTEXT",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,"
                    "SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
                    *_sasl_listener("sasl_plaintext", user, password),
                    *_sasl_listener("sasl_ssl", user, password),
                    "listener.name.sasl_ssl.ssl.keystore.type=PEM",
                    f"listener.name.sasl_ssl.ssl.keystore.location={self.keystore}",
                    f"log.dirs={data}",
                    "num.partitions=1",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=4",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "auto.create.topics.enable=false",
                    "log.cleaner.backoff.ms=1000",
                    "",
                ]
            ),
            encoding="utf-8",
        )
        (self.workdir / "log4j2.properties").write_text(
            "\n".join(
                [
                    "rootLogger.level=WARN",
                    "rootLogger.appenderRef.out.ref=OUT",
                    "appender.out.type=Console",
                    "appender.out.name=OUT",
                    "appender.out.layout.type=PatternLayout",
                    "appender.out.layout.pattern=[%d] %p %m (%c)%n",
                    "",
                ]
            ),
            encoding="utf-8",
        )
        return config

    def _java(self, main_class: str, *args: str) -> list[str]:
        java = require_tool(
            "java", "to run Kafka", "install a JDK 17+ (apt-get install default-jdk)"
        )
        return [
            java,
            "-Xms256m",
            "-Xmx768m",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
            "-cp",
            f"{self.libs()}/*",
            main_class,
            *args,
        ]

    def format_storage(self) -> None:
        """Format a fresh KRaft metadata log with a new cluster id."""
        config = self._write_config()
        result = subprocess.run(
            self._java(
                "kafka.tools.StorageTool",
                "format",
                f"--cluster-id={new_cluster_id()}",
                "-c",
                str(config),
                "--add-scram",
                "SCRAM-SHA-256=[name={},password={}]".format(*SecuredKafka.user),
            ),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise InfrastructureError(
                f"Kafka storage format failed:\n{result.stdout}{result.stderr}"
            )

    def command(self) -> list[str]:
        """The broker on existing storage (`format_storage` first on a fresh workdir)."""
        return self._java("kafka.Kafka", str(self.workdir / "server.properties"))

    def _ready(self) -> bool:
        if not port_open(self.port):
            return False
        # A thread of its own: the caller may be running an event loop already.
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, kafka_answers(self.bootstrap_servers)).result()


async def kafka_answers(bootstrap_servers: str) -> bool:
    """The broker serves metadata requests (an open port alone is not readiness)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=3000)
    try:
        await admin.start()
        await admin.list_topics()
        return True
    finally:
        await admin.close()


def _requirements() -> Path:
    return deploy_dir() / "secantusdb" / "requirements.txt"


class LocalSecantusDB(_LocalServer):
    """SecantusDB: a MongoDB wire-protocol server on WiredTiger, with real secondary indexes.

    FerretDB 1.x on SQLite (the previous default) used no index at all, so every lookup scanned
    and the local platform slowed down as data grew; see docs/benchmarks.md.
    """

    name = "SecantusDB"

    def __init__(self, workdir: Path, *, tied_to_parent: bool = True) -> None:
        super().__init__(workdir, tied_to_parent=tied_to_parent)
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    def binary(self) -> Path:
        """Install the pinned server once per requirements file into the cache (PyPI)."""
        requirements = _requirements()
        digest = hashlib.sha256(requirements.read_bytes()).hexdigest()[:10]
        home = cache_dir() / f"secantusdb-{digest}"
        server = home / "bin" / "secantusd-py"
        if (home / ".complete").exists():
            return server
        with _file_lock(cache_dir() / "secantusdb.lock"):
            if (home / ".complete").exists():
                return server
            shutil.rmtree(home, ignore_errors=True)
            for step in (
                [sys.executable, "-m", "venv", str(home)],
                [str(home / "bin" / "pip"), "install", "-q", "--no-deps", "-r", str(requirements)],
            ):
                result = subprocess.run(step, capture_output=True, text=True, check=False)
                if result.returncode != 0:
                    raise InfrastructureError(
                        f"installing SecantusDB failed ({' '.join(step[:3])}):\n"
                        f"{result.stdout}{result.stderr}"
                    )
            (home / ".complete").touch()
        return server

    def command(self) -> list[str]:
        """Standalone, as the compose file's `mongod` runs: no replica-set oplog entry written per
        document (Hilo reads no change streams); the database's CPU per event fell by a fifth."""
        return [
            str(self.binary()),
            "--host=127.0.0.1",
            f"--port={self.port}",
            f"--storage-path={self.workdir / 'data'}",
            "--log-level=WARNING",
            "--cache-size=512M",
            "--standalone",
        ]

    def _ready(self) -> bool:
        if not port_open(self.port):
            return False
        client: MongoClient[dict[str, Any]]
        with MongoClient(self.url, serverSelectionTimeoutMS=1000) as client:
            client.admin.command("ping")
        return True


INFRA_CHOICES = ("auto", "env", "docker", "local")


def infra_choice() -> str:
    """`HILO_INFRA`, checked: a typo must not silently pick something else."""
    choice = os.environ.get("HILO_INFRA", "").strip().lower() or "auto"
    if choice not in INFRA_CHOICES:
        raise InfrastructureError(
            f"HILO_INFRA={choice!r}: expected one of {', '.join(INFRA_CHOICES)}"
        )
    return choice


class Infrastructure:
    """Context manager that provides (and afterwards stops) Kafka and a MongoDB-wire server."""

    def __init__(
        self, *, tied_to_parent: bool = True, workdir: Path | None = None, choice: str = ""
    ) -> None:
        self.tied_to_parent = tied_to_parent
        self.workdir = workdir
        self.choice = choice
        """One of INFRA_CHOICES; empty: HILO_INFRA's."""
        self.fallback = ""
        """Why `auto` did not use Docker, when it answered but could not (for the report)."""
        self.kafka: LocalKafka | None = None
        self.database: LocalSecantusDB | None = None
        self._containers: list[Any] = []
        self._own_workdir = False
        self.endpoints: Endpoints | None = None

    def __enter__(self) -> Endpoints:
        try:
            self.endpoints = self.start()
        except BaseException:
            self.stop()
            raise
        return self.endpoints

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Endpoints:
        choice = self.choice or infra_choice()
        kafka_env = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        mongo_env = os.environ.get("MONGODB_URL")
        if choice == "env" or (choice == "auto" and kafka_env and mongo_env):
            if not (kafka_env and mongo_env):
                raise InfrastructureError(
                    "HILO_INFRA=env needs both KAFKA_BOOTSTRAP_SERVERS and MONGODB_URL"
                )
            secured = os.environ.get(SECURED_KAFKA_VARIABLE)  # `make infra-up`'s local broker
            local = SecuredKafka(**json.loads(secured)) if secured else None
            return Endpoints(kafka_env, mongo_env, "environment", local)
        if choice == "local":
            return self._start_local(kafka_env, mongo_env)
        unusable = containers.docker_unusable(containers.required_images(kafka_version()))
        if unusable is None:
            return self._start_containers(kafka_env, mongo_env)
        if choice == "docker":
            raise InfrastructureError(f"HILO_INFRA=docker, but {unusable}")
        log.warning("infrastructure: local processes, because %s", unusable)
        self.fallback = unusable
        return self._start_local(kafka_env, mongo_env)

    def _workdir(self) -> Path:
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="hilo-infra-"))
            self._own_workdir = True
        return self.workdir

    def _start_local(self, kafka_env: str | None, mongo_env: str | None) -> Endpoints:
        root = self._workdir()
        if not kafka_env:
            (root / "kafka").mkdir(parents=True, exist_ok=True)
            self.kafka = LocalKafka(root / "kafka", tied_to_parent=self.tied_to_parent)
            self.kafka.format_storage()
        if not mongo_env:
            (root / "mongo").mkdir(parents=True, exist_ok=True)
            self.database = LocalSecantusDB(root / "mongo", tied_to_parent=self.tied_to_parent)
            self.database.binary()
        # Launch both before waiting on either: the JVM warms up while the database starts.
        servers = [server for server in (self.kafka, self.database) if server is not None]
        for server in servers:
            server.launch()
        for server in servers:
            server.wait_ready()
        return Endpoints(
            kafka_env or self.kafka.bootstrap_servers,  # type: ignore[union-attr]
            mongo_env or self.database.url,  # type: ignore[union-attr]
            "local processes",
            None if kafka_env else self.kafka.secured,  # type: ignore[union-attr]
        )

    def _start_containers(self, kafka_env: str | None, mongo_env: str | None) -> Endpoints:
        kafka = kafka_env
        mongo = mongo_env
        if not kafka:
            container, kafka = containers.start_kafka_container(kafka_version())
            self._containers.append(container)
        if not mongo:
            container, mongo = containers.start_mongo_container()
            self._containers.append(container)
        return Endpoints(kafka, mongo, "testcontainers")

    def stop(self) -> None:
        for server in (self.kafka, self.database):
            if server is not None:
                server.stop()
        for container in self._containers:
            with contextlib.suppress(Exception):
                container.stop()
        self._containers.clear()
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def pids(self) -> list[int]:
        return [
            server.process.pid
            for server in (self.kafka, self.database)
            if server is not None and server.process is not None
        ]


# --- `hilo-infra` / `make infra-up` / `make infra-down` -------------------------------------

STATE_FILE = Path(".hilo") / "infra.json"


def _secured_json(secured: SecuredKafka) -> str:
    fields = {"sasl": secured.sasl, "sasl_ssl": secured.sasl_ssl, "cafile": secured.cafile}
    return json.dumps(fields, separators=(",", ":"))


def _sasl_listener(name: str, user: str, password: str) -> list[str]:
    """A listener's SASL settings: PLAIN for `user`, and SCRAM-SHA-256 for the users made at
    format time (the same `user`)."""
    return [
        f"listener.name.{name}.sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256",
        f"listener.name.{name}.plain.sasl.jaas.config="
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'user_{user}="{password}";',
        f"listener.name.{name}.scram-sha-256.sasl.jaas.config="
        "org.apache.kafka.common.security.scram.ScramLoginModule required;",
    ]


def _up(state_file: Path) -> int:
    if state_file.exists():
        print(f"already running (see {state_file}); `make infra-down` first")  # noqa: T201
        print(state_file.read_text())  # noqa: T201
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="hilo-dev-"))
    # Containers would be reaped when this command exits: `up` runs local processes, unless the
    # environment names the servers.
    choice = "env" if infra_choice() == "env" else "local"
    infra = Infrastructure(tied_to_parent=False, workdir=workdir, choice=choice)
    started = time.monotonic()
    endpoints = infra.__enter__()
    state = {
        **asdict(endpoints),
        "pids": infra.pids(),
        "workdir": str(workdir),
        "kafka_ready_seconds": infra.kafka.ready_seconds if infra.kafka else None,
        "database_ready_seconds": infra.database.ready_seconds if infra.database else None,
    }
    state_file.parent.mkdir(parents=True, exist_ok=True)
    state_file.write_text(json.dumps(state, indent=2))
    print(f"# ready in {time.monotonic() - started:.1f}s ({endpoints.provider})")  # noqa: T201
    print(f"export KAFKA_BOOTSTRAP_SERVERS={endpoints.kafka_bootstrap_servers}")  # noqa: T201
    print(f"export MONGODB_URL={endpoints.mongodb_url}")  # noqa: T201
    if endpoints.kafka_secured:
        print(f"export {SECURED_KAFKA_VARIABLE}='{_secured_json(endpoints.kafka_secured)}'")  # noqa: T201
    return 0


def _down(state_file: Path) -> int:
    if not state_file.exists():
        print("nothing to stop")  # noqa: T201
        return 0
    state = json.loads(state_file.read_text())
    for pid in state.get("pids", []):
        stop_process_group(pid)
    shutil.rmtree(state.get("workdir", ""), ignore_errors=True)
    state_file.unlink()
    print("stopped")  # noqa: T201
    return 0


def _env(state_file: Path) -> int:
    """Print `export` lines for the running stack (for `eval` in make targets and shells)."""
    if not state_file.exists():
        print("no local infrastructure is running: `make infra-up` first", file=sys.stderr)  # noqa: T201
        return 1
    state = json.loads(state_file.read_text())
    print(f"export KAFKA_BOOTSTRAP_SERVERS={state['kafka_bootstrap_servers']}")  # noqa: T201
    print(f"export MONGODB_URL={state['mongodb_url']}")  # noqa: T201
    if secured := state.get("kafka_secured"):
        print(f"export {SECURED_KAFKA_VARIABLE}='{_secured_json(SecuredKafka(**secured))}'")  # noqa: T201
    return 0


def _prepare() -> int:
    """Fetch and build everything the local infrastructure needs (no servers started)."""
    with tempfile.TemporaryDirectory() as tmp:
        print(LocalKafka(Path(tmp)).libs())  # noqa: T201
        print(LocalSecantusDB(Path(tmp)).binary())  # noqa: T201
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description="Local Kafka and SecantusDB for development.")
    parser.add_argument("command", choices=["up", "down", "env", "prepare"])
    parser.add_argument("--state-file", type=Path, default=STATE_FILE)
    args = parser.parse_args()
    try:
        if args.command == "up":
            sys.exit(_up(args.state_file))
        if args.command == "down":
            sys.exit(_down(args.state_file))
        if args.command == "env":
            sys.exit(_env(args.state_file))
        sys.exit(_prepare())
    except InfrastructureError as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
        sys.exit(2)


if __name__ == "__main__":
    main()
