"""kill -9 of the real `channel-sms` process while MongoDB is away, after it refused SMS that
Twilio will never post again: once MongoDB and a new process are back, every SMS is on
`interactions` under its webhook's event id (some twice, which every consumer drops).

The service runs as its own process (the installed `channel-sms`), MongoDB is a SecantusDB
process of the test's own, and Twilio a local stand-in speaking its Messages API. The killed
process could note its refusals nowhere (MongoDB was away, and SIGKILL runs no shutdown): the
new process must find the gap from the watermark it left behind.

`HILO_READ_BACK_KILL_RUNS` (default 1; `make faults` sets 6) repeats it with other numbers of
SMS and another moment of the kill. One instance: a surviving instance's part is
`shared/tests/test_catch_up.py`'s.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from hilo.contract import interaction_id
from hilo.settings import HiloSettings, MongoUrl
from hilo.testkit.probes import eventually, read_topic
from hilo.testkit.serving import free_port
from hilo.testkit.signing import twilio_signed
from hilo.testkit.standins.twilio import ACCOUNT_SID, AUTH_TOKEN, TwilioStandIn
from hilo.topics import Topic, topic_name
from hilo_devkit.local_infra import LocalSecantusDB

RUNS = int(os.environ.get("HILO_READ_BACK_KILL_RUNS", "1"))
SERVICE = Path(sys.executable).with_name("channel-sms")
PUBLIC = "https://hooks.example.com"
WEBHOOK = "/webhooks/twilio/sms"
FROM = "+14155552671"


@contextmanager
def sms_process(
    settings: HiloSettings, twilio: TwilioStandIn, port: int, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "HILO_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "HILO_MONGODB_URL": str(settings.mongodb_url),
        "HILO_MONGODB_DATABASE": settings.mongodb_database,
        "HILO_TOPIC_PREFIX": settings.topic_prefix,
        "HILO_HTTP_PORT": str(port),
        "HILO_TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "HILO_PUBLIC_BASE_URL": PUBLIC,
        "HILO_TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "HILO_TWILIO_FROM_NUMBER": FROM,
        "HILO_TWILIO_API_URL": twilio.url,
        "HILO_CATCH_UP_SECONDS": "0.5",
        "HILO_ENVIRONMENT": "test",
    }
    with log.open("ab") as out:
        process = subprocess.Popen([str(SERVICE)], env=env, stdout=out, stderr=out)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)


@pytest.mark.parametrize("run", range(RUNS))
async def test_sms_refused_by_a_process_killed_during_a_mongodb_outage_are_all_published(
    settings: HiloSettings, topics: list[str], tmp_path: Path, run: int
) -> None:
    chance = random.Random(run)
    database = LocalSecantusDB(tmp_path)
    await asyncio.to_thread(database.start)
    local = settings.model_copy(update={"mongodb_url": MongoUrl(database.url)})
    port = free_port()
    senders = iter(f"+34612{run:02d}{n:04d}" for n in range(10_000))
    sent: list[str] = []
    answers: list[int] = []
    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:
        with TwilioStandIn(ACCOUNT_SID, AUTH_TOKEN, status_callbacks=False) as twilio:

            async def sms() -> int:
                params = twilio.receive(next(senders), FROM, "¿Tenéis la talla 42?")
                sent.append(dict(params)["MessageSid"])
                headers = twilio_signed(PUBLIC + WEBHOOK, params, AUTH_TOKEN)
                try:
                    answer = await client.post(WEBHOOK, content=urlencode(params), headers=headers)
                except httpx.HTTPError:
                    return 0  # the process died with the request (Twilio: error 11200)
                return answer.status_code

            log = tmp_path / "channel-sms.log"
            with sms_process(local, twilio, port, log) as first:
                await eventually(lambda: _ready(client), timeout=60)
                answers += [await sms() for _ in range(chance.randint(1, 4))]
                await asyncio.to_thread(database.stop)
                refused = asyncio.gather(*(sms() for _ in range(chance.randint(2, 6))))
                if run % 2:  # the kill lands while the refusals are still being answered
                    await asyncio.sleep(chance.uniform(0.5, 4.0))
                    first.send_signal(signal.SIGKILL)
                    answers += [a for a in await refused if a]
                else:
                    answers += await refused
                    first.send_signal(signal.SIGKILL)
            await asyncio.to_thread(database.start)
            with sms_process(local, twilio, port, log):
                events = await _published(local, {interaction_id("sms", sid) for sid in sent})
    except BaseException:
        print((tmp_path / "channel-sms.log").read_text(errors="replace")[-5_000:])  # noqa: T201
        raise
    finally:
        await client.aclose()
        await asyncio.to_thread(database.stop)

    ids = [event_id for event_id in events if event_id in {interaction_id("sms", s) for s in sent}]
    lost = len(sent) - len(set(ids))
    print(  # noqa: T201
        f"read-back kill run {run}: {len(sent)} SMS, answers {sorted(answers)}, "
        f"{len(events)} records, lost {lost}"
    )
    assert 503 in answers or run % 2, "MongoDB was away: the process refused SMS"
    assert lost == 0


async def _ready(client: httpx.AsyncClient) -> bool:
    try:
        return (await client.get("/health/ready")).status_code == 200
    except httpx.HTTPError:
        return False


async def _published(settings: HiloSettings, ids: set[str]) -> list[str]:
    """The event ids of every record on `interactions` once each of `ids` is among them."""

    async def read() -> list[str]:
        records = await read_topic(
            settings.kafka_bootstrap_servers,
            topic_name(Topic.INTERACTIONS, settings),
            expected=len(ids),
            timeout=5,
        )
        return [
            dict(record.headers or [])["ce_id"].decode()
            for record in records
            if "ce_id" in dict(record.headers or [])
        ]

    return await eventually(read, until=lambda found: ids <= set(found), timeout=90)
