"""At-least-once delivery with idempotent effects; late events; poison messages; batches."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from customer_profile.service.pipeline import BatchOutcome, RawRecord
from customer_profile.testing import (
    RunningProfileService,
    interaction,
    interleave,
    running_profile_service,
)
from hilo.contract import interaction_id
from hilo.settings import HiloSettings
from hilo.testkit.probes import eventually, read_topic
from hilo.testkit.samples import sample_interaction
from hilo.topics import Topic, topic_name


async def test_duplicate_delivery_is_stored_once(profile_service: RunningProfileService) -> None:
    svc = profile_service
    event = interaction(1, email="ana@example.com")

    await svc.publish([event, event, event])
    await svc.publish([interaction(2, minutes=1, email="ana@example.com")])
    await svc.wait_for_entries(2)

    customer = await svc.customer_of("email", "ana@example.com")
    profile = await svc.get(f"/v1/customers/{customer}")
    assert await svc.journey_count() == 2
    assert profile["view"]["event_count"] == 2


async def test_replaying_the_topic_leaves_journeys_and_profiles_unchanged(
    profile_service: RunningProfileService, settings: HiloSettings
) -> None:
    svc = profile_service
    await svc.publish([interaction(n, minutes=n, email=f"c{n % 3}@example.com") for n in range(9)])
    await svc.wait_for_entries(9)
    before = {
        n: await svc.get(f"/v1/customers/{await svc.customer_of('email', f'c{n}@example.com')}")
        for n in range(3)
    }

    # A second consumer group reads the whole topic again: every event is delivered twice.
    async with running_profile_service(settings, consumer_group="replay") as replay:
        await eventually(lambda: _processed(replay), until=lambda n: n >= 9, timeout=30)

    assert await svc.journey_count() == 9
    for n in range(3):
        after = await svc.get(f"/v1/customers/{before[n]['customer_id']}")
        assert after["view"] == before[n]["view"]
        assert after["identifiers"] == before[n]["identifiers"]


async def _processed(running: RunningProfileService) -> int:
    return running.service.pipeline.events_processed


async def test_late_events_take_their_place_in_event_time_and_are_flagged(
    profile_service: RunningProfileService,
) -> None:
    svc = profile_service
    await svc.publish([interaction(10, minutes=10, email="ana@example.com", channel="web")])
    await svc.publish(
        [interaction(20, minutes=20, email="ana@example.com", channel="store", kind="order")]
    )
    await svc.wait_for_entries(2)
    await svc.publish(
        [interaction(15, minutes=15, email="ana@example.com", channel="whatsapp", kind="message")]
    )
    await svc.wait_for_entries(3)

    customer = await svc.customer_of("email", "ana@example.com")
    journey = await svc.get(f"/v1/customers/{customer}/journey")
    assert [(e["channel"], e["late"]) for e in journey["entries"]] == [
        ("web", False),
        ("whatsapp", True),
        ("store", False),
    ]
    profile = await svc.get(f"/v1/customers/{customer}")
    assert profile["view"]["last_channel"] == "store", "the late event does not become the latest"
    assert profile["view"]["recent_interactions"][-1]["channel"] == "store"


async def test_poison_messages_go_to_the_dead_letter_topic_and_the_consumer_goes_on(
    profile_service: RunningProfileService, settings: HiloSettings
) -> None:
    svc = profile_service
    naive = json.loads(sample_interaction().model_dump_json())
    naive["occurred_at"] = "2026-11-01T09:00:00"
    del naive["time"]
    poison = [b"\x00\x01 not json at all", json.dumps(naive).encode(), b'{"schema_version": 99}']
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        for n, value in enumerate(poison):
            await producer.send_and_wait(
                topic_name(Topic.INTERACTIONS, settings),
                value,
                key=b"email:x@example.com",
                headers=[("content-type", b"application/json"), ("trace", f"t{n}".encode())],
            )
    finally:
        await producer.stop()
    await svc.publish([interaction(1, email="x@example.com")])

    await svc.wait_for_entries(1)
    dead = await read_topic(
        settings.kafka_bootstrap_servers, topic_name(Topic.INTERACTIONS_DLQ, settings), expected=3
    )

    assert [r.value for r in dead] == poison, "the original bytes are kept"
    headers = [dict(r.headers) for r in dead]
    assert [h["hilo_error_reason"] for h in headers] == [
        b"not_json",
        b"invalid_interaction",
        b"unsupported_schema_version",
    ]
    assert headers[1]["hilo_error_detail"] == b"occurred_at: Input should have timezone info"
    assert [h["trace"] for h in headers] == [b"t0", b"t1", b"t2"], "original headers are kept"
    assert {h["hilo_original_topic"] for h in headers} == {
        topic_name(Topic.INTERACTIONS, settings).encode()
    }
    assert all(r.key == b"email:x@example.com" for r in dead)
    assert await svc.customer_of("email", "x@example.com")
    assert interaction_id("web", "evt-1") in {
        e["id"]
        for e in (
            await svc.get(
                f"/v1/customers/{await svc.customer_of('email', 'x@example.com')}/journey"
            )
        )["entries"]
    }


async def test_a_far_future_event_time_is_bounded_and_does_not_make_later_events_late(
    profile_service: RunningProfileService,
) -> None:
    svc = profile_service
    now = datetime.now(UTC)
    wrong_clock = interaction(1, email="fut@example.com").model_copy(
        update={"occurred_at": now + timedelta(days=400), "received_at": now}
    )
    await svc.publish([wrong_clock])
    await svc.wait_for_entries(1)
    await svc.publish(
        [
            interaction(2, email="fut@example.com").model_copy(
                update={"occurred_at": now + timedelta(seconds=5), "received_at": now}
            )
        ]
    )
    await svc.wait_for_entries(2)

    customer = await svc.customer_of("email", "fut@example.com")
    entries = (await svc.get(f"/v1/customers/{customer}/journey"))["entries"]
    first = next(e for e in entries if e["id"] == wrong_clock.id)
    assert first["adjustments"] == [{"field": "occurred_at", "reason": "in_the_future"}]
    assert datetime.fromisoformat(first["occurred_at"]) - now < timedelta(minutes=1)
    assert [e["late"] for e in entries] == [False, False]


async def test_a_batch_holds_every_event_that_arrived_while_the_one_before_ran(
    profile_service: RunningProfileService,
) -> None:
    """The consumer drops what it prefetched while a batch ran (`hilo.kafka.fetch_afresh`):
    otherwise the first event to arrive meanwhile is all the next batch holds, and the others
    wait one batch more."""
    svc = profile_service
    pipeline = svc.service.pipeline
    consumer = svc.service.broker.subscribers[0].consumer  # type: ignore[attr-defined]
    batches: list[list[str]] = []
    process = pipeline.process

    async def recording(records: Sequence[RawRecord]) -> BatchOutcome:
        batches.append([json.loads(record.value or b"{}")["id"] for record in records])
        return await process(records)

    async def meanwhile() -> None:
        """While the first batch runs: one event answers the consumer's fetch, two follow."""
        await svc.publish([interaction(2, minutes=2, email="ana@example.com")])
        await eventually(lambda: _fetched(consumer), until=lambda n: n == 2)
        await svc.publish([interaction(n, minutes=n, email="ana@example.com") for n in (3, 4)])

    pipeline.process = recording  # type: ignore[method-assign]
    interleave(pipeline, "process", meanwhile)
    await svc.publish([interaction(1, minutes=1, email="ana@example.com")])
    await svc.wait_for_entries(4)

    ids = [[interaction_id("web", f"evt-{n}") for n in numbers] for numbers in ([1], [2, 3, 4])]
    assert batches == ids


async def _fetched(consumer: AIOKafkaConsumer) -> int:
    """How many records the consumer's fetches have found on its partitions so far."""
    return sum(consumer.highwater(partition) or 0 for partition in consumer.assignment())
