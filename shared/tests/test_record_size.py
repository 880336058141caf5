"""An event larger than Kafka takes is refused before anything is sent, at a size the real
producer takes: a request never waits on a retry that cannot succeed."""

from __future__ import annotations

import pytest

from hilo.contract import CustomEvent, Interaction
from hilo.kafka import KafkaPublisher, RecordTooLarge, create_broker, record_size
from hilo.settings import HiloSettings
from hilo.testkit.contract_check import published_interactions
from hilo.testkit.samples import sample_interaction

LIMIT = 4_096


def padded(length: int) -> Interaction:
    return sample_interaction("custom").model_copy(
        update={"payload": CustomEvent(name="Padded", properties={"pad": "x" * length})}
    )


def longest_padding_that_fits(publisher: KafkaPublisher) -> int:
    low, high = 0, LIMIT
    while low < high:
        middle = (low + high + 1) // 2
        try:
            publisher.interaction_record(padded(middle))
        except RecordTooLarge:
            high = middle - 1
        else:
            low = middle
    return low


async def test_the_largest_record_the_check_lets_through_is_one_the_producer_takes(
    settings: HiloSettings, topics: list[str]
) -> None:
    limited = settings.model_copy(update={"kafka_max_record_bytes": LIMIT})
    broker = create_broker(limited)
    publisher = KafkaPublisher(broker, limited)
    padding = longest_padding_that_fits(publisher)
    assert record_size(publisher.interaction_record(padded(padding))) == LIMIT

    await broker.start()
    try:
        await publisher.publish_interaction(padded(padding))
        with pytest.raises(RecordTooLarge) as refused:
            await publisher.publish_interaction(padded(padding + 1))
    finally:
        await broker.stop()

    assert (refused.value.size, refused.value.limit) == (LIMIT + 1, LIMIT)
    assert len(await published_interactions(limited, 1)) == 1
