"""An event loop's teardown bounded (`hilo_devkit.loop_teardown`)."""

from __future__ import annotations

import asyncio

import pytest

from hilo_devkit import loop_teardown


async def never_ends_once_cancelled(started: asyncio.Event) -> None:
    """Catches its cancellation, then waits on a future nobody will resolve (for good)."""
    started.set()
    while True:
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            continue


async def ends_on_the_second_cancellation(started: asyncio.Event) -> None:
    started.set()
    try:
        await asyncio.get_running_loop().create_future()
    except asyncio.CancelledError:
        await asyncio.get_running_loop().create_future()  # a cleanup that hangs, cut short


def test_a_task_that_will_not_end_fails_the_teardown_naming_it_and_the_loop_closes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(loop_teardown, "SECONDS", 1.0)
    runner = asyncio.Runner()
    left: list[asyncio.Task[None]] = []

    async def leave_tasks() -> None:
        started = [asyncio.Event(), asyncio.Event()]
        left.append(asyncio.create_task(never_ends_once_cancelled(started[0]), name="stubborn"))
        left.append(
            asyncio.create_task(ends_on_the_second_cancellation(started[1]), name="cut-short")
        )
        for event in started:
            await event.wait()

    runner.run(leave_tasks())
    loop = runner.get_loop()
    with pytest.raises(loop_teardown.TasksLeftRunning, match="stubborn") as failed:
        runner.close()

    assert "never_ends_once_cancelled" in str(failed.value)
    assert "cut-short" not in str(failed.value), "a second cancellation ends it"
    assert loop.is_closed()
    assert [task.get_name() for task in left if task.done()] == ["cut-short"]
