"""pytest fixtures giving every test real Kafka and MongoDB-wire servers, isolated per test.

The servers start once per session, on first use (see `local_infra` for how they are found),
and stop at the end of the session. Each test gets its own topic prefix and database, so tests
neither see nor disturb each other's data. Under pytest-xdist (`make test` runs two workers)
each worker is a session: it starts servers of its own, unless the environment names some.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from hilo.mongo import MongoDocument, create_mongo_client
from hilo.settings import HiloSettings
from hilo.topics import ensure_topics
from hilo_devkit import loop_teardown
from hilo_devkit.local_infra import Endpoints, Infrastructure

loop_teardown.install()  # a task that will not end fails its test, not the whole run

_timings: dict[str, str] = {}
_worker_timings: dict[str, dict[str, str]] = {}
_WORKER_OUTPUT = "hilo_infrastructure"


@pytest.fixture(scope="session")
def infrastructure() -> Iterator[Endpoints]:
    """Kafka and a MongoDB-wire server for the whole session."""
    started = time.monotonic()
    infra = Infrastructure()
    with infra as endpoints:
        _timings["provider"] = endpoints.provider
        if infra.fallback:
            _timings["not Docker, because"] = infra.fallback
        _timings["ready"] = f"{time.monotonic() - started:.1f}s"
        if infra.kafka is not None:
            _timings["kafka"] = f"{infra.kafka.ready_seconds:.1f}s"
        if infra.database is not None:
            _timings["database"] = f"{infra.database.ready_seconds:.1f}s"
        yield endpoints


@pytest.fixture
def settings(infrastructure: Endpoints) -> HiloSettings:
    """Settings pointing at the session's servers, with a topic prefix and database of its own."""
    run = uuid.uuid4().hex[:10]
    return HiloSettings(
        environment="test",
        kafka_bootstrap_servers=infrastructure.kafka_bootstrap_servers,
        mongodb_url=infrastructure.mongodb_url,
        mongodb_database=f"test_{run}",
        mongodb_keys_database=f"test_{run}_keys",
        topic_prefix=f"t{run}.",
        topic_partitions=3,
        kafka_publish_timeout_seconds=10.0,
    )


@pytest.fixture
async def topics(settings: HiloSettings) -> list[str]:
    """The registry's topics, created under this test's prefix."""
    return await ensure_topics(settings)


@pytest.fixture
async def mongo_client(settings: HiloSettings) -> AsyncIterator[AsyncMongoClient[MongoDocument]]:
    """A client for the session's server; this test's databases are dropped afterwards."""
    client = create_mongo_client(settings)
    try:
        yield client
    finally:
        await client.drop_database(settings.mongodb_database)
        await client.drop_database(settings.mongodb_keys_database)
        await client.close()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A test worker hands its servers' timings to the controller, which prints them."""
    output = getattr(session.config, "workeroutput", None)
    if output is not None and _timings:
        output[_WORKER_OUTPUT] = dict(_timings)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    timings = getattr(node, "workeroutput", {}).get(_WORKER_OUTPUT)
    if timings:
        _worker_timings[node.gateway.id] = timings


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    runs = {"": _timings} if _timings else dict(sorted(_worker_timings.items()))
    for worker, timings in runs.items():
        parts = ", ".join(f"{key} {value}" for key, value in timings.items())
        terminalreporter.write_line(
            f"hilo infrastructure{f' ({worker})' if worker else ''}: {parts}"
        )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses the real infrastructure, so `-m "not infra"` skips them."""
    for item in items:
        if "infrastructure" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.infra)
