"""Composition root and HTTP API: the consumer, the store, the measures on request, and a loop
that publishes today's measures on `journey.metrics` and to Prometheus."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated

import structlog
from fastapi import Depends, FastAPI, HTTPException, Query
from faststream.kafka import KafkaBroker
from prometheus_client import Gauge
from pymongo import AsyncMongoClient

from hilo.asyncapi import asyncapi_router
from hilo.auth import require_api_key
from hilo.entrypoint import OpenApiRefused
from hilo.health import health_router, kafka_check, mongo_check
from hilo.kafka import KafkaPublisher, Record, create_broker, start_or_keep_trying, watch_producer
from hilo.mongo import MongoDocument, create_mongo_client
from hilo.shutdown import cancelled, shut_down
from hilo.topics import Topic
from journey_analytics.consumer import erase_recorded, subscribe
from journey_analytics.measures import Measures, Touch, Windows, measure
from journey_analytics.retention import earliest_start, keep_expiring
from journey_analytics.settings import AnalyticsSettings
from journey_analytics.store import TouchStore

log = structlog.get_logger(__name__)
MAX_RANGE = timedelta(days=92)
GAUGES = {
    "continuity": Gauge("hilo_journey_continuity_ratio", "Channel switches that continued, today."),
    "conversion": Gauge(
        "hilo_journey_cross_channel_conversion_ratio", "Web carts bought on another channel, today."
    ),
    "fcr": Gauge("hilo_journey_first_contact_resolution_ratio", "Conversations of one contact."),
    "response": Gauge("hilo_journey_first_response_seconds", "Mean time to first response, today."),
    "csat": Gauge("hilo_journey_csat", "Average CSAT by channel, today.", ["channel"]),
    "mix": Gauge("hilo_journey_entries", "Journey entries by channel, today.", ["channel"]),
    "campaigns": Gauge(
        "hilo_journey_campaign_orders",
        "Orders credited to each campaign today (the 20 largest), by where they were sold.",
        ["campaign", "sold_via"],
    ),
}


@dataclass
class AnalyticsService:
    settings: AnalyticsSettings
    broker: KafkaBroker
    mongo: AsyncMongoClient[MongoDocument]
    store: TouchStore
    app: FastAPI
    publisher: KafkaPublisher
    background: list[asyncio.Task[None]] = field(default_factory=list)
    measuring: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(2))
    """Measurings at once, each in a thread: more would take the loop's default pool, which
    also resolves Kafka's and MongoDB's host names when they reconnect. Taken before the
    touches are read: ten dashboard calls each held their read (every touch of 136 days) while
    they waited for it."""

    @property
    def windows(self) -> Windows:
        return self.settings.windows

    async def measures(
        self, start: datetime, end: datetime, customer: str | None = None
    ) -> Measures:
        # CPU-bound over everyone's touches: in a thread, so the consumer and the health
        # checks are served meanwhile.
        async with self.measuring:
            touches = await self.store.touches(*self.windows.reach(start, end), customer)
            return await asyncio.to_thread(measure, touches, start, end, self.windows)

    async def publish_days(self, publisher: KafkaPublisher, days: int) -> Measures:
        """The measures of today (UTC) so far and of the `days - 1` days before it, on
        `journey.metrics` under each day's key (the latest record of a day is its measures);
        today's also in the Prometheus gauges, and returned."""
        midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        day = timedelta(days=1)
        starts = [midnight - back * day for back in range(max(days, 1))]
        # One read for every day: each day's measures take the part `measures` would read.
        since, until = self.windows.reach(starts[-1], midnight + day)
        async with self.measuring:
            touches = await self.store.touches(since, until)
            measured = await asyncio.to_thread(
                lambda: [self._day(touches, start) for start in starts]
            )
        await publisher.publish_records(
            [
                Record(
                    Topic.JOURNEY_METRICS,
                    f"day:{start.date().isoformat()}".encode(),
                    measures.model_dump_json().encode(),
                    {},
                )
                for start, measures in zip(starts, measured, strict=True)
            ]
        )
        _export(measured[0])
        return measured[0]

    def _day(self, touches: Sequence[Touch], start: datetime) -> Measures:
        """A day's measures from a read that covers it, on the part `measures` reads for it, so
        the day's record and the API's answer for that day agree."""
        end = start + timedelta(days=1)
        since, until = self.windows.reach(start, end)
        inside = [t for t in touches if since <= t.occurred_at < until]
        return measure(inside, start, end, self.windows)

    async def keep_publishing(self, publisher: KafkaPublisher) -> None:
        """For the life of the service: today and yesterday every round (so a day's last
        record holds all of it, whenever midnight fell within a round), and once an hour the
        `metrics_restated_days` before them too. A Kafka or MongoDB outage skips a round,
        never the loop."""
        interval = self.settings.metrics_interval_seconds
        rounds_an_hour = max(1, round(3600 / interval))
        for round_number in itertools.count():
            hourly = round_number % rounds_an_hour == 0
            days = 2 + (self.settings.metrics_restated_days if hourly else 0)
            try:
                await self.publish_days(publisher, days)
            except Exception as exc:
                log.warning("measures_not_published", error=type(exc).__name__)
            await asyncio.sleep(interval)


