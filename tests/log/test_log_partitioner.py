"""The partitioner against Kafka's own reference values, and the compiled batch path against the
one-key Python reference."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streamrec.log.partitioner import key_bytes, murmur2, partition_for, partitions_for

# Kafka's UtilsTest.testMurmur2: the Java client's murmur2 of these inputs.
KAFKA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def test_murmur2_matches_the_java_clients_values():
    for data, expected in KAFKA_VECTORS.items():
        assert murmur2(data) == expected, data


def test_partition_is_kafkas_to_positive_modulo():
    for data, hashed in KAFKA_VECTORS.items():
        for n in (1, 2, 3, 12, 4096):
            assert partition_for(data, n) == (hashed & 0x7FFFFFFF) % n


def test_keys_hash_as_utf8_or_decimal_text():
    assert key_bytes("ü") == "ü".encode() and key_bytes(42) == b"42" and key_bytes(b"\x00") == b"\x00"
    assert partition_for("u42", 7) == partition_for(b"u42", 7)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=50), st.integers(1, 64))
def test_the_batch_path_equals_the_one_key_reference(keys, n):
    expected = [partition_for(k, n) for k in keys]
    assert partitions_for(keys, n).tolist() == (expected if n > 1 else [0] * len(keys))
    assert partitions_for(keys, n).dtype == np.int64
