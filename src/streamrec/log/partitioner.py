"""Which partition a record goes to: Kafka's default partitioner, on every backend.

A topic has N partitions, fixed when it is created; a record is routed by a key the writer names
(the user id for actions and impressions, the request id for examples), so records that must meet
(an impression and the actions on it) land in the same partition, in order.

Why Kafka's function and not another hash: a streamrec topic on Kafka may also be written by Java
or librdkafka producers with ``murmur2`` partitioning (Java's default). Using the same function,
``toPositive(murmur2(utf8(key))) % N``, means a key is in the same partition whoever wrote it, and
the SQLite and Redis backends route exactly as Kafka does, so moving a deployment between backends
keeps every key's partition.

Hot path: one append routes its whole batch with one Numba call over the keys laid end to end
(:func:`partitions_for`); :func:`partition_for` is the one-key form for callers and tests.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numba import njit

__all__ = ["key_bytes", "murmur2", "partition_for", "partitions_for"]

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def key_bytes(key: str | bytes | int) -> bytes:
    """The bytes a key is hashed as: UTF-8 of a string, decimal text of an integer, bytes as given."""
    if isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode("utf-8", "surrogatepass")
    if isinstance(key, int) and not isinstance(key, bool):
        return str(key).encode()
    raise TypeError(f"a partition key must be str, bytes or int, not {type(key).__name__}")


def murmur2(data: bytes) -> int:
    """Kafka's ``Utils.murmur2`` of ``data`` as a signed 32-bit integer (the reference, in Python).

    >>> murmur2(b"21"), murmur2(b"foobar")
    (-973932308, -790332482)
    """
    length = len(data)
    h = (_SEED ^ length) & _MASK
    whole = length & ~3
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = (h * _M) & _MASK
        h ^= k
    tail = length & 3
    if tail == 3:
        h ^= data[whole + 2] << 16
    if tail >= 2:
        h ^= data[whole + 1] << 8
    if tail >= 1:
        h ^= data[whole]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(key: str | bytes | int, partitions: int) -> int:
    """The partition of ``key`` in a topic of ``partitions`` partitions (Kafka's default partitioner).

    >>> partition_for("u42", 1), partition_for("u42", 4)
    (0, 3)
    """
    return (murmur2(key_bytes(key)) & 0x7FFFFFFF) % partitions


@njit(cache=True, nogil=True)
def _murmur2_many(buffer, ends, partitions, out):  # pragma: no cover - compiled
    # 32-bit arithmetic in 64-bit registers, masked after every multiply (Numba widens uint32 ops).
    mask = np.uint64(0xFFFFFFFF)
    m = np.uint64(0x5BD1E995)
    start = 0
    for n in range(ends.shape[0]):
        end = ends[n]
        length = end - start
        h = np.uint64(0x9747B28C) ^ np.uint64(length)
        whole = start + (length & ~3)
        i = start
        while i < whole:
            k = (
                np.uint64(buffer[i])
                | (np.uint64(buffer[i + 1]) << np.uint64(8))
                | (np.uint64(buffer[i + 2]) << np.uint64(16))
                | (np.uint64(buffer[i + 3]) << np.uint64(24))
            )
            k = (k * m) & mask
            k ^= k >> np.uint64(24)
            k = (k * m) & mask
            h = (h * m) & mask
            h ^= k
            i += 4
        tail = length & 3
        if tail == 3:
            h ^= np.uint64(buffer[whole + 2]) << np.uint64(16)
        if tail >= 2:
            h ^= np.uint64(buffer[whole + 1]) << np.uint64(8)
        if tail >= 1:
            h ^= np.uint64(buffer[whole])
            h = (h * m) & mask
        h ^= h >> np.uint64(13)
        h = (h * m) & mask
        h ^= h >> np.uint64(15)
        out[n] = np.int64(h & np.uint64(0x7FFFFFFF)) % partitions
        start = end


def partitions_for(keys: Sequence[bytes], partitions: int) -> np.ndarray:
    """Partitions of many keys (already :func:`key_bytes`) at once: one compiled pass, no per-key Python hashing."""
    out = np.zeros(len(keys), dtype=np.int64)
    if partitions <= 1 or not keys:
        return out
    buffer = np.frombuffer(b"".join(keys), dtype=np.uint8)
    ends = np.cumsum(np.fromiter(map(len, keys), dtype=np.int64, count=len(keys)))
    _murmur2_many(buffer, ends, np.int64(partitions), out)
    return out
