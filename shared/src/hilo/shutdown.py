"""Stopping a service: every step runs, and none waits for ever.

A background task that swallows its cancellation, or a client whose close waits on a peer that
is gone, would otherwise hold the process at exit until the orchestrator kills it, with nothing
in the log to say which step it was; and a step that fails would leave the connections after it
open.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog

log = structlog.get_logger(__name__)

STEP_SECONDS = 10.0
"""How long one step of a shutdown may take before the next one runs regardless."""

Step = tuple[str, Callable[[], Awaitable[object]]]
"""A step's name (for the log) and what it awaits."""


async def cancelled(tasks: Sequence[asyncio.Task[Any]]) -> None:
    """Cancel the tasks and wait until they have ended (bound it with `shut_down`)."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def shut_down(service: str, steps: Sequence[Step], seconds: float | None = None) -> None:
    """Run the steps in order. One that fails is logged (`shutdown_step_failed`), one still
    running after `seconds` (`STEP_SECONDS`) is logged (`shutdown_step_timed_out`) and left
    behind; the next runs all the same."""
    seconds = STEP_SECONDS if seconds is None else seconds
    for name, step in steps:
        running = asyncio.ensure_future(step())
        done, _ = await asyncio.wait({running}, timeout=seconds)
        if not done:
            log.warning(
                "shutdown_step_timed_out",
                service=service,
                step=name,
                seconds=seconds,
                waiting=still_running(),
            )
        elif not running.cancelled() and (error := running.exception()) is not None:
            log.warning(
                "shutdown_step_failed", service=service, step=name, error=type(error).__name__
            )


def still_running(limit: int = 20) -> list[str]:
    """Where each task still running waits (`name: function (module:line)` of its coroutine),
    for the log of a step that timed out: which task would not end is what the person fixing
    it needs, and Python's own exit then waits on it with nothing said."""
    current = asyncio.current_task()
    found = [
        where_it_waits(task)
        for task in asyncio.all_tasks()
        if task is not current and not task.done()
    ]
    return sorted(found)[:limit]


def where_it_waits(task: asyncio.Task[Any]) -> str:
    """`name: function (module:line)` of the task's coroutine where it waits (a suspended
    coroutine has that one frame)."""
    frames = task.get_stack(limit=1)
    if not frames:
        return f"{task.get_name()}: not started"
    code = frames[-1].f_code
    return (
        f"{task.get_name()}: {code.co_name} "
        f"({_module_path(code.co_filename)}:{frames[-1].f_lineno})"
    )


def _module_path(filename: str) -> str:
    """A source file as its package and module (`hilo/kafka.py`), not the machine's path."""
    parts = filename.replace("\\", "/").split("/")
    return "/".join(parts[-2:])


_STOPPABLE = False


def allow_stopping_this_process() -> None:
    """This process is a service served on its own (`hilo.entrypoint.run_app`): it may stop
    itself. Anywhere else (an app run inside a test process) it must not."""
    global _STOPPABLE  # noqa: PLW0603 - one switch per process, set once at start
    _STOPPABLE = True


def stop_this_process() -> None:
    """Ask this process to stop as an orchestrator would (SIGTERM: uvicorn stops gracefully,
    within `hilo.entrypoint.GRACEFUL_SECONDS` for its connections), for a fault only a new
    process recovers from; `restart: unless-stopped` or a Kubernetes pod then starts a new one.
    Outside a served service it only says so: a test run must fail a test, not end."""
    if not _STOPPABLE:
        log.error("process_stop_skipped", reason="not a service served by run_app")
        return
    signal.raise_signal(signal.SIGTERM)
