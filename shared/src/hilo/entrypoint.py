"""What every Hilo service's command line does alike: serve its app, refuse to serve an API
without keys, and the deployment's `init` step (topics and indexes)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

import structlog
import uvicorn
from fastapi import FastAPI
from pymongo import AsyncMongoClient

from hilo.heap import settled_after
from hilo.mongo import MongoDocument, create_mongo_client
from hilo.settings import HiloSettings
from hilo.shutdown import allow_stopping_this_process
from hilo.topics import ensure_topics


class OpenApiRefused(RuntimeError):
    """The API would be served without keys outside an explicit development run."""


class Listening(Protocol):
    """Settings that say where a service's HTTP server listens."""

    @property
    def http_host(self) -> str: ...

    @property
    def http_port(self) -> int: ...


GRACEFUL_SECONDS = 5
"""How long a stopping service waits for its open connections before its shutdown runs: an
agent's live page never ends its stream by itself, and uvicorn would otherwise wait for it
(for ever when the service stopped itself: no SIGKILL follows)."""


def run_app(app: FastAPI, settings: Listening) -> None:
    """Serve `app` with uvicorn; logging stays Hilo's (`hilo.logs`), no access log; the garbage
    collector is tuned once the app has started (`hilo.heap`). A process served so may stop
    itself (`hilo.shutdown.stop_this_process`)."""
    app.router.lifespan_context = settled_after(app.router.lifespan_context)
    allow_stopping_this_process()
    uvicorn.run(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SECONDS,
    )


def serve_api(name: str, settings: Listening, build: Callable[[], FastAPI]) -> None:
    """Build the service's app and serve it; a refused open API ends the process with why."""
    try:
        app = build()
    except OpenApiRefused as exc:
        sys.exit(f"{name}: {exc}")
    run_app(app, settings)


async def init_deployment(
    settings: HiloSettings,
    create_indexes: Callable[[AsyncMongoClient[MongoDocument]], Awaitable[None]],
) -> int:
    """Create the topics and the service's MongoDB indexes (both idempotent)."""
    created = await ensure_topics(settings)
    mongo = create_mongo_client(settings)
    try:
        await create_indexes(mongo)
    finally:
        await mongo.close()
    print(f"topics: {len(created)} created, the others existed; indexes ready")  # noqa: T201
    return 0


def run_job(name: str, job: Coroutine[Any, Any, int]) -> int:
    """A command-line job's exit code; 1 when it fails, logged through the masking pipeline
    (`hilo.logs`): Python's own report would print the error's message raw, and a write error
    quotes the documents it refused."""
    try:
        return asyncio.run(job)
    except Exception:
        structlog.get_logger(__name__).exception("job_failed", job=name)
        return 1
