"""The GPU kernels of a table in GPU memory (Numba's CUDA target), over the CPU table's layout.

Why these shapes (see ``cuckoo.py`` for the index itself):

* The index is the *same* array as on the CPU: buckets of 8 int64 words (5 keys, then 5 int32
  rows in the same 64-byte line), the same murmur3 bucket functions and seeds. A table moves
  between host and GPU memory by copying bytes, never by rehashing, and a snapshot taken from
  either is the other's.
* Find-or-insert (:func:`find_admit_sorted`) takes a batch *sorted* on the device (the table
  deduplicates with one ``torch.sort`` and a cumulative sum of first-occurrence flags: fixed-size
  arrays, no host sync), and only the first position of each id works, so no two threads ever
  work on the same id: a lookup, an admission count (the run's length, by binary search, only
  when ``admit_after > 1``), a row taken from the free list and a slot claimed each belong to one
  thread. A thread finds its id in its two buckets (a present id's row is read), else counts it
  in the admission sketch (``atomic.max`` on the conservative-update counters: estimates still
  never undercount), takes a row (an ``atomic.add`` ticket on a counter that lives on the device,
  into the free list, then past the high-water mark) and claims an empty slot with a
  compare-and-swap on the slot's row word (-1 -> -2, then the key, a fence, the row), in the
  emptier of its two buckets. Claims never move a stored id, so concurrent finds stay correct.
  Only ids whose two buckets are both full go to a second kernel that runs the CPU's random walk
  (cuckoo kicks), all in parallel (:func:`walk_spilled`: a spin lock per bucket guards each
  swap); a walk that fails leaves its pair, with its row, in a list later finds also search, and
  the host grows the index with it (:func:`rebuild_claim` + the same walks into 1.5x the
  buckets) when it next settles, nothing lost. Kernels whose work depends on a count made on the
  device (the walk, the new rows' init) are launched over the batch size, the threads past the
  count exiting.
* Lookup + gather (:func:`lookup_gather`) probes one id per thread, 32 per warp in flight, then
  the warp copies the rows together, lanes over coordinates.
* The optimizer kernels update a row's weights and state in place, one thread per (row,
  coordinate), with the CPU optimizers' float32 arithmetic in the same order, so the two
  placements agree to ~1 ulp.

Under ``NUMBA_ENABLE_CUDASIM=1`` the same kernels run on the CPU (slowly: thousands of ids, not
millions), which is how the test suite checks them on machines without a GPU.
"""

from __future__ import annotations

import math

import numpy as np

if not hasattr(np, "row_stack"):  # numba-cuda overloads np.row_stack at import; NumPy 2.5 removed it
    np.row_stack = np.vstack

from numba import cuda

BUCKET = 5
STRIDE = 8
MAX_KICKS = 500

_M1 = np.uint64(0xFF51AFD7ED558CCD)
_M2 = np.uint64(0xC4CEB9FE1A85EC53)
_S33 = np.uint64(33)
_S32 = np.uint64(32)
_S40 = np.uint64(40)
_S13 = np.uint64(13)
_S7 = np.uint64(7)
_S17 = np.uint64(17)
_ONE = np.uint64(1)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_INV24 = 1.0 / (1 << 24)
_EMPTY = np.int32(-1)
_CLAIMED = np.int32(-2)


# -- device functions (the CPU's cuckoo.py / admission.py / initializers.py, line for line) --------
@cuda.jit(device=True, inline=True)
def mix64(x):
    x ^= x >> _S33
    x *= _M1
    x ^= x >> _S33
    x *= _M2
    x ^= x >> _S33
    return x


@cuda.jit(device=True, inline=True)
def bucket_of(key, seed, n_buckets):
    h = mix64(np.uint64(key) ^ seed)
    return np.int64(((h >> _S32) * np.uint64(n_buckets)) >> _S32)


@cuda.jit(device=True, inline=True)
def row_at(p):
    return p + (p & ~7) + 10


@cuda.jit(device=True, inline=True)
def find_in(keys, rows, base1, base2, key):
    for j in range(BUCKET):
        p = base1 + j
        if keys[p] == key and rows[row_at(p)] >= 0:
            return p
    for j in range(BUCKET):
        p = base2 + j
        if keys[p] == key and rows[row_at(p)] >= 0:
            return p
    return -1


