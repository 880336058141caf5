"""Erasure that holds: recorded first, completed whatever fails, never undone by old events."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from customer_profile.testing import RunningProfileService, clear_faults, interaction
from hilo.kafka import PublishFailed
from hilo.settings import HiloSettings
from hilo.testkit.probes import eventually, read_topic
from hilo.topics import Topic, topic_name

KAFKA_DOWN_SECONDS = 3


async def test_an_erasure_with_kafka_down_completes_by_itself_and_old_events_do_not_return(
    profile_service: RunningProfileService, settings: HiloSettings
) -> None:
    svc = profile_service
    await svc.publish([interaction(1, email="ana@example.com", phone="+34612345678")])
    await svc.publish([interaction(2, minutes=1, email="ana@example.com", kind="cart")])
    await svc.wait_for_entries(2)
    customer = await svc.customer_of("email", "ana@example.com")

    async def kafka_down(*_: Any, **__: Any) -> None:
        raise PublishFailed("Kafka did not confirm the write (injected)")

    svc.service.publisher.publish = kafka_down  # type: ignore[method-assign]
    first = await svc.http.delete(f"/v1/customers/{customer}")
    again = await svc.http.delete(f"/v1/customers/{customer}")
    hidden = await svc.http.post(
        "/v1/customers/lookup", json={"kind": "email", "value": "ana@example.com"}
    )
    await asyncio.sleep(KAFKA_DOWN_SECONDS)
    clear_faults(svc.service.publisher, "publish")

    assert (first.status_code, first.json()["status"]) == (202, "pending")
    assert (again.status_code, again.json()["status"]) == (202, "pending")
    assert hidden.status_code == 404, "MongoDB is cleaned at once, Kafka or not"
    done = await eventually(
        lambda: svc.http.delete(f"/v1/customers/{customer}"),
        until=lambda r: r.status_code == 200,
        timeout=30,
    )
    assert done.json()["status"] == "done"
    records = await read_topic(
        settings.kafka_bootstrap_servers, topic_name(Topic.PROFILES, settings), expected=1
    )
    assert {r.key: r.value for r in records}[customer.encode()] is None, "tombstone"

    # In flight from before the erasure (or redelivered, or replayed): not stored again.
    await svc.publish([interaction(3, minutes=2, phone="+34612345678", kind="cart")])
    await eventually(lambda: _value(svc.service.pipeline.events_of_erased), until=lambda n: n == 1)
    assert await _documents_about(svc, "ana@example.com", "+34612345678") == 0

    later = interaction(5, email="ana@example.com").model_copy(
        update={"occurred_at": datetime.now(UTC) + timedelta(seconds=1)}
    )
    await svc.publish([later])
    await svc.wait_for_entries(1)
    assert await svc.customer_of("email", "ana@example.com") != customer, "a new profile"


async def _value(value: int) -> int:
    return value


async def _documents_about(svc: RunningProfileService, *values: str) -> int:
    """Documents anywhere in the database that mention one of `values`."""
    db = svc.service.store.client[svc.service.settings.mongodb_database]
    found = 0
    for name in await db.list_collection_names():
        async for document in db[name].find({}):
            found += sum(value in str(document) for value in values)
    return found
