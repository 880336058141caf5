"""Stopping a service: a step that hangs or fails is logged and the next runs all the same."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from hilo.shutdown import cancelled, shut_down
from hilo.testkit.tasks import deaf_to_cancellation


async def test_a_task_deaf_to_cancellation_and_a_failing_step_do_not_stop_the_next_steps() -> None:
    release = asyncio.Event()

    async def refused() -> None:
        raise ConnectionError("peer gone")

    closed: list[str] = []

    async def close() -> None:
        closed.append("mongo")

    task = asyncio.create_task(deaf_to_cancellation(release))
    await asyncio.sleep(0)
    with capture_logs() as logs:
        await asyncio.wait_for(
            shut_down(
                "test",
                [("background", lambda: cancelled([task])), ("kafka", refused), ("mongo", close)],
                seconds=0.2,
            ),
            timeout=5,
        )

    assert closed == ["mongo"]
    assert [(e["event"], e["step"]) for e in logs] == [
        ("shutdown_step_timed_out", "background"),
        ("shutdown_step_failed", "kafka"),
    ]
    assert logs[1]["error"] == "ConnectionError"
    release.set()
    await task


async def test_steps_that_end_are_not_logged() -> None:
    task = asyncio.create_task(asyncio.sleep(60))
    with capture_logs() as logs:
        await shut_down("test", [("background", lambda: cancelled([task]))], seconds=5)

    assert task.cancelled()
    assert logs == []
