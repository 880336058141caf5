"""`make run`: the whole platform on this machine, with Docker Compose or as local processes.

With a Docker engine, `docker compose up` runs what ops run. Without one, this starts the same
platform as processes: the local Kafka and SecantusDB of the test infrastructure, the topics and
indexes, the customer-profile service, every channel service, the agent desk and the offers
service (seeded with its demo catalogue, `offers.demo`), each with its logs prefixed. A service
that crashes is started again after a backoff (1 s, doubling up to 30 s), said in its log, while
the others go on serving. Only Ctrl-C (or SIGTERM) stops everything it started, the servers last;
children are also tied to this process, so nothing outlives it even if it is killed.

The channels send outbound messages through local sandboxes of Twilio, the WhatsApp Cloud API,
Mailgun and Meta's Send API (`hilo.testkit.standins`), never through the real providers: an
agent's reply is "sent", its delivery statuses come back to the channel's webhooks, and no
customer receives it.

The development secrets (write keys, webhook secrets, API keys) are generated per run unless set
in the environment, as is the desk's sign-in (agent `dev`, a random password) unless
HILO_DESK_AGENTS is set; they are written with the URLs to `.hilo/platform.env`, which the
traffic simulator reads (`make simulate`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

from hilo.settings import HiloSettings
from hilo.testkit.standins import mailgun, twilio, whatsapp
from hilo.topics import ensure_topics
from hilo_devkit import containers
from hilo_devkit.catalogue import (
    SERVICES,
    ServiceSpec,
    SignIn,
    development_sign_in,
    is_secret,
    settings_class,
    variable,
)
from hilo_devkit.env_example import development_env
from hilo_devkit.local_infra import (
    Infrastructure,
    InfrastructureError,
    deploy_dir,
    die_with_parent,
    infra_choice,
    kafka_version,
    stop_process_group,
)

ENV_FILE = Path(".hilo") / "platform.env"
BASE_PORT = 8080
MAX_BACKOFF_SECONDS = 30.0
STABLE_SECONDS = 60.0
"""A service that ran this long before crashing starts again from the shortest backoff."""


EMAIL_FROM = f"Hilo support <support@{mailgun.DOMAIN}>"

Wiring = tuple[list[str], dict[str, str]]
"""A sandbox's command-line arguments, and the settings that make its channel send through it."""


def _twilio_wiring(url: str, _channel_url: str, values: Mapping[str, str]) -> Wiring:
    """Twilio checks the account and auth token, and signs status callbacks with the token the
    channel verifies them with (the status callback URL is the channel's public URL)."""
    args = ["--account-sid", twilio.ACCOUNT_SID, f"--auth-token={values['HILO_TWILIO_AUTH_TOKEN']}"]
    return args, {
        "HILO_TWILIO_ACCOUNT_SID": twilio.ACCOUNT_SID,
        "HILO_TWILIO_FROM_NUMBER": twilio.SERVICE_NUMBER,
        "HILO_TWILIO_API_URL": url,
    }


def _whatsapp_wiring(url: str, channel_url: str, values: Mapping[str, str]) -> Wiring:
    """Meta checks the access token and signs status webhooks with the app secret. The desk
    enforces the 24-hour window itself: the sandbox never heard the customers write, so it must
    not refuse free text for being outside it."""
    args = [
        f"--access-token={values['HILO_WHATSAPP_ACCESS_TOKEN']}",
        "--phone-number-id",
        whatsapp.PHONE_NUMBER_ID,
        f"--app-secret={values['HILO_WHATSAPP_APP_SECRET']}",
        "--webhook-url",
        f"{channel_url}/webhooks/whatsapp",
        "--always-in-window",
        "--report-statuses",
    ]
    return args, {
        "HILO_WHATSAPP_PHONE_NUMBER_ID": whatsapp.PHONE_NUMBER_ID,
        "HILO_WHATSAPP_GRAPH_URL": url,
    }


