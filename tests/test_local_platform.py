"""`make run` without Docker, driven as a person would: start it, play the demo, sign in to
the desk and reply, stop it.

The platform comes up as local processes (Kafka, SecantusDB, customer-profile, seven channels,
the agent desk, the offers service with its demo catalogue, the providers' sandboxes), the
traffic simulator's journeys go through every channel's public endpoint into the profile service
and read back (the promotion quoted on the web and in store without a mismatch, a stale price
flagged), the desk takes the sign-in the summary prints, a reply on SMS and on WhatsApp reaches
the sandboxes and their delivery statuses reach the journey, and Ctrl-C leaves no process behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from unittest import mock
from urllib.parse import urlencode

import httpx
import pytest

from agent_desk.auth import Agents
from agent_desk.settings import DeskSettings
from hilo.offers.model import Promotion
from hilo.providers.meta import signed_headers as meta_headers
from hilo.providers.twilio import signed_headers as twilio_headers
from hilo_devkit.catalogue import SERVICES, settings_class
from hilo_devkit.local_platform import (
    PORT_SPAN,
    SANDBOXES,
    LocalPlatform,
    development_secrets,
    env_line,
    summary,
    url_variable,
)
from offers import demo
from offers.changes import NewPrice
from offers.settings import OffersSettings
from traffic_simulator import offers as simulated_offers
from traffic_simulator.people import PRODUCTS

BIN = Path(sys.executable).parent


def free_port_block(size: int) -> int:
    """A base port with `size` free ports after it."""
    for base in range(21_000, 60_000, 97):
        sockets = []
        try:
            for port in range(base, base + size):
                sock = socket.socket()
                sock.bind(("127.0.0.1", port))
                sockets.append(sock)
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
        return base
    raise RuntimeError("no free port block")


def descendants(root: int) -> set[int]:
    """Every process whose parent chain leads to `root`."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                )
            except (OSError, IndexError, ValueError):
                continue
    found: set[int] = set()
    frontier = {root}
    while frontier:
        children = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= children
        frontier = children
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for_line(process: subprocess.Popen[str], text: str, timeout: float) -> list[str]:
    assert process.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        seen.append(line)
        if text in line:
            return seen
    pytest.fail(f"no {text!r} within {timeout}s:\n{''.join(seen[-40:])}")


