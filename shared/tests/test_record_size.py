"""An event larger than Kafka takes is refused before anything is sent, at a size the real
producer takes: a request never waits on a retry that cannot succeed."""

from __future__ import annotations

import pytest

from hilo.contract import CustomEvent, Interaction
from hilo.dead_letters import DEAD_LETTER_HEADERS, dead_letter_headers
from hilo.kafka import (
    DEAD_LETTER_HEADROOM,
    KafkaPublisher,
    Record,
    RecordTooLarge,
    create_broker,
    record_size,
    wire_headers,
)
from hilo.mongo import create_mongo_client
from hilo.sealing import create_sealer
from hilo.settings import HiloSettings
from hilo.testkit.contract_check import published_interactions
from hilo.testkit.samples import longest_that_fits, sample_interaction
from hilo.topics import Topic

LIMIT = 6_144


def padded(length: int) -> Interaction:
    return sample_interaction("custom").model_copy(
        update={"payload": CustomEvent(name="Padded", properties={"pad": "x" * length})}
    )


async def longest_padding_that_fits(publisher: KafkaPublisher) -> int:
    return await longest_that_fits(publisher, padded, LIMIT)


async def test_the_largest_record_the_check_lets_through_is_one_the_producer_takes(
    settings: HiloSettings, topics: list[str]
) -> None:
    limited = settings.model_copy(update={"kafka_max_record_bytes": LIMIT})
    broker = create_broker(limited)
    mongo = create_mongo_client(limited)
    publisher = KafkaPublisher(broker, limited, sealer=create_sealer(limited, mongo))
    padding = await longest_padding_that_fits(publisher)
    [record] = await publisher.interaction_records([padded(padding)])
    room = LIMIT - DEAD_LETTER_HEADROOM
    assert room - 4 < record_size(record) <= room, "base64 grows by 4 characters per 3 bytes"

    await broker.start()
    try:
        await publisher.publish_interaction(padded(padding))
        with pytest.raises(RecordTooLarge) as refused:
            await publisher.publish_interaction(padded(padding + 1))
    finally:
        await broker.stop()
        await mongo.close()

    assert refused.value.size > LIMIT
    assert refused.value.limit == LIMIT
    assert len(await published_interactions(limited, 1)) == 1


def test_a_dead_letter_of_the_largest_record_still_fits() -> None:
    """Else the profile could never dead-letter it, and would retry it for ever."""
    largest = Record(Topic.INTERACTIONS, b"k" * 64, b"x" * 1_000, {"content-type": "a" * 40})
    headers = dead_letter_headers(
        reason="unsupported_schema_version_or_longer",
        detail="é" * 5_000,  # two bytes each, cut to the limit in bytes
        topic="t" * 249,  # Kafka's longest topic name
        partition=2**31 - 1,
        offset=2**63 - 1,
    )
    letter = Record(
        Topic.INTERACTIONS_DLQ, largest.key, largest.value, headers, tuple(wire_headers(largest))
    )

    assert set(DEAD_LETTER_HEADERS) <= set(headers)
    assert record_size(letter) - record_size(largest) <= DEAD_LETTER_HEADROOM