def _mailgun_wiring(url: str, _channel_url: str, values: Mapping[str, str]) -> Wiring:
    """Mailgun checks the API key and sends only for its domain (it reports no statuses)."""
    args = [f"--api-key={values['HILO_MAILGUN_API_KEY']}", "--domain", mailgun.DOMAIN]
    return args, {
        "HILO_MAILGUN_DOMAIN": mailgun.DOMAIN,
        "HILO_MAILGUN_API_URL": url,
        "HILO_EMAIL_FROM": EMAIL_FROM,
    }


def _meta_send_wiring(url: str, channel_url: str, values: Mapping[str, str]) -> Wiring:
    """Meta checks the Page and Instagram tokens and signs echoes and deliveries with the app
    secret; like the WhatsApp sandbox it leaves the messaging window to the desk."""
    args = [
        f"--page-access-token={values['HILO_MESSENGER_PAGE_ACCESS_TOKEN']}",
        f"--instagram-access-token={values['HILO_INSTAGRAM_ACCESS_TOKEN']}",
        f"--app-secret={values['HILO_META_APP_SECRET']}",
        "--webhook-url",
        f"{channel_url}/webhooks/social",
        "--always-in-window",
        "--report-events",
    ]
    return args, {"HILO_META_GRAPH_URL": url, "HILO_INSTAGRAM_GRAPH_URL": url}


@dataclass(frozen=True)
class Sandbox:
    """A local stand-in of a provider's API that a channel sends through under `make run`, so
    that replies work end to end in development and nothing reaches a real customer."""

    name: str
    module: str
    port_offset: int
    channel: str
    """The service that sends through it."""
    sends: str
    """What it receives, for the summary."""
    wiring: Callable[[str, str, Mapping[str, str]], Wiring]
    """(its URL, the channel's URL, the secrets) -> its arguments and the channel's settings."""
    credentials: tuple[str, ...] = ()
    """Optional secrets of the channel that turn sending on: made up for the sandbox."""


SANDBOXES: tuple[Sandbox, ...] = (
    Sandbox(
        "sandbox-twilio", "hilo.testkit.standins.twilio", 11, "channel-sms", "SMS", _twilio_wiring
    ),
    Sandbox(
        "sandbox-whatsapp",
        "hilo.testkit.standins.whatsapp",
        12,
        "channel-whatsapp",
        "WhatsApp",
        _whatsapp_wiring,
        ("HILO_WHATSAPP_ACCESS_TOKEN",),
    ),
    Sandbox(
        "sandbox-mailgun",
        "hilo.testkit.standins.mailgun",
        13,
        "channel-email",
        "email",
        _mailgun_wiring,
        ("HILO_MAILGUN_API_KEY",),
    ),
    Sandbox(
        "sandbox-meta",
        "hilo.testkit.standins.meta_send",
        14,
        "channel-social",
        "Messenger and Instagram",
        _meta_send_wiring,
        ("HILO_MESSENGER_PAGE_ACCESS_TOKEN", "HILO_INSTAGRAM_ACCESS_TOKEN"),
    ),
)
PORT_SPAN = 1 + max(item.port_offset for items in (SERVICES, SANDBOXES) for item in items)
"""`make run` uses the ports from the base port to the base port + PORT_SPAN - 1."""


def secret_variables(spec: ServiceSpec) -> list[str]:
    """The secrets a service reads, as its settings class declares them (`SecretStr` fields)."""
    fields = settings_class(spec).model_fields
    return [variable(name, field) for name, field in fields.items() if is_secret(field)]


def development_secret_variables() -> set[str]:
    """The secrets `make run` makes up: every one a service needs, and the optional provider
    credentials of the channels that send through a sandbox. Any other optional credential stays
    unset: made up, it would turn on sending to the real provider."""
    needed = {
        spec.deployment_variable(variable(name, field))
        for spec in SERVICES
        for name, field in settings_class(spec).model_fields.items()
        if is_secret(field) and field.default is not None
    }
    return needed | {name for sandbox in SANDBOXES for name in sandbox.credentials}


