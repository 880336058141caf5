"""Stopping a service: a step that hangs or fails is logged and the next runs all the same."""

from __future__ import annotations

import asyncio
import signal
import sys
import time

import httpx

from hilo import shutdown
from hilo.entrypoint import GRACEFUL_SECONDS
from hilo.shutdown import cancelled, shut_down
from hilo.testkit.logs import logs_of
from hilo.testkit.serving import free_port
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
    with logs_of(shutdown) as logs:
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
    # Which task would not end, and where it waits: what the person fixing it needs.
    assert any(
        "deaf_to_cancellation (testkit/tasks.py:" in waiting for waiting in logs[0]["waiting"]
    ), logs[0]["waiting"]
    release.set()
    await task


async def test_steps_that_end_are_not_logged() -> None:
    task = asyncio.create_task(asyncio.sleep(60))
    with logs_of(shutdown) as logs:
        await shut_down("test", [("background", lambda: cancelled([task]))], seconds=5)

    assert task.cancelled()
    assert logs == []


SERVED_WITH_A_STREAM = """
import asyncio, sys
from contextlib import asynccontextmanager
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from hilo.entrypoint import run_app

class Listening:
    http_host = "127.0.0.1"
    http_port = int(sys.argv[1])

@asynccontextmanager
async def lifespan(_app):
    print("started", flush=True)
    yield
    print("shut down", flush=True)

app = FastAPI(lifespan=lifespan)

async def stream(scope, receive, send):
    # Never reads `receive`: a stream that does not notice the server stopping.
    headers = [(b"content-type", b"text/event-stream")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    while True:
        await send({"type": "http.response.body", "body": b"data: tick\\n\\n", "more_body": True})
        await asyncio.sleep(0.2)

app.mount("/stream", stream)

run_app(app, Listening())
"""


async def test_a_served_service_stops_within_its_grace_while_a_stream_stays_open() -> None:
    """An agent's live page never ends its stream, and a stream that does not notice the server
    stopping would hold it: a service told to stop (by the orchestrator, or by itself after a
    fault, when no SIGKILL follows) waits `GRACEFUL_SECONDS` for it, then shuts down."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SERVED_WITH_A_STREAM,
        str(port),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    try:
        assert await asyncio.wait_for(process.stdout.readline(), 30) == b"started\n"
        await _listening(port)  # the lifespan starts before uvicorn binds its socket
        async with (
            httpx.AsyncClient(timeout=30) as client,
            client.stream("GET", f"http://127.0.0.1:{port}/stream/") as opened,
        ):
            first = await anext(opened.aiter_lines())
            process.send_signal(signal.SIGTERM)
            stopped_at = time.monotonic()
            await asyncio.wait_for(process.wait(), GRACEFUL_SECONDS + 15)
            waited = time.monotonic() - stopped_at
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    output = (await process.stdout.read()).decode()

    assert first == "data: tick"
    assert "shut down" in output, output
    assert waited >= GRACEFUL_SECONDS - 1, "it waited for the open stream a while first"


async def _listening(port: int) -> None:
    """Wait until something accepts connections on `port` (30 s at most)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)
        else:
            writer.close()
            await writer.wait_closed()
            return
