"""Where a process's CPU goes: py-spy's stacks summarised into buckets that add up to 100%."""

from __future__ import annotations

import asyncio
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hilo_devkit.sampling import Bucket, NotRecorded, Sampler, process_cpu_seconds, summarise

BUCKETS = (
    Bucket("parse", ("Pipeline._parse",)),
    Bucket("publish", ("Pipeline._publish", "Sender.")),
)

PARSE = "run (runners.py:118);Pipeline.process (pipeline.py:129);Pipeline._parse (pipeline.py:222)"
COLLAPSED = "\n".join(
    [
        f"{PARSE} 6",
        f"{PARSE};validate_json (main.py:10) 4",
        "run (runners.py:118);Pipeline.process (pipeline.py:175);Pipeline._publish (x.py:386) 3",
        "run (runners.py:118);Sender._send_produce_req (sender.py:12) 2",
        f"{PARSE};Sender.send (sender.py:40) 1",
        "run (runners.py:118) 5",
        "not a stack line",
    ]
)


def test_each_stack_counts_once_in_the_first_bucket_that_holds_it() -> None:
    summary = summarise(COLLAPSED, BUCKETS)

    assert summary.samples == 21
    assert summary.buckets == {"parse": 11, "publish": 5, "the rest": 5}
    assert sum(summary.buckets.values()) == summary.samples


def test_own_samples_go_to_the_innermost_frame_without_its_line() -> None:
    summary = summarise(COLLAPSED, BUCKETS)

    assert summary.own["Pipeline._parse (pipeline.py)"] == 6
    assert summary.own["validate_json (main.py)"] == 4
    assert summary.own["run (runners.py)"] == 5


def test_the_table_gives_shares_and_cpu_per_event() -> None:
    summary = summarise(COLLAPSED, BUCKETS)
    summary.cpu_seconds = 3.0

    table = summary.table("service", events=1000)

    assert "3.0 s of CPU for 1000 events (3.00 ms per event)" in table
    assert "| parse | 52.4% |" in table
    assert "| the rest | 23.8% |" in table


def test_a_bucket_nothing_fell_into_is_listed_at_zero() -> None:
    """A misspelt frame name shows as an empty bucket instead of vanishing from the table."""
    summary = summarise(COLLAPSED, (*BUCKETS, Bucket("typo", ("Pipline._parse",))))

    assert "| typo | 0.0% |" in summary.table("service", events=1)


BUSY = textwrap.dedent(
    """\
    import time

    def spin_in_named_function():
        end = time.monotonic() + 30
        while time.monotonic() < end:
            sum(range(1000))

    spin_in_named_function()
    """
)


async def sampled(output: Path, *command: str, seconds: float, cpu_seconds: float = 0.0) -> Sampler:
    """Start `command`, record it for `seconds` and until it has used `cpu_seconds` of CPU (a
    busy machine gives it less than a core; within 60 s), stop it; the sampler after it."""
    process = await asyncio.create_subprocess_exec(*command)
    try:
        async with Sampler(process.pid, output) as sampler:
            started = process_cpu_seconds(process.pid)
            await asyncio.sleep(seconds)
            deadline = time.monotonic() + 60
            while process_cpu_seconds(process.pid) - started < cpu_seconds:
                assert time.monotonic() < deadline, "the process got no CPU to speak of"
                await asyncio.sleep(0.1)
    finally:
        process.kill()
        await process.wait()
    return sampler


async def test_a_running_process_is_sampled_where_it_spends_its_time(tmp_path: Path) -> None:
    sampler = await sampled(
        tmp_path / "busy.raw", sys.executable, "-c", BUSY, seconds=2, cpu_seconds=0.5
    )
    if sampler.failure is not None and "ermission" in sampler.failure:
        pytest.skip(f"py-spy may not trace processes here: {sampler.failure}")
    summary = sampler.summary((Bucket("spinning", ("spin_in_named_function",)),))

    assert summary.samples >= 20
    assert summary.buckets["spinning"] / summary.samples > 0.9
    assert 0.3 < sampler.cpu_seconds < 3.0


async def test_a_sampler_that_could_not_attach_says_so(tmp_path: Path) -> None:
    """py-spy exits at once when the process is not Python: an error, never the stacks an
    earlier run left in the same file."""
    (tmp_path / "sleep.raw").write_text("an earlier run;its stack 5\n")

    sampler = await sampled(tmp_path / "sleep.raw", "sleep", "30", seconds=1)

    assert sampler.failure
    with pytest.raises(NotRecorded, match="py-spy recorded nothing"):
        sampler.summary(BUCKETS)