def url_variable(service: str) -> str:
    """`HILO_URL_CHANNEL_WEB` and the like: where the simulator finds each service."""
    return "HILO_URL_" + service.upper().replace("-", "_")


def development_secrets(environ: Mapping[str, str]) -> tuple[dict[str, str], SignIn | None]:
    """One random value per secret setting, unless the environment already sets it; and the
    desk's sign-in made for this run (None when HILO_DESK_AGENTS names the agents).

    Two secrets cannot be random: the desk and the offers service call the profile API with one
    of its keys, and HILO_DESK_AGENTS holds `agent:argon2-hash` entries. The offers service has
    keys of its own (HILO_OFFERS_API_KEYS): the profile's do not change prices. The values are
    32 random bytes, enough for every length check (the desk's session secret wants 32+
    characters in production).
    """
    names = sorted(development_secret_variables())
    values = {name: environ.get(name) or secrets.token_urlsafe(32) for name in names}
    first_profile_key = values["HILO_API_KEYS"].split(",")[0].strip()
    values["HILO_PROFILE_API_KEY"] = environ.get("HILO_PROFILE_API_KEY") or first_profile_key
    sign_in = None
    if not environ.get("HILO_DESK_AGENTS"):
        values["HILO_DESK_AGENTS"], sign_in = development_sign_in()
    return values, sign_in


@dataclass
class RunningService:
    """A service (or sandbox) process whose output is copied to this terminal, each line
    prefixed with its name."""

    name: str
    module: str
    port: int
    env: dict[str, str]
    args: list[str] = field(default_factory=list)
    ready_path: str = "/health/ready"
    """Answers 200 once it serves (a sandbox has no health route: its message list)."""
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    restarts: int = field(default=0, init=False)
    """Restarts since it last ran for STABLE_SECONDS: the next backoff grows with it."""
    restart_at: float | None = field(default=None, init=False)
    """When a crashed service is due to be started again (time.monotonic)."""
    started_at: float = field(default=0.0, init=False)

    def start(self, out: IO[str]) -> None:
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module, *self.args],
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
        prefix = f"{self.name:>17} | "
        for line in iter(self.process.stdout.readline, b""):
            out.write(prefix + line.decode(errors="replace"))
            out.flush()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}{self.ready_path}", timeout=2) as answer:  # noqa: S310
                return bool(answer.status == 200)
        except OSError:
            return False

    def exited(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def supervise(self, out: IO[str], now: float) -> None:
        """Restart it if it crashed, after a backoff that doubles per crash (1 s up to
        MAX_BACKOFF_SECONDS) and resets once it has run STABLE_SECONDS; each step is shown in
        its prefixed log. The others keep serving meanwhile."""
        if self.process is None or not self.exited():
            return
        prefix = f"{self.name:>17} | "
        if self.restart_at is None:
            if now - self.started_at >= STABLE_SECONDS:
                self.restarts = 0
            delay = min(MAX_BACKOFF_SECONDS, 2.0**self.restarts)
            self.restart_at = now + delay
            out.write(
                f"{prefix}exited with code {self.process.returncode}; "
                f"restarting in {delay:.0f} s (make run keeps the others running)\n"
            )
            out.flush()
        elif now >= self.restart_at:
            self.restarts += 1
            self.restart_at = None
            out.write(f"{prefix}restarting (restart {self.restarts})\n")
            out.flush()
            self.start(out)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            stop_process_group(self.process.pid, timeout=15)
        if self.process is not None:
            with suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=5)


