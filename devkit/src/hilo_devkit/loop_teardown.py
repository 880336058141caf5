"""An event loop's teardown bounded, for the test suite: a task that will not end fails its
test, naming the task, instead of holding the whole run.

`asyncio.Runner.close` cancels every task left and waits for all of them without a deadline.
A task that catches its cancellation and then waits on something nobody will resolve held a
test worker for good twice (the process idle in `_cancel_all_tasks`; pytest-timeout does not
reach it). Here each leftover task is cancelled again every half second for `SECONDS`; one still
running then is let go (the loop can close) and the teardown fails with where each such task
waits.
"""

from __future__ import annotations

import asyncio
import asyncio.runners
from typing import Final

from hilo.shutdown import where_it_waits

SECONDS: Final = 15.0
ROUND: Final = 0.5


class TasksLeftRunning(RuntimeError):
    """Tasks a test left that did not end when cancelled, again and again."""


def bounded_cancel_all_tasks(loop: asyncio.AbstractEventLoop) -> None:
    """`asyncio.runners._cancel_all_tasks`, with a deadline (see the module docstring)."""
    left = asyncio.all_tasks(loop)
    for _ in range(int(SECONDS / ROUND)):
        pending = {task for task in left if not task.done()}
        if not pending:
            break
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.wait(pending, timeout=ROUND))
    stuck = sorted((task for task in left if not task.done()), key=lambda t: t.get_name())
    for task in left:
        if task.done() and not task.cancelled() and task.exception() is not None:
            loop.call_exception_handler(
                {
                    "message": "unhandled exception during asyncio.run() shutdown",
                    "exception": task.exception(),
                    "task": task,
                }
            )
    if stuck:
        for task in stuck:
            asyncio.tasks._unregister_task(task)  # let the loop close without it
        raise TasksLeftRunning(
            "tasks left running after being cancelled for "
            f"{SECONDS:.0f} s: " + "; ".join(where_it_waits(task) for task in stuck)
        )


def install() -> None:
    """Bound every event loop's teardown in this process (the test suite's only)."""
    asyncio.runners._cancel_all_tasks = bounded_cancel_all_tasks  # type: ignore[attr-defined]
