"""Where a process's CPU goes: py-spy's stacks summarised into buckets that add up to 100%."""

from __future__ import annotations

import asyncio
import sys
import textwrap
from pathlib import Path

from hilo_devkit.sampling import Bucket, Sampler, summarise

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
        "run (runners.py:118) 5",
        "not a stack line",
    ]
)


def test_each_stack_counts_once_in_the_first_bucket_that_holds_it() -> None:
    summary = summarise(COLLAPSED, BUCKETS)

    assert summary.samples == 20
    assert summary.buckets == {"parse": 10, "publish": 5, "the rest": 5}
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
    assert "| parse | 50.0% |" in table
    assert "| the rest | 25.0% |" in table


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


async def test_a_running_process_is_sampled_where_it_spends_its_time(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", BUSY)
    try:
        async with Sampler(process.pid, tmp_path / "busy.raw") as sampler:
            await asyncio.sleep(2)
        summary = sampler.summary((Bucket("spinning", ("spin_in_named_function",)),))
    finally:
        process.kill()
        await process.wait()

    assert summary.samples >= 50
    assert summary.buckets["spinning"] / summary.samples > 0.9
    assert 1.0 < sampler.cpu_seconds < 3.0
