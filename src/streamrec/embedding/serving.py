"""Serving replicas of embedding tables: vectors only, updated by deltas, read by many threads.

A serving table has the same cuckoo index and row layout as a training table but no optimizer
state, no admission and no timestamps: it answers ``lookup`` exactly as the training table did at
the moment the applied deltas were exported (same lookup kernel, same float32 vectors).

Concurrency (why a readers–writer lock): lookups run in a Numba kernel that releases the GIL,
so several request threads really read at once; a delta apply may move keys inside the index
(cuckoo kicks), grow the arrays, and rewrite rows, none of which a reader may observe half done.
Readers take the lock shared; the writer takes it exclusively per chunk of ``APPLY_CHUNK`` ids
and writes whole rows inside a chunk, so each row a reader sees is wholly old or wholly new, and
readers are never blocked for longer than one chunk. Writers are preferred so a stream of
lookups cannot starve delta application.

What is safe: any number of threads calling ``lookup``/``__len__``/``export_full`` while one
thread calls ``apply``. Two threads applying deltas to the same table concurrently are
serialized by the lock but their relative order is not defined — apply deltas in export order
from one thread.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from numba import njit

from streamrec.embedding.cuckoo import CuckooIndex, aligned_full, find_position, insert_new, row_at
from streamrec.embedding.delta import CollectionDelta, TableDelta
from streamrec.embedding.table import as_ids, take_row
from streamrec.errors import InvalidInputError, UnknownSlotError

APPLY_CHUNK = 16384
_DONE, _NEED_ROWS, _NEED_GROW = 0, 1, 2


class RWLock:
    """A writer-preferring readers–writer lock (``with lock.read():`` / ``with lock.write():``)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


@njit(cache=True)
def _upsert(keys, rows, n_buckets, seed1, seed2, rng, weights, free_rows, state, ids, vectors, start, stop):
    """Write ``vectors[i]`` as the row of ``ids[i]`` for i in [start, stop), inserting new ids.

    ``state`` = [free_count, high_water, row_capacity, index_size]. Returns like the training
    admission kernel: (status, i, homeless_key, homeless_row).
    """
    dim = weights.shape[1]
    for i in range(start, stop):
        p = find_position(keys, rows, n_buckets, seed1, seed2, ids[i])
        if p >= 0:
            r = rows[row_at(p)]
            for d in range(dim):
                weights[r, d] = vectors[i, d]
            continue
        if state[0] == 0 and state[1] >= state[2]:
            return _NEED_ROWS, i, np.int64(0), np.int32(-1)
        r = take_row(free_rows, state)
        for d in range(dim):
            weights[r, d] = vectors[i, d]
        state[3] += 1
        ok, hk, hr = insert_new(keys, rows, n_buckets, seed1, seed2, ids[i], r, rng)
        if not ok:
            return _NEED_GROW, i, hk, hr
    return _DONE, stop, np.int64(0), np.int32(-1)