@cuda.jit(device=True, inline=True)
def _empties(rows, base):
    n = 0
    for j in range(BUCKET):
        if rows[row_at(base + j)] == _EMPTY:
            n += 1
    return n


@cuda.jit(device=True, inline=True)
def _claim_in(keys, rows, base, key, row):
    for j in range(BUCKET):
        p = base + j
        r = row_at(p)
        if rows[r] == _EMPTY and cuda.atomic.cas(rows, r, _EMPTY, _CLAIMED) == _EMPTY:
            keys[p] = key
            cuda.threadfence()
            rows[r] = row
            return True
    return False


@cuda.jit(device=True, inline=True)
def claim(keys, rows, base1, base2, key, row):
    """Put (key, row) in an empty slot of the emptier bucket (then the other) by compare-and-swap."""
    if _empties(rows, base2) > _empties(rows, base1):
        base1, base2 = base2, base1
    if _claim_in(keys, rows, base1, key, row):
        return True
    return _claim_in(keys, rows, base2, key, row)


@cuda.jit(device=True, inline=True)
def _xorshift(state):
    x = np.uint64(state[0])
    x ^= x << _S13
    x ^= x >> _S7
    x ^= x << _S17
    state[0] = np.int64(x)
    return x


@cuda.jit(device=True, inline=True)
def _cell(key, seed, r, width):
    h = mix64(np.uint64(key) ^ seed ^ (np.uint64(r + 1) * _GOLDEN))
    return np.int64(((h >> _S32) * np.uint64(width)) >> _S32)


@cuda.jit(device=True, inline=True)
def sketch_observe_n(counts, width, seed, key, occurrences, threshold):
    """``occurrences`` of ``key`` counted at once (conservative update, saturating at 255);
    ``counts`` is the [depth, width] sketch flattened (int32 cells holding 0..255)."""
    depth = counts.shape[0] // width
    estimate = 255
    for r in range(depth):
        c = counts[r * width + _cell(key, seed, r, width)]
        if c < estimate:
            estimate = c
    new = estimate + occurrences
    if new > 255:
        new = 255
    for r in range(depth):
        cuda.atomic.max(counts, r * width + _cell(key, seed, r, width), np.int32(new))
    return new >= threshold


@cuda.jit(device=True, inline=True)
def _unit(seed, key, counter):
    h = mix64(mix64(np.uint64(key) ^ seed) + np.uint64(counter + 1) * _GOLDEN)
    return np.float64(h >> _S40) * _INV24


# -- kernels ----------------------------------------------------------------------------------------
@cuda.jit
def lookup_rows(keys, rows, n_buckets, seed1, seed2, ids, out):
    i = cuda.grid(1)
    if i < ids.shape[0]:
        key = ids[i]
        p = find_in(
            keys, rows, bucket_of(key, seed1, n_buckets) * STRIDE, bucket_of(key, seed2, n_buckets) * STRIDE, key
        )
        out[i] = rows[row_at(p)] if p >= 0 else -1


GATHER_BLOCK = 256  # lookup_gather's largest block (its shared array holds one row index per thread)


@cuda.jit
def lookup_gather(keys, rows, n_buckets, seed1, seed2, ids, weights, default, out, dim, shift, shuffle):
    """Warp-wide probe, then a cooperative copy. Every thread probes the two buckets of its own id
    (32 probes in flight per warp); then the warp copies its 32 rows together: ``2**shift`` lanes
    per row (``2**shift`` = ``dim`` rounded up to a power of two, at most 32), so ``32 >> shift``
    rows move at once, each row's index taken from its owner lane by ``cuda.shfl_sync`` and its
    coordinates spread over the lanes (consecutive lanes, consecutive addresses: coalesced).
    ``weights`` and ``out`` are flat (row-major, ``dim`` wide). Every thread of a block takes part
    (those past the last id too): the launch covers whole warps and nobody returns early.
    ``shuffle=0`` (the simulator, which has no shuffles) hands the row indices over through shared
    memory instead: the same copy, the same answer, tested on the CPU."""
    i = cuda.grid(1)
    n = ids.shape[0]
    r = np.int32(-1)
    if i < n:
        key = ids[i]
        p = find_in(keys, rows, bucket_of(key, seed1, n_buckets) * STRIDE, bucket_of(key, seed2, n_buckets) * STRIDE,
                    key)  # fmt: skip
        if p >= 0:
            r = rows[row_at(p)]
    tid = cuda.threadIdx.x
    lane = tid & 31
    handed = cuda.shared.array(GATHER_BLOCK, dtype=np.int32)
    if shuffle == 0:
        handed[tid] = r
        cuda.syncthreads()
    lanes = 1 << shift
    sub = lane >> shift  # which of the rows moved at once this lane works on
    coord = lane & (lanes - 1)
    for base in range(0, 32, 32 >> shift):
        owner = base + sub
        rr = cuda.shfl_sync(0xFFFFFFFF, r, owner) if shuffle != 0 else handed[tid - lane + owner]
        j = i - lane + owner
        if j < n:
            dst = np.int64(j) * dim
            if rr >= 0:
                src = np.int64(rr) * dim
                for d in range(coord, dim, lanes):
                    out[dst + d] = weights[src + d]
            else:
                for d in range(coord, dim, lanes):
                    out[dst + d] = default[d]


