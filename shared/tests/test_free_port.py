"""Ports for the servers tests start (`hilo.testkit.serving.free_port`)."""

from __future__ import annotations

import socket
from collections import deque

import pytest

from hilo.testkit import serving

LOW = serving.LOWEST_PORT


def test_a_port_is_free_and_outside_the_range_outgoing_connections_take_theirs_from() -> None:
    """A Kafka stopped for an outage test comes back on its port: one the OS may give an
    outgoing connection meanwhile would be taken ("Address already in use")."""
    outgoing_low = int(serving.EPHEMERAL_RANGE.read_text().split()[0])

    ports = {serving.free_port() for _ in range(20)}

    assert all(1_024 <= port < outgoing_low for port in ports)
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))


def test_a_port_is_not_handed_out_twice_before_its_server_binds_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Kafka asks for its four ports before it binds any: two the same would not start."""
    monkeypatch.setattr(serving, "_own_slice", lambda: (LOW, LOW + 199))
    monkeypatch.setattr(serving, "_GIVEN", deque(maxlen=2_000))

    ports = [serving.free_port() for _ in range(100)]

    assert len(set(ports)) == 100, "drawn at random from 200, some came twice"


@pytest.mark.parametrize("worker", ["gw0", "gw1", "gw2"])
def test_each_test_worker_takes_ports_from_a_slice_of_its_own(
    worker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "3")
    slices = {}
    for name in ("gw0", "gw1", "gw2"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", name)
        slices[name] = serving._own_slice()
    monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)

    low, high = slices[worker]
    port = serving.free_port()

    assert low <= port <= high
    others = [s for name, s in slices.items() if name != worker]
    assert not any(other_low <= port <= other_high for other_low, other_high in others)
