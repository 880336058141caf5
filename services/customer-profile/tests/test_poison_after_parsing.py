"""A record that parses but can never be processed goes to the dead-letter topic; the rest goes on.

And once the cause is fixed, `customer-profile dlq replay` puts it back.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.structs import ConsumerRecord
from bson.errors import InvalidDocument
from pymongo.errors import AutoReconnect, BulkWriteError, OperationFailure, WriteConcernError

from customer_profile.adapters.store import ProfileStore
from customer_profile.service.batches import is_transient
from customer_profile.service.ports import Contention, ErasedClaimsMet, ViewSave
from customer_profile.testing import (
    RunningProfileService,
    interaction,
    refuse_event,
    running_profile_service,
)
from hilo.dead_letters import ReplayFilter, replay
from hilo.kafka import PublishFailed, Record
from hilo.settings import HiloSettings
from hilo.testkit.probes import eventually, read_topic
from hilo.testkit.samples import sample_interaction
from hilo.topics import Topic, topic_name


def lose_view_saves(store: ProfileStore, times: int) -> None:
    """Another writer wins the next `times` view saves: each reports every profile lost."""
    original = store.save_views
    left = [times]

    async def save_views(views: Mapping[str, ViewSave]) -> set[str]:
        if left[0] > 0:
            left[0] -= 1
            return set(views)
        return await original(views)

    store.save_views = save_views  # type: ignore[method-assign]


def refused_for_good() -> PublishFailed:
    """What the publisher raises when the producer refuses a record as too large."""
    failure = PublishFailed("Kafka did not confirm the write to journey")
    failure.__cause__ = MessageSizeTooLargeError()
    return failure


def refuse_for_good(svc: RunningProfileService, refused: Callable[[Record], bool]) -> None:
    """Kafka refuses for good, every time, any publish holding a record `refused` picks (a
    record too large for its topic)."""
    publisher = svc.service.pipeline._publisher
    assert publisher is not None
    original = publisher.publish_records

    async def publish_records(records: Sequence[Record]) -> None:
        if any(refused(record) for record in records):
            raise refused_for_good()
        await original(records)

    publisher.publish_records = publish_records  # type: ignore[method-assign]


def refuse_output_of(svc: RunningProfileService, event_id: str) -> None:
    """Kafka refuses the journey record of this event for good, every time."""
    refuse_for_good(svc, lambda r: r.topic is Topic.JOURNEY and r.headers["ce_id"] == event_id)


async def letters_and_journey(
    settings: HiloSettings, entries: int
) -> tuple[list[ConsumerRecord[bytes, bytes]], list[ConsumerRecord[bytes, bytes]]]:
    """The one dead letter, and the `entries` journey records the partition went on with."""
    dead = await read_topic(
        settings.kafka_bootstrap_servers, topic_name(Topic.INTERACTIONS_DLQ, settings), expected=1
    )
    journey = await read_topic(
        settings.kafka_bootstrap_servers, topic_name(Topic.JOURNEY, settings), expected=entries
    )
    return dead, journey


async def test_a_record_whose_output_kafka_refuses_for_good_is_dead_lettered_not_retried(
    settings: HiloSettings, topics: list[str]
) -> None:
    """The partition goes on: the events after it are published, and readiness holds."""
    poison = interaction(2, minutes=1, email="bo@example.com")
    after = interaction(3, minutes=2, email="cy@example.com")
    async with running_profile_service(settings, poison_attempts=2) as svc:
        refuse_output_of(svc, poison.id)
        await svc.publish([interaction(1, email="ana@example.com"), poison, after])
        dead, journey = await letters_and_journey(settings, 2)
        ready = await svc.http.get("/health/ready")

    assert [json.loads(r.value)["id"] for r in dead] == [poison.id]
    assert dict(dead[0].headers)["hilo_error_detail"].startswith(b"PublishFailed")
    assert after.id in {dict(r.headers)["ce_id"].decode() for r in journey}
    assert ready.status_code == 200


async def test_a_dead_letter_the_topic_cannot_take_goes_without_its_value(
    settings: HiloSettings, topics: list[str]
) -> None:
    """A record near the size limit from a producer that kept no room for the dead letter's
    headers: its output and its letter are both refused for good. The letter goes without
    its value (where to read it, and its size), the partition goes on, and a replay leaves it
    out."""
    poison = interaction(2, minutes=1, email="bo@example.com")
    after = interaction(3, minutes=2, email="cy@example.com")
    async with running_profile_service(settings, poison_attempts=2) as svc:
        refuse_output_of(svc, poison.id)
        refuse_for_good(svc, lambda r: r.topic is Topic.INTERACTIONS_DLQ and r.value is not None)
        await svc.publish([interaction(1, email="ana@example.com"), poison, after])
        dead, journey = await letters_and_journey(settings, 2)
        report = await replay(settings, ReplayFilter())

    (letter,) = dead
    headers = {k: v.decode() for k, v in letter.headers}
    assert letter.value is None
    assert headers["hilo_error_reason"] == "processing_failed"
    assert headers["hilo_original_topic"] == topic_name(Topic.INTERACTIONS, settings)
    assert int(headers["hilo_original_value_bytes"]) > 100
    assert after.id in {dict(r.headers)["ce_id"].decode() for r in journey}, "the partition went on"
    assert (report.read, report.replayed) == (1, 0)
    origin = f"{topic_name(Topic.INTERACTIONS, settings)}/{headers['hilo_original_partition']}/"
    assert report.without_value == [origin + headers["hilo_original_offset"]]


async def test_a_record_that_always_fails_is_dead_lettered_and_its_neighbours_are_stored(
    settings: HiloSettings, topics: list[str]
) -> None:
    poison = interaction(2, minutes=1, email="bo@example.com")
    batch = [
        interaction(1, email="ana@example.com"),
        poison,
        interaction(3, minutes=2, email="cy@example.com"),
    ]
    async with running_profile_service(settings, poison_attempts=2) as svc:
        refuse_event(svc.service.store, poison.id)
        await svc.publish(batch)
        await svc.wait_for_entries(2)
        dead = await read_topic(
            settings.kafka_bootstrap_servers,
            topic_name(Topic.INTERACTIONS_DLQ, settings),
            expected=1,
        )
        assert [json.loads(r.value)["id"] for r in dead] == [poison.id]
        headers = dict(dead[0].headers)
        assert headers["hilo_error_reason"] == b"processing_failed"
        assert headers["hilo_error_detail"].startswith(b"InvalidDocument:")
        assert await svc.journey_count() == 2
        assert (await svc.http.get("/health/ready")).status_code == 200

        # The cause is fixed (a new release); the dead letter is replayed and stored once.
        del svc.service.store.insert_entries
        report = await replay(settings, ReplayFilter(reasons=frozenset({"processing_failed"})))
        assert (report.read, report.replayed) == (1, 1)
        await svc.wait_for_entries(3)
        assert await svc.customer_of("email", "bo@example.com")


async def test_a_record_that_keeps_losing_to_other_writers_waits_and_is_never_dead_lettered(
    settings: HiloSettings, topics: list[str]
) -> None:
    """Losing every race of an attempt is no fault of the record, whose entry is stored by then:
    dead-lettering it would leave that entry pending, its view unsaved and its journey record
    unpublished. It is retried, as an outage is, until the other writers are done."""
    contended = interaction(1, email="ana@example.com")
    # More lost saves than the attempts of the batch and of the record alone (2 x 8 each).
    async with running_profile_service(settings, poison_attempts=2) as svc:
        lose_view_saves(svc.service.store, 40)
        await svc.publish([contended])
        await svc.wait_for_entries(1, timeout=60)
        customer = await svc.customer_of("email", "ana@example.com")
        profile = await svc.get(f"/v1/customers/{customer}")
        dead = await read_topic(
            settings.kafka_bootstrap_servers,
            topic_name(Topic.INTERACTIONS_DLQ, settings),
            expected=1,
            timeout=2,
        )

    assert dead == []
    assert profile["view"]["event_count"] == 1


async def test_replay_chooses_by_reason_and_a_dry_run_publishes_nothing(
    profile_service: RunningProfileService, settings: HiloSettings
) -> None:
    await _send_raw(settings, [b"not json", b'{"schema_version": 99}'])
    await read_topic(
        settings.kafka_bootstrap_servers, topic_name(Topic.INTERACTIONS_DLQ, settings), expected=2
    )

    dry = await replay(settings, ReplayFilter(), dry_run=True)
    only = await replay(settings, ReplayFilter(reasons=frozenset({"unsupported_schema_version"})))

    assert (dry.read, dry.replayed) == (2, 2)
    assert dry.by_reason == {"not_json": 1, "unsupported_schema_version": 1}
    assert (only.replayed, only.by_reason) == (1, {"unsupported_schema_version": 1})
    replayed = await read_topic(
        settings.kafka_bootstrap_servers, topic_name(Topic.INTERACTIONS, settings), expected=3
    )
    values = [r.value for r in replayed]
    assert values.count(b'{"schema_version": 99}') == 2, "the original, and the one replay"
    assert values.count(b"not json") == 1, "neither the dry run nor the filtered run sent it"
    again = [dict(r.headers) for r in replayed if r.value == b'{"schema_version": 99}'][-1]
    assert "hilo_error_reason" not in again
    assert again["hilo_replayed_from"].startswith(
        topic_name(Topic.INTERACTIONS_DLQ, settings).encode()
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [("a\x00b", 1), ("big", 10**400), ("small", -(10**400)), ("deep", {"a": [[[[{"b": 1}]]]]})],
    ids=["nul-in-a-property-name", "int-past-a-float", "int-below-a-float", "nested-arrays"],
)
async def test_odd_values_from_a_public_write_key_never_stop_the_consumer(
    profile_service: RunningProfileService, settings: HiloSettings, name: str, value: Any
) -> None:
    event = json.loads(sample_interaction("custom").model_dump_json())
    event["payload"] = {"kind": "custom", "name": "odd", "properties": {name: value}}
    await _send_raw(settings, [json.dumps(event).encode()])
    await profile_service.publish([interaction(1, email="after@example.com")])

    after = interaction(1, email="after@example.com").id
    await eventually(
        lambda: profile_service.service.store.journey.count_documents({"_id": after}),
        until=lambda n: n == 1,
    )


async def test_a_whole_number_past_8_bytes_is_stored_as_the_float_javascript_sent(
    profile_service: RunningProfileService, settings: HiloSettings
) -> None:
    """`JSON.stringify(1e19)` from a shop's page: MongoDB refused the integer and the event,
    which its channel had answered 200, was dead-lettered. The contract reads it as a float."""
    event = json.loads(sample_interaction("custom").model_dump_json())
    event["payload"]["properties"] = {"card": 10**19, "count": 3}
    await _send_raw(settings, [json.dumps(event).encode()])

    stored = await eventually(
        lambda: profile_service.service.store.journey.find_one({"_id": event["id"]}),
        until=lambda doc: doc is not None,
    )

    assert stored is not None
    assert stored["payload"]["properties"] == {"card": 1e19, "count": 3}


@pytest.mark.parametrize(
    ("failure", "transient"),
    [
        (AutoReconnect("connection reset"), True),
        (PublishFailed("no ack"), True),
        (refused_for_good(), False),
        (OperationFailure("not primary", code=10107), True),
        (OperationFailure("shutting down", code=91), True),
        (WriteConcernError("waiting for replication timed out", 64, {}), True),
        (WriteConcernError("Not enough data-bearing nodes", 100, {}), True),
        (ErasedClaimsMet(), True),
        (BulkWriteError({"writeErrors": [{"code": 2, "errmsg": "bad"}]}), False),
        (OperationFailure("document too deep", code=15), False),
        (InvalidDocument("key contains NUL"), False),
        (Contention("identity resolution did not settle"), True),
        (OperationFailure("not authorized on profiles", code=13), True),
        (OperationFailure("Authentication failed", code=18), True),
        (RuntimeError("identity resolution did not settle"), False),
        (OverflowError("MongoDB can only handle up to 8-byte ints"), False),
    ],
)
def test_only_infrastructure_failures_count_as_transient(
    failure: BaseException, transient: bool
) -> None:
    assert is_transient(failure) is transient


async def _send_raw(settings: HiloSettings, values: Sequence[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(
                topic_name(Topic.INTERACTIONS, settings), value, key=b"email:x@example.com"
            )
    finally:
        await producer.stop()
