"""The training table of one slot: collisionless rows with admission, expiry and optimizer state.

Layout (why): the :class:`~streamrec.embedding.cuckoo.CuckooIndex` maps ids to row numbers;
rows live in dense float32 arrays (``weights`` and one array per optimizer state) so a batch's
rows gather and scatter with single torch ops. Per row the table also keeps ``last_update``
(uint32 seconds of event time, 4 bytes) and a ``dirty`` byte for delta export. Rows freed by
expiry go to a free list and are reused before the arrays grow (x1.5).

Overhead per stored id beyond its vector and optimizer state is therefore the index's 12 bytes
per position divided by its load (0.63–0.99) plus 5 bytes: about 17–24 bytes.

One batch of training goes through:

1. :meth:`EmbeddingTable.admit` (per-id Numba kernel): ids with a row get their ``last_update``
   raised to ``now``; the others are counted in the admission sketch and get a row (initialized
   from (seed, id)) once seen ``admit_after`` times. Returns each id's row, -1 if not admitted.
2. The model computes a loss; the module collects one summed gradient per touched row.
3. :meth:`EmbeddingTable.apply_gradients` checks the gradient (shape, finite) *before* changing
   anything, then runs the slot's row optimizer and marks the rows dirty.

Thread safety: a training table is owned by one trainer thread. Serving replicas are
:class:`~streamrec.embedding.serving.ServingTable`, which are safe for concurrent readers.
"""

from __future__ import annotations

import zlib
from dataclasses import astuple, dataclass

import numpy as np
import torch
from numba import njit

from streamrec.embedding.admission import CountMinSketch, sketch_observe
from streamrec.embedding.config import SlotConfig
from streamrec.embedding.cuckoo import (
    BUCKET,
    STRIDE,
    CuckooIndex,
    IndexFloodError,
    aligned_full,
    find_position,
    insert_new,
    py_mix64,
    row_at,
)
from streamrec.embedding.delta import TableDelta
from streamrec.embedding.initializers import init_rows, initializer_params
from streamrec.embedding.optimizers import make_optimizer
from streamrec.errors import InvalidInputError, NonFiniteGradientError

_DONE, _NEED_ROWS, _NEED_GROW = 0, 1, 2
_MAX_TIME = 2**32 - 1


@njit(inline="always")
def take_row(free_rows, state):
    """A row for a new id: the last freed one, else the next never used (``state`` =
    [free_count, high_water, row_capacity, index_size]; the caller checked one is available)."""
    if state[0] > 0:
        state[0] -= 1
        return free_rows[state[0]]
    r = np.int32(state[1])
    state[1] += 1
    return r


@njit(cache=True)
def _admit_batch(
    keys, rows, n_buckets, seed1, seed2, rng,
    counts, sketch_seed, threshold,
    last_update, now,
    free_rows, state,  # state: [free_count, high_water, row_capacity, index_size]
    ids, out, new_ids, new_rows, n_new, start,
):  # fmt: skip
    """Admission and row lookup for ``ids[start:]``; see :meth:`EmbeddingTable.admit`.

    Returns ``(status, i, homeless_key, homeless_row)``: ``_DONE``; ``_NEED_ROWS`` when id ``i``
    needs a row and none is free (nothing done for ``i``); ``_NEED_GROW`` when placing id ``i``
    left a homeless pair (``i`` is done, the index must grow).
    """
    for i in range(start, ids.shape[0]):
        key = ids[i]
        p = find_position(keys, rows, n_buckets, seed1, seed2, key)
        if p >= 0:
            r = rows[row_at(p)]
            out[i] = r
            if last_update[r] < now:
                last_update[r] = now
            continue
        if state[0] == 0 and state[1] >= state[2]:
            return _NEED_ROWS, i, np.int64(0), np.int32(-1)
        if threshold > 1 and not sketch_observe(counts, sketch_seed, key, threshold):
            out[i] = -1
            continue
        r = take_row(free_rows, state)
        last_update[r] = now
        out[i] = r
        new_ids[n_new[0]] = key
        new_rows[n_new[0]] = r
        n_new[0] += 1
        state[3] += 1
        ok, hk, hr = insert_new(keys, rows, n_buckets, seed1, seed2, key, r, rng)
        if not ok:
            return _NEED_GROW, i, hk, hr
    return _DONE, ids.shape[0], np.int64(0), np.int32(-1)


