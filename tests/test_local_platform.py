"""`make run` without Docker, driven as a person would: start it, play the demo, stop it.

The platform comes up as local processes (Kafka, SecantusDB, customer-profile, seven channels),
the traffic simulator's journeys go through every channel's public endpoint into the profile
service and read back, and Ctrl-C leaves no process behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hilo.testkit.local_platform import SERVICES

BIN = Path(sys.executable).parent


def free_port_block(size: int) -> int:
    """A base port with `size` free ports after it."""
    for base in range(21_000, 60_000, 97):
        sockets = []
        try:
            for port in range(base, base + size):
                sock = socket.socket()
                sock.bind(("127.0.0.1", port))
                sockets.append(sock)
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
        return base
    raise RuntimeError("no free port block")


def descendants(root: int) -> set[int]:
    """Every process whose parent chain leads to `root`."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                )
            except (OSError, IndexError, ValueError):
                continue
    found: set[int] = set()
    frontier = {root}
    while frontier:
        children = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= children
        frontier = children
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for_line(process: subprocess.Popen[str], text: str, timeout: float) -> list[str]:
    assert process.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        seen.append(line)
        if text in line:
            return seen
    pytest.fail(f"no {text!r} within {timeout}s:\n{''.join(seen[-40:])}")


def test_make_run_serves_the_simulated_journeys_and_stops_cleanly(tmp_path: Path) -> None:
    base = free_port_block(len(SERVICES))
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("KAFKA_BOOTSTRAP_SERVERS", "MONGODB_URL")
    }
    env.update(HILO_INFRA="local", HILO_LOG_FORMAT="json", PYTHONUNBUFFERED="1")
    runner = subprocess.Popen(
        [str(BIN / "hilo-run"), "--local", "--base-port", str(base)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_line(runner, "Hilo is running", timeout=240)
        started = descendants(runner.pid)
        simulated = subprocess.run(
            [
                str(BIN / "traffic-simulator"),
                "--env-file",
                ".hilo/platform.env",
                "--customers",
                "6",
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        runner.send_signal(signal.SIGINT)
        tail = wait_for_line(runner, "stopped; nothing left running", timeout=90)
        assert runner.wait(timeout=30) == 0
    finally:
        if runner.poll() is None:
            runner.kill()

    report = simulated.stdout
    assert simulated.returncode == 0, report + simulated.stderr
    assert "customers found         6" in report
    assert "journeys complete       6/6" in report
    assert "refused requests        0" in report
    for channel in ("web", "whatsapp", "sms", "voice", "email", "store", "messenger"):
        assert f"{channel} " in report.split("journey entries")[1].splitlines()[0]
    assert len(started) >= len(SERVICES) + 2, "expected Kafka, the database and every service"
    assert [pid for pid in started if alive(pid)] == [], "".join(tail)
    assert not (tmp_path / ".hilo" / "platform.env").exists()
