"""Bucketized cuckoo hash index: int64 id -> row number, never two ids on one row.

Why this shape (Monolith's collisionless table):

* Two hash functions, ``BUCKET`` = 5 slots per bucket, and a bucket is exactly one 64-byte cache
  line: 5 int64 keys, then their 5 int32 row numbers (``STRIDE`` = 8 words). An id lives in one of
  its two buckets, so a lookup touches at most two cache lines before its row: O(1) worst case,
  unlike chaining or probing, and half the lines of separate key and row arrays. With 5-slot
  buckets a random-walk insert fills the index to ~0.98 before it fails, so memory is spent on
  ids, not on holes.
* ``keys`` is the int64 view of the buckets and ``rows`` the int32 view of the same memory; slot
  ``p = bucket * 8 + j`` keeps its key at ``keys[p]`` and its row at ``rows[row_at(p)]``, where -1
  marks an empty slot. Emptiness is *not* a reserved key value, so every int64 — 0, -1,
  INT64_MIN, INT64_MAX — is a storable id.
* Rows are separate from positions: a cuckoo kick moves 12 bytes of (key, row), never a vector
  and its optimizer state, and growth rehashes keys only.
* Buckets are chosen with murmur3's 64-bit finalizer (a bijection with full avalanche) on the id
  xor a per-index seed, then mapped to ``[0, n_buckets)`` by multiply-shift, so consecutive ids,
  multiples of 2**k and ids sharing low bits spread evenly, and the bucket count need not be a
  power of two (growth is x1.5, which keeps the load after growth near 0.63, not 0.48).
* When a random walk of ``MAX_KICKS`` displacements cannot place an id, the index grows: a new
  pair of arrays 1.5x larger, every (key, row) reinserted, nothing lost. The homeless pair the
  failed walk carried is handed back and reinserted too.
* The seeds are secret, per index (hash flooding, issue 13): with seeds every process shared, an
  attacker could compute ids that share *both* buckets (eleven do not fit two 5-slot buckets) for
  the seeds of each successive growth, and 209 ids grew an index from 0.75 MB to 1.66 GB at load
  0.0003. Each index now draws a random 128-bit key when it is created; its seeds are keyed
  BLAKE2b of a counter, so nobody outside the process can compute them, and a snapshot stores the
  key, so a restored index keeps its layout and draws the same seeds as the original would.
* And growth must be earned by load: a walk that fails below ``MIN_GROWTH_LOAD`` (0.5) is not a
  full index but an unlucky (or hostile) set of ids, so the index rehashes *in place* with fresh
  seeds instead of growing, up to ``MAX_REHASHES`` times; if no seeds place the id it raises
  :class:`IndexFloodError` naming it, holding everything it held before. Memory is therefore
  bounded by about twice what the ids need, whatever the ids are. Between 0.5 and ``GROW_LOAD``
  (0.9) fresh seeds are tried a few times before growing (small indexes fail walks at ~0.75 by
  bad luck alone); above it, the index is full and grows at once.

Every per-id operation is a Numba kernel over a whole batch; Python only decides when to grow.
"""

from __future__ import annotations

import hashlib
import secrets

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from streamrec.errors import IndexFloodError  # defined in streamrec.errors, re-exported here

BUCKET = 5  # slots per bucket
STRIDE = 8  # int64 words per bucket: 5 keys + 5 int32 rows (+ 1 spare) = one 64-byte line
MAX_KICKS = 500
GROWTH = 1.5
MIN_GROWTH_LOAD = 0.5  # below it a failed walk rehashes in place, never grows
GROW_LOAD = 0.9  # below it (and above MIN_GROWTH_LOAD) fresh seeds are tried before growing
REHASHES_BEFORE_GROWTH = 3
MAX_REHASHES = 8  # fresh seeds tried for one failed walk below MIN_GROWTH_LOAD before giving up

_M1 = np.uint64(0xFF51AFD7ED558CCD)
_M2 = np.uint64(0xC4CEB9FE1A85EC53)
_S33 = np.uint64(33)
_S32 = np.uint64(32)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


_MASK64 = (1 << 64) - 1


def py_mix64(x: int) -> int:
    """:func:`mix64` in plain Python, for seeds computed outside kernels."""
    x ^= x >> 33
    x = (x * 0xFF51AFD7ED558CCD) & _MASK64
    x ^= x >> 33
    x = (x * 0xC4CEB9FE1A85EC53) & _MASK64
    return x ^ (x >> 33)


