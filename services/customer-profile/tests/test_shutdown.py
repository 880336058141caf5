"""Stopping the service: a background task that swallows its cancellation cannot hold it."""

from __future__ import annotations

import asyncio

import pytest
from pymongo.errors import InvalidOperation

from customer_profile.bootstrap import bootstrap, start, stop
from customer_profile.testing import profile_settings
from hilo import shutdown
from hilo.settings import HiloSettings
from hilo.testkit.logs import logs_of
from hilo.testkit.tasks import deaf_to_cancellation


async def test_a_background_task_deaf_to_cancellation_does_not_hold_the_service_at_stop(
    settings: HiloSettings, topics: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stop names the step that hung in the log, and still stops consuming and closes the
    database client. (Before, it awaited the task for ever.)"""
    monkeypatch.setattr(shutdown, "STEP_SECONDS", 0.5)
    service = bootstrap(profile_settings(settings))
    await start(service)
    release = asyncio.Event()

    stubborn = asyncio.create_task(deaf_to_cancellation(release))
    service.background.append(stubborn)
    await asyncio.sleep(0)

    with logs_of(shutdown) as logs:
        await asyncio.wait_for(stop(service), timeout=60)

    assert [(e["event"], e["step"]) for e in logs if e["event"].startswith("shutdown")] == [
        ("shutdown_step_timed_out", "background")
    ]
    assert not service.broker.running
    with pytest.raises(InvalidOperation):
        await service.mongo.admin.command("ping")
    release.set()
    await stubborn