class LocalPlatform:
    """Kafka, SecantusDB and every service as local processes."""

    def __init__(
        self, base_port: int = BASE_PORT, env_file: Path = ENV_FILE, infra: str = ""
    ) -> None:
        self.base_port = base_port
        self.env_file = env_file
        self.infra = Infrastructure(choice=infra)
        self.services: list[RunningService] = []
        self.seeded = ""
        """What seeding the offers' demo catalogue did, for the summary."""

    def start(self, out: IO[str] = sys.stdout, timeout: float = 120.0) -> dict[str, str]:
        """Start everything and wait until every service is ready; return the env-file values."""
        development, sign_in = development_secrets(os.environ)
        endpoints = self.infra.start()
        shared = {
            "KAFKA_BOOTSTRAP_SERVERS": endpoints.kafka_bootstrap_servers,
            "MONGODB_URL": endpoints.mongodb_url,
            "HILO_ENVIRONMENT": "development",
            "HILO_LOG_FORMAT": os.environ.get("HILO_LOG_FORMAT", "console"),
            **development,
        }
        asyncio.run(_ensure_topics(shared))
        self.services = self._sandboxes(shared) + self._services(shared)
        for service in self.services:
            service.start(out)
        self._wait_ready(timeout)
        values = {**shared, **{url_variable(s.name): s.url for s in self.services}}
        self.seeded = seed_demo_catalogue(values)
        if sign_in is not None:
            values |= {
                "HILO_DESK_DEV_AGENT": sign_in.agent,
                "HILO_DESK_DEV_PASSWORD": sign_in.password,
            }
        self._write_env_file(values)
        return values

    def url(self, item: ServiceSpec | Sandbox) -> str:
        return f"http://127.0.0.1:{self.base_port + item.port_offset}"

    def _sandboxes(self, shared: Mapping[str, str]) -> list[RunningService]:
        """The providers' stand-ins, given the credentials their channels are given."""
        sandboxes = []
        for sandbox in SANDBOXES:
            port = self.base_port + sandbox.port_offset
            args, _channel_settings = self._wiring(sandbox, shared)
            sandboxes.append(
                RunningService(
                    sandbox.name,
                    sandbox.module,
                    port,
                    {**os.environ, "PYTHONUNBUFFERED": "1"},
                    args=["--port", str(port), *args],
                    ready_path="/_standin/messages",
                )
            )
        return sandboxes

    def _wiring(self, sandbox: Sandbox, shared: Mapping[str, str]) -> Wiring:
        channel = next(spec for spec in SERVICES if spec.name == sandbox.channel)
        return sandbox.wiring(self.url(sandbox), self.url(channel), shared)

    def _services(self, shared: Mapping[str, str]) -> list[RunningService]:
        """Each service's environment: the shared one, its address, and what it calls."""
        profile = next(spec for spec in SERVICES if spec.name == "customer-profile")
        calls_profile = {"agent-desk", "offers"}
        services = []
        for spec in SERVICES:
            port = self.base_port + spec.port_offset
            env = {
                **os.environ,
                **shared,
                "HILO_HTTP_PORT": str(port),
                "HILO_HTTP_HOST": "127.0.0.1",
            }
            if spec.public_url:
                env["HILO_PUBLIC_BASE_URL"] = self.url(spec)
            for setting, source in spec.renamed:
                if source in shared:
                    env[setting] = shared[source]
            for secret in development_secret_variables() - set(secret_variables(spec)):
                env.pop(secret, None)  # each service gets only the secrets it reads
            if spec.name in calls_profile:
                env["HILO_PROFILE_API_URL"] = self.url(profile)
            for sandbox in SANDBOXES:
                if sandbox.channel == spec.name:
                    env |= self._wiring(sandbox, shared)[1]
            services.append(RunningService(spec.name, spec.module, port, env))
        return services

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        waiting = list(self.services)
        while waiting:
            for service in list(waiting):
                if service.exited():
                    raise InfrastructureError(f"{service.name} exited during start-up")
                if service.ready():
                    waiting.remove(service)
            if waiting and time.monotonic() > deadline:
                names = ", ".join(s.name for s in waiting)
                raise InfrastructureError(f"not ready after {timeout:.0f}s: {names}")
            time.sleep(0.3)

    def _write_env_file(self, values: Mapping[str, str]) -> None:
        self.env_file.parent.mkdir(parents=True, exist_ok=True)
        self.env_file.touch(mode=0o600)
        self.env_file.write_text("".join(env_line(key, value) for key, value in values.items()))

    def stop(self) -> None:
        """Services first (they flush and commit), then the servers."""
        for service in reversed(self.services):
            service.stop()
        self.infra.stop()
        self.env_file.unlink(missing_ok=True)


