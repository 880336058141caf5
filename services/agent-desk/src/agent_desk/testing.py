"""Running the desk for tests and benchmarks: on a real port (a browser and SSE need one),
signed in, alone or with the platform around it (`desk_stack`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer
from pydantic import SecretStr

from agent_desk.app import create_app
from agent_desk.auth import hash_password
from agent_desk.settings import DeskSettings
from channel_sms.app import create_app as create_sms_app
from channel_sms.settings import SmsSettings
from channel_whatsapp.app import create_app as create_whatsapp_app
from channel_whatsapp.settings import WhatsAppSettings
from customer_profile.testing import API_KEY, RunningProfileService, running_profile_service
from hilo.contract.outbound import OutboundCommand
from hilo.kafka_security import client_options
from hilo.mongo import create_mongo_client
from hilo.outbound import outbound_group
from hilo.providers.meta import signed_headers
from hilo.sealing import create_sealer
from hilo.settings import HiloSettings
from hilo.testkit.serving import free_port, served
from hilo.testkit.standins.twilio import ACCOUNT_SID, AUTH_TOKEN, TwilioStandIn
from hilo.topics import Topic, topic_name

AGENT = "ana.agent"
PASSWORD = "correct horse battery staple"  # noqa: S105 - the test agent's
APP_SECRET = "whatsapp-app-secret-for-desk-tests"  # noqa: S105 - the tests' own
_WHATSAPP_SAMPLE = (
    Path(__file__).resolve().parents[3] / "channel-whatsapp/tests/samples/text_message.json"
)
_CSRF = re.compile(r'name="csrf-token" content="([^"]+)"')


def desk_settings(
    settings: HiloSettings,
    profile_url: str,
    api_key: str,
    *,
    agents: dict[str, str] | None = None,
    **overrides: object,
) -> DeskSettings:
    """The desk's settings for a test: `agents` (id to password) may sign in, `AGENT` alone by
    default; every desk made here signs its sessions with the same secret, as instances of one
    deployment do."""
    agents = agents if agents is not None else {AGENT: PASSWORD}
    return DeskSettings.model_validate(
        {
            **settings.model_dump(),
            "desk_agents": [
                f"{agent}:{hash_password(password)}" for agent, password in agents.items()
            ],
            "desk_session_secret": "test-session-secret-test-session-secret",
            "profile_api_url": profile_url,
            "profile_api_key": api_key,
            **overrides,
        }
    )


@asynccontextmanager
async def running_desk(settings: DeskSettings) -> AsyncIterator[str]:
    """The desk on a free port until the block ends; yields its URL."""
    async with served(create_app(settings)) as url:
        yield url


def csrf_of(page: str) -> str:
    """The CSRF token a desk page carries (forms and the reply box echo it)."""
    found = _CSRF.search(page)
    assert found, "the page carries no CSRF token"
    return found.group(1)


@asynccontextmanager
async def signed_in(
    desk_url: str, agent: str = AGENT, password: str = PASSWORD
) -> AsyncIterator[httpx.AsyncClient]:
    """A client with a signed-in session, as a browser has after the sign-in form."""
    async with httpx.AsyncClient(base_url=desk_url, headers={"Accept": "text/html"}) as client:
        form = await client.get("/login")
        answer = await client.post(
            "/login", data={"agent": agent, "password": password, "csrf": csrf_of(form.text)}
        )
        assert answer.status_code == 303, answer.text
        yield client


def chromium() -> str:
    """Debian's chromium (`make browser-prepare` installs it); `CHROMIUM_PATH` names another."""
    for candidate in (os.environ.get("CHROMIUM_PATH"), "/usr/lib/chromium/chromium"):
        if candidate and Path(candidate).exists():
            return candidate
    found = shutil.which("chromium")
    assert found, "chromium is not installed: run `make browser-prepare` (apt-get install chromium)"
    return found


