"""Where a running service's CPU goes: py-spy attached to its process, its samples summarised.

The benchmarks say how fast; this says why. `Sampler` records a process with py-spy (a sampling
profiler that reads the interpreter from outside, with no change to the service) while a
benchmark drives it, and `summarise` turns the samples into the shares the closing notes and
docs/benchmarks.md quote: each stack goes to the first bucket whose frame it contains, so the
shares add up to 100% and every figure can be re-run.

py-spy keeps only the samples of a thread holding the GIL (`--gil`): without it, uvloop waiting
in `epoll` and PyMongo's monitor threads waiting on a condition count as busy, and they were a
third of the samples. A sample is wall time holding the GIL, not CPU: on a busy machine a thread
switched out inside a system call (a send that wakes the database, which then runs on the same
core) still holds it, so sends weigh more in the shares than their CPU. The table therefore gives
shares, and the process's CPU (from `/proc`) over the same span as a whole.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

SAMPLES_PER_SECOND = 100

_LOCATION = re.compile(r" \((?:.*/)?([^/]*):\d+\)")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time process `pid` used so far (Linux `/proc`)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Bucket:
    """A named part of a process: the stacks that pass through a frame whose name starts with
    one of `frames` (function names as py-spy prints them, `Class.method`)."""

    name: str
    frames: tuple[str, ...]

    def holds(self, stack: Sequence[str]) -> bool:
        return any(frame.startswith(self.frames) for frame in stack)


@dataclass
class Summary:
    """Samples per bucket, and per function where the sample was taken (its own time)."""

    samples: int = 0
    cpu_seconds: float = 0.0
    buckets: Counter[str] = field(default_factory=Counter)
    own: Counter[str] = field(default_factory=Counter)

    def table(self, title: str, events: int, top: int = 12) -> str:
        """Markdown: each bucket's share, then the functions with most samples of their own;
        the title line gives the process's CPU per event (of `events` handled meanwhile)."""
        per_event = f"{1000 * self.cpu_seconds / events:.2f}" if events else "-"
        lines = [
            f"**{title}**: {self.cpu_seconds:.1f} s of CPU for {events} events ({per_event} ms "
            f"per event); {self.samples} samples holding the GIL",
            "",
            "| where | share of samples |",
            "|---|---|",
        ]
        lines += [f"| {name} | {self._share(n)} |" for name, n in self.buckets.most_common()]
        lines += ["", "| function (own samples) | share |", "|---|---|"]
        lines += [f"| `{name}` | {self._share(n)} |" for name, n in self.own.most_common(top)]
        return "\n".join(lines)

    def _share(self, count: int) -> str:
        return f"{100 * count / self.samples:.1f}%" if self.samples else "-"


def summarise(collapsed: str, buckets: Sequence[Bucket], rest: str = "the rest") -> Summary:
    """Summarise py-spy's raw (collapsed) output: one `frame;frame;... count` line per stack,
    outermost frame first. A stack counts once, in the first bucket that holds it."""
    summary = Summary()
    summary.buckets.update({bucket.name: 0 for bucket in buckets} | {rest: 0})
    for line in collapsed.splitlines():
        stack_text, _, count_text = line.rstrip().rpartition(" ")
        if not stack_text or not count_text.isdigit():
            continue
        count = int(count_text)
        stack = [_LOCATION.sub(r" (\1)", frame) for frame in stack_text.split(";")]
        summary.samples += count
        bucket = next((b.name for b in buckets if b.holds(stack)), rest)
        summary.buckets[bucket] += count
        summary.own[stack[-1]] += count
    return summary


class NotRecorded(RuntimeError):
    """py-spy could not record the process."""


class Sampler:
    """py-spy recording process `pid` for as long as the `async with` block runs.

    py-spy writes its output when interrupted, so leaving the block sends SIGINT and waits for
    the file; a recording that failed (no right to trace, say) leaves `failure` set rather than
    raising, so the benchmark around it still reports. py-spy pauses the process while it reads
    each sample (100 times a second), so the latency of a sampled run is not the benchmark's
    figure. Read without pausing (`--nonblocking`), a fifth of customer-profile's stacks came
    out cut short and fell into no bucket. Needs the right to trace the process (root, or
    `CAP_SYS_PTRACE`).
    """

    STOP_SECONDS = 30

    def __init__(self, pid: int, output: Path) -> None:
        self.pid = pid
        self.output = output
        self._process: asyncio.subprocess.Process | None = None
        self._cpu_at_start = 0.0
        self.cpu_seconds = 0.0
        self.failure: str | None = None
        """Why py-spy recorded nothing (no right to trace, not a Python process); None if it did."""

    async def __aenter__(self) -> Sampler:
        executable = _py_spy()
        self.output.parent.mkdir(parents=True, exist_ok=True)
        self.output.unlink(missing_ok=True)  # never summarise an earlier run's stacks
        self._cpu_at_start = process_cpu_seconds(self.pid)
        self._process = await asyncio.create_subprocess_exec(
            executable,
            "record",
            "--format",
            "raw",
            "--gil",
            "--rate",
            str(SAMPLES_PER_SECOND),
            "--pid",
            str(self.pid),
            "--output",
            str(self.output),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            self.cpu_seconds = process_cpu_seconds(self.pid) - self._cpu_at_start
        except OSError:  # the process is gone (likely why we are leaving): its CPU is unknown
            self.cpu_seconds = float("nan")
        errors = await self._stop()
        assert self._process is not None
        if self._process.returncode != 0 or not self.output.exists():
            self.failure = errors.decode(errors="replace").strip()[-500:] or "no output"

    async def _stop(self) -> bytes:
        """Interrupt py-spy (it then writes its file) and wait; kill it if it hangs."""
        assert self._process is not None
        if self._process.returncode is None:
            self._process.send_signal(signal.SIGINT)
        try:
            _, errors = await asyncio.wait_for(self._process.communicate(), self.STOP_SECONDS)
        except TimeoutError:
            self._process.kill()
            _, errors = await self._process.communicate()
        return errors

    def summary(self, buckets: Sequence[Bucket]) -> Summary:
        """The recording summarised; raises `NotRecorded` when there is none."""
        if self.failure is not None:
            raise NotRecorded(f"py-spy recorded nothing: {self.failure}")
        summary = summarise(self.output.read_text(), buckets)
        summary.cpu_seconds = self.cpu_seconds
        return summary


def _py_spy() -> str:
    """The environment's own py-spy (`.venv/bin` is not on PATH under make), else PATH's."""
    beside = Path(sys.executable).with_name("py-spy")
    executable = str(beside) if beside.exists() else shutil.which("py-spy")
    if executable is None:
        raise RuntimeError("py-spy is not installed: `make install` adds it to .venv")
    return executable
