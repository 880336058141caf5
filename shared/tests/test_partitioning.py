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


JAVA_MURMUR2 = {
    # Kafka's UtilsTest.testMurmur2: what the Java client computes for these keys.
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def test_keys_go_where_kafkas_java_client_puts_them() -> None:
    for key, java in JAVA_MURMUR2.items():
        for count in (1, 3, 6, 7, 50):
            partitions = list(range(count))
            assert partition_for(key, partitions, partitions) == (java & 0x7FFFFFFF) % count
