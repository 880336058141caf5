"""The simulator sends like a provider: what a channel did not accept is sent again, what it
refused for good is reported, and a request is counted once however many tries it took."""

from __future__ import annotations

import httpx
import pytest

from traffic_simulator import player
from traffic_simulator.journeys import Step
from traffic_simulator.player import PlayReport, _send

STEP = Step("web", "http://channel-web/v1/track", b"{}", {})


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(player, "wait_exponential", lambda **_: lambda _state: 0)


def channel(*answers: int | type[httpx.TransportError]) -> tuple[httpx.AsyncClient, list[int]]:
    """A channel answering each try in turn: a status, or no answer at all (it is down)."""
    tries: list[int] = []

    def handle(request: httpx.Request) -> httpx.Response:
        answer = answers[min(len(tries), len(answers) - 1)]
        tries.append(1)
        if isinstance(answer, int):
            return httpx.Response(answer, json={"detail": "x"})
        raise answer("connection refused", request=request)

    return httpx.AsyncClient(transport=httpx.MockTransport(handle)), tries


async def test_a_channel_that_was_down_gets_the_request_again() -> None:
    client, tries = channel(httpx.ConnectError, httpx.ConnectError, 503, 202)
    report = PlayReport()

    await _send(client, STEP, report)

    assert len(tries) == 4
    assert (report.requests, report.events["web"], report.failures) == (1, 1, [])
    assert report.retries == 3


async def test_a_refusal_for_good_is_reported_at_once() -> None:
    client, tries = channel(422)
    report = PlayReport()

    await _send(client, STEP, report)

    assert len(tries) == 1
    assert report.failures == ['web 422: {"detail":"x"}']
    assert report.events["web"] == 0


async def test_a_channel_that_never_comes_back_is_reported() -> None:
    client, tries = channel(503)
    report = PlayReport()

    await _send(client, STEP, report)

    assert len(tries) == 10
    assert report.failures[0].startswith("web 503")
