"""Initial values of new rows, a pure function of (seed, slot, id).

A row's first vector depends only on the table's seed and the id, never on the order in which
ids arrived or on what the random generator did before. So a replay, a restored snapshot, or a
second trainer admitting the same id produce the same row, and an evicted id that comes back
starts from the same point. Values come from a counter-based generator (murmur3's finalizer over
``seed ^ id`` and the coordinate), mapped to uniform [0, 1) with 24-bit resolution, and to
normal by Box–Muller. The kernel runs per new row, in Numba.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from streamrec.embedding.config import InitializerConfig, Normal, Uniform, Zeros
from streamrec.embedding.cuckoo import mix64

_KIND_ZEROS, _KIND_UNIFORM, _KIND_NORMAL = 0, 1, 2
_INV24 = 1.0 / (1 << 24)
_S40 = np.uint64(40)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@njit(inline="always")
def _unit(seed, key, counter):
    """A uniform float in [0, 1) from (seed, key, counter): 24 random bits."""
    h = mix64(mix64(np.uint64(key) ^ seed) + np.uint64(counter + 1) * _GOLDEN)
    return np.float64(h >> _S40) * _INV24


@njit(cache=True)
def init_rows(weights, rows, ids, kind, a, b, seed):
    """Fill ``weights[rows[i]]`` with the initial vector of ``ids[i]``.

    kind 0: zeros; 1: uniform [a, b); 2: normal(mean=a, std=b).
    """
    dim = weights.shape[1]
    for i in range(rows.shape[0]):
        r = rows[i]
        key = ids[i]
        if kind == 0:
            for d in range(dim):
                weights[r, d] = 0.0
        elif kind == 1:
            for d in range(dim):
                weights[r, d] = a + (b - a) * _unit(seed, key, d)
        else:
            for d in range(dim):
                u1 = _unit(seed, key, 2 * d) + 0.5 * _INV24  # in (0, 1): log is finite
                u2 = _unit(seed, key, 2 * d + 1)
                weights[r, d] = a + b * np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def initializer_params(config: InitializerConfig) -> tuple[int, float, float]:
    """(kind, a, b) arguments of :func:`init_rows` for an initializer config."""
    if isinstance(config, Zeros):
        return _KIND_ZEROS, 0.0, 0.0
    if isinstance(config, Uniform):
        return _KIND_UNIFORM, config.low, config.high
    if isinstance(config, Normal):
        return _KIND_NORMAL, config.mean, config.std
    raise TypeError(f"unknown initializer {config!r}")


def initial_vectors(config: InitializerConfig, ids: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """The initial vectors a table with this config and seed gives ``ids`` (for references/tests)."""
    out = np.empty((ids.shape[0], dim), dtype=np.float32)
    kind, a, b = initializer_params(config)
    init_rows(out, np.arange(ids.shape[0], dtype=np.int64), ids.astype(np.int64), kind, a, b, np.uint64(seed))
    return out