@njit(inline="always")
def mix64(x):
    """murmur3 fmix64 on a uint64: a bijection whose output bits each depend on every input bit."""
    x ^= x >> _S33
    x *= _M1
    x ^= x >> _S33
    x *= _M2
    x ^= x >> _S33
    return x


@njit(inline="always")
def bucket_of(key, seed, n_buckets):
    """Bucket of ``key`` (int64) under ``seed`` among ``n_buckets`` (< 2**32) by multiply-shift."""
    h = mix64(np.uint64(key) ^ seed)
    return np.int64(((h >> _S32) * np.uint64(n_buckets)) >> _S32)


@njit(inline="always")
def row_at(p):
    """Index in the int32 view of the row number of slot ``p`` (same cache line as its key)."""
    return p + (p & ~7) + 10


@njit(inline="always")
def find_in(keys, rows, base1, base2, key):
    """Position of ``key`` given the first positions of its two buckets, or -1."""
    for j in range(BUCKET):
        p = base1 + j
        if keys[p] == key and rows[row_at(p)] >= 0:
            return p
    for j in range(BUCKET):
        p = base2 + j
        if keys[p] == key and rows[row_at(p)] >= 0:
            return p
    return -1


@njit(inline="always")
def find_position(keys, rows, n_buckets, seed1, seed2, key):
    """Position of ``key`` in the index, or -1."""
    return find_in(
        keys, rows, bucket_of(key, seed1, n_buckets) * STRIDE, bucket_of(key, seed2, n_buckets) * STRIDE, key
    )


@njit(inline="always")
def _place_in_bucket(keys, rows, bucket, key, row):
    base = bucket * STRIDE
    for j in range(BUCKET):
        r = row_at(base + j)
        if rows[r] < 0:
            keys[base + j] = key
            rows[r] = row
            return True
    return False


@njit(inline="always")
def _xorshift(state):
    x = state[0]
    x ^= x << np.uint64(13)
    x ^= x >> np.uint64(7)
    x ^= x << np.uint64(17)
    state[0] = x
    return x


@njit
def insert_new(keys, rows, n_buckets, seed1, seed2, key, row, rng):
    """Insert ``key`` (known to be absent) with ``row``.

    Returns ``(True, 0, -1)`` on success, or ``(False, homeless_key, homeless_row)`` when a random
    walk of ``MAX_KICKS`` displacements found no empty position; the homeless pair (possibly a
    different id than ``key``) is no longer in the index and must be reinserted after growing.
    """
    b1 = bucket_of(key, seed1, n_buckets)
    if _place_in_bucket(keys, rows, b1, key, row):
        return True, np.int64(0), np.int32(-1)
    b2 = bucket_of(key, seed2, n_buckets)
    if _place_in_bucket(keys, rows, b2, key, row):
        return True, np.int64(0), np.int32(-1)
    bucket = b1 if (_xorshift(rng) & np.uint64(1)) == 0 else b2
    for _ in range(MAX_KICKS):
        p = bucket * STRIDE + np.int64(_xorshift(rng) % np.uint64(BUCKET))
        victim_key = keys[p]
        victim_row = rows[row_at(p)]
        keys[p] = key
        rows[row_at(p)] = row
        key = victim_key
        row = victim_row
        v1 = bucket_of(key, seed1, n_buckets)
        alt = bucket_of(key, seed2, n_buckets) if v1 == bucket else v1
        if _place_in_bucket(keys, rows, alt, key, row):
            return True, np.int64(0), np.int32(-1)
        bucket = alt
    return False, key, row


@njit(cache=True)
def insert_batch(keys, rows, n_buckets, seed1, seed2, ids, new_rows, start, rng):
    """Insert ``ids[start:]`` (absent, distinct) with ``new_rows``.

    Returns ``(-1, 0, -1)`` when all are in, else ``(i, homeless_key, homeless_row)``: ids up to
    and including ``i`` were processed, but one pair is homeless and the index must grow.
    """
    for i in range(start, ids.shape[0]):
        ok, hk, hr = insert_new(keys, rows, n_buckets, seed1, seed2, ids[i], new_rows[i], rng)
        if not ok:
            return i, hk, hr
    return -1, np.int64(0), np.int32(-1)