# Counters a table keeps on the device (``CudaEmbeddingTable._ctr``), read by the host in one
# batched copy when it settles (see cuda_table.py):
C_TAKEN = 0  # new rows taken since the last settle (the k-th: free[free_count-1-k], then past high_water)
C_FAIL = 1  # (id, row) pairs whose cuckoo walk failed since the last settle: fail_ids/fail_rows
C_UNADMITTED = 2  # occurrences answered with the default vector since the last settle
C_NEW = 3  # this call's new rows (new_ids/new_rows), zeroed per call
C_SPILL = 4  # this call's ids whose two buckets were full (spill_ids/spill_rows), zeroed per call
N_COUNTERS = 5


@cuda.jit
def find_admit_sorted(
    keys, rows, n_buckets, seed1, seed2,
    sorted_ids, dpos, out,
    last_update, dirty, now,
    counts, width, sketch_seed, threshold,
    free, free_count, high_water,
    ctr, new_ids, new_rows, spill_ids, spill_rows, fail_ids, fail_rows,
):  # fmt: skip
    """Find-or-insert of a batch given *sorted* (``sorted_ids``) with ``dpos[j]`` the distinct
    index of position ``j`` (a cumulative sum of first-occurrence flags, computed without a host
    sync): only the first position of each id works, so every id belongs to one thread.
    ``out[d]`` = the row of the ``d``-th distinct id or -1 (not admitted yet); ``out`` past the
    distinct count is -1. Its occurrence count (admission counts every occurrence) is the length
    of its run, found by a binary search, only when ``threshold > 1``.

    Rows come from ``ctr[C_TAKEN]`` tickets (the free list from its top, then past the high-water
    mark: the CPU's order), which accumulate until the host settles; an id whose walk failed
    since then sits in ``fail_*`` with its row and is found there (it keeps its row)."""
    j = cuda.grid(1)
    n = sorted_ids.shape[0]
    if j >= n:
        return
    if j > dpos[n - 1]:
        out[j] = -1
    key = sorted_ids[j]
    if j > 0 and sorted_ids[j - 1] == key:
        return
    d = dpos[j]
    base1 = bucket_of(key, seed1, n_buckets) * STRIDE
    base2 = bucket_of(key, seed2, n_buckets) * STRIDE
    p = find_in(keys, rows, base1, base2, key)
    r = np.int32(-1)
    if p >= 0:
        r = rows[row_at(p)]
    else:
        for f in range(ctr[C_FAIL]):
            if fail_ids[f] == key:
                r = fail_rows[f]
                break
    if r >= 0:
        out[d] = r
        if last_update[r] < now:
            last_update[r] = now
        return
    if threshold > 1:
        lo = j + 1
        hi = n
        while lo < hi:
            mid = (lo + hi) >> 1
            if sorted_ids[mid] == key:
                lo = mid + 1
            else:
                hi = mid
        occurrences = lo - j
        if not sketch_observe_n(counts, width, sketch_seed, key, occurrences, threshold):
            out[d] = -1
            cuda.atomic.add(ctr, C_UNADMITTED, occurrences)
            return
    k = cuda.atomic.add(ctr, C_TAKEN, 1)
    r = free[free_count - 1 - k] if k < free_count else np.int32(high_water + k - free_count)
    out[d] = r
    last_update[r] = now
    dirty[r] = 1
    q = cuda.atomic.add(ctr, C_NEW, 1)
    new_ids[q] = key
    new_rows[q] = r
    if not claim(keys, rows, base1, base2, key, r):
        s = cuda.atomic.add(ctr, C_SPILL, 1)
        spill_ids[s] = key
        spill_rows[s] = r


