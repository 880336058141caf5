"""`make run`: the whole platform on this machine, with Docker Compose or as local processes.

With a Docker engine, `docker compose up` runs what ops run. Without one, this starts the same
platform as processes: the local Kafka and SecantusDB of the test infrastructure, the topics and
indexes, the customer-profile service and every channel service, each with its logs prefixed.
Ctrl-C (or SIGTERM) stops everything it started, the servers last; children are also tied to
this process, so nothing outlives it even if it is killed.

The development secrets (write keys, webhook secrets, API keys) are generated per run unless set
in the environment, and written with the URLs to `.hilo/platform.env`, which the traffic
simulator reads (`make simulate`).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

from pydantic import AliasChoices
from pydantic.fields import FieldInfo

from hilo.settings import HiloSettings
from hilo.testkit.local_infra import (
    Infrastructure,
    InfrastructureError,
    die_with_parent,
    docker_available,
    stop_process_group,
)
from hilo.topics import ensure_topics

ENV_FILE = Path(".hilo") / "platform.env"
BASE_PORT = 8080


@dataclass(frozen=True)
class ServiceSpec:
    """One deployable service: its Python module, port offset and what it must be given."""

    name: str
    module: str
    settings: str
    """`module:Class` of its settings: what `.env.example` and the compose checks read."""
    port_offset: int
    public_url: bool = False
    """Twilio signs the public URL: the service must know the address it is called on."""


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec(
        "customer-profile",
        "customer_profile",
        "customer_profile.settings:ProfileSettings",
        0,
    ),
    ServiceSpec(
        "channel-web",
        "channel_web",
        "channel_web.settings:WebSettings",
        1,
    ),
    ServiceSpec(
        "channel-whatsapp",
        "channel_whatsapp",
        "channel_whatsapp.settings:WhatsAppSettings",
        2,
    ),
    ServiceSpec(
        "channel-sms",
        "channel_sms",
        "channel_sms.settings:SmsSettings",
        3,
        public_url=True,
    ),
    ServiceSpec(
        "channel-email",
        "channel_email",
        "channel_email.settings:EmailSettings",
        4,
    ),
    ServiceSpec(
        "channel-store",
        "channel_store",
        "channel_store.settings:StoreSettings",
        5,
    ),
    ServiceSpec(
        "channel-voice",
        "channel_voice",
        "channel_voice.settings:VoiceSettings",
        6,
        public_url=True,
    ),
    ServiceSpec(
        "channel-social",
        "channel_social",
        "channel_social.settings:SocialSettings",
        7,
    ),
)
"""Every service of the platform; docker-compose.yml runs the same list (a test checks it)."""


def settings_class(spec: ServiceSpec) -> type[HiloSettings]:
    module, name = spec.settings.split(":")
    cls: type[HiloSettings] = getattr(importlib.import_module(module), name)
    return cls


def variable(name: str, field: FieldInfo) -> str:
    """The environment variable a settings field reads (its first alias, else `HILO_<NAME>`)."""
    alias = field.validation_alias
    if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
        return alias.choices[0]
    return "HILO_" + name.upper()


def is_secret(field: FieldInfo) -> bool:
    return "SecretStr" in repr(field.annotation)


def secret_variables(spec: ServiceSpec) -> list[str]:
    """The secrets a service reads, as its settings class declares them (`SecretStr` fields)."""
    fields = settings_class(spec).model_fields
    return [variable(name, field) for name, field in fields.items() if is_secret(field)]


def url_variable(service: str) -> str:
    """`HILO_URL_CHANNEL_WEB` and the like: where the simulator finds each service."""
    return "HILO_URL_" + service.upper().replace("-", "_")


def development_secrets(environ: Mapping[str, str]) -> dict[str, str]:
    """One random value per secret setting, unless the environment already sets it."""
    names = sorted({name for spec in SERVICES for name in secret_variables(spec)})
    return {name: environ.get(name) or secrets.token_urlsafe(18) for name in names}


@dataclass
class RunningService:
    """A service process whose output is copied to this terminal, each line prefixed."""

    spec: ServiceSpec
    port: int
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self, out: IO[str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.spec.module],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - ties the child's life to ours
            env=self.env,
        )
        threading.Thread(target=self._copy_output, args=(out,), daemon=True).start()

    def _copy_output(self, out: IO[str]) -> None:
        if self.process is None or self.process.stdout is None:
            return
        prefix = f"{self.spec.name:>17} | "
        for line in iter(self.process.stdout.readline, b""):
            out.write(prefix + line.decode(errors="replace"))
            out.flush()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health/ready", timeout=2) as answer:  # noqa: S310
                return bool(answer.status == 200)
        except OSError:
            return False

    def exited(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            stop_process_group(self.process.pid, timeout=15)
        if self.process is not None:
            with suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=5)


class LocalPlatform:
    """Kafka, SecantusDB and every service as local processes."""

    def __init__(self, base_port: int = BASE_PORT, env_file: Path = ENV_FILE) -> None:
        self.base_port = base_port
        self.env_file = env_file
        self.infra = Infrastructure()
        self.services: list[RunningService] = []

    def start(self, out: IO[str] = sys.stdout, timeout: float = 120.0) -> dict[str, str]:
        """Start everything and wait until every service is ready; return the env-file values."""
        endpoints = self.infra.start()
        shared = {
            "KAFKA_BOOTSTRAP_SERVERS": endpoints.kafka_bootstrap_servers,
            "MONGODB_URL": endpoints.mongodb_url,
            "HILO_ENVIRONMENT": "development",
            "HILO_LOG_FORMAT": os.environ.get("HILO_LOG_FORMAT", "console"),
            **development_secrets(os.environ),
        }
        asyncio.run(_ensure_topics(shared))
        for spec in SERVICES:
            port = self.base_port + spec.port_offset
            env = {
                **os.environ,
                **shared,
                "HILO_HTTP_PORT": str(port),
                "HILO_HTTP_HOST": "127.0.0.1",
            }
            if spec.public_url:
                env["HILO_PUBLIC_BASE_URL"] = f"http://127.0.0.1:{port}"
            self.services.append(RunningService(spec, port, env))
        for service in self.services:
            service.start(out)
        self._wait_ready(timeout)
        values = {**shared, **{url_variable(s.spec.name): s.url for s in self.services}}
        self._write_env_file(values)
        return values

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        waiting = list(self.services)
        while waiting:
            for service in list(waiting):
                if service.exited():
                    raise InfrastructureError(f"{service.spec.name} exited during start-up")
                if service.ready():
                    waiting.remove(service)
            if waiting and time.monotonic() > deadline:
                names = ", ".join(s.spec.name for s in waiting)
                raise InfrastructureError(f"not ready after {timeout:.0f}s: {names}")
            time.sleep(0.3)

    def _write_env_file(self, values: Mapping[str, str]) -> None:
        self.env_file.parent.mkdir(parents=True, exist_ok=True)
        self.env_file.touch(mode=0o600)
        self.env_file.write_text("".join(f"{key}={value}\n" for key, value in values.items()))

    def stop(self) -> None:
        """Services first (they flush and commit), then the servers."""
        for service in reversed(self.services):
            service.stop()
        self.infra.stop()
        self.env_file.unlink(missing_ok=True)


async def _ensure_topics(values: Mapping[str, str]) -> None:
    await ensure_topics(HiloSettings(kafka_bootstrap_servers=values["KAFKA_BOOTSTRAP_SERVERS"]))


def summary(values: Mapping[str, str]) -> str:
    """What a person needs to use the running platform."""
    rows = [f"  {spec.name:<18} {values[url_variable(spec.name)]}" for spec in SERVICES]
    return "\n".join(
        [
            "",
            "Hilo is running (Ctrl-C stops everything):",
            *rows,
            f"  {'kafka':<18} {values['KAFKA_BOOTSTRAP_SERVERS']}",
            f"  {'mongodb':<18} {values['MONGODB_URL']}",
            "",
            f"  profile API docs   {values[url_variable('customer-profile')]}/docs"
            f"  (X-API-Key: {values['HILO_API_KEYS']})",
            f"  secrets and URLs   {ENV_FILE}",
            "  play traffic       make simulate   (in another terminal)",
            "",
        ]
    )


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    stopping = threading.Event()

    def handle(_signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stopping
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_local(base_port: int) -> int:
    platform = LocalPlatform(base_port)
    with _stop_on_signals() as stopping:
        try:
            values = platform.start()
            print(summary(values), flush=True)  # noqa: T201
            while not stopping.wait(1.0):
                if crashed := [s.spec.name for s in platform.services if s.exited()]:
                    print(f"stopping: {', '.join(crashed)} exited", file=sys.stderr)  # noqa: T201
                    return 1
        except InfrastructureError as exc:
            print(f"error: {exc}", file=sys.stderr)  # noqa: T201
            return 2
        finally:
            print("stopping Hilo…", flush=True)  # noqa: T201
            platform.stop()
            print("stopped; nothing left running", flush=True)  # noqa: T201
    return 0


def run_compose() -> int:
    """With Docker: what ops run (Ctrl-C stops the containers; `docker compose down` removes)."""
    from hilo.testkit.env_example import development_env  # noqa: PLC0415 - it imports this module

    docker = shutil.which("docker")
    if docker is None:
        return run_local(BASE_PORT)
    env_file = Path(".env")
    if not env_file.exists():
        env_file.touch(mode=0o600)
        env_file.write_text(development_env())
        print("wrote .env with random development secrets (edit it for production)")  # noqa: T201
    return subprocess.call([docker, "compose", "up", "--build"])


def main() -> None:
    parser = argparse.ArgumentParser(prog="hilo-run", description=__doc__.splitlines()[0])
    parser.add_argument("--local", action="store_true", help="local processes even with Docker")
    parser.add_argument("--base-port", type=int, default=BASE_PORT, help="profile API port")
    args = parser.parse_args()
    if args.local or not docker_available():
        sys.exit(run_local(args.base_port))
    sys.exit(run_compose())


if __name__ == "__main__":
    main()