@njit(nogil=True, cache=True)
def lookup_rows(keys, rows, n_buckets, seed1, seed2, ids, out):
    """``out[i]`` = row of ``ids[i]`` or -1. Per-id hot path (one or two bucket reads)."""
    for i in range(ids.shape[0]):
        p = find_position(keys, rows, n_buckets, seed1, seed2, ids[i])
        out[i] = rows[row_at(p)] if p >= 0 else -1


@intrinsic
def prefetch(typingctx, array, index):
    """Hint the CPU to fetch ``array[index]`` into cache (LLVM ``llvm.prefetch``, read, high locality)."""
    sig = types.void(array, index)

    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        array_struct = context.make_array(array_type)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, array_type, array_struct, [args[1]], wraparound=False)
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


_AHEAD_BUCKET = 24  # ids ahead whose buckets are being fetched
_AHEAD_ROW = 12  # ids ahead whose rows are being fetched


@njit(nogil=True, inline="always")
def _gather_range(keys, rows, n_buckets, seed1, seed2, ids, weights, flat, default, out, found, bases, lo, hi):
    """Probe and copy ids[lo:hi] as a three-stage software pipeline.

    A lookup is two dependent cache misses (bucket, then row) where a modulo-hashed table has one;
    out-of-order execution cannot overlap them across ids because the bucket scan branches on
    data. So the loop works on three ids at once: it prefetches both buckets of id ``i``, probes
    id ``i - 12`` (its buckets are now cached) and prefetches its row, and copies the row of id
    ``i - 24``.
    """
    dim = weights.shape[1]
    for i in range(lo, hi + _AHEAD_BUCKET):
        if i < hi:
            key = ids[i]
            b1 = bucket_of(key, seed1, n_buckets) * STRIDE
            b2 = bucket_of(key, seed2, n_buckets) * STRIDE
            bases[i, 0] = b1
            bases[i, 1] = b2
            prefetch(keys, b1)  # one line holds the bucket's keys and rows
            prefetch(keys, b2)
        k = i - _AHEAD_ROW
        if lo <= k < hi:
            p = find_in(keys, rows, bases[k, 0], bases[k, 1], ids[k])
            r = rows[row_at(p)] if p >= 0 else -1
            found[k] = r
            if r >= 0:
                prefetch(flat, r * dim)
        m = i - _AHEAD_BUCKET
        if lo <= m < hi:
            r = found[m]
            if r >= 0:
                for d in range(dim):
                    out[m, d] = weights[r, d]
            else:
                for d in range(dim):
                    out[m, d] = default[d]


_CHUNK = 4096
PARALLEL_MIN = 4 * _CHUNK


@njit(nogil=True, cache=True)
def lookup_gather(keys, rows, n_buckets, seed1, seed2, ids, weights, default, out):
    """``out[i, :]`` = vector of ``ids[i]``, or ``default`` if absent: probe and copy fused."""
    found = np.empty(ids.shape[0], dtype=np.int32)
    bases = np.empty((ids.shape[0], 2), dtype=np.int64)
    flat = weights.reshape(-1)
    _gather_range(keys, rows, n_buckets, seed1, seed2, ids, weights, flat, default, out, found, bases, 0, ids.shape[0])