@cuda.jit
def gather_leaf(weights, default, rows, out):
    """``out[k] = weights[rows[k]]``, ``default`` where ``rows[k] < 0``: a training step's leaf,
    one thread per (row, coordinate)."""
    t = cuda.grid(1)
    dim = weights.shape[1]
    k = t // dim
    if k < rows.shape[0]:
        d = t - k * dim
        r = rows[k]
        out[k, d] = weights[r, d] if r >= 0 else default[d]


@cuda.jit(device=True)
def _walk_pair(keys, rows, n_buckets, seed1, seed2, locks, key, row, i, walk_seed, max_kicks, ctr, fail_at, fail_ids,
               fail_rows):  # fmt: skip
    """The walk of one spilled pair (see :func:`walk_spilled`); ``i`` seeds its random choices."""
    state = cuda.local.array(1, dtype=np.int64)
    state[0] = np.int64(mix64(np.uint64(walk_seed) ^ (np.uint64(i + 1) * _GOLDEN)) | _ONE)
    b1 = bucket_of(key, seed1, n_buckets)
    b2 = bucket_of(key, seed2, n_buckets)
    bucket = b1 if (_xorshift(state) & _ONE) == 0 else b2
    for _ in range(max_kicks):
        if claim(keys, rows, b1 * STRIDE, b2 * STRIDE, key, row):
            return
        while cuda.atomic.cas(locks, bucket, 0, 1) != 0:
            pass
        cuda.threadfence()
        p = bucket * STRIDE + np.int64(_xorshift(state) % np.uint64(BUCKET))
        r = row_at(p)
        victim_row = rows[r]
        if victim_row >= 0:
            victim_key = keys[p]
            keys[p] = key
            rows[r] = row
            cuda.threadfence()
            cuda.atomic.exch(locks, bucket, 0)
            key = victim_key
            row = victim_row
            b1 = bucket_of(key, seed1, n_buckets)
            b2 = bucket_of(key, seed2, n_buckets)
            bucket = b2 if b1 == bucket else b1
        else:
            cuda.atomic.exch(locks, bucket, 0)
    f = cuda.atomic.add(ctr, fail_at, 1)
    fail_ids[f] = key
    fail_rows[f] = row


@cuda.jit
def walk_spilled(keys, rows, n_buckets, seed1, seed2, locks, spill_ids, spill_rows, ctr, n_at, fail_at, walk_seed,
                 max_kicks, fail_ids, fail_rows):  # fmt: skip
    """Every spilled pair walks in parallel, one thread each: claim a slot in either bucket of
    the pair in hand; else lock one of its buckets (a spin lock per bucket: ``atomic.cas``), swap
    the pair with a random *held* slot there, unlock, and carry the evicted pair to its other
    bucket. Claims only take empty slots and swaps only held ones, so they never meet; no finds
    run meanwhile. A walk longer than ``max_kicks`` (``MAX_KICKS``) leaves its pair in ``fail_*``
    (ticket ``ctr[fail_at]``): the host grows the index with them. The pairs are
    ``spill_*[:ctr[n_at]]``, a count on the device: the launch covers an upper bound and the
    threads past it exit."""
    i = cuda.grid(1)
    if i < ctr[n_at]:
        _walk_pair(keys, rows, n_buckets, seed1, seed2, locks, spill_ids[i], spill_rows[i], i, walk_seed, max_kicks,
                   ctr, fail_at, fail_ids, fail_rows)  # fmt: skip


