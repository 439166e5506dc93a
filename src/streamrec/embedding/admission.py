"""Admission filter: a count-min sketch that decides when an id has been seen often enough.

Monolith only gives a row to ids seen ``admit_after`` times: most ids in a recommendation stream
appear once or twice and would only dilute memory. Counting every candidate id exactly would
cost as much memory as the table we are trying to protect, so occurrences are counted in a
fixed-size count-min sketch (``depth`` rows of ``width`` saturating uint8 counters):

* *Conservative update*: an occurrence raises only the counters that equal the current minimum,
  which keeps over-counts (and so false admissions) far below plain count-min.
* *Estimates never undercount*: counters only grow while ids are being admitted, so an id is never
  admitted late because of the sketch; it can only be admitted early (a false admission) when all
  its ``depth`` counters were inflated by others. (Admission must not lower counters: with
  conservative update a counter is shared by ids whose counts do not add up, so lowering it
  for one id can drop another id's estimate below its true count and delay its admission.)
* *Eviction forgets*: when the table evicts an id, :meth:`CountMinSketch.forget` lowers its
  counters by ``admit_after``, so an evicted id must be seen ``admit_after`` times again before
  it comes back. This is the one place an estimate can drop below a true count: an id whose
  smallest counter it shares with an evicted id may then need a few more occurrences.

Memory is ``depth * width`` bytes whatever the number of distinct ids. The per-id work is a Numba
kernel (:func:`sketch_observe`) called from the table's admission kernel.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from streamrec.embedding.cuckoo import mix64

DEFAULT_WIDTH = 1 << 19
DEFAULT_DEPTH = 4
_S32 = np.uint64(32)


@njit(inline="always")
def _cell(key, seed, row, width):
    h = mix64(np.uint64(key) ^ seed ^ (np.uint64(row + 1) * np.uint64(0x9E3779B97F4A7C15)))
    return np.int64(((h >> _S32) * np.uint64(width)) >> _S32)


@njit(inline="always")
def sketch_observe(counts, seed, key, threshold):
    """Count one occurrence of ``key``; True once its estimate reaches ``threshold``."""
    depth, width = counts.shape
    estimate = 255
    for r in range(depth):
        c = counts[r, _cell(key, seed, r, width)]
        if c < estimate:
            estimate = c
    new = estimate + 1 if estimate < 255 else 255
    for r in range(depth):
        j = _cell(key, seed, r, width)
        if counts[r, j] < new:
            counts[r, j] = new
    return new >= threshold


@njit(cache=True)
def _estimate_many(counts, seed, keys, out):
    depth, width = counts.shape
    for i in range(keys.shape[0]):
        estimate = 255
        for r in range(depth):
            c = counts[r, _cell(keys[i], seed, r, width)]
            if c < estimate:
                estimate = c
        out[i] = estimate


@njit(cache=True)
def _observe_many(counts, seed, keys, threshold, out):
    for i in range(keys.shape[0]):
        out[i] = sketch_observe(counts, seed, keys[i], threshold)


@njit(cache=True)
def _forget_many(counts, seed, keys, amount):
    depth, width = counts.shape
    for i in range(keys.shape[0]):
        for r in range(depth):
            j = _cell(keys[i], seed, r, width)
            c = counts[r, j]
            counts[r, j] = c - amount if c >= amount else 0


class CountMinSketch:
    """Saturating count-min sketch with conservative update, ``depth * width`` bytes.

    Examples
    --------
    >>> sketch = CountMinSketch(width=1024, depth=4, seed=7)
    >>> ids = np.array([5, 5, 9, 5], dtype=np.int64)
    >>> sketch.observe(ids, threshold=3).tolist()   # the third 5 is admitted
    [False, False, False, True]
    >>> sketch.estimate(np.array([5, 9, 11], dtype=np.int64)).tolist()
    [3, 1, 0]
    >>> sketch.forget(np.array([5], dtype=np.int64), 3)   # 5 was evicted: it counts from 0 again
    >>> sketch.estimate(np.array([5], dtype=np.int64)).tolist()
    [0]
    """

    def __init__(self, width: int = DEFAULT_WIDTH, depth: int = DEFAULT_DEPTH, seed: int = 0) -> None:
        self.counts = np.zeros((depth, width), dtype=np.uint8)
        self.seed = np.uint64(seed & ((1 << 64) - 1))

    @property
    def nbytes(self) -> int:
        return self.counts.nbytes

    def observe(self, ids: np.ndarray, threshold: int) -> np.ndarray:
        """Count each id in order; ``out[i]`` is True where that occurrence admitted it."""
        out = np.empty(ids.shape[0], dtype=np.bool_)
        _observe_many(self.counts, self.seed, ids, threshold, out)
        return out

    def forget(self, ids: np.ndarray, amount: int) -> None:
        """Lower the counters of ``ids`` by ``amount`` (not below 0): evicted ids start counting again."""
        _forget_many(self.counts, self.seed, ids, amount)

    def estimate(self, ids: np.ndarray) -> np.ndarray:
        """Current (over-)estimate of each id's count (since its last eviction, if any)."""
        out = np.empty(ids.shape[0], dtype=np.int64)
        _estimate_many(self.counts, self.seed, ids, out)
        return out
