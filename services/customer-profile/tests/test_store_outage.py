"""MongoDB unreachable: the service stops consuming, retries, commits nothing, loses nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import REGISTRY

from customer_profile.testing import (
    RunningProfileService,
    interaction,
    running_profile_service,
)
from hilo.settings import HiloSettings, MongoUrl
from hilo.testkit.probes import eventually
from hilo.topics import Topic, topic_name
from hilo_devkit.local_infra import LocalSecantusDB


async def committed(settings: HiloSettings, group: str) -> int:
    """Sum of the group's committed offsets: how many records it has declared done."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    topic = topic_name(Topic.INTERACTIONS, settings)
    return sum(max(meta.offset, 0) for tp, meta in offsets.items() if tp.topic == topic)


async def test_an_outage_pauses_consumption_until_the_database_is_back(
    settings: HiloSettings, topics: list[str], tmp_path: Path
) -> None:
    database = LocalSecantusDB(tmp_path)
    database.start()
    local = settings.model_copy(update={"mongodb_url": MongoUrl(database.url)})
    try:
        async with running_profile_service(
            local, store_retry_seconds=2, stuck_after_seconds=1
        ) as svc:
            group = svc.service.settings.consumer_group
            await svc.publish([interaction(1, email="ana@example.com")])
            await svc.wait_for_entries(1)
            await eventually(lambda: committed(local, group), until=lambda n: n == 1)

            database.stop()
            await svc.publish([interaction(2, minutes=1, email="ana@example.com")])
            ready = await svc.http.get("/health/ready")
            assert ready.status_code == 503
            assert ready.json()["checks"]["mongodb"] == "failing"
            profile = await svc.http.get("/v1/customers/any-customer")
            assert profile.status_code == 503, "the caller is told to retry, not a 500"
            assert profile.headers["retry-after"] == "5"
            # Several retry cycles pass (each gives up after 2 s and re-delivers the batch),
            # and after each failed attempt nothing is committed past the unstored event.
            with_outage = []
            failures = await _failed_attempts()
            for attempt in range(1, 4):
                await eventually(_failed_attempts, until=_past(failures + attempt), timeout=60)
                with_outage.append(await committed(local, group))
            assert with_outage == [1, 1, 1]
            await eventually(lambda: _consumer_check(svc), until=lambda c: c == "failing")
            assert await committed(local, group) == 1, "nothing committed past the unstored event"

            database.start()
            await svc.wait_for_entries(2, timeout=90)
            await eventually(lambda: committed(local, group), until=lambda n: n == 2, timeout=60)
            customer = await svc.customer_of("email", "ana@example.com")
            profile = await svc.get(f"/v1/customers/{customer}")
            assert profile["view"]["event_count"] == 2
            assert await _consumer_check(svc) == "ok", "ready again once batches go through"
    finally:
        database.stop()


async def _failed_attempts() -> float:
    """Failed batch attempts counted so far, whatever the error."""
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "hilo_profile_batch_failures"
        for sample in metric.samples
        if sample.name == "hilo_profile_batch_failures_total"
    )


async def _consumer_check(svc: RunningProfileService) -> str:
    check: str = (await svc.http.get("/health/ready")).json()["checks"]["consumer"]
    return check


def _past(count: float) -> Callable[[float], bool]:
    return lambda n: n >= count
