"""Kafka's default partitioning, with the hashes of recent keys remembered."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner

from hilo.kafka import partition_for


def test_every_key_goes_where_the_java_client_would_put_it() -> None:
    reference = DefaultPartitioner()
    rng = random.Random(7)
    keys = [rng.randbytes(rng.randrange(0, 64)) for _ in range(2_000)]
    for count in (1, 2, 3, 6, 7, 12, 50):
        partitions = list(range(count))
        for key in keys + keys:  # the second time from the remembered hashes
            assert partition_for(key, partitions, partitions) == reference(
                key, partitions, partitions
            )


def test_a_record_without_a_key_goes_to_an_available_partition() -> None:
    chosen = {partition_for(None, [0, 1, 2, 3], [1, 3]) for _ in range(200)}
    assert chosen == {1, 3}
    assert partition_for(None, [0, 1, 2], []) in {0, 1, 2}