_PLAIN = re.compile(r"[A-Za-z0-9_@%+=:,./-]*")


def env_line(key: str, value: str) -> str:
    """`KEY=value`, single-quoted when the value has characters a shell or a dotenv reader
    would expand (the `$` of an argon2 hash), so `. .hilo/platform.env` works too."""
    return f"{key}={value}\n" if _PLAIN.fullmatch(value) else f"{key}='{value}'\n"


def seed_demo_catalogue(values: Mapping[str, str]) -> str:
    """The offers service's demo catalogue (`offers.demo`): prices of the simulator's products,
    a promotion its journeys use on the web and in store, a price raised since, the old one of
    which a journey charges. Through the admin API, like a merchandiser; idempotent."""
    from offers.demo import SeedError, seed_url  # noqa: PLC0415 - a service package, needed here only

    key = values["HILO_OFFERS_ADMIN_API_KEYS"].split(",")[0].strip()
    try:
        return str(seed_url(values[url_variable("offers")], key))
    except SeedError as exc:
        raise InfrastructureError(f"offers: the demo catalogue was not set: {exc}") from None


async def _ensure_topics(values: Mapping[str, str]) -> None:
    await ensure_topics(
        HiloSettings(
            environment="development", kafka_bootstrap_servers=values["KAFKA_BOOTSTRAP_SERVERS"]
        )
    )