def _export(measures: Measures) -> None:
    conversations = measures.conversations
    for name, value in (
        ("continuity", conversations.continuity_rate),
        ("conversion", measures.cross_channel_conversion.rate),
        ("fcr", conversations.first_contact_resolution_rate),
        ("response", conversations.mean_first_response_seconds),
    ):
        GAUGES[name].set(value if value is not None else float("nan"))
    for labelled in ("csat", "mix", "campaigns"):
        GAUGES[labelled].clear()  # a new day starts without yesterday's channels and campaigns
    for channel, average in measures.satisfaction.csat_by_channel.items():
        GAUGES["csat"].labels(channel).set(average)
    for channel, count in measures.channel_mix.items():
        GAUGES["mix"].labels(channel).set(count)
    for campaign, sales in _largest(measures.campaigns.sold_via, GAUGED_CAMPAIGNS):
        for where, count in sales.items():
            GAUGES["campaigns"].labels(campaign, where).set(count)


GAUGED_CAMPAIGNS = 20
"""Campaigns exported as gauges: the names come from anyone with the public web key, and every
name that ever makes the list is a series Prometheus keeps."""


def _largest(sold_via: dict[str, dict[str, int]], limit: int) -> list[tuple[str, dict[str, int]]]:
    by_orders = sorted(sold_via.items(), key=lambda item: (-sum(item[1].values()), item[0]))
    return by_orders[:limit]


def create_service(settings: AnalyticsSettings) -> AnalyticsService:
    if (refusal := settings.open_api_refusal()) is not None:
        raise OpenApiRefused(refusal)
    broker = create_broker(settings)
    mongo = create_mongo_client(settings)
    store = TouchStore(mongo, settings.mongodb_database)
    publisher = KafkaPublisher(broker, settings)
    subscribe(broker, store, settings, publisher)
    guard = [Depends(require_api_key(settings.api_keys))] if settings.api_keys else []
    app = FastAPI(
        title="Hilo journey analytics",
        version="1",
        description="Omnichannel measured over whole journeys (definitions: "
        "`journey_analytics.measures`).",
        lifespan=_lifespan,
    )
    service = AnalyticsService(settings, broker, mongo, store, app, publisher)
    app.state.service = service

    @app.get("/v1/measures", dependencies=guard, response_model=Measures)
    async def measures(
        start: Annotated[datetime | None, Query(alias="from")] = None,
        end: Annotated[datetime | None, Query(alias="to")] = None,
        customer: Annotated[str | None, Query(max_length=200)] = None,
    ) -> Measures:
        """The measures of [from, to) (ISO 8601 with a zone; default: the last 7 days), of
        everyone or of one `customer` (an id it was merged away from reads as the survivor)."""
        try:
            until = end or datetime.now(UTC)
            since = start or until - timedelta(days=7)
            service.windows.reach(since, until)
        except OverflowError:
            raise HTTPException(
                422, "`from` and `to` are too near the calendar's ends for the measures' windows"
            ) from None
        if since.tzinfo is None or until.tzinfo is None:
            raise HTTPException(422, "give `from` and `to` with a zone, e.g. 2026-12-01T00:00Z")
        if not since < until or until - since > MAX_RANGE:
            raise HTTPException(422, f"`from` must be before `to`, at most {MAX_RANGE.days} days")
        earliest = earliest_start(datetime.now(UTC), settings.retention, service.windows)
        if since < earliest:
            raise HTTPException(
                422,
                f"touches are kept {settings.analytics_retention_days:g} days "
                "(HILO_ANALYTICS_RETENTION_DAYS) and the measures read "
                f"{service.windows.lookback / timedelta(days=1):g} days before `from`: the "
                "earliest `from` is "
                f"{earliest.isoformat()}",
            )
        return await service.measures(since, until, customer)

    app.include_router(
        health_router({"mongodb": mongo_check(mongo)}, optional={"kafka": kafka_check(broker)})
    )
    app.include_router(asyncapi_router())
    return service


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    service: AnalyticsService = app.state.service
    await service.store.create_indexes()
    service.background.append(asyncio.create_task(erase_recorded(service.store, service.settings)))
    # The measures are read from MongoDB: served while Kafka is away.
    service.background += await start_or_keep_trying(service.broker, service.settings)
    service.background.append(asyncio.create_task(service.keep_publishing(service.publisher)))
    settings = service.settings
    expiring = keep_expiring(service.store, settings.retention, settings.analytics_sweep_seconds)
    service.background.append(asyncio.create_task(expiring))
    watch = watch_producer(service.broker, "journey-analytics")
    service.background.append(asyncio.create_task(watch))
    try:
        yield
    finally:
        background, service.background = service.background, []
        await shut_down(
            "journey-analytics",
            [
                ("background", lambda: cancelled(background)),
                ("kafka", service.broker.stop),
                ("mongo", service.mongo.close),
            ],
        )
