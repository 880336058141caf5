"""Composition root: the clients, built once, handed to the API; the lifespan starts them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field

import httpx
import structlog
from fastapi import FastAPI
from faststream.kafka import KafkaBroker
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from hilo.asyncapi import asyncapi_router
from hilo.auth import require_api_key
from hilo.contract.identifiers import DEFAULT_PHONE_REGION
from hilo.entrypoint import OpenApiRefused
from hilo.health import Check, health_router, kafka_check, mongo_check
from hilo.kafka import KafkaPublisher, create_broker, watch_producer
from hilo.mongo import MongoDocument, create_mongo_client
from hilo.offers.book import OffersFollower
from hilo.settings import HiloSettings
from hilo.shutdown import cancelled, shut_down
from hilo.topics import ensure_topics
from offers.api import ApiState, create_api
from offers.outbox import Outbox
from offers.profiles import CustomerProfiles
from offers.settings import OffersSettings
from offers.store import OffersStore, TopicState

log = structlog.get_logger(__name__)

PublisherFactory = Callable[[KafkaBroker, HiloSettings], KafkaPublisher]


@dataclass
class OffersService:
    settings: OffersSettings
    broker: KafkaBroker
    mongo: AsyncMongoClient[MongoDocument]
    store: OffersStore
    outbox: Outbox
    follower: OffersFollower
    profiles: CustomerProfiles
    app: FastAPI
    background: list[asyncio.Task[None]] = field(default_factory=list)


def create_service(
    settings: OffersSettings,
    *,
    publisher: PublisherFactory = KafkaPublisher,
    profile_transport: httpx.AsyncBaseTransport | None = None,
) -> OffersService:
    """Wire the service. Refuses (`OpenApiRefused`) to serve without API keys unless told it
    is a development run."""
    if (refusal := settings.open_api_refusal()) is not None:
        raise OpenApiRefused(refusal)
    DEFAULT_PHONE_REGION.set(settings.default_phone_region)  # quotes name customers by phone
    broker = create_broker(settings)
    mongo = create_mongo_client(settings)
    follower = OffersFollower(settings)
    store = OffersStore(
        mongo,
        settings.mongodb_database,
        max_record_bytes=settings.kafka_max_record_bytes,
        topic=lambda: _topic_head(follower),
    )
    outbox = Outbox(
        store, publisher(broker, settings), holder=f"{settings.client_id}-{uuid.uuid4().hex[:12]}"
    )
    profiles = CustomerProfiles(settings, profile_transport)
    # Quotes come from the catalogue in memory: with it loaded, an instance that lost Kafka or
    # MongoDB still quotes (degraded: changes wait), so a load balancer keeps it in.
    health = health_router(
        {"offers": _loaded(follower)},
        optional={"kafka": kafka_check(broker), "mongodb": mongo_check(mongo)},
    )
    quote_guard = [require_api_key(settings.api_keys)] if settings.api_keys else []
    admin_guard = [require_api_key(settings.admin_api_keys)] if settings.admin_api_keys else []
    readers = [*settings.api_keys, *settings.admin_api_keys]
    reader_guard = [require_api_key(readers)] if readers else []
    state = ApiState(store, outbox, follower, profiles, settings.pepper)
    app = create_api(state, admin_guard, quote_guard, reader_guard, [health, asyncapi_router()])
    service = OffersService(settings, broker, mongo, store, outbox, follower, profiles, app)
    app.router.lifespan_context = _lifespan(service)
    return service


def create_app(settings: OffersSettings) -> FastAPI:
    return create_service(settings).app


def _topic_head(follower: OffersFollower) -> TopicState | None:
    """What the topic holds, once the follower read it to its end."""
    if not follower.ready.is_set():
        return None
    book = follower.book
    return TopicState(book.highest_read, book.records, book.overtaken_on_topic)


async def _catch_up_then_publish(service: OffersService, seconds: float) -> None:
    """Once the topic is read, leave the catalogue nothing behind it (`OffersStore`) and the
    topic nothing behind the catalogue (`Outbox.restore_topic`), then run the outbox: before
    that it could put a version a backup left unpublished after newer ones."""
    await service.follower.ready.wait()
    while True:
        topic = _topic_head(service.follower)
        try:
            if topic is not None and await service.store.catch_up_with(topic):
                log.warning("offers_catalogue_behind_topic_restored", version=topic.version)
            if await service.outbox.restore_topic():
                break
        except PyMongoError as exc:
            log.warning("offers_catch_up_failed", error=type(exc).__name__)
        await asyncio.sleep(seconds)
    await service.outbox.run(seconds)


def _loaded(follower: OffersFollower) -> Check:
    """Ready once the follower has read the topic to its end (quotes answer 503 before)."""

    async def check() -> bool:
        return follower.ready.is_set()

    return check


def _lifespan(service: OffersService) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await start(service)
        try:
            yield
        finally:
            await stop(service)

    return lifespan


async def start(service: OffersService) -> None:
    """Topics and indexes (both idempotent), the producer, the follower, the outbox loop."""
    settings = service.settings
    if not (settings.api_keys and settings.admin_api_keys):
        log.warning(
            "api_unprotected",
            reason="HILO_API_KEYS or HILO_ADMIN_API_KEYS is empty (development only)",
        )
    await ensure_topics(settings)
    await service.store.create_indexes()
    await service.broker.start()
    await service.follower.start()
    watch = watch_producer(service.broker, "offers")
    service.background.append(asyncio.create_task(watch, name="producer-watch"))
    service.background.append(
        asyncio.create_task(
            _catch_up_then_publish(service, settings.offers_outbox_seconds), name="offers-outbox"
        )
    )
    log.info("offers_started")


async def stop(service: OffersService) -> None:
    """Every step runs, each bounded (`hilo.shutdown`)."""
    background, service.background = service.background, []
    flushed = asyncio.Event()

    async def stop_kafka() -> None:
        await service.broker.stop()
        flushed.set()

    async def release_once_flushed() -> None:
        """Only once Kafka has what the producer held: else a version of ours could land after
        the next holder's later one on the compacted topic. Left, the lease expires by itself."""
        if flushed.is_set():
            await service.outbox.release()
        else:
            log.warning("offers_lease_left_to_expire", reason="Kafka did not stop in time")

    await shut_down(
        "offers",
        [
            ("background", lambda: cancelled(background)),
            ("follower", service.follower.stop),
            ("kafka", stop_kafka),
            ("outbox", release_once_flushed),
            ("profiles", service.profiles.close),
            ("mongo", service.mongo.close),
        ],
    )
