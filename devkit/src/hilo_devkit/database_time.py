"""Where a service's database time goes: each command it sends, by the code that sent it.

A PyMongo command listener (`CommandsByCaller`) records, for every command, the batch step and the
store operation that sent it (read off the caller's stack), the database's time as the driver saw
it, and how many documents it wrote and returned; `command_table` prints the largest as Markdown.
Walking the stack costs the service CPU on every command: a measuring run's own speed is not
the benchmark's.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from dataclasses import dataclass
from types import FrameType
from typing import Any

from pymongo import monitoring

from hilo.mongo import command_target

WRITES = frozenset({"insert", "update", "delete"})
STEP_CALLER = "Pipeline.process"
HILO_PACKAGES = ("customer_profile.", "hilo.")
MONGO_HELPERS = "hilo.mongo"


@dataclass
class Tally:
    commands: int = 0
    milliseconds: float = 0.0
    written: int = 0
    returned: int = 0


class CommandsByCaller(monitoring.CommandListener):
    """Each command's database time, documents written and returned, by (step, operation,
    command): the step is the `Pipeline.process` callee it ran under, the operation the store
    method that sent it."""

    def __init__(self) -> None:
        self.tallies: dict[tuple[str, str, str], Tally] = defaultdict(Tally)
        self._started: dict[int, tuple[str, str, str]] = {}

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        step, operation = callers(sys._getframe(1))
        name, target = event.command_name, command_target(event)
        command = f"{name} {target}" if isinstance(target, str) else name
        self._started[event.request_id] = (step, operation, command)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        written = int(event.reply.get("n", 0)) if event.command_name in WRITES else 0
        self._finish(event.request_id, event.duration_micros, written, _returned(event.reply))

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._finish(event.request_id, event.duration_micros, 0, 0)

    def _finish(self, request_id: int, micros: int, written: int, returned: int) -> None:
        """Add a command's answer to its tally: `written` as the server counted them (inserted,
        matched by an update, deleted)."""
        if (key := self._started.pop(request_id, None)) is None:
            return
        tally = self.tallies[key]
        tally.commands += 1
        tally.milliseconds += micros / 1000
        tally.written += written
        tally.returned += returned

    def clear(self) -> None:
        self.tallies.clear()


def callers(frame: FrameType | None) -> tuple[str, str]:
    """(batch step, store operation) of the code that sent a command: the operation is the
    innermost Hilo method outside the chunking helpers (not a comprehension, nor a module's
    function), the step the callee of `Pipeline.process` (or, outside a batch, the outermost
    Hilo function)."""
    operation = step = ""
    while frame is not None:
        code, module = frame.f_code, str(frame.f_globals.get("__name__", ""))
        hilo = module.startswith(HILO_PACKAGES)
        if hilo and not operation and _is_method(code.co_qualname, module):
            operation = code.co_qualname
        if code.co_qualname == STEP_CALLER and step:
            return step, operation
        if hilo:
            step = code.co_qualname
        frame = frame.f_back
    return step or "(outside a batch)", operation


def _is_method(name: str, module: str) -> bool:
    return "." in name and "<" not in name and module != MONGO_HELPERS


def _returned(reply: Any) -> int:
    cursor = reply.get("cursor") if isinstance(reply, dict) else None
    if not isinstance(cursor, dict):
        return 0
    documents = cursor.get("firstBatch") or cursor.get("nextBatch") or []
    return len(documents)


def command_table(times: CommandsByCaller, events: int, batches: int, top: int) -> str:
    """Markdown: the `top` (step, operation, command)s by database time, per batch and event."""
    total = sum(t.milliseconds for t in times.tallies.values()) or 1.0
    rows = sorted(times.tallies.items(), key=lambda item: -item[1].milliseconds)
    lines = [
        f"**Database time as the driver saw it**: {total / 1000:.1f} s for {events:,} events "
        f"in {batches} batches ({total / events:.2f} ms per event)",
        "",
        "| batch step | store operation | command | share | commands per batch "
        "| written per event | returned per event |",
        "|---|---|---|---|---|---|---|",
    ]
    for (step, operation, command), t in rows[:top]:
        lines.append(
            f"| `{step}` | `{operation}` | {command} | {100 * t.milliseconds / total:.1f}% "
            f"| {t.commands / max(1, batches):.1f} | {t.written / events:.2f} "
            f"| {t.returned / events:.2f} |"
        )
    return "\n".join(lines)
