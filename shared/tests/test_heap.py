"""The garbage collector is tuned once a service has started, and only then."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fastapi import FastAPI

from hilo import entrypoint, heap
from hilo.testkit.serving import served


@pytest.fixture(autouse=True)
def collector_restored() -> Iterator[None]:
    """Each test starts from the interpreter's defaults and leaves them so."""
    heap.unsettle()
    yield
    heap.unsettle()


def test_settle_freezes_what_exists_and_collects_the_young_less_often() -> None:
    middle, oldest = gc.get_threshold()[1:]
    assert gc.get_freeze_count() == 0

    heap.settle()

    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (heap.YOUNG_GENERATION_THRESHOLD, middle, oldest)


async def test_settled_after_tunes_once_start_up_is_done_and_keeps_the_lifespan() -> None:
    seen: list[tuple[str, int]] = []

    @asynccontextmanager
    async def lifespan(app: str) -> AsyncIterator[dict[str, str]]:
        seen.append(("started", gc.get_freeze_count()))
        yield {"app": app}
        seen.append(("stopped", gc.get_freeze_count()))

    async with heap.settled_after(lifespan)("the app") as state:
        assert state == {"app": "the app"}
        assert gc.get_freeze_count() > 0

    assert seen[0] == ("started", 0)  # start-up ran before anything was frozen
    assert seen[1][0] == "stopped"


async def test_every_served_app_is_settled_after_its_lifespan_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started: list[int] = []

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        started.append(gc.get_freeze_count())
        yield

    app = FastAPI(lifespan=lifespan)
    handed: list[Any] = []
    monkeypatch.setattr("uvicorn.run", lambda app, **_: handed.append(app))

    entrypoint.run_app(app, _Listening())

    assert handed == [app]
    assert gc.get_freeze_count() == 0
    async with served(app):  # uvicorn runs the app's lifespan, as in production
        assert started == [0]
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] == heap.YOUNG_GENERATION_THRESHOLD


def test_unsettle_brings_back_the_defaults() -> None:
    defaults = gc.get_threshold()
    heap.settle()

    heap.unsettle()

    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == defaults


class _Listening:
    http_host = "127.0.0.1"
    http_port = 8000
