"""An event larger than Kafka takes is refused before anything is sent, at a size the real
producer takes: a request never waits on a retry that cannot succeed."""

from __future__ import annotations

import pytest

from hilo.contract import CustomEvent, Interaction
from hilo.kafka import KafkaPublisher, RecordTooLarge, create_broker, record_size
from hilo.mongo import create_mongo_client
from hilo.sealing import create_sealer
from hilo.settings import HiloSettings
from hilo.testkit.contract_check import published_interactions
from hilo.testkit.samples import sample_interaction

LIMIT = 4_096


def padded(length: int) -> Interaction:
    return sample_interaction("custom").model_copy(
        update={"payload": CustomEvent(name="Padded", properties={"pad": "x" * length})}
    )


async def longest_padding_that_fits(publisher: KafkaPublisher) -> int:
    low, high = 0, LIMIT
    while low < high:
        middle = (low + high + 1) // 2
        try:
            await publisher.interaction_records([padded(middle)])
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
    mongo = create_mongo_client(limited)
    publisher = KafkaPublisher(broker, limited, sealer=create_sealer(limited, mongo))
    padding = await longest_padding_that_fits(publisher)
    [record] = await publisher.interaction_records([padded(padding)])
    assert LIMIT - 4 < record_size(record) <= LIMIT, "base64 grows by 4 characters per 3 bytes"

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
