"""What every channel service shares: the HTTP app, durable publishing, errors, limits, metrics.

A channel service only translates its provider's format into interactions; this module does the
rest the same way for every channel:

- seal each event's personal fields (`hilo.sealing`: crypto-shredding, so an erasure makes them
  unreadable on every topic), publish and wait for Kafka's acknowledgement, answering 503 (so the
  provider retries) when it does not come or the key store does not answer; never 200 for
  something Kafka does not have, unless the provider does not always retry (Twilio, Mailgun's
  delivery notifications): then its records are kept in MongoDB (`hilo.spool`) and published
  once Kafka is back;
- refuse bodies over `HILO_MAX_BODY_BYTES` with 413, events larger than Kafka takes
  (`HILO_KAFKA_MAX_RECORD_BYTES`) with 413 (a retry could never succeed), malformed bodies with
  400/422 naming the fields (never echoing their values), bad signatures with 401/403;
- `/health/live`, `/health/ready` (Kafka, the key store), `/metrics` with accepted/rejected
  counts per reason and publish latency.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta
from typing import Any, TypeVar

import structlog
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from faststream.kafka import KafkaBroker
from prometheus_client import Counter, Gauge, Histogram
from pydantic import BaseModel, Field, ValidationError
from pydantic_core import from_json
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from hilo.asyncapi import asyncapi_router
from hilo.auth import ApiKeyRefused
from hilo.catch_up import WATERMARKS_COLLECTION, CatchUp, CatchUpFailed, ReadBack, left_out
from hilo.contract import (
    MAX_FUTURE_SKEW,
    Direction,
    Interaction,
    MessageExchanged,
    MessageStatusChanged,
)
from hilo.contract.identifiers import DEFAULT_PHONE_REGION
from hilo.direct_routes import DirectRoutingApp
from hilo.entrypoint import run_app
from hilo.health import health_router, kafka_check, mongo_check
from hilo.kafka import (
    KafkaPublisher,
    PublishFailed,
    Record,
    RecordTooLarge,
    create_broker,
    start_or_keep_trying,
    watch_producer,
)
from hilo.logs import configure_logging
from hilo.mongo import MongoDocument, create_mongo_client
from hilo.outbound import (
    SENDS_COLLECTION,
    OutboundSender,
    Provider,
    RetryPolicy,
    subscribe_outbound,
)
from hilo.sealing import create_sealer
from hilo.settings import HiloSettings
from hilo.shutdown import STEP_SECONDS, Step, cancelled, shut_down
from hilo.spool import SPOOL_COLLECTION, Spool
from hilo.webhook import SignatureError

log = structlog.get_logger(__name__)

ACCEPTED = Counter("hilo_channel_events_accepted_total", "Interactions published", ["channel"])
BODY_BYTES_HELD = Gauge(
    "hilo_channel_body_bytes_held",
    "Request-body bytes held while read and verified, against the channel's budget (BodyBudget)",
    ["channel"],
)
IGNORED = Counter(
    "hilo_channel_events_ignored_total",
    "Provider events acknowledged but not published (not modelled, or nobody to attribute)",
    ["channel"],
)
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
    body_read_seconds: float = Field(
        default=30.0,
        gt=0,
        le=3_600,
        description="How long a request's body may take to arrive whole before it is answered "
        "408 and what it held given back: a caller that sends part of one, then nothing, held "
        "its connection and buffer for good (signatures are checked only on a whole body).",
    )
    kafka_linger_ms: int = Field(
        default=5,
        ge=0,
        le=1_000,
        description="Requests arriving within this time share one Kafka produce request: less "
        "CPU per webhook (measured in docs/benchmarks.md) for up to this much added latency. "
        "Every request is still answered only after Kafka acknowledged its events.",
    )
    spool_drain_seconds: float = Field(
        default=2.0,
        gt=0,
        le=300,
        description="How often a channel whose provider does not always retry (Twilio, "
        "Mailgun's delivery notifications) publishes the webhooks it kept in MongoDB while "
        "Kafka was away.",
    )
    outbound_send_attempts: int = Field(
        default=5,
        ge=1,
        le=50,
        description="Attempts to send an outbound message while the provider fails (5xx, 429, "
        "no answer) before it is reported failed to the agent; a 4xx is never retried.",
    )
    outbound_first_wait_seconds: float = Field(
        default=0.5,
        gt=0,
        le=60,
        description="Wait before the second attempt; it doubles each time, up to 30 s.",
    )


class Rejected(Exception):
    """The request is refused with `status` and a reason safe to show the sender."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail


