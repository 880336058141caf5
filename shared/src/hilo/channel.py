"""What every channel service shares: the HTTP app, durable publishing, errors, limits, metrics.

A channel service only translates its provider's format into interactions; this module does the
rest the same way for every channel:

- publish and wait for Kafka's acknowledgement, answering 503 (so the provider retries) when it
  does not come; never 200 for something Kafka does not have;
- refuse bodies over `HILO_MAX_BODY_BYTES` with 413, malformed bodies with 422 naming the fields
  (never echoing their values), bad signatures with 401/403;
- `/health/live`, `/health/ready` (Kafka), `/metrics` with accepted/rejected counts per reason and
  publish latency.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TypeVar

import structlog
import uvicorn
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import Counter, Histogram
from pydantic import BaseModel, Field, ValidationError

from hilo.contract import Interaction
from hilo.contract.identifiers import DEFAULT_PHONE_REGION
from hilo.health import health_router, kafka_check
from hilo.kafka import KafkaPublisher, PublishFailed, create_broker
from hilo.logs import configure_logging
from hilo.settings import HiloSettings
from hilo.webhook import SignatureError

log = structlog.get_logger(__name__)

ACCEPTED = Counter("hilo_channel_events_accepted_total", "Interactions published", ["channel"])
REJECTED = Counter(
    "hilo_channel_requests_rejected_total", "Requests refused, by reason", ["channel", "reason"]
)
PUBLISH_SECONDS = Histogram(
    "hilo_channel_publish_seconds", "Time until Kafka acknowledged a request's events", ["channel"]
)


class ChannelSettings(HiloSettings):
    """Settings every channel service has (environment, prefix `HILO_`)."""

    http_host: str = Field(default="0.0.0.0", description="Address to listen on.")  # noqa: S104
    http_port: int = Field(default=8000, ge=1, le=65535)
    max_body_bytes: int = Field(default=1_000_000, ge=1_024, description="Larger bodies get 413.")


class Rejected(Exception):
    """The request is refused with `status` and a reason safe to show the sender."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail


def signature_rejection(exc: SignatureError) -> Rejected:
    """Missing signature: 401; present but wrong: 403."""
    missing = "missing" in str(exc)
    return Rejected(401 if missing else 403, "signature", str(exc))


def validation_rejection(exc: ValidationError, status: int = 422) -> Rejected:
    """Name each invalid field and why, never its value."""
    problems = "; ".join(
        f"{'.'.join(str(p) for p in error['loc']) or '(body)'}: {error['msg']}"
        for error in exc.errors(include_input=False, include_url=False)
    )
    return Rejected(status, "invalid_body", problems)


Model = TypeVar("Model", bound=BaseModel)


def parse_json(model: type[Model], body: bytes) -> Model:
    """Validate a JSON body into `model`: 422 naming each invalid field, never its value."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise validation_rejection(exc) from None


class Channel:
    """A channel's publishing side: what its routes call after translating a request."""

    def __init__(self, name: str, settings: ChannelSettings, publisher: KafkaPublisher) -> None:
        self.name = name
        self.settings = settings
        self._publisher = publisher

    async def publish(self, interactions: Sequence[Interaction]) -> None:
        """Publish every interaction of one request; 503 unless Kafka acknowledged them all."""
        started = time.perf_counter()
        try:
            await asyncio.gather(*map(self._publisher.publish_interaction, interactions))
        except PublishFailed:
            REJECTED.labels(self.name, "kafka_unavailable").inc()
            raise HTTPException(
                status_code=503,
                detail="events could not be stored right now; retry later",
                headers={"Retry-After": "5"},
            ) from None
        PUBLISH_SECONDS.labels(self.name).observe(time.perf_counter() - started)
        ACCEPTED.labels(self.name).inc(len(interactions))
        for interaction in interactions:
            log.info(
                "interaction_published",
                channel=self.name,
                event_id=interaction.id,
                type=interaction.payload.kind,
            )


async def raw_body(request: Request, limit: int) -> bytes:
    """The request body, refusing it (413) as soon as it exceeds `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise Rejected(413, "too_large", f"body larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise Rejected(413, "too_large", f"body larger than {limit} bytes")
    return bytes(body)


def serve(app: FastAPI, settings: ChannelSettings) -> None:
    """Run a channel app with Hilo's logging (the entry point of every channel service)."""
    configure_logging(settings)
    uvicorn.run(
        app, host=settings.http_host, port=settings.http_port, log_config=None, access_log=False
    )


def create_channel_app(
    name: str,
    settings: ChannelSettings,
    routes: Callable[[Channel], Sequence[Callable[..., Awaitable[Response]] | object]],
    *,
    description: str,
) -> FastAPI:
    """The FastAPI app of a channel service; `routes(channel)` returns its APIRouters."""
    DEFAULT_PHONE_REGION.set(settings.default_phone_region)
    broker = create_broker(settings)
    channel = Channel(name, settings, KafkaPublisher(broker, settings))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await broker.start()
        log.info("channel_started", channel=name)
        try:
            yield
        finally:
            await broker.stop()

    app = FastAPI(title=f"Hilo {name} channel", description=description, lifespan=lifespan)
    app.state.channel = channel
    app.include_router(health_router({"kafka": kafka_check(broker)}))
    for router in routes(channel):
        app.include_router(router)  # type: ignore[arg-type]

    @app.exception_handler(Rejected)
    async def rejected(_request: Request, exc: Rejected) -> JSONResponse:
        REJECTED.labels(name, exc.reason).inc()
        log.info("request_rejected", channel=name, reason=exc.reason, status=exc.status)
        return JSONResponse({"error": exc.reason, "detail": exc.detail}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        REJECTED.labels(name, "invalid_request").inc()
        problems = [{"loc": list(error["loc"]), "msg": error["msg"]} for error in exc.errors()]
        return JSONResponse({"error": "invalid_request", "detail": problems}, status_code=422)

    return app