@dataclass
class DeskStack:
    """The platform an agent works on: profile service, WhatsApp and SMS channels (SMS sending
    through a Twilio stand-in), and the desk, each on a real port."""

    profile: RunningProfileService
    twilio: TwilioStandIn
    whatsapp_url: str
    desk_url: str

    async def whatsapp_from(self, phone: str, text: str) -> None:
        """The customer writes on WhatsApp: Meta's signed notification to the channel."""
        body = whatsapp_notification(phone, text)
        async with httpx.AsyncClient(base_url=self.whatsapp_url) as http:
            answer = await http.post(
                "/webhooks/whatsapp", content=body, headers=signed_headers(body, APP_SECRET)
            )
        assert answer.status_code == 200, answer.text


@asynccontextmanager
async def desk_stack(
    settings: HiloSettings, *, session_hours: float = 12, **desk_overrides: object
) -> AsyncIterator[DeskStack]:
    """Everything `DeskStack` names, running until the block ends (sessions lasting
    `session_hours`; other desk settings in `desk_overrides`)."""
    sms_port = free_port()
    with TwilioStandIn(ACCOUNT_SID, AUTH_TOKEN) as twilio:
        sms = SmsSettings.model_validate(
            {
                **settings.model_dump(),
                "twilio_auth_token": SecretStr(AUTH_TOKEN),
                "twilio_account_sid": ACCOUNT_SID,
                "twilio_from_number": "+14155552671",
                "twilio_api_url": twilio.url,
                "public_base_url": f"http://127.0.0.1:{sms_port}",
                "outbound_first_wait_seconds": 0.1,
            }
        )
        whatsapp = WhatsAppSettings.model_validate(
            {
                **settings.model_dump(),
                "whatsapp_app_secret": SecretStr(APP_SECRET),
                "whatsapp_verify_token": SecretStr("verify"),
            }
        )
        async with (
            running_profile_service(settings) as profile,
            served(profile.service.app, lifespan="off") as profile_url,
            served(create_sms_app(sms), sms_port),
            served(create_whatsapp_app(whatsapp)) as whatsapp_url,
            running_desk(
                desk_settings(
                    settings, profile_url, API_KEY, desk_session_hours=session_hours
                ).model_copy(update=desk_overrides)
            ) as desk_url,
        ):
            yield DeskStack(profile, twilio, whatsapp_url, desk_url)


def whatsapp_notification(phone: str, text: str) -> bytes:
    """A WhatsApp Cloud API notification of a text from `phone` (E.164), as Meta sends it."""
    body = json.loads(_WHATSAPP_SAMPLE.read_text())
    value = body["entry"][0]["changes"][0]["value"]
    value["contacts"] = [{"profile": {"name": "Ana"}, "wa_id": phone.lstrip("+")}]
    value["messages"][0].update(
        {
            "from": phone.lstrip("+"),
            "id": f"wamid.desk-{time.time_ns()}",
            "timestamp": str(int(time.time())),
            "text": {"body": text},
        }
    )
    return json.dumps(body).encode()


@asynccontextmanager
async def behind_service(settings: HiloSettings, service: str) -> AsyncIterator[None]:
    """An instance of `service` that has joined its `outbound` group and takes no command: a
    channel service that runs but is behind (or stuck), until the block ends."""
    consumer = AIOKafkaConsumer(
        topic_name(Topic.OUTBOUND, settings),
        **client_options(settings),
        group_id=outbound_group(settings, service),
        enable_auto_commit=False,
        max_poll_records=1,
    )
    await consumer.start()
    try:
        while not consumer.assignment():  # joined once the group gave it partitions
            await consumer.getmany(timeout_ms=200)
        consumer.pause(*consumer.assignment())  # reads nothing more, stays in the group
        yield
    finally:
        await consumer.stop()


async def opened_command(settings: HiloSettings, value: bytes | None) -> OutboundCommand:
    """An `outbound` record's command as the channel reads it, opened with the keys."""
    client = create_mongo_client(settings)
    try:
        (opened,) = await create_sealer(settings, client).open_all([value])
    finally:
        await client.close()
    return OutboundCommand.model_validate(opened)