@cuda.jit
def rebuild_claim(old_keys, old_rows, keys, rows, n_buckets, seed1, seed2, tickets, spill_ids, spill_rows):
    """Growth: every held (key, row) of the old buckets claims a slot in the new ones."""
    t = cuda.grid(1)
    if t >= (old_keys.shape[0] // STRIDE) * BUCKET:
        return
    p = (t // BUCKET) * STRIDE + t % BUCKET
    r = old_rows[row_at(p)]
    if r < 0:
        return
    key = old_keys[p]
    if not claim(
        keys, rows, bucket_of(key, seed1, n_buckets) * STRIDE, bucket_of(key, seed2, n_buckets) * STRIDE, key, r
    ):
        s = cuda.atomic.add(tickets, 1, 1)
        spill_ids[s] = key
        spill_rows[s] = r


@cuda.jit
def claim_given(keys, rows, n_buckets, seed1, seed2, ids, new_rows, tickets, spill_ids, spill_rows):
    """Insert of distinct absent ids with given rows: claims, the full-bucket ones spilled."""
    i = cuda.grid(1)
    if i >= ids.shape[0]:
        return
    key = ids[i]
    r = new_rows[i]
    if not claim(
        keys, rows, bucket_of(key, seed1, n_buckets) * STRIDE, bucket_of(key, seed2, n_buckets) * STRIDE, key, r
    ):
        s = cuda.atomic.add(tickets, 1, 1)
        spill_ids[s] = key
        spill_rows[s] = r


@cuda.jit(device=True, inline=True)
def _init_coordinate(weights, state, state_init, n_state, r, key, d, kind, a, b, seed):
    for s in range(n_state):
        state[s, r, d] = state_init[s]
    if kind == 0:
        weights[r, d] = 0.0
    elif kind == 1:
        weights[r, d] = a + (b - a) * _unit(seed, key, d)
    else:
        u1 = _unit(seed, key, 2 * d) + 0.5 * _INV24
        u2 = _unit(seed, key, 2 * d + 1)
        weights[r, d] = a + b * math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


@cuda.jit
def place_new(
    keys, rows, n_buckets, seed1, seed2, locks, spill_ids, spill_rows, walk_seed, max_kicks, fail_ids, fail_rows,
    weights, state, state_init, n_state, new_ids, new_rows, ctr, kind, a, b, seed,
):  # fmt: skip
    """After :func:`find_admit_sorted`, in one launch over ``batch * dim`` threads: thread
    ``(k, d)`` writes coordinate ``d`` of the ``k``-th new row's initial vector (the CPU
    initializer's formulas) and optimizer state (``state`` [n_state, rows, dim], ``state_init``
    its initial values; 1-entry stand-ins when ``n_state`` is 0, so no argument is ever empty),
    for ``k < ctr[C_NEW]``; and thread ``(k, 0)`` walks the ``k``-th spilled pair for
    ``k < ctr[C_SPILL]`` (:func:`walk_spilled`'s walk, failures to ``fail_*`` at ``ctr[C_FAIL]``).
    The counts are the device's: the launch covers the batch size and the rest exit."""
    t = cuda.grid(1)
    dim = weights.shape[1]
    k = t // dim
    d = t - k * dim
    if k < ctr[C_NEW]:
        _init_coordinate(weights, state, state_init, n_state, new_rows[k], new_ids[k], d, kind, a, b, seed)
    if d == 0 and k < ctr[C_SPILL]:
        _walk_pair(keys, rows, n_buckets, seed1, seed2, locks, spill_ids[k], spill_rows[k], k, walk_seed, max_kicks,
                   ctr, C_FAIL, fail_ids, fail_rows)  # fmt: skip


@cuda.jit
def delete_ids(keys, rows, n_buckets, seed1, seed2, ids, tickets, freed, freed_ids):
    i = cuda.grid(1)
    if i >= ids.shape[0]:
        return
    key = ids[i]
    p = find_in(keys, rows, bucket_of(key, seed1, n_buckets) * STRIDE, bucket_of(key, seed2, n_buckets) * STRIDE, key)
    if p >= 0:
        k = cuda.atomic.add(tickets, 0, 1)
        freed[k] = rows[row_at(p)]
        freed_ids[k] = key
        rows[row_at(p)] = -1


@cuda.jit
def evict_older(keys, rows, last_update, cutoff, tickets, out_positions, out_rows):
    """Expiry sweep: one thread per slot; a held row idle since before ``cutoff`` is released."""
    t = cuda.grid(1)
    if t >= (keys.shape[0] // STRIDE) * BUCKET:
        return
    p = (t // BUCKET) * STRIDE + t % BUCKET
    r = rows[row_at(p)]
    if r >= 0 and last_update[r] < cutoff:
        k = cuda.atomic.add(tickets, 0, 1)
        out_positions[k] = p
        out_rows[k] = r
        rows[row_at(p)] = -1


@cuda.jit
def collect_dirty(keys, rows, dirty, tickets, out_positions):
    """Touched-row delta: positions of held rows marked dirty (and the marks cleared)."""
    t = cuda.grid(1)
    if t >= (keys.shape[0] // STRIDE) * BUCKET:
        return
    p = (t // BUCKET) * STRIDE + t % BUCKET
    r = rows[row_at(p)]
    if r >= 0 and dirty[r] != 0:
        dirty[r] = 0
        k = cuda.atomic.add(tickets, 0, 1)
        out_positions[k] = p


@cuda.jit
def forget_many(counts, width, seed, ids, amount):
    """Evicted ids: their sketch counters lowered by ``amount`` (not below 0), race-free by CAS."""
    t = cuda.grid(1)
    depth = counts.shape[0] // width
    i = t // depth
    if i >= ids.shape[0]:
        return
    r = t - i * depth
    j = r * width + _cell(ids[i], seed, r, width)
    old = counts[j]
    while True:
        new = old - amount if old >= amount else 0
        seen = cuda.atomic.cas(counts, j, old, np.int32(new))
        if seen == old:
            return
        old = seen


# -- the fused row optimizers (one thread per (row, coordinate); rows distinct) ------------------
# Positions whose row is < 0 (ids not admitted, padding past a batch's distinct count) are
# skipped; each updated row is marked in ``dirty`` for the next delta.
@cuda.jit
def sgd_rows(weights, rows, grads, dirty, lr):
    t = cuda.grid(1)
    dim = weights.shape[1]
    k = t // dim
    if k < rows.shape[0]:
        d = t - k * dim
        r = rows[k]
        if r < 0:
            return
        if d == 0:
            dirty[r] = 1
        weights[r, d] = weights[r, d] - lr * grads[k, d]


@cuda.jit
def adagrad_rows(weights, acc, rows, grads, dirty, clr, eps):
    t = cuda.grid(1)
    dim = weights.shape[1]
    k = t // dim
    if k < rows.shape[0]:
        d = t - k * dim
        r = rows[k]
        if r < 0:
            return
        if d == 0:
            dirty[r] = 1
        g = grads[k, d]
        s = acc[r, d] + g * g
        acc[r, d] = s
        weights[r, d] = weights[r, d] - clr * (g / (math.sqrt(s) + eps))


@cuda.jit
def adam_rows(weights, exp_avg, exp_avg_sq, rows, grads, dirty, one_minus_b1, one_minus_b2, step_size, eps):
    t = cuda.grid(1)
    dim = weights.shape[1]
    k = t // dim
    if k < rows.shape[0]:
        d = t - k * dim
        r = rows[k]
        if r < 0:
            return
        if d == 0:
            dirty[r] = 1
        g = grads[k, d]
        m_old = exp_avg[r, d]
        v_old = exp_avg_sq[r, d]
        m_update = (g - m_old) * one_minus_b1
        v_update = (g * g - v_old) * one_minus_b2
        m = m_old + m_update
        v = v_old + v_update
        exp_avg[r, d] = m
        exp_avg_sq[r, d] = v
        weights[r, d] = weights[r, d] + (-step_size) * ((m_update + m_old) / (math.sqrt(v_update + v_old) + eps))


@cuda.jit
def ftrl_rows(weights, z_state, n_state, rows, grads, dirty, alpha, beta, l1, l2):
    t = cuda.grid(1)
    dim = weights.shape[1]
    k = t // dim
    if k < rows.shape[0]:
        d = t - k * dim
        r = rows[k]
        if r < 0:
            return
        if d == 0:
            dirty[r] = 1
        g = grads[k, d]
        w = weights[r, d]
        n = n_state[r, d]
        n_new = n + g * g
        root = math.sqrt(n_new)
        sigma = (root - math.sqrt(n)) / alpha
        z = z_state[r, d] + (g - sigma * w)
        z_state[r, d] = z
        n_state[r, d] = n_new
        if abs(z) <= l1:
            weights[r, d] = 0.0
        else:
            sign = np.float32(1.0) if z > 0 else np.float32(-1.0)
            weights[r, d] = -(z - sign * l1) / ((beta + root) / alpha + l2)
