"""Composition root: builds the clients once and hands them to the entry points."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import timedelta

import structlog
from fastapi import FastAPI
from faststream.kafka import KafkaBroker
from pymongo import AsyncMongoClient

from customer_profile.adapters.store import ProfileStore
from customer_profile.entrypoints.api import ApiState, create_api
from customer_profile.entrypoints.consumer import subscribe
from customer_profile.service.batches import BatchRunner, ConsumerHealth
from customer_profile.service.checkpoint_sweep import keep_sweeping
from customer_profile.service.merge_requests import MergeRequests
from customer_profile.service.pipeline import Pipeline
from customer_profile.service.prices import PriceCheck
from customer_profile.service.privacy import Privacy
from customer_profile.service.splits import Splits
from customer_profile.settings import ProfileSettings
from hilo.asyncapi import asyncapi_router
from hilo.entrypoint import OpenApiRefused
from hilo.health import health_router, kafka_check, mongo_check
from hilo.kafka import KafkaPublisher, create_broker, start_or_keep_trying, watch_producer
from hilo.kafka_security import client_options
from hilo.mongo import MongoDocument, create_mongo_client
from hilo.offers.book import OffersFollower
from hilo.offers.model import OffersSnapshot
from hilo.sealing import Sealer, create_sealer
from hilo.shutdown import cancelled, shut_down
from hilo.topics import Topic, ensure_topics, topic_name

log = structlog.get_logger(__name__)

OFFERS_READY_SECONDS = 30.0
"""How long the start waits for the offers to be read before consuming: a batch consumed
before that is not checked against them (`customer_profile.service.prices`)."""


@dataclass
class Service:
    settings: ProfileSettings
    broker: KafkaBroker
    mongo: AsyncMongoClient[MongoDocument]
    store: ProfileStore
    pipeline: Pipeline
    app: FastAPI
    privacy: Privacy
    splits: Splits
    publisher: KafkaPublisher
    sealer: Sealer
    offers: OffersFollower
    background: list[asyncio.Task[None]] = field(default_factory=list)


def offers_in_force(follower: OffersFollower) -> OffersSnapshot | None:
    """The offers to check prices against: none until the whole `offers` topic was read (a
    half-read catalogue would flag correct prices)."""
    return follower.book.snapshot() if follower.ready.is_set() else None


def bootstrap(settings: ProfileSettings) -> Service:
    """Wire the service: one broker, one Mongo client, the pipeline, the API.

    Refuses (`OpenApiRefused`) to serve the API without keys unless told it is a development run.
    """
    if (refusal := settings.open_api_refusal()) is not None:
        raise OpenApiRefused(refusal)
    broker = create_broker(settings, graceful_timeout=settings.shutdown_grace_seconds)
    mongo = create_mongo_client(settings)
    store = ProfileStore(mongo, settings.mongodb_database)
    sealer = create_sealer(settings, mongo)
    publisher = KafkaPublisher(broker, settings, sealer=sealer)
    offers = OffersFollower(settings)
    pipeline = Pipeline(
        store,
        publisher,
        sealer,
        settings.identity_policy(),
        settings.conversation_window,
        settings.max_future_skew,
        price_check=PriceCheck(lambda: offers_in_force(offers)),
        checkpoint_behind=settings.checkpoint_behind,
    )
    consumer_health = ConsumerHealth(settings.stuck_after_seconds)
    subscribe(broker, BatchRunner(pipeline, settings.retry_policy(), consumer_health), settings)
    privacy = Privacy(
        store,
        publisher,
        sealer,
        (client_options(settings), topic_name(Topic.ERASURES, settings)),
    )
    splits = Splits(
        store,
        publisher,
        sealer,
        settings.conversation_window,
        timedelta(seconds=settings.split_settle_seconds),
        settings.checkpoint_behind,
    )
    state = ApiState(
        store,
        privacy,
        MergeRequests(store, publisher),
        splits,
        [key.get_secret_value() for key in settings.api_keys],
        settings.conversation_window,
        offers=lambda: offers_in_force(offers),
        admin_api_keys=[key.get_secret_value() for key in settings.admin_api_keys],
        queue_horizon=timedelta(days=settings.queue_days),
    )
    health = health_router(  # the API reads MongoDB: with it, the instance can serve
        {"mongodb": mongo_check(mongo)},
        optional={"kafka": kafka_check(broker), "consumer": consumer_health.check},
    )
    app = create_api(state, [health, asyncapi_router()])
    service = Service(
        settings, broker, mongo, store, pipeline, app, privacy, splits, publisher, sealer, offers
    )
    app.router.lifespan_context = _lifespan(service)
    return service


def _lifespan(service: Service) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await start(service)
        try:
            yield
        finally:
            await stop(service)

    return lifespan


async def start(service: Service) -> None:
    """Indexes first, then topics and consuming: now if Kafka answers, else once it does
    (the API serves meanwhile, its readiness `degraded`)."""
    if not service.settings.api_keys:
        log.warning("api_unprotected", reason="HILO_API_KEYS is empty (development only)")
    elif not service.settings.admin_api_keys:
        log.warning("api_admin_closed", reason="HILO_ADMIN_API_KEYS is empty: no key may erase")
    await service.store.create_indexes()
    await service.offers.start()
    # The API reads MongoDB: it serves while Kafka is away.
    service.background += await start_or_keep_trying(
        service.broker, service.settings, lambda: _before_consuming(service)
    )
    service.background.append(
        asyncio.create_task(
            service.privacy.keep_finishing(service.settings.erasure_retry_seconds),
            name="erasures",
        )
    )
    watch = watch_producer(service.broker, "customer-profile")
    service.background.append(asyncio.create_task(watch, name="producer-watch"))
    service.background.append(
        asyncio.create_task(
            service.splits.keep_finishing(service.settings.erasure_retry_seconds), name="splits"
        )
    )
    sweep = keep_sweeping(service.store, service.settings.checkpoint_sweep_seconds)
    service.background.append(asyncio.create_task(sweep, name="checkpoint-sweep"))
    log.info("customer_profile_started", group=service.settings.consumer_group)


async def _before_consuming(service: Service) -> None:
    """The topics, and the offers read whole: prices are checked against the whole catalogue
    from the first batch."""
    await ensure_topics(service.settings)
    with suppress(TimeoutError):
        await asyncio.wait_for(service.offers.ready.wait(), OFFERS_READY_SECONDS)


async def stop(service: Service) -> None:
    """Every step runs, each bounded (`hilo.shutdown`)."""
    background, service.background = service.background, []
    await shut_down(
        "customer-profile",
        [
            ("background", lambda: cancelled(background)),
            ("offers", service.offers.stop),
            ("kafka", service.broker.stop),
            ("mongo", service.mongo.close),
        ],
    )
