"""Admission filter: a count-min sketch that decides when an id has been seen often enough.

Monolith only gives a row to ids seen ``admit_after`` times: most ids in a recommendation stream
appear once or twice and would only dilute memory. Counting every candidate id exactly would
cost as much memory as the table we are trying to protect, so occurrences are counted in a
fixed-size count-min sketch (``depth`` rows of ``width`` saturating uint8 counters):

* *Conservative update*: an occurrence raises only the counters that equal the current minimum,
  which keeps over-counts (and so false admissions) far below plain count-min.
* *Estimates never undercount*: an id is never admitted late because of the sketch; it can only be
  admitted early (a false admission) when all its ``depth`` counters were inflated by others.
* *Admission subtracts*: when an id is admitted its counters drop by ``admit_after``, so the
  sketch does not fill up with ids that already have rows, and an id that is later evicted must
  be seen ``admit_after`` times again before it comes back.

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
    """Count one occurrence of ``key``; True (and its counters lowered) once it reaches threshold."""
    depth, width = counts.shape
    estimate = 255
    for r in range(depth):
        c = counts[r, _cell(key, seed, r, width)]
        if c < estimate:
            estimate = c
    new = estimate + 1 if estimate < 255 else 255
    admitted = new >= threshold
    for r in range(depth):
        j = _cell(key, seed, r, width)
        c = counts[r, j]
        if admitted:
            counts[r, j] = c - threshold if c >= threshold else 0
        elif c < new:
            counts[r, j] = new
    return admitted


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


class CountMinSketch:
    """Saturating count-min sketch with conservative update, ``depth * width`` bytes.

    Examples
    --------
    >>> sketch = CountMinSketch(width=1024, depth=4, seed=7)
    >>> ids = np.array([5, 5, 9, 5], dtype=np.int64)
    >>> sketch.observe(ids, threshold=3).tolist()   # the third 5 is admitted
    [False, False, False, True]
    >>> sketch.estimate(np.array([5, 9, 11], dtype=np.int64)).tolist()
    [0, 1, 0]
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

    def estimate(self, ids: np.ndarray) -> np.ndarray:
        """Current (over-)estimate of each id's count since its last admission."""
        out = np.empty(ids.shape[0], dtype=np.int64)
        _estimate_many(self.counts, self.seed, ids, out)
        return out