@njit(cache=True)
def _collect_dirty(keys, rows, dirty, out_ids, out_rows):
    n = 0
    for b in range(keys.shape[0] // STRIDE):
        for j in range(BUCKET):
            p = b * STRIDE + j
            r = rows[row_at(p)]
            if r >= 0 and dirty[r]:
                dirty[r] = 0
                out_ids[n] = keys[p]
                out_rows[n] = r
                n += 1
    return n


@njit(cache=True)
def _evict_older(keys, rows, last_update, cutoff, out_ids, out_rows):
    n = 0
    for b in range(keys.shape[0] // STRIDE):
        for j in range(BUCKET):
            p = b * STRIDE + j
            r = rows[row_at(p)]
            if r >= 0 and last_update[r] < cutoff:
                out_ids[n] = keys[p]
                out_rows[n] = r
                rows[row_at(p)] = -1
                n += 1
    return n


def as_ids(ids: object, field: str = "ids") -> np.ndarray:
    """A 1-D int64 numpy view/copy of ``ids`` (numpy array, torch tensor or list of ints).

    Raises :class:`InvalidInputError` naming ``field`` for floats, bools, uint64, other shapes.
    """
    if isinstance(ids, torch.Tensor):
        if ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            raise InvalidInputError(field, f"tensor of {ids.dtype}", "ids must be an integer tensor (int64)")
        ids = ids.detach().cpu().numpy()
    elif not isinstance(ids, np.ndarray):
        try:
            ids = np.asarray(ids)
        except (TypeError, ValueError, OverflowError) as exc:
            raise InvalidInputError(field, ids, f"not an array of int64 ids ({exc})") from None
        if ids.size == 0:
            ids = ids.astype(np.int64)
    if ids.dtype.kind not in "iu" or ids.dtype == np.uint64:
        raise InvalidInputError(field, f"array of {ids.dtype}", "ids must be integers that fit int64")
    if ids.ndim != 1:
        raise InvalidInputError(field, f"shape {ids.shape}", "ids must be 1-D")
    return np.ascontiguousarray(ids, dtype=np.int64)


def check_time(now: float, field: str = "now") -> np.uint32:
    """Event time in whole seconds as stored per row (uint32: 1970..2106)."""
    if not isinstance(now, int | float | np.integer | np.floating) or isinstance(now, bool):
        raise InvalidInputError(field, now, "event time must be a number of seconds")
    if not 0 <= now <= _MAX_TIME:
        raise InvalidInputError(field, now, f"event time must be finite seconds in [0, {_MAX_TIME}]")
    return np.uint32(int(now))


def table_seed(collection_seed: int, slot: str) -> int:
    """The seed of one slot's table: distinct per slot, fixed by the collection seed."""
    return py_mix64((collection_seed ^ (zlib.crc32(slot.encode()) << 17)) & ((1 << 64) - 1))


@dataclass
class TableStats:
    """Counters of what the table did since it was created."""

    admitted: int = 0  # ids that got a row
    evicted: int = 0  # rows removed by expiry
    unadmitted_lookups: int = 0  # training occurrences answered with the default vector
    flooded: int = 0  # admissions refused because the index could not place the id (IndexFloodError)


class EmbeddingTable:
    """One slot's training table.

    Parameters
    ----------
    slot:
        The slot's name (used in errors and deltas).
    config:
        dim, admission, ttl, optimizer and initializer of the slot.
    seed:
        The collection seed; with the slot name it fixes hashing and initial vectors.

    Examples
    --------
    >>> from streamrec.embedding.config import SlotConfig, SGD, Zeros
    >>> table = EmbeddingTable("item", SlotConfig(dim=2, admit_after=2, optimizer=SGD(lr=0.5), initializer=Zeros()))
    >>> table.admit(np.array([7, 7, 9]), now=100).tolist()   # 7 seen twice: admitted; 9 not yet
    [0, 0, -1]
    >>> table.apply_gradients(torch.tensor([0]), torch.tensor([[1.0, -2.0]]))
    >>> table.lookup(np.array([7, 9])).tolist()
    [[-0.5, 1.0], [0.0, 0.0]]
    """

    def __init__(self, slot: str, config: SlotConfig, seed: int = 0) -> None:
        self.slot = slot
        self.config = config
        self.dim = config.dim
        self.seed = np.uint64(table_seed(seed, slot))  # initial vectors and the sketch: reproducible
        self.index = CuckooIndex(config.capacity, seed=int(self.seed))  # its hash seeds: secret, per table
        self.sketch = (
            CountMinSketch(config.sketch_width, config.sketch_depth, seed=int(self.seed) ^ 0x5EED)
            if config.admit_after > 1
            else None
        )
        self.optimizer = make_optimizer(config.optimizer)
        self.default = np.zeros(self.dim, dtype=np.float32)
        self.step = 0
        self.stats = TableStats()
        self._init = initializer_params(config.initializer)
        capacity = config.capacity
        self._weights = aligned_full((capacity, self.dim), 0, np.float32)
        self._state = {
            name: aligned_full((capacity, self.dim), self.optimizer.initial_state(name), np.float32)
            for name in self.optimizer.state_names
        }
        self._last_update = np.zeros(capacity, dtype=np.uint32)
        self._dirty = np.zeros(capacity, dtype=np.uint8)
        self._free = np.empty(0, dtype=np.int32)
        self._alloc = np.array([0, 0, capacity, 0], dtype=np.int64)  # free_count, high_water, capacity, size
        self._evicted: list[np.ndarray] = []
        self._views()

    # -- sizes ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.index.size

    @property
    def row_capacity(self) -> int:
        return int(self._alloc[2])

    @property
    def weight(self) -> torch.Tensor:
        """All rows as a tensor sharing memory with the table (rows beyond ``len`` are unused)."""
        return self._weight_t

    def memory(self) -> dict[str, int]:
        """Bytes held, split into vectors, optimizer state and overhead (index, metadata, sketch)."""
        rows = self.row_capacity
        return {
            "ids": len(self),
            "vector_bytes": rows * self.dim * 4,
            "optimizer_bytes": rows * self.dim * 4 * len(self._state),
            "index_bytes": self.index.nbytes,
            "row_metadata_bytes": self._last_update.nbytes + self._dirty.nbytes + self._free.nbytes,
            "sketch_bytes": self.sketch.nbytes if self.sketch is not None else 0,
        }

    # -- the training path ---------------------------------------------------------------------
    def admit(self, ids: object, now: float) -> np.ndarray:
        """Rows of ``ids`` for a training step, admitting ids that reach ``admit_after``.

        Every occurrence of an id counts towards admission, in order; the admission of the batch
        is settled first, so all occurrences of an id admitted by this batch get its row. Rows of
        present ids have ``last_update`` raised to ``now``. Returns int32 rows, -1 = not admitted.
        """
        ids = as_ids(ids)
        t = check_time(now)
        out = np.empty(ids.shape[0], dtype=np.int32)
        new_ids = np.empty(ids.shape[0], dtype=np.int64)
        new_rows = np.empty(ids.shape[0], dtype=np.int32)
        n_new = np.zeros(1, dtype=np.int64)
        counts = self.sketch.counts if self.sketch is not None else np.zeros((1, 1), np.uint8)
        sketch_seed = self.sketch.seed if self.sketch is not None else np.uint64(0)
        start = 0
        self._alloc[3] = self.index.size
        while True:
            ix = self.index
            status, i, hk, hr = _admit_batch(
                ix.keys, ix.rows, ix.n_buckets, ix.seed1, ix.seed2, ix._rng,
                counts, sketch_seed, self.config.admit_after,
                self._last_update, t,
                self._free, self._alloc,
                ids, out, new_ids, new_rows, n_new, start,
            )  # fmt: skip
            ix.size = int(self._alloc[3])
            if status == _DONE:
                break
            if status == _NEED_ROWS:
                self._grow_rows(self.row_capacity + 1)
                start = i
            else:
                try:
                    ix.grow(homeless=(int(hk), int(hr)), newest=int(ids[i]))
                except IndexFloodError as exc:
                    self._refuse_flooded(exc, ids[: i + 1], out, new_ids, new_rows, n_new)
                start = i + 1
        n = int(n_new[0])
        if n:
            self._initialize(new_ids[:n], new_rows[:n])
            self.stats.admitted += n
            missing = out < 0
            if missing.any():  # admitted later in this batch: give earlier occurrences the row
                out[missing] = self.index.lookup(ids[missing])
        self.stats.unadmitted_lookups += int(np.count_nonzero(out < 0))
        return out

    def _refuse_flooded(
        self, exc: IndexFloodError, seen: np.ndarray, out: np.ndarray, new_ids: np.ndarray, new_rows: np.ndarray,
        n_new: np.ndarray,
    ) -> None:  # fmt: skip
        """The index could not place ``exc.key`` (a hash flood; see ``cuckoo.py``): that id gets no
        row, as if not admitted, and training goes on. Its row is freed; were it an id admitted
        before this batch (only when the index could not put it back), it is evicted like an
        expired one, so replicas drop it too."""
        key, row = exc.key, exc.row
        self.stats.flooded += 1
        self._alloc[3] = self.index.size
        out[: len(seen)][seen == key] = -1
        n = int(n_new[0])
        fresh = new_ids[:n] == key
        if fresh.any():
            keep = ~fresh
            m = int(keep.sum())
            new_ids[:m], new_rows[:m] = new_ids[:n][keep], new_rows[:n][keep]
            n_new[0] = m
        else:
            self._dirty[row] = 0
            self._evicted.append(np.array([key], dtype=np.int64))
            self.stats.evicted += 1
            if self.sketch is not None:
                self.sketch.forget(np.array([key], dtype=np.int64), self.config.admit_after)
        free_count = int(self._alloc[0])
        if free_count + 1 > len(self._free):
            grown = np.empty(max(free_count + 1, 2 * len(self._free)), dtype=np.int32)
            grown[:free_count] = self._free[:free_count]
            self._free = grown
        self._free[free_count] = row
        self._alloc[0] = free_count + 1

    def _initialize(self, ids: np.ndarray, rows: np.ndarray) -> None:
        kind, a, b = self._init
        init_rows(self._weights, rows.astype(np.int64), ids, kind, a, b, self.seed)
        for name, array in self._state.items():
            array[rows] = self.optimizer.initial_state(name)
        self._dirty[rows] = 1

    def apply_gradients(self, rows: torch.Tensor, grads: torch.Tensor) -> None:
        """Apply one optimizer step to ``rows`` (distinct, int64) with per-row summed ``grads``.

        Checks come first: a bad shape or a NaN/inf gradient raises and changes nothing.
        """
        self.check_gradients(rows, grads)
        if rows.numel() == 0:
            return
        self.step += 1
        self.optimizer.apply(self._weight_t, self._state_t, rows, grads.to(torch.float32), self.step)
        self._dirty[rows.numpy()] = 1

    def check_gradients(self, rows: torch.Tensor, grads: torch.Tensor) -> None:
        """Raise :class:`InvalidInputError` (or ``NonFiniteGradientError``) for a bad update."""
        if not isinstance(rows, torch.Tensor) or rows.dtype != torch.int64 or rows.dim() != 1:
            raise InvalidInputError(f"{self.slot}.rows", rows, "rows must be a 1-D int64 tensor")
        if not isinstance(grads, torch.Tensor) or not grads.is_floating_point():
            raise InvalidInputError(f"{self.slot}.grads", type(grads).__name__, "gradient must be a float tensor")
        if tuple(grads.shape) != (rows.numel(), self.dim):
            raise InvalidInputError(
                f"{self.slot}.grads",
                tuple(grads.shape),
                f"gradient must have shape ({rows.numel()}, {self.dim})",
            )
        if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= self._alloc[1]):
            raise InvalidInputError(f"{self.slot}.rows", rows, "rows must be rows of this table")
        if not bool(torch.isfinite(grads).all()):
            bad = int((~torch.isfinite(grads)).any(dim=1).nonzero()[0, 0])
            raise NonFiniteGradientError(
                f"{self.slot}.grads",
                grads[bad].tolist(),
                "gradient holds NaN or infinity; nothing was updated",
            )

    # -- the read path -------------------------------------------------------------------------
    def lookup(self, ids: object) -> np.ndarray:
        """Vectors of ``ids`` (float32 [n, dim]); absent ids get the default vector. Read-only."""
        ids = as_ids(ids)
        return self.index.gather(ids, self._weights, self.default)

    def rows_of(self, ids: object) -> np.ndarray:
        """Rows of ``ids`` without admitting or touching them (-1 = absent)."""
        return self.index.lookup(as_ids(ids))

    # -- expiry and export ---------------------------------------------------------------------
    def evict_expired(self, now: float) -> int:
        """Remove rows idle for longer than the slot's TTL at event time ``now``; returns how many.

        Their rows are reused by later admissions; their ids must pass admission again (the
        sketch forgets their counts now) and are reported in the next delta.
        """
        t = int(check_time(now))
        if self.config.ttl is None:
            return 0
        cutoff = t - int(self.config.ttl)
        if cutoff <= 0:
            return 0
        ids = np.empty(len(self), dtype=np.int64)
        rows = np.empty(len(self), dtype=np.int32)
        n = _evict_older(self.index.keys, self.index.rows, self._last_update, np.uint32(cutoff), ids, rows)
        if n:
            self.index.size -= n
            self._dirty[rows[:n]] = 0
            free_count = int(self._alloc[0])
            if free_count + n > len(self._free):
                grown = np.empty(max(free_count + n, 2 * len(self._free)), dtype=np.int32)
                grown[:free_count] = self._free[:free_count]
                self._free = grown
            self._free[free_count : free_count + n] = rows[:n]
            self._alloc[0] = free_count + n
            self._evicted.append(ids[:n].copy())
            self.stats.evicted += n
            if self.sketch is not None:
                self.sketch.forget(ids[:n], self.config.admit_after)
        return n

    def export_delta(self) -> TableDelta:
        """Ids and vectors changed, and ids evicted, since the previous export (clears both)."""
        ids = np.empty(len(self), dtype=np.int64)
        rows = np.empty(len(self), dtype=np.int32)
        n = _collect_dirty(self.index.keys, self.index.rows, self._dirty, ids, rows)
        evicted = np.concatenate(self._evicted) if self._evicted else np.empty(0, dtype=np.int64)
        self._evicted = []
        return TableDelta(self.slot, ids[:n], self._weights[rows[:n]], evicted)

    def export_full(self) -> TableDelta:
        """Every id and vector (to start a new serving replica); does not clear dirty rows."""
        ids, rows = self.index.items()
        return TableDelta(self.slot, ids, self._weights[rows], np.empty(0, dtype=np.int64))

    # -- growth --------------------------------------------------------------------------------
    def _grow_rows(self, needed: int) -> None:
        capacity = max(needed, int(self.row_capacity * 1.5) + 16)
        if capacity > 2**31 - 1:
            raise MemoryError(f"slot {self.slot}: more than 2**31 rows")
        used = int(self._alloc[1])

        def grown(array: np.ndarray, fill: float = 0) -> np.ndarray:
            new = aligned_full((capacity, *array.shape[1:]), fill, array.dtype)
            new[:used] = array[:used]
            return new

        self._weights = grown(self._weights)
        self._state = {k: grown(v, self.optimizer.initial_state(k)) for k, v in self._state.items()}
        self._last_update = grown(self._last_update)
        self._dirty = grown(self._dirty)
        self._alloc[2] = capacity
        self._views()

    def _views(self) -> None:
        self._weight_t = torch.from_numpy(self._weights)
        self._state_t = {k: torch.from_numpy(v) for k, v in self._state.items()}

    # -- snapshots -----------------------------------------------------------------------------
    def state_arrays(self) -> dict[str, np.ndarray]:
        """Everything needed to continue exactly where this table is (see ``snapshot.py``)."""
        used = int(self._alloc[1])
        arrays = {f"index.{k}": v for k, v in self.index.state().items()}
        arrays.update(
            {
                "weights": self._weights[:used],
                "last_update": self._last_update[:used],
                "dirty": self._dirty[:used],
                "free": self._free[: int(self._alloc[0])],
                "alloc": self._alloc,
                "counters": np.array([self.step, *astuple(self.stats)], np.int64),
                "evicted": np.concatenate(self._evicted) if self._evicted else np.empty(0, dtype=np.int64),
            }
        )
        arrays.update({f"state.{k}": v[:used] for k, v in self._state.items()})
        if self.sketch is not None:
            arrays["sketch"] = self.sketch.counts
        return arrays

    @classmethod
    def from_state_arrays(
        cls, slot: str, config: SlotConfig, seed: int, arrays: dict[str, np.ndarray]
    ) -> EmbeddingTable:
        table = cls(slot, SlotConfig(**{**_config_fields(config), "capacity": 1}), seed)
        table.config = config
        table.index = CuckooIndex.from_state(
            {k.removeprefix("index."): v for k, v in arrays.items() if k.startswith("index.")}
        )
        alloc = np.array(arrays["alloc"], dtype=np.int64)
        capacity, used = int(alloc[2]), int(alloc[1])

        def restored(name: str, dtype: type, fill: float = 0, dim: int | None = None) -> np.ndarray:
            shape = (capacity,) if dim is None else (capacity, dim)
            out = aligned_full(shape, fill, dtype)
            out[:used] = arrays[name]
            return out

        table._weights = restored("weights", np.float32, dim=table.dim)
        table._state = {
            k: restored(f"state.{k}", np.float32, table.optimizer.initial_state(k), table.dim)
            for k in table.optimizer.state_names
        }
        table._last_update = restored("last_update", np.uint32)
        table._dirty = restored("dirty", np.uint8)
        table._free = np.array(arrays["free"], dtype=np.int32)
        table._alloc = alloc
        counters = [int(x) for x in arrays["counters"]]  # four before ``flooded`` was counted
        table.step = counters[0]
        table.stats = TableStats(*counters[1:])
        evicted_ids = np.array(arrays["evicted"], dtype=np.int64)
        table._evicted = [evicted_ids] if len(evicted_ids) else []
        if table.sketch is not None:
            table.sketch.counts = np.array(arrays["sketch"], dtype=np.uint8)
        table._views()
        return table


def _config_fields(config: SlotConfig) -> dict:
    return {f: getattr(config, f) for f in config.__struct_fields__}