def summary(values: Mapping[str, str], seeded: str = "") -> str:
    """What a person needs to use the running platform."""
    rows = [f"  {spec.name:<18} {values[url_variable(spec.name)]}" for spec in SERVICES]
    sandboxes = [
        f"    {sandbox.name:<18} {values[url_variable(sandbox.name)]}/_standin/messages"
        f"  ({sandbox.sends} sent)"
        for sandbox in SANDBOXES
    ]
    desk = values[url_variable("agent-desk")]
    if "HILO_DESK_DEV_PASSWORD" in values:
        sign_in = (
            f"agent {values['HILO_DESK_DEV_AGENT']}, password {values['HILO_DESK_DEV_PASSWORD']}"
        )
    else:
        sign_in = "an agent of HILO_DESK_AGENTS"
    return "\n".join(
        [
            "",
            "Hilo is running (Ctrl-C stops everything):",
            *rows,
            f"  {'kafka':<18} {values['KAFKA_BOOTSTRAP_SERVERS']}",
            f"  {'mongodb':<18} {values['MONGODB_URL']}",
            "",
            f"  agent desk         {desk}/login  (sign in: {sign_in})",
            f"  profile API docs   {values[url_variable('customer-profile')]}/docs"
            f"  (X-API-Key: {values['HILO_API_KEYS']}, admin: {values['HILO_ADMIN_API_KEYS']})",
            f"  offers API docs    {values[url_variable('offers')]}/docs"
            f"  (quotes X-API-Key: {values['HILO_OFFERS_API_KEYS']}, "
            f"admin: {values['HILO_OFFERS_ADMIN_API_KEYS']})",
            *([f"  offers             {seeded} (`offers demo`)"] if seeded else []),
            "  outbound messages  go to local sandboxes, not to the real providers (no customer",
            "                     receives them); what was sent:",
            *sandboxes,
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


def run_local(base_port: int, infra: str = "") -> int:
    platform = LocalPlatform(base_port, infra=infra)
    with _stop_on_signals() as stopping:
        try:
            values = platform.start()
            print(summary(values, platform.seeded), flush=True)  # noqa: T201
            while not stopping.wait(0.5):
                now = time.monotonic()
                for service in platform.services:
                    service.supervise(sys.stdout, now)
        except InfrastructureError as exc:
            print(f"error: {exc}", file=sys.stderr)  # noqa: T201
            return 2
        finally:
            print("stopping Hilo…", flush=True)  # noqa: T201
            platform.stop()
            print("stopped; nothing left running", flush=True)  # noqa: T201
    return 0


def run_compose(files: list[str]) -> int:
    """With Docker: what ops run (Ctrl-C stops the containers; `docker compose down` removes)."""
    docker = shutil.which("docker")
    if docker is None:
        return run_local(BASE_PORT)
    env_file = Path(".env")
    if not env_file.exists():
        agents, sign_in = development_sign_in()
        env_file.touch(mode=0o600)
        env_file.write_text(development_env((agents, sign_in)))
        print("wrote .env with random development secrets (edit it for production)")  # noqa: T201
        print(  # noqa: T201
            f"agent desk: http://localhost:8090/login, agent {sign_in.agent}, "
            f"password {sign_in.password} (noted at the end of .env)"
        )
    chosen = [arg for file in files for arg in ("-f", file)]
    return subprocess.call([docker, "compose", *chosen, "up", "--build"])


def main() -> None:
    parser = argparse.ArgumentParser(prog="hilo-run", description=__doc__.splitlines()[0])
    parser.add_argument("--local", action="store_true", help="local processes even with Docker")
    parser.add_argument("--base-port", type=int, default=BASE_PORT, help="profile API port")
    args = parser.parse_args()
    try:
        files = None if args.local else compose_files()
    except InfrastructureError as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
        sys.exit(2)
    if files:
        sys.exit(run_compose(files))
    sys.exit(run_local(args.base_port, "local" if args.local else ""))


def compose_images() -> list[str]:
    """The images `docker compose up --build` needs from a registry: Kafka, MongoDB and the
    Python base of deploy/Dockerfile."""
    dockerfile = (deploy_dir().parent / "Dockerfile").read_text()
    python = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile, re.M)
    base = [python.group(1)] if python else []
    return [containers.kafka_image(kafka_version()), containers.mongo_image(), *base]


OFFLINE_OVERRIDE = "deploy/compose.offline.yml"


def offline_images() -> list[str]:
    """The images deploy/offline/build.sh tags, as the offline override names them."""
    override = (deploy_dir().parent / "compose.offline.yml").read_text()
    return sorted(set(re.findall(r"(hilo-offline/[\w.-]+:[\w.-]+)", override)))


def compose_files() -> list[str] | None:
    """The compose files `make run` uses when HILO_INFRA allows Docker: the official images where
    the engine has or can pull them, else the offline ones where deploy/offline/build.sh built
    them; None (local processes) otherwise, saying why when Docker answered."""
    choice = infra_choice()
    if choice in {"local", "env"}:
        return None
    unusable = containers.docker_unusable(compose_images())
    if unusable is None:
        return ["docker-compose.yml"]
    engine = not unusable.startswith("no Docker engine")
    if engine and containers.docker_unusable(offline_images()) is None:
        print("make run: the offline images (deploy/offline/build.sh)", flush=True)  # noqa: T201
        return ["docker-compose.yml", OFFLINE_OVERRIDE]
    if choice == "docker":
        raise InfrastructureError(f"HILO_INFRA=docker, but {unusable}")
    if engine:
        print(f"make run: local processes, because {unusable}", flush=True)  # noqa: T201
    return None


if __name__ == "__main__":
    main()