class EventTooLarge(Rejected):
    """An event larger than Kafka takes (413): no retry could store it. It names the
    interaction, so a request of independent events (a Segment batch) can publish the rest."""

    def __init__(self, limit: int, interaction: Interaction) -> None:
        super().__init__(413, "too_large", f"event larger than {limit} bytes after translation")
        self.interaction = interaction


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


@contextmanager
def refused_if_unreadable(what: str = "") -> Iterator[None]:
    """Translate under this: what the provider sent but no interaction can hold (a payload the
    contract refuses, a number `normalise_phone` cannot read: a plain `ValueError`) is refused
    with 422 saying why (`what` first: "customer number: "), not answered 500."""
    try:
        yield
    except ValidationError as exc:
        raise validation_rejection(exc) from None
    except ValueError as exc:
        raise Rejected(422, "invalid_body", f"{what}{exc}") from None


def parse_json(model: type[Model], body: bytes, context: dict[str, Any] | None = None) -> Model:
    """Validate a JSON body into `model`: 422 naming each invalid field, never its value.

    `context` reaches every validator (e.g. a `DropInvalid` policy for the identifiers).
    """
    try:
        return model.model_validate_json(body, context=context)
    except ValidationError as exc:
        raise validation_rejection(exc) from None


def parse_json_object(body: bytes) -> dict[str, Any]:
    """A JSON object body as Python values: 400 unless it is one.

    Strict JSON: lone UTF-16 surrogates (`"\\ud800"`), which no event could be serialised with,
    and numbers of thousands of digits are refused here rather than failing later.
    """
    try:
        document = from_json(body)
    except ValueError:
        raise Rejected(400, "invalid_body", "body is not JSON") from None
    if not isinstance(document, dict):
        raise Rejected(400, "invalid_body", "body must be a JSON object")
    return document


