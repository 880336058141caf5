"""Liveness, readiness and Prometheus metrics for every Hilo HTTP service.

Liveness says the process answers; readiness runs the service's dependency checks (Kafka,
MongoDB) with a deadline, so compose and orchestrators route traffic only to instances that can
do their work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from fastapi import APIRouter, Response
from faststream.kafka import KafkaBroker
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from pymongo import AsyncMongoClient

from hilo.kafka import producer_stalled

Check = Callable[[], Awaitable[bool]]
CHECK_TIMEOUT_SECONDS = 3.0


class HealthStatus(BaseModel):
    status: str
    checks: dict[str, str] = {}


def kafka_check(broker: KafkaBroker) -> Check:
    """Kafka answers, and the producer still sends (`hilo.kafka.producer_stalled`)."""

    async def check() -> bool:
        return not producer_stalled(broker) and await broker.ping(timeout=CHECK_TIMEOUT_SECONDS)

    return check


def mongo_check(client: AsyncMongoClient[dict[str, object]]) -> Check:
    async def check() -> bool:
        await client.admin.command("ping")
        return True

    return check


async def _run(check: Check) -> bool:
    try:
        return await asyncio.wait_for(check(), timeout=CHECK_TIMEOUT_SECONDS)
    except Exception:
        return False


def health_router(
    checks: Mapping[str, Check], *, optional: Mapping[str, Check] | None = None
) -> APIRouter:
    """Routes `/health/live`, `/health/ready` and `/metrics`. An `optional` dependency failing
    shows in the answer (`"status": "degraded"`) but leaves the instance ready: it can do its
    work without it for a while (a channel that spools while Kafka is away)."""
    optional = optional or {}
    router = APIRouter(tags=["operations"])

    @router.get("/health/live")
    async def live() -> HealthStatus:
        """The process is up."""
        return HealthStatus(status="ok")

    @router.get("/health/ready", responses={503: {"model": HealthStatus}})
    async def ready(response: Response) -> HealthStatus:
        """Every dependency answers; 503 names the ones that do not."""
        every = {**checks, **optional}
        names = list(every)
        results = await asyncio.gather(*(_run(every[name]) for name in names))
        status = {name: "ok" if ok else "failing" for name, ok in zip(names, results, strict=True)}
        if any(status[name] == "failing" for name in checks):
            response.status_code = 503
            return HealthStatus(status="unavailable", checks=status)
        return HealthStatus(status="ok" if all(results) else "degraded", checks=status)

    @router.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router