@njit(nogil=True, cache=True, parallel=True)
def lookup_gather_parallel(keys, rows, n_buckets, seed1, seed2, ids, weights, default, out):
    """:func:`lookup_gather` split in chunks of 4096 ids over Numba's (thread-safe) OpenMP pool."""
    n = ids.shape[0]
    found = np.empty(n, dtype=np.int32)
    bases = np.empty((n, 2), dtype=np.int64)
    flat = weights.reshape(-1)
    for c in prange((n + _CHUNK - 1) // _CHUNK):
        _gather_range(
            keys,
            rows,
            n_buckets,
            seed1,
            seed2,
            ids,
            weights,
            flat,
            default,
            out,
            found,
            bases,
            c * _CHUNK,
            min(n, (c + 1) * _CHUNK),
        )


@njit(cache=True)
def rebuild(old_keys, old_rows, new_keys, new_rows, n_buckets, seed1, seed2, rng):
    """Reinsert every occupied (key, row) of the old arrays into empty new ones; False on failure."""
    for b in range(old_keys.shape[0] // STRIDE):
        for j in range(BUCKET):
            p = b * STRIDE + j
            r = old_rows[row_at(p)]
            if r >= 0:
                ok, _, _ = insert_new(new_keys, new_rows, n_buckets, seed1, seed2, old_keys[p], r, rng)
                if not ok:
                    return False
    return True


@njit(cache=True)
def delete_ids(keys, rows, n_buckets, seed1, seed2, ids, freed):
    """Remove ``ids``; ``freed[k]`` gets the rows released. Returns how many were present."""
    n = 0
    for i in range(ids.shape[0]):
        p = find_position(keys, rows, n_buckets, seed1, seed2, ids[i])
        if p >= 0:
            freed[n] = rows[row_at(p)]
            rows[row_at(p)] = -1
            n += 1
    return n


@njit(cache=True)
def occupied(keys, rows, out_ids, out_rows):
    """Copy every (id, row) held by the index into the outputs; returns the count."""
    n = 0
    for b in range(keys.shape[0] // STRIDE):
        for j in range(BUCKET):
            p = b * STRIDE + j
            r = rows[row_at(p)]
            if r >= 0:
                out_ids[n] = keys[p]
                out_rows[n] = r
                n += 1
    return n


CACHE_LINE = 64


def aligned_full(shape: int | tuple[int, ...], fill: float, dtype: np.dtype | type) -> np.ndarray:
    """An array filled with ``fill`` whose first byte starts a 64-byte cache line.

    NumPy's large arrays start 16 bytes into a line (the allocator's header), so a 64-byte row
    (dim 16, float32) would straddle two lines and cost two cache misses per lookup; measured,
    aligned rows make the lookup + gather ~25 % faster and far steadier.
    """
    dtype = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + CACHE_LINE, dtype=np.uint8)
    start = -raw.ctypes.data % CACHE_LINE
    out = raw[start : start + nbytes].view(dtype).reshape(shape)
    out.fill(fill)
    return out


def empty_buckets(n_buckets: int) -> np.ndarray:
    """``n_buckets`` empty buckets (rows -1) as a 64-byte-aligned int64 array, a bucket per cache line."""
    buckets = aligned_full(n_buckets * STRIDE, 0, np.int64)
    buckets.view(np.int32).reshape(n_buckets, 2 * STRIDE)[:, 10:] = -1
    return buckets


def _keyed_seed(key: bytes, counter: int) -> np.uint64:
    digest = hashlib.blake2b(counter.to_bytes(8, "little"), key=key, digest_size=8).digest()
    return np.uint64(int.from_bytes(digest, "little"))


class CuckooIndex:
    """The id -> row map of one table. Not thread-safe on its own; tables add the locking.

    Parameters
    ----------
    capacity:
        Number of ids to size the first arrays for (at ~0.9 load); the index grows past it.
    seed:
        Starts the counter the hash seeds are drawn from (with ``secret=False``, the seeds and
        the kick walk are a function of it alone).
    secret:
        Draw the hash seeds from a random key of this index (the default): no one can compute
        ids that collide in it. ``False`` gives the old public, reproducible seeds, which a hash
        flood can target (kept for tests of exactly that).

    Examples
    --------
    >>> index = CuckooIndex(capacity=16, seed=1)
    >>> ids = np.array([-(2**63), -1, 0, 2**63 - 1], dtype=np.int64)
    >>> index.insert(ids, np.arange(4, dtype=np.int32))
    >>> index.lookup(np.array([0, 5, -(2**63)], dtype=np.int64)).tolist()
    [2, -1, 0]
    """

    def __init__(self, capacity: int = 1024, seed: int = 0, *, secret: bool = True) -> None:
        self._key = secrets.token_bytes(16) if secret else None
        start = int(_keyed_seed(self._key, 2**64 - 1)) if self._key is not None else py_mix64(seed ^ int(_GOLDEN))
        self._rng = np.array([start | 1], dtype=np.uint64)
        self._seed_counter = seed & _MASK64
        self.size = 0
        self.growth_loads: list[float] = []  # load factor at each growth, for reporting
        self.rehash_loads: list[float] = []  # load factor at each rehash in place (a failed walk below 0.5)
        n_buckets = max(1, int(np.ceil(capacity / (0.9 * BUCKET))))
        self._allocate(n_buckets)

    def _next_seed(self) -> np.uint64:
        self._seed_counter = (self._seed_counter + int(_GOLDEN)) & _MASK64
        if self._key is None:
            return np.uint64(py_mix64(self._seed_counter))
        return _keyed_seed(self._key, self._seed_counter)

    def _allocate(self, n_buckets: int) -> None:
        if n_buckets >= 2**32:
            raise MemoryError("cuckoo index cannot exceed 2**32 buckets")
        self.n_buckets = n_buckets
        self.keys = empty_buckets(n_buckets)
        self.rows = self.keys.view(np.int32)
        self.seed1 = self._next_seed()
        self.seed2 = self._next_seed()

    @property
    def positions(self) -> int:
        return self.n_buckets * BUCKET

    @property
    def load_factor(self) -> float:
        return self.size / self.positions

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes  # rows share the same memory (the int32 view of each bucket's line)

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        """Rows of ``ids`` (int64 array), -1 where absent."""
        out = np.empty(ids.shape[0], dtype=np.int32)
        lookup_rows(self.keys, self.rows, self.n_buckets, self.seed1, self.seed2, ids, out)
        return out

    def gather(self, ids: np.ndarray, weights: np.ndarray, default: np.ndarray) -> np.ndarray:
        """``weights[row of id]`` for each id (``default`` where absent), float32 [n, dim].

        Batches of ``PARALLEL_MIN`` ids or more are split over Numba's thread pool.
        """
        out = np.empty((ids.shape[0], weights.shape[1]), dtype=weights.dtype)
        kernel = lookup_gather_parallel if ids.shape[0] >= PARALLEL_MIN else lookup_gather
        kernel(self.keys, self.rows, self.n_buckets, self.seed1, self.seed2, ids, weights, default, out)
        return out

    def insert(self, ids: np.ndarray, rows: np.ndarray) -> None:
        """Insert ids known to be absent and distinct, growing as needed (nothing is lost).

        Raises :class:`IndexFloodError` (naming the id) when the ids flood the index: then none of
        this call's ids is stored and the index holds what it held before.
        """
        start = 0
        while start < ids.shape[0]:
            stopped, hk, hr = insert_batch(
                self.keys, self.rows, self.n_buckets, self.seed1, self.seed2, ids, rows, start, self._rng
            )
            if stopped < 0:
                self.size += ids.shape[0] - start
                return
            self.size += stopped + 1 - start
            try:
                self.grow(homeless=(int(hk), int(hr)), newest=int(ids[stopped]))
            except IndexFloodError:
                self.delete(ids[: stopped + 1])  # this call's ids: the index is as it was
                raise
            start = stopped + 1

    def grow(self, homeless: tuple[int, int] | None = None, newest: int | None = None) -> None:
        """Rehash after a failed walk: below ``MIN_GROWTH_LOAD`` into the same buckets with fresh
        seeds, never more (a flood must not buy memory); up to ``GROW_LOAD`` the same first, then
        into 1.5x the buckets; above it straight into 1.5x the buckets.

        ``homeless`` is the pair the failed walk left out (whoever it displaced last), ``newest``
        the id whose insert failed. Raises :class:`IndexFloodError` when ``MAX_REHASHES`` fresh
        seeds place nothing: the pair left out is then ``newest`` whenever the older pairs can be
        put back, and every other pair is still held.
        """
        # ``size`` already counts the homeless pair, which is not in the index.
        held = self.size - (1 if homeless is not None else 0)
        load = held / self.positions
        if load < MIN_GROWTH_LOAD:
            targets = [self.n_buckets] * MAX_REHASHES
        else:
            # Between 0.5 and 0.9 a failed walk is bad luck with these seeds more often than a full
            # index (tiny indexes mostly): other seeds first, then growth.
            targets = [self.n_buckets] * (REHASHES_BEFORE_GROWTH if load < GROW_LOAD else 0)
            targets.append(int(np.ceil(self.n_buckets * GROWTH)))
            for _ in range(MAX_REHASHES - 1):  # rebuilds that fail at ~0.65 load: a little more room
                targets.append(int(np.ceil(targets[-1] * 1.1)))
        n_before = self.n_buckets
        for n_buckets in targets:
            if self._rebuilt(n_buckets, homeless):
                (self.growth_loads if n_buckets > n_before else self.rehash_loads).append(load)
                return
        self.rehash_loads.append(load)
        self.size = held
        if homeless is None:
            raise IndexFloodError(0, -1, load, len(targets), min_growth_load=MIN_GROWTH_LOAD)
        if newest is not None and homeless[0] != newest:
            homeless = self._swap_out(newest, homeless)
        raise IndexFloodError(homeless[0], homeless[1], load, len(targets), min_growth_load=MIN_GROWTH_LOAD)

    def _rebuilt(self, n_buckets: int, homeless: tuple[int, int] | None) -> bool:
        """One try: fresh seeds, ``n_buckets``, every held pair and ``homeless``; keeps the old
        arrays (untouched: they are only read) unless every pair found a place."""
        old = self.keys, self.rows, self.n_buckets, self.seed1, self.seed2
        self._allocate(n_buckets)
        ok = rebuild(old[0], old[1], self.keys, self.rows, self.n_buckets, self.seed1, self.seed2, self._rng)
        if ok and homeless is not None:
            ok, _, _ = insert_new(
                self.keys, self.rows, self.n_buckets, self.seed1, self.seed2,
                np.int64(homeless[0]), np.int32(homeless[1]), self._rng,
            )  # fmt: skip
        if not ok:
            self.keys, self.rows, self.n_buckets, self.seed1, self.seed2 = old
        return bool(ok)

    def _swap_out(self, newest: int, older: tuple[int, int]) -> tuple[int, int]:
        """After a flood the walk left an *older* pair out: take ``newest`` out instead and put the
        older one back (fresh seeds, same size). Returns the pair that stays out."""
        key = np.array([newest], dtype=np.int64)
        row = int(self.lookup(key)[0])
        if row < 0:
            return older
        self.delete(key)
        for _ in range(MAX_REHASHES):
            if self._rebuilt(self.n_buckets, older):
                self.size += 1
                return newest, row
        # Put ``newest`` back: the slot it left in one of its buckets is still free.
        insert_new(self.keys, self.rows, self.n_buckets, self.seed1, self.seed2, key[0], np.int32(row), self._rng)
        self.size += 1
        return older

    def delete(self, ids: np.ndarray) -> np.ndarray:
        """Remove ``ids`` (absent ones are ignored); returns the rows they held."""
        freed = np.empty(ids.shape[0], dtype=np.int32)
        n = delete_ids(self.keys, self.rows, self.n_buckets, self.seed1, self.seed2, ids, freed)
        self.size -= n
        return freed[:n]

    def items(self) -> tuple[np.ndarray, np.ndarray]:
        """All (ids, rows) currently held, in position order."""
        ids = np.empty(self.size, dtype=np.int64)
        rows = np.empty(self.size, dtype=np.int32)
        n = occupied(self.keys, self.rows, ids, rows)
        assert n == self.size, (n, self.size)
        return ids, rows

    # -- snapshots -----------------------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        """The arrays of a snapshot: buckets, sizes, seeds, the kick walk's state and, unless the
        seeds are public, the key they are drawn from (``secret``)."""
        out = {
            "buckets": self.keys,
            "meta": np.array(
                [self.n_buckets, self.size, self.seed1, self.seed2, self._rng[0], self._seed_counter],
                dtype=np.uint64,
            ),
            "growth_loads": np.array(self.growth_loads, dtype=np.float64),
            "rehash_loads": np.array(self.rehash_loads, dtype=np.float64),
        }
        if self._key is not None:
            out["secret"] = np.frombuffer(self._key, dtype=np.uint8)
        return out

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> CuckooIndex:
        """The index of :meth:`state`: the same layout, and the same seeds drawn from then on.

        A snapshot written before seeds were secret has none: it keeps its layout (its current
        seeds), and later seeds are drawn from a new random key.
        """
        index = cls.__new__(cls)
        secret = state.get("secret")
        index._key = bytes(np.asarray(secret, dtype=np.uint8)) if secret is not None else secrets.token_bytes(16)
        index.rehash_loads = [float(x) for x in state.get("rehash_loads", ())]
        n_buckets, size, s1, s2, rng, counter = (np.uint64(v) for v in state["meta"])
        index.n_buckets = int(n_buckets)
        index.size = int(size)
        index.seed1, index.seed2 = s1, s2
        index._rng = np.array([rng], dtype=np.uint64)
        index._seed_counter = int(counter)
        index.keys = empty_buckets(index.n_buckets)
        index.keys[:] = state["buckets"]
        index.rows = index.keys.view(np.int32)
        index.growth_loads = [float(x) for x in state["growth_loads"]]
        return index