class Channel:
    """A channel's publishing side: what its routes call after translating a request."""

    def __init__(
        self,
        name: str,
        settings: ChannelSettings,
        publisher: KafkaPublisher,
        spool: Spool | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self._publisher = publisher
        self._spool = spool
        self.catch_up: CatchUp | None = None
        """Set when the provider's log is read back: a refused webhook is noted there."""
        self._accepted = ACCEPTED.labels(name)
        self._ignored = IGNORED.labels(name)
        self._publish_seconds = PUBLISH_SECONDS.labels(name)
        self._unavailable = REJECTED.labels(name, "kafka_unavailable")
        self._store_unavailable = REJECTED.labels(name, "store_unavailable")
        self.sender: OutboundSender | None = None
        """Set when the service sends `outbound` commands: their echoes are not published."""
        self.database: AsyncDatabase[MongoDocument] | None = None
        """The deployment's MongoDB database (`HILO_MONGODB_DATABASE`), for a channel's own
        state shared by its instances (Mailgun's tokens)."""

    async def perhaps_sent(
        self, command_ids: Collection[str], *, provider_retries: bool = True
    ) -> set[str]:
        """Those of the commands whose send was reported perhaps not sent (no provider id was
        recorded; `OutboundSender.reports_of`): a status of their message is about that report
        (`OutboundCommand.failure_provider_id`).

        A provider that posts a status again when answered 503 (`provider_retries`: Meta,
        Mailgun) is answered so while MongoDB does not answer, and while a send is still
        claimed (an attempt that died holding it is reported only once `in_flight_seconds` have
        passed). One that never does (Twilio) has its statuses kept on its own id then: a
        status is not lost for a report it might have belonged to."""
        if not command_ids or self.sender is None:
            return set()
        try:
            reports = await self.sender.reports_of(command_ids)
        except PyMongoError:
            if provider_retries:
                raise Rejected(503, "store_unavailable", "MongoDB does not answer") from None
            log.warning("send_reports_unknown", channel=self.name, store="mongodb")
            return set()
        if provider_retries and "unsettled" in reports.values():
            raise Rejected(503, "in_flight", "a reply's send is not settled yet: try again later")
        return {command for command, report in reports.items() if report == "perhaps_sent"}

    async def publish(self, interactions: Sequence[Interaction], *, ignored: int = 0) -> None:
        """Publish every interaction of one request; 503 unless Kafka acknowledged them all.

        413 before anything is sent when one is larger than Kafka takes: no retry could store
        it. `ignored` counts the request's provider events that are acknowledged unpublished.
        Each published event is logged at DEBUG only (the counters above tell the rate): a line
        per webhook at INFO cost more CPU than the rest of the request's own work.
        """
        started = time.perf_counter()
        try:
            interactions, echoes = await self._store(interactions)
            ignored += echoes
        except (PublishFailed, PyMongoError) as exc:
            # Which one failed, for the operator: the key store (MongoDB) seals every event, and
            # a Twilio channel's spool lives there too.
            kafka = isinstance(exc, PublishFailed)
            (self._unavailable if kafka else self._store_unavailable).inc()
            if self.catch_up is not None:
                self.catch_up.missed()
            log.warning(
                "request_refused_unavailable",
                channel=self.name,
                store="kafka" if kafka else "mongodb",
                error=type(exc).__name__,
            )
            raise HTTPException(
                status_code=503,
                detail="events could not be stored right now; retry later",
                headers={"Retry-After": "5"},
            ) from None
        self._publish_seconds.observe(time.perf_counter() - started)
        self._accepted.inc(len(interactions))
        if ignored:
            self._ignored.inc(ignored)
        if log.is_enabled_for(logging.DEBUG):
            for interaction in interactions:
                log.debug(
                    "interaction_published",
                    channel=self.name,
                    event_id=interaction.id,
                    type=interaction.payload.kind,
                    adjustments=[f"{a.field}:{a.reason}" for a in interaction.adjustments],
                )

    async def publish_read_back(self, interactions: Sequence[Interaction]) -> None:
        """Publish events read back from the provider's log (`hilo.catch_up`): counted there,
        not as webhooks. `CatchUpFailed` when Kafka or the key store does not take them, to be
        read back again; one larger than Kafka takes is left out (no retry could store it, as
        its webhook would have been refused with 413).

        A delivery status is kept only for a message this service sent: the log lists every
        message of the number (another tool's too), and the provider posted statuses here only
        for the messages sent with this service's callback."""
        try:
            interactions = await self._of_own_sends(interactions)
            try:
                await self._store(interactions)
            except EventTooLarge:
                for interaction in interactions:
                    try:
                        await self._store([interaction])
                    except EventTooLarge:
                        left_out(self.name, "too_large")
        except (PublishFailed, PyMongoError) as exc:
            raise CatchUpFailed(f"not stored: {type(exc).__name__}") from None

    async def _store(
        self, interactions: Sequence[Interaction]
    ) -> tuple[Sequence[Interaction], int]:
        """Seal and publish (or spool) the interactions but the echoes of this service's own
        sends; those published, and how many echoes were left out."""
        interactions, echoes = await self._without_echoes(interactions)
        records = await self._records(interactions)
        await self._publish_or_spool(records)
        return interactions, echoes

    def refused_in_part(self, reason: str, count: int) -> None:
        """Count the parts of a request refused while the rest was published (a Segment batch's
        invalid calls), as a refused request is counted."""
        REJECTED.labels(self.name, reason).inc(count)
        log.info("request_refused_in_part", channel=self.name, reason=reason, refused=count)

    async def _publish_or_spool(self, records: Sequence[Record]) -> None:
        """Publish; with a spool, keep what Kafka refused there instead of refusing it, and
        what a stopping service cancelled while Kafka hung: uvicorn cancels the requests still
        open after its graceful wait, shorter than the publish timeout, and a provider that
        never retries (Twilio, Mailgun's events) would lose the webhook."""
        try:
            await self._publisher.publish_records(records)
        except PublishFailed:
            if self._spool is None:
                raise
            await self._spool.keep(records)
        except asyncio.CancelledError:
            if self._spool is not None:
                try:
                    await asyncio.shield(self._spool.keep(records))
                except PyMongoError as exc:  # the cancellation goes on all the same
                    log.warning(
                        "spool_not_kept_on_stop", channel=self.name, error=type(exc).__name__
                    )
            raise

    async def _without_echoes(
        self, interactions: Sequence[Interaction]
    ) -> tuple[Sequence[Interaction], int]:
        """The interactions without the provider's echoes of messages this service sent (the
        sender recorded those already), and how many were left out."""
        echoes = await self._sent_here(
            {
                i.id: (i.channel, i.payload.provider_message_id)
                for i in interactions
                if isinstance(i.payload, MessageExchanged)
                and i.payload.direction == Direction.OUTBOUND
            }
        )
        kept = [i for i in interactions if i.id not in echoes]
        return kept, len(interactions) - len(kept)

    async def _of_own_sends(self, interactions: Sequence[Interaction]) -> list[Interaction]:
        """The interactions but the statuses of messages this service did not send."""
        statuses = {
            i.id: (i.channel, i.payload.provider_message_id)
            for i in interactions
            if isinstance(i.payload, MessageStatusChanged)
        }
        ours = await self._sent_here(statuses)
        return [i for i in interactions if i.id in ours or i.id not in statuses]

    async def _sent_here(self, messages: Mapping[str, tuple[str, str]]) -> set[str]:
        """Those of the event ids whose message, by (channel, the provider's message id), this
        service sent (`OutboundSender.sent_here`)."""
        if self.sender is None or not messages:
            return set()
        sent: set[tuple[str, str]] = set()
        for channel in {channel for channel, _ in messages.values()}:
            ids = [message_id for c, message_id in messages.values() if c == channel]
            sent |= {(channel, m) for m in await self.sender.sent_here(channel, ids)}
        return {event_id for event_id, message in messages.items() if message in sent}

    async def _records(self, interactions: Sequence[Interaction]) -> list[Record]:
        """Sealed records (the key store must answer: without it nothing is published)."""
        try:
            return await self._publisher.interaction_records(interactions)
        except RecordTooLarge as exc:
            raise EventTooLarge(exc.limit, interactions[exc.index]) from None


Key = TypeVar("Key")


async def publish_those_that_fit(
    channel: Channel, events: list[tuple[Key, Interaction]]
) -> list[tuple[Key, EventTooLarge]]:
    """Publish the events of a request of independent ones (a Segment batch, the receipts of an
    end-of-day file) but those larger than Kafka takes, which are returned with their keys:
    each is found before anything is sent, so the rest are published once."""
    left_out: list[tuple[Key, EventTooLarge]] = []
    while events:
        try:
            await channel.publish([interaction for _, interaction in events])
            break
        except EventTooLarge as exc:
            position = next(n for n, (_, i) in enumerate(events) if i is exc.interaction)
            left_out.append((events.pop(position)[0], exc))
    return left_out


async def raw_body(
    request: Request,
    limit: int,
    take: Callable[[int], None] = lambda _bytes: None,
    *,
    within: float,
) -> bytes:
    """The request body, refusing it (413) as soon as it exceeds `limit` bytes, and (408) when
    it has not come whole `within` seconds (a caller that sends a little, then nothing, would
    hold what it sent for good). `take` is told of every chunk before it is held
    (`BodyBudget`): as it arrives, not as declared, so a caller that declares much and sends
    little holds little."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise Rejected(413, "too_large", f"body larger than {limit} bytes")
    body = bytearray()
    deadline = asyncio.timeout(within)
    try:
        async with deadline:
            async for chunk in request.stream():
                if len(body) + len(chunk) > limit:
                    raise Rejected(413, "too_large", f"body larger than {limit} bytes")
                take(len(chunk))
                body += chunk
    except TimeoutError:
        if not deadline.expired():
            raise
        raise Rejected(408, "slow_body", f"body not received within {within:g} s") from None
    return bytes(body)


async def request_body(request: Request, settings: ChannelSettings) -> bytes:
    """The body (`raw_body`) within the channel's own limit and read deadline
    (`HILO_MAX_BODY_BYTES`, `HILO_BODY_READ_SECONDS`)."""
    return await raw_body(request, settings.max_body_bytes, within=settings.body_read_seconds)


class BodyBudget:
    """The request-body bytes one process holds at once for callers not verified yet.

    A provider that signs fields *inside* the form (Mailgun) is verified only once the body is
    read, so anyone can make the service hold up to the body limit per request, and many at
    once would take all its memory. A body that would go past the budget is refused with 503
    (the providers post it again, minutes later) before more of it is read, and one not read
    whole within `read_seconds` with 408, so a stalled caller cannot hold the budget for good.
    """

    def __init__(self, channel: str, max_bytes: int, read_seconds: float) -> None:
        self.max_bytes = max_bytes
        self.read_seconds = read_seconds
        self.held = 0
        self._gauge = BODY_BYTES_HELD.labels(channel)

    @asynccontextmanager
    async def body(self, request: Request, limit: int) -> AsyncIterator[bytes]:
        """The request's body (`raw_body`), counted against the budget until the block ends."""
        taken = 0

        def take(size: int) -> None:
            nonlocal taken
            if self.held + size > self.max_bytes:
                raise Rejected(503, "busy", "too many large requests at once: retry later")
            self.held += size
            taken += size
            self._gauge.set(self.held)

        try:
            yield await raw_body(request, limit, take, within=self.read_seconds)
        finally:
            self.held -= taken
            self._gauge.set(self.held)


def serve(app: FastAPI, settings: ChannelSettings) -> None:
    """Run a channel app with Hilo's logging (the entry point of every channel service)."""
    configure_logging(settings)
    run_app(app, settings)


async def _start_kafka(
    broker: KafkaBroker, settings: ChannelSettings, *, optional: bool
) -> list[asyncio.Task[None]]:
    """Connect to Kafka; the tasks still connecting. A channel that spools serves without
    Kafka, so it starts while Kafka is away and connects when it answers (its records are
    kept meanwhile); any other start-up fails, and the provider's retries wait for a restart.
    """
    if not optional:
        await broker.start()
        return []
    return await start_or_keep_trying(broker, settings)


INDEX_RETRY_SECONDS = 30.0


async def _index_sends(sender: OutboundSender) -> None:
    """Make the sends' indexes (their 45-day TTL, the echo lookups) once MongoDB answers,
    trying again every `INDEX_RETRY_SECONDS` while it does not: a channel that started during a
    MongoDB blip would otherwise keep every send for good."""
    while True:
        try:
            await sender.create_indexes()
        except PyMongoError as exc:
            log.warning("outbound_indexes_not_made", error=type(exc).__name__)
            await asyncio.sleep(INDEX_RETRY_SECONDS)
        else:
            return


def _closing(channel: Channel, provider: Provider | None) -> list[Step]:
    """The steps of a channel's stop between Kafka's and MongoDB's."""
    closing: list[Step] = []
    if channel.sender is not None:  # what providers answered, stored before MongoDB goes
        closing.append(("outcomes", channel.sender.finish_storing))
    if channel.catch_up is not None:  # notes refusals not read back yet
        closing.append(("read_back", channel.catch_up.close))
    if provider is not None:
        closing.append(("provider", provider.close))
    return closing


def create_channel_app(
    name: str,
    settings: ChannelSettings,
    routes: Callable[[Channel], Sequence[Callable[..., Awaitable[Response]] | object]],
    *,
    description: str,
    provider: Provider | None = None,
    sends_for: Sequence[str] = (),
    spool: bool = False,
    read_back: ReadBack | None = None,
) -> FastAPI:
    """The FastAPI app of a channel service; `routes(channel)` returns its APIRouters.

    With a `provider`, the service also sends commands from `outbound` (`hilo.outbound`): those
    of the channels in `sends_for`, by default of `name` alone. With `spool` (for providers that
    do not retry a refused webhook), records Kafka does not take are kept in MongoDB and
    published when it takes them again (`hilo.spool`); the webhook is answered 200. With
    `read_back`, what refused or unanswered webhooks missed is read back from the provider's
    own log (`hilo.catch_up`).
    """
    DEFAULT_PHONE_REGION.set(settings.default_phone_region)
    MAX_FUTURE_SKEW.set(timedelta(seconds=settings.max_future_skew_seconds))
    # Handlers still running when the broker stops are cancelled before the shutdown step gives
    # up on it: a send stopped while waiting between provider attempts then gives its claim
    # back while MongoDB is still open (`hilo.outbound`).
    broker = create_broker(settings, graceful_timeout=STEP_SECONDS - 3)
    mongo = create_mongo_client(settings)
    sealer = create_sealer(settings, mongo, share_window=settings.kafka_linger_ms / 1000)
    publisher = KafkaPublisher(
        broker, settings, linger_seconds=settings.kafka_linger_ms / 1000, sealer=sealer
    )
    kept = Spool(name, mongo[settings.mongodb_database][SPOOL_COLLECTION]) if spool else None
    channel = Channel(name, settings, publisher, kept)
    channel.database = mongo[settings.mongodb_database]
    if provider is not None:
        sender = OutboundSender(
            name,
            settings.instance,
            provider,
            publisher,
            mongo[settings.mongodb_database][SENDS_COLLECTION],
            RetryPolicy(settings.outbound_send_attempts, settings.outbound_first_wait_seconds),
            sends_for=sends_for,
        )
        subscribe_outbound(broker, sender, sealer, publisher, settings)
        channel.sender = sender
    channel.catch_up = (
        CatchUp(
            name,
            mongo[settings.mongodb_database][WATERMARKS_COLLECTION],
            read_back,
            channel.publish_read_back,
        )
        if read_back
        else None
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        background = await _start_kafka(broker, settings, optional=kept is not None)
        if channel.sender is not None:
            background.append(asyncio.create_task(_index_sends(channel.sender)))
        background.append(asyncio.create_task(watch_producer(broker, name)))
        log.info("channel_started", channel=name)
        if kept is not None:
            drain = kept.drain_forever(publisher, settings.spool_drain_seconds)
            background.append(asyncio.create_task(drain))
        if channel.catch_up is not None:
            background.append(asyncio.create_task(channel.catch_up.run_forever()))
        try:
            yield
        finally:
            await shut_down(
                name,
                [
                    ("background", lambda: cancelled(background)),
                    ("kafka", broker.stop),
                    *_closing(channel, provider),
                    ("mongo", mongo.close),
                ],
            )

    app = DirectRoutingApp(title=f"Hilo {name} channel", description=description, lifespan=lifespan)
    app.state.channel = channel
    app.state.broker = broker
    for router in routes(channel):  # first: the webhooks are matched before anything else
        app.include_direct_router(router)  # type: ignore[arg-type]
    kafka = {"kafka": kafka_check(broker)}
    app.include_router(
        health_router(
            {"keys": mongo_check(mongo), **({} if spool else kafka)},
            optional=kafka if spool else None,
        )
    )
    app.include_router(asyncapi_router())

    @app.exception_handler(Rejected)
    async def rejected(_request: Request, exc: Rejected) -> JSONResponse:
        REJECTED.labels(name, exc.reason).inc()
        log.info("request_rejected", channel=name, reason=exc.reason, status=exc.status)
        return JSONResponse(
            {"error": exc.reason, "detail": exc.detail},
            status_code=exc.status,
            headers={"Retry-After": "5"} if exc.status == 503 else None,
        )

    @app.exception_handler(ApiKeyRefused)
    async def no_key(request: Request, exc: ApiKeyRefused) -> JSONResponse:
        answer = await rejected(request, Rejected(exc.status_code, "api_key", exc.detail))
        answer.headers.update(exc.headers or {})
        return answer

    @app.exception_handler(ValidationError)
    async def untranslatable(request: Request, exc: ValidationError) -> JSONResponse:
        """What a translation could not build from the request is the request's fault: 422."""
        return await rejected(request, validation_rejection(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        REJECTED.labels(name, "invalid_request").inc()
        problems = [{"loc": list(error["loc"]), "msg": error["msg"]} for error in exc.errors()]
        return JSONResponse({"error": "invalid_request", "detail": problems}, status_code=422)

    return app