class ServingTable:
    """A read-mostly replica of one slot's table.

    Examples
    --------
    >>> table = ServingTable("item", dim=2)
    >>> delta = TableDelta("item", np.array([7], dtype=np.int64), np.array([[0.5, 1.0]], np.float32),
    ...                    np.empty(0, dtype=np.int64))
    >>> table.apply(delta)
    >>> table.lookup(np.array([7, 8])).tolist()
    [[0.5, 1.0], [0.0, 0.0]]
    """

    def __init__(self, slot: str, dim: int, capacity: int = 1024, seed: int = 0) -> None:
        self.slot = slot
        self.dim = dim
        self.default = np.zeros(dim, dtype=np.float32)
        self.index = CuckooIndex(capacity, seed=seed)
        self._weights = aligned_full((capacity, dim), 0, np.float32)
        self._free = np.empty(0, dtype=np.int32)
        self._alloc = np.array([0, 0, capacity, 0], dtype=np.int64)
        self.lock = RWLock()
        self.applied = 0  # deltas applied
        # ids this replica gained (absent before a delta, present after) and lost, over its life;
        # an id evicted and re-admitted within one delta is neither (it never leaves the replica)
        self.admitted = 0
        self.evicted = 0

    def __len__(self) -> int:
        return self.index.size

    def lookup(self, ids: object) -> np.ndarray:
        """Vectors of ``ids`` (float32 [n, dim]); absent ids get the default vector. Thread-safe."""
        ids = as_ids(ids)
        with self.lock.read():
            return self.index.gather(ids, self._weights, self.default)

    def check(self, delta: TableDelta) -> None:
        """Raise :class:`InvalidInputError` if ``delta`` cannot apply to this table."""
        if delta.slot != self.slot:
            raise InvalidInputError("delta.slot", delta.slot, f"this table serves slot {self.slot!r}")
        if len(delta.ids) and delta.dim != self.dim:
            raise InvalidInputError("delta.vectors", delta.vectors.shape, f"slot {self.slot!r} has dim {self.dim}")
        if not np.isfinite(delta.vectors).all():
            raise InvalidInputError("delta.vectors", "non-finite values", "a delta must hold finite vectors")

    def apply(self, delta: TableDelta) -> None:
        """Apply one delta: evictions, then upserts, in chunks under the write lock."""
        self.check(delta)
        evicted = delta.evicted
        if len(evicted) and len(delta.ids):
            # An id evicted and re-admitted since the last export is simply overwritten below, so
            # a reader sees its old row, then its new one, never the default vector in between.
            evicted = evicted[~np.isin(evicted, delta.ids)]
        before = self.index.size
        for lo in range(0, len(evicted), APPLY_CHUNK):
            with self.lock.write():
                self._delete(evicted[lo : lo + APPLY_CHUNK])
        after_delete = self.index.size
        ids = np.ascontiguousarray(delta.ids)
        vectors = np.ascontiguousarray(delta.vectors)
        for lo in range(0, len(ids), APPLY_CHUNK):
            with self.lock.write():
                self._upsert(ids, vectors, lo, min(lo + APPLY_CHUNK, len(ids)))
        self.evicted += before - after_delete
        self.admitted += self.index.size - after_delete
        self.applied += 1

    def _delete(self, ids: np.ndarray) -> None:
        freed = self.index.delete(ids)
        if len(freed):
            free_count = int(self._alloc[0])
            grown = np.empty(free_count + len(freed), dtype=np.int32)
            grown[:free_count] = self._free[:free_count]
            grown[free_count:] = freed
            self._free = grown
            self._alloc[0] = len(grown)
            self._alloc[3] = self.index.size

    def _upsert(self, ids: np.ndarray, vectors: np.ndarray, start: int, stop: int) -> None:
        self._alloc[3] = self.index.size
        while start < stop:
            ix = self.index
            status, i, hk, hr = _upsert(
                ix.keys, ix.rows, ix.n_buckets, ix.seed1, ix.seed2, ix._rng,
                self._weights, self._free, self._alloc, ids, vectors, start, stop,
            )  # fmt: skip
            ix.size = int(self._alloc[3])
            if status == _DONE:
                return
            if status == _NEED_ROWS:
                capacity = max(int(self._alloc[2] * 1.5) + 16, int(self._alloc[2]) + stop - i)
                weights = aligned_full((capacity, self.dim), 0, np.float32)
                weights[: int(self._alloc[1])] = self._weights[: int(self._alloc[1])]
                self._weights = weights
                self._alloc[2] = capacity
                start = i
            else:
                ix.grow(homeless=(int(hk), int(hr)))
                start = i + 1

    def export_full(self) -> TableDelta:
        """Every id and vector this replica holds."""
        with self.lock.read():
            ids, rows = self.index.items()
            return TableDelta(self.slot, ids, self._weights[rows], np.empty(0, dtype=np.int64))


class ServingCollection:
    """Serving replicas of every slot of a collection; apply :class:`CollectionDelta` objects.

    Build one from a training collection with ``EmbeddingCollection.serving_replica()`` (a full
    copy), then keep it current with ``apply(training.export_delta())``.
    """

    def __init__(self, dims: dict[str, int], pooling: dict[str, str] | None = None) -> None:
        self.tables = {slot: ServingTable(slot, dim) for slot, dim in dims.items()}
        self.pooling = dict(pooling or dict.fromkeys(dims, "sum"))

    def __getitem__(self, slot: str) -> ServingTable:
        try:
            return self.tables[slot]
        except KeyError:
            raise UnknownSlotError(slot, list(self.tables)) from None

    def lookup(self, slot: str, ids: object) -> np.ndarray:
        return self[slot].lookup(ids)

    def stats(self) -> dict[str, dict[str, int]]:
        """Per slot: ids held, and ids admitted and evicted by the deltas applied so far."""
        return {slot: {"ids": len(t), "admitted": t.admitted, "evicted": t.evicted} for slot, t in self.tables.items()}

    def apply(self, delta: CollectionDelta) -> None:
        """Apply every slot's delta (every part is checked before anything changes)."""
        for slot, table_delta in delta.tables.items():
            self[slot].check(table_delta)
        for slot, table_delta in delta.tables.items():
            self.tables[slot].apply(table_delta)