def simulate(cwd: Path, env: dict[str, str], customers: int) -> subprocess.CompletedProcess[str]:
    """Run the traffic simulator against what `make run` started, reading its env file."""
    return subprocess.run(
        [
            str(BIN / "traffic-simulator"),
            "--env-file",
            ".hilo/platform.env",
            "--customers",
            str(customers),
        ],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def check_the_chats_are_named(report: str, other_pepper: subprocess.CompletedProcess[str]) -> None:
    """Calls that continue a chat name it by the id the channels gave it; a simulator keyed
    with another pepper names chats that do not exist, and says so."""
    named = re.search(r"chats a call can name   (\d+)/(\d+)", report)
    assert named, report
    assert re.search(r"waiting for a reply     \d+ \(the longest for \d+ min\)", report), report
    assert named[1] == named[2] != "0", report
    assert other_pepper.returncode == 1, other_pepper.stdout + other_pepper.stderr
    assert "chats a call can name   0/" in other_pepper.stdout
    assert "Omnichannel (journey-analytics" in other_pepper.stdout, "a rerun adds no entries"
    assert "set HILO_SUBJECT_PEPPER to the platform's" in other_pepper.stdout


def test_make_run_serves_the_simulated_journeys_and_stops_cleanly(tmp_path: Path) -> None:
    base = free_port_block(PORT_SPAN)
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("KAFKA_BOOTSTRAP_SERVERS", "MONGODB_URL", "HILO_DESK_AGENTS")
    }
    env.update(HILO_INFRA="local", HILO_LOG_FORMAT="json", PYTHONUNBUFFERED="1")
    runner = subprocess.Popen(
        [str(BIN / "hilo-run"), "--local", "--base-port", str(base)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_line(runner, "Hilo is running", timeout=240)
        printed = "".join(wait_for_line(runner, "play traffic", timeout=10))
        started = descendants(runner.pid)
        simulated = simulate(tmp_path, env, customers=6)
        other_pepper = simulate(
            tmp_path,
            {
                **env,
                "HILO_SUBJECT_PEPPER": "not-the-platform-pepper",
                "HILO_SIM_READBACK_TIMEOUT_SECONDS": "30",
            },
            customers=1,
        )
        values = read_env_file(tmp_path / ".hilo" / "platform.env")
        crash_and_restart(runner, values, "customer-profile")
        agent, password = the_desk_sign_in(printed, values)
        check_the_desk_and_its_replies(values, agent, password)
        runner.send_signal(signal.SIGINT)
        tail = wait_for_line(runner, "stopped; nothing left running", timeout=90)
        assert runner.wait(timeout=30) == 0
    finally:
        if runner.poll() is None:
            runner.kill()

    report = simulated.stdout
    assert simulated.returncode == 0, report + simulated.stderr
    assert "customers found         6" in report
    assert "journeys complete       6/6" in report
    assert "events lost             0" in report
    assert "events duplicated       0" in report
    omnichannel = report.split("Omnichannel (journey-analytics, the last 30 days)")[1]
    assert re.search(r"continuity\s+\d+% of [1-9]\d* channel switches", omnichannel), omnichannel
    assert re.search(r"cross-channel conversion \d+% of [1-9]\d* web carts", omnichannel)
    assert re.search(r"CSAT by channel\s+\w+ \d\.\d", omnichannel), omnichannel
    assert "refused requests        0" in report
    check_the_chats_are_named(report, other_pepper)
    for channel in ("web", "whatsapp", "sms", "voice", "email", "store", "messenger"):
        assert f"{channel} " in report.split("journey entries")[1].splitlines()[0]
    # People 0 and 5 buy the promoted cap on the web and in store, person 1 pays an old price.
    offers = report.split("Offers (")[1]
    assert "SKU-CAP-1 at 19.92 (list 24.90, demo-cap-20) on web and in store: 2 journeys, " in (
        offers
    )
    assert "2 journeys, 0 mismatches  ok" in offers
    assert "1 journey, 1 mismatch  ok" in offers
    assert "price mismatch: store, SKU-BOTTLE-750, charged 12.90, expected 14.90" in offers
    assert "SKU-CAP-1, charged" not in offers
    assert f"offers             {values[url_variable('offers')]}" in printed
    assert "demo catalogue: 6 SKUs priced" in printed
    expected = len(SERVICES) + len(SANDBOXES) + 2
    assert len(started) >= expected, "expected Kafka, the database, every service and sandbox"
    assert [pid for pid in started if alive(pid)] == [], "".join(tail)
    assert not (tmp_path / ".hilo" / "platform.env").exists()


T = TypeVar("T")
CUSTOMER_PHONE = "+34699000111"
"""A customer of this test only (the simulator's people have other numbers)."""
BUSINESS_PHONE = "+14155552671"


def service_pid(root: int, module: str) -> int:
    """The process of `python -m <module>` among the runner's descendants."""
    for pid in descendants(root):
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"-m" in argv and argv[argv.index(b"-m") + 1] == module.encode():
                return pid
    raise AssertionError(f"no process runs {module}")


def crash_and_restart(
    runner: subprocess.Popen[str], values: Mapping[str, str], service: str
) -> None:
    """kill -9 of one service: make run says so, starts it again, and the others serve on."""
    module = service.replace("-", "_")
    crashed = service_pid(runner.pid, module)
    os.kill(crashed, signal.SIGKILL)
    wait_for_line(runner, f"{service} | exited with code -9; restarting in 1 s", timeout=30)
    wait_for_line(runner, f"{service} | restarting (restart 1)", timeout=30)
    url = values[url_variable(service)]
    eventually(lambda: ready(url), f"{service} ready again", timeout=60)
    assert service_pid(runner.pid, module) != crashed
    assert runner.poll() is None, "make run stopped when one service crashed"
    for other in ("channel-web", "agent-desk", "offers"):
        assert ready(values[url_variable(other)]), f"{other} went down with {service}"


def ready(url: str) -> bool | None:
    try:
        return httpx.get(f"{url}/health/ready", timeout=2).status_code == 200 or None
    except httpx.HTTPError:
        return None


def read_env_file(path: Path) -> dict[str, str]:
    lines = [line.split("=", 1) for line in path.read_text().splitlines() if "=" in line]
    return {key: value.removeprefix("'").removesuffix("'") for key, value in lines}


def the_desk_sign_in(printed: str, values: Mapping[str, str]) -> tuple[str, str]:
    """The agent and password the summary printed (the same as in `.hilo/platform.env`)."""
    found = re.search(
        r"agent desk +(\S+)/login +\(sign in: agent (\S+), password ([^\s)]+)\)", printed
    )
    assert found, printed
    desk, agent, password = found.groups()
    assert desk == values[url_variable("agent-desk")]
    assert (agent, password) == (values["HILO_DESK_DEV_AGENT"], values["HILO_DESK_DEV_PASSWORD"])
    assert "not to the real providers" in printed
    for sandbox in SANDBOXES:
        assert f"{values[url_variable(sandbox.name)]}/_standin/messages" in printed
    return agent, password


def eventually(find: Callable[[], T | None], what: str, timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (found := find()) is not None:
            return found
        time.sleep(0.3)
    pytest.fail(f"not within {timeout}s: {what}")


def csrf_of(page: httpx.Response) -> str:
    found = re.search(r'<meta name="csrf-token" content="([^"]+)"', page.text)
    assert found, page.text[:500]
    return found.group(1)


def check_the_desk_and_its_replies(values: Mapping[str, str], agent: str, password: str) -> None:
    """Sign in with the printed credentials; a customer writes on SMS and WhatsApp; the agent
    replies on both; the sandboxes receive the replies and report them delivered."""
    profile = httpx.Client(
        base_url=values[url_variable("customer-profile")],
        headers={"X-API-Key": values["HILO_API_KEYS"].split(",")[0]},
        timeout=10,
    )
    desk = httpx.Client(base_url=values[url_variable("agent-desk")], timeout=10)
    with profile, desk:
        form = desk.get("/login")
        hidden = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert hidden
        assert hidden.group(1) == csrf_of(form)
        wrong = {"agent": agent, "password": password + "x", "csrf": csrf_of(form)}
        assert desk.post("/login", data=wrong).status_code == 401
        right = {"agent": agent, "password": password, "csrf": csrf_of(form)}
        assert desk.post("/login", data=right).status_code == 303
        assert desk.get("/").status_code == 200

        customer_writes(values)
        customer_id = eventually(lambda: reachable_on_both(profile), "the customer's profile")
        csrf = csrf_of(desk.get(f"/customers/{customer_id}"))
        for channel in ("sms", "whatsapp"):
            answer = desk.post(
                f"/customers/{customer_id}/replies",
                json={"channel": channel, "text": f"Your order ships today ({channel})."},
                headers={"X-CSRF-Token": csrf},
            )
            assert answer.status_code == 202, answer.text
        sent = {
            "sms": eventually(
                lambda: received(values, "sandbox-twilio", "to", CUSTOMER_PHONE, "sid"),
                "the SMS at the Twilio sandbox",
            ),
            "whatsapp": eventually(
                lambda: received(values, "sandbox-whatsapp", "wa_id", CUSTOMER_PHONE[1:], "id"),
                "the WhatsApp message at the WhatsApp sandbox",
            ),
        }
        for channel, provider_id in sent.items():
            eventually(
                partial(delivered, profile, customer_id, channel, provider_id),
                f"the {channel} reply reported delivered in the journey",
            )
    assert httpx.get(f"{values[url_variable('sandbox-mailgun')]}/_standin/messages").json() == []


def customer_writes(values: Mapping[str, str]) -> None:
    """One SMS and one WhatsApp message, signed as Twilio and Meta sign them."""
    sms_url = values[url_variable("channel-sms")] + "/webhooks/twilio/sms"
    params = [
        ("MessageSid", "SM" + uuid.uuid4().hex),
        ("From", CUSTOMER_PHONE),
        ("To", BUSINESS_PHONE),
        ("Body", "Where is my order?"),
        ("NumMedia", "0"),
    ]
    headers = twilio_headers(sms_url, params, values["HILO_TWILIO_AUTH_TOKEN"])
    assert httpx.post(sms_url, content=urlencode(params), headers=headers).status_code == 200
    wa_id = CUSTOMER_PHONE[1:]
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": BUSINESS_PHONE[1:], "phone_number_id": "1065403"},
        "contacts": [{"profile": {"name": "Test"}, "wa_id": wa_id}],
        "messages": [
            {
                "from": wa_id,
                "id": f"wamid.{uuid.uuid4().hex}",
                "timestamp": str(int(time.time())),
                "type": "text",
                "text": {"body": "Hello?"},
            }
        ],
    }
    entry = {"id": "WABA-1", "changes": [{"field": "messages", "value": value}]}
    body = json.dumps({"object": "whatsapp_business_account", "entry": [entry]}).encode()
    whatsapp_url = values[url_variable("channel-whatsapp")] + "/webhooks/whatsapp"
    headers = meta_headers(body, values["HILO_WHATSAPP_APP_SECRET"])
    assert httpx.post(whatsapp_url, content=body, headers=headers).status_code == 200


def reachable_on_both(profile: httpx.Client) -> str | None:
    """The customer's id once both messages are in their profile."""
    found = profile.post("/v1/customers/lookup", json={"kind": "phone", "value": CUSTOMER_PHONE})
    if found.status_code != 200:
        return None
    customer_id: str = found.json()["customer_id"]
    journey = profile.get(f"/v1/customers/{customer_id}/journey", params={"type": "message"})
    channels = {entry["channel"] for entry in journey.json()["entries"]}
    return customer_id if {"sms", "whatsapp"} <= channels else None


def received(
    values: Mapping[str, str], sandbox: str, to_field: str, to: str, id_field: str
) -> str | None:
    """The provider's id of the message the sandbox accepted for `to`."""
    accepted = httpx.get(f"{values[url_variable(sandbox)]}/_standin/messages").json()
    ids = [str(message[id_field]) for message in accepted if message[to_field] == to]
    return ids[0] if ids else None


def delivered(
    profile: httpx.Client, customer_id: str, channel: str, provider_id: str
) -> bool | None:
    journey = profile.get(
        f"/v1/customers/{customer_id}/journey",
        params={"channel": channel, "type": "message_status"},
    ).json()
    statuses = {
        entry["payload"]["status"]
        for entry in journey["entries"]
        if entry["payload"]["provider_message_id"] == provider_id
    }
    return True if "delivered" in statuses else None


def test_every_service_accepts_the_settings_make_run_gives_it() -> None:
    """Checked without starting anything: random secrets must still be valid settings (the
    desk's agents are `id:hash` entries, its profile key one the profile service accepts), and
    each sandbox expects the credentials its channel sends."""
    secrets, sign_in = development_secrets({})
    assert sign_in is not None
    platform = LocalPlatform(base_port=9000)
    shared = {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "MONGODB_URL": "mongodb://127.0.0.1:2/"}
    shared |= secrets
    services = {service.name: service for service in platform._services(shared)}
    sandboxes = {sandbox.name: sandbox for sandbox in platform._sandboxes(shared)}

    settings: dict[str, Any] = {}
    for spec in SERVICES:
        with mock.patch.dict(os.environ, services[spec.name].env, clear=True):
            settings[spec.name] = settings_class(spec)()
    desk = settings["agent-desk"]
    assert isinstance(desk, DeskSettings)
    assert Agents(desk.desk_agents).verify(sign_in.agent, sign_in.password)
    profile_keys = settings["customer-profile"].api_keys
    assert desk.profile_api_key in profile_keys
    profile_admin = {key.get_secret_value() for key in settings["customer-profile"].admin_api_keys}
    assert profile_admin, "make run can erase and split"
    holders = [name for name, service in services.items() if "HILO_ADMIN_API_KEYS" in service.env]
    assert sorted(holders) == ["customer-profile", "offers"], "offers' own, under that name"
    assert services["offers"].env["HILO_ADMIN_API_KEYS"] not in profile_admin
    assert not profile_admin & {key.get_secret_value() for key in profile_keys}
    assert desk.profile_api_key.get_secret_value() not in profile_admin, "the desk only reads"
    assert str(desk.profile_api_url).rstrip("/") == "http://127.0.0.1:9000"
    offers = settings["offers"]
    assert isinstance(offers, OffersSettings)
    assert offers.http_port == 9015
    assert [key.get_secret_value() for key in offers.api_keys] == [secrets["HILO_OFFERS_API_KEYS"]]
    admin = [key.get_secret_value() for key in offers.admin_api_keys]
    assert admin == [secrets["HILO_OFFERS_ADMIN_API_KEYS"]]
    assert not set(admin) & {key.get_secret_value() for key in offers.api_keys}
    assert not {key.get_secret_value() for key in offers.api_keys} & {
        key.get_secret_value() for key in profile_keys
    }, "the profile API's keys must not change prices"
    assert offers.profile_api_key in profile_keys
    assert str(offers.profile_api_url).rstrip("/") == "http://127.0.0.1:9000"
    assert offers.open_api_refusal() is None
    assert (
        str(settings["channel-sms"].twilio_api_url).rstrip("/") == sandboxes["sandbox-twilio"].url
    )
    assert settings["channel-whatsapp"].whatsapp_graph_url == sandboxes["sandbox-whatsapp"].url
    assert (
        str(settings["channel-email"].mailgun_api_url).rstrip("/")
        == sandboxes["sandbox-mailgun"].url
    )
    twilio_args = sandboxes["sandbox-twilio"].args
    assert f"--auth-token={secrets['HILO_TWILIO_AUTH_TOKEN']}" in twilio_args
    whatsapp_args = sandboxes["sandbox-whatsapp"].args
    assert f"--app-secret={secrets['HILO_WHATSAPP_APP_SECRET']}" in whatsapp_args
    assert whatsapp_args[whatsapp_args.index("--webhook-url") + 1] == (
        "http://127.0.0.1:9002/webhooks/whatsapp"
    )
    social = settings["channel-social"]
    assert social.meta_graph_url == social.instagram_graph_url == sandboxes["sandbox-meta"].url
    meta_args = sandboxes["sandbox-meta"].args
    page_token = social.messenger_page_access_token.get_secret_value()
    assert f"--page-access-token={page_token}" in meta_args
    assert f"--app-secret={secrets['HILO_META_APP_SECRET']}" in meta_args


def test_make_run_turns_on_sending_only_through_a_sandbox() -> None:
    """An optional provider credential made up would make its channel send to the real
    provider (failing there, but reaching it): only the sandboxed ones are made up."""
    secrets, _sign_in = development_secrets({})
    sandboxed = {name for sandbox in SANDBOXES for name in sandbox.credentials}
    for spec in SERVICES:
        for name, field in settings_class(spec).model_fields.items():
            env = "HILO_" + name.upper()
            if field.default is None and env not in sandboxed:
                assert env not in secrets, env
    assert sandboxed <= set(secrets)


def test_the_summary_says_how_to_sign_in_and_where_replies_go() -> None:
    values = {
        url_variable(spec.name): f"http://127.0.0.1:{8080 + spec.port_offset}" for spec in SERVICES
    }
    values |= {url_variable(s.name): f"http://127.0.0.1:{8080 + s.port_offset}" for s in SANDBOXES}
    values |= {
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092",
        "MONGODB_URL": "mongodb://127.0.0.1:27017/",
        "HILO_API_KEYS": "key",
        "HILO_ADMIN_API_KEYS": "admin-key",
    }

    values["HILO_OFFERS_API_KEYS"] = "offers-key"
    values["HILO_OFFERS_ADMIN_API_KEYS"] = "offers-admin-key"

    with_dev = summary({**values, "HILO_DESK_DEV_AGENT": "dev", "HILO_DESK_DEV_PASSWORD": "pw"})
    assert "offers             http://127.0.0.1:8095" in with_dev
    assert "(X-API-Key: key, admin: admin-key)" in with_dev
    assert (
        "offers API docs    http://127.0.0.1:8095/docs  (quotes X-API-Key: offers-key, "
        "admin: offers-admin-key)"
    ) in with_dev
    assert "demo catalogue" in summary(values, "demo catalogue: 6 SKUs priced")
    assert (
        "agent desk         http://127.0.0.1:8090/login  (sign in: agent dev, password pw)"
        in with_dev
    )
    assert "http://127.0.0.1:8091/_standin/messages  (SMS sent)" in with_dev
    assert "an agent of HILO_DESK_AGENTS" in summary(values)


def test_the_env_file_quotes_what_a_shell_would_expand() -> None:
    assert env_line("HILO_URL_AGENT_DESK", "http://127.0.0.1:8090") == (
        "HILO_URL_AGENT_DESK=http://127.0.0.1:8090\n"
    )
    assert env_line("HILO_DESK_AGENTS", "dev:$argon2id$v=19$m=65536,t=3,p=4$a$b") == (
        "HILO_DESK_AGENTS='dev:$argon2id$v=19$m=65536,t=3,p=4$a$b'\n"
    )


def test_the_demo_catalogue_prices_what_the_simulator_sells_and_holds_its_offers_journeys() -> None:
    """The simulator charges its products at fixed prices and quotes the promoted SKU: the demo
    catalogue must agree, or every journey would be flagged (or none of the offers ones)."""
    now = datetime(2026, 11, 24, tzinfo=UTC)
    prices, promotions = demo.catalogue(now)
    points = [NewPrice.model_validate(price) for price in prices]
    [promotion] = [Promotion.model_validate(body) for body in promotions]

    listed = {p.sku: p.amount for p in points if p.valid_from and p.valid_from < now - _days(60)}
    for sku, _name, price in PRODUCTS:
        assert listed[sku] == Decimal(price), sku
    assert promotion.id == demo.PROMOTION_ID
    assert promotion.skus == [simulated_offers.PROMOTED[0]]
    assert {"web", "store"} <= set(promotion.channels or ["web", "store"])
    assert promotion.conditions == Promotion.model_fields["conditions"].get_default(
        call_default_factory=True
    ), "quotes are anonymous: no condition on the customer"
    # The journeys lie in the last 15 days: the promotion and the raised price cover them.
    assert promotion.valid_from < now - _days(15)
    assert promotion.valid_until > now
    raised = sorted((p.valid_from, p.amount) for p in points if p.sku == simulated_offers.RAISED[0])
    assert [amount for _at, amount in raised] == [Decimal("12.90"), Decimal("14.90")]
    assert raised[1][0] is not None
    assert raised[1][0] < now - _days(15)
    assert simulated_offers.CURRENCY == demo.CURRENCY == promotion.currency


def _days(count: int) -> timedelta:
    return timedelta(days=count)


def test_a_secret_that_starts_with_a_dash_reaches_the_sandbox_as_a_value() -> None:
    """`secrets.token_urlsafe` starts with `-` one time in 64: given as its own argument, argparse
    took it for an option and the sandbox would not start (seen: `make run` stopped with
    `sandbox-mailgun: argument --api-key: expected one argument`)."""
    values = dict.fromkeys(
        [
            "HILO_TWILIO_AUTH_TOKEN",
            "HILO_WHATSAPP_ACCESS_TOKEN",
            "HILO_WHATSAPP_APP_SECRET",
            "HILO_MAILGUN_API_KEY",
            "HILO_MESSENGER_PAGE_ACCESS_TOKEN",
            "HILO_INSTAGRAM_ACCESS_TOKEN",
            "HILO_META_APP_SECRET",
        ],
        "-Xs3cret",
    )
    for sandbox in SANDBOXES:
        args, _settings = sandbox.wiring("http://127.0.0.1:1", "http://127.0.0.1:2", values)
        assert "-Xs3cret" not in args, sandbox.name
        assert any(arg.endswith("=-Xs3cret") for arg in args), sandbox.name
