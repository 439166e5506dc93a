"""Hash flooding of the cuckoo index (issue 13, item 5): crafted ids cannot make the index grow.

The attack: ids that share *both* candidate buckets of a cuckoo index. Eleven of them cannot fit
two 5-slot buckets, so the eleventh insert fails its walk; the index used to answer every such
failure by growing x1.5 with the next seeds of a sequence fixed by constants, so an attacker
who knows the seeds (they were the same in every process) crafts eleven more for the next seeds,
and so on: 209 ids grew an index from 0.75 MB to 1.66 GB at load factor 0.0003.

The attacker here is written independently of the index: NumPy murmur3 (and its inverse) over the
seeds the old code derived from ``table_seed(0, slot)``. Crafting is cheap because the finalizer
is invertible: pick a hash in the first bucket's range, invert it to an id, keep it when its
second hash lands in the second bucket (about one in ``n_buckets`` does).
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from streamrec.embedding import EmbeddingCollection, EmbeddingTable, SlotConfig, Zeros, load_collection
from streamrec.embedding.cuckoo import MAX_REHASHES, MIN_GROWTH_LOAD, CuckooIndex, IndexFloodError
from streamrec.embedding.snapshot import FORMAT, collection_arrays, text_array, write_arrays_atomic
from streamrec.errors import StreamrecError

MASK = (1 << 64) - 1
M1, M2, GOLDEN = 0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53, 0x9E3779B97F4A7C15
M1_INV, M2_INV = pow(M1, -1, 1 << 64), pow(M2, -1, 1 << 64)
U = np.uint64


def _pymix(x: int) -> int:
    x ^= x >> 33
    x = (x * M1) & MASK
    x ^= x >> 33
    x = (x * M2) & MASK
    return x ^ (x >> 33)


def _mix(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> U(33))
    x = x * U(M1)
    x = x ^ (x >> U(33))
    x = x * U(M2)
    return x ^ (x >> U(33))


def _unmix(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> U(33))
    h = h * U(M2_INV)
    h = h ^ (h >> U(33))
    h = h * U(M1_INV)
    return h ^ (h >> U(33))


def _bucket(keys: np.ndarray, seed: int, n: int) -> np.ndarray:
    return ((_mix(keys ^ U(seed)) >> U(32)) * U(n)) >> U(32)


def old_seed_pairs(seed: int):
    """The hash seeds the index drew, allocation after allocation, before this fix (and still does
    with ``secret=False``): a counter started at ``seed``, stepped by the golden ratio, mixed."""
    counter = seed & MASK
    while True:
        counter = (counter + GOLDEN) & MASK
        s1 = _pymix(counter)
        counter = (counter + GOLDEN) & MASK
        yield s1, _pymix(counter)


def old_table_seed(slot: str, collection_seed: int = 0) -> int:
    return _pymix((collection_seed ^ (zlib.crc32(slot.encode()) << 17)) & MASK)


def sharing_both_buckets(s1: int, s2: int, n_buckets: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` distinct ids whose two buckets under ``(s1, s2)`` are the same two buckets."""
    b1, b2 = int(rng.integers(n_buckets)), int(rng.integers(n_buckets))
    lo = -(-(b1 << 32) // n_buckets)  # the top halves of the hashes that land in bucket b1
    hi = -(-((b1 + 1) << 32) // n_buckets)
    found: list[np.ndarray] = []
    while sum(map(len, found)) < count:
        top = rng.integers(lo, hi, size=1 << 18, dtype=np.uint64)
        h = (top << U(32)) | rng.integers(0, 1 << 32, size=1 << 18, dtype=np.uint64)
        keys = _unmix(h) ^ U(s1)
        found.append(keys[_bucket(keys, s2, n_buckets) == b2])
    keys = np.unique(np.concatenate(found))[:count]
    assert (_bucket(keys, s1, n_buckets) == b1).all() and (_bucket(keys, s2, n_buckets) == b2).all()
    return keys.view(np.int64)


def storm(seed: int, n_buckets: int, stages: int, rng: np.random.Generator) -> np.ndarray:
    """The issue's attack on an index that starts at ``n_buckets`` under the old seeds: eleven ids
    for the first seeds, eleven for the seeds of the index grown x1.5, and so on."""
    ids = []
    for _, (s1, s2) in zip(range(stages), old_seed_pairs(seed), strict=False):
        ids.append(sharing_both_buckets(s1, s2, n_buckets, 11, rng))
        n_buckets = int(np.ceil(n_buckets * 1.5))
    return np.concatenate(ids)


def test_ids_crafted_against_the_old_fixed_seeds_do_not_grow_a_table():
    table = EmbeddingTable("item", SlotConfig(dim=4, initializer=Zeros()))
    before = table.index.nbytes
    ids = storm(old_table_seed("item"), table.index.n_buckets, stages=14, rng=np.random.default_rng(0))
    rows = table.admit(ids, now=1)
    assert len(np.unique(rows)) == len(ids) and (rows >= 0).all()
    assert np.array_equal(table.rows_of(ids), rows)
    # 154 ids: before this fix the index grew 14 times (x292, 14.6 KB to 4.27 MB, at load 0.0005).
    assert table.index.nbytes == before, (before, table.index.nbytes, table.index.growth_loads)
    assert table.index.growth_loads == []


def test_the_storm_is_what_the_old_seeds_suffer():
    """The attacker model is right: with the old, public seeds (``secret=False``) each stage of
    crafted ids does defeat the index's current seeds, and the rule answers with a rehash in place."""
    seed = old_table_seed("item")
    index = CuckooIndex(1024, seed=seed, secret=False)
    before = index.nbytes
    ids = storm(seed, index.n_buckets, stages=1, rng=np.random.default_rng(1))
    index.insert(ids, np.arange(len(ids), dtype=np.int32))
    assert index.rehash_loads and index.rehash_loads[0] == pytest.approx(10 / index.positions)
    assert index.growth_loads == [] and index.nbytes == before
    assert np.array_equal(index.lookup(ids), np.arange(len(ids), dtype=np.int32))


def test_below_half_load_the_index_rehashes_in_place_and_memory_stays_bounded():
    """Whatever the attacker knows, a failed walk below MIN_GROWTH_LOAD never grows the index."""
    rng = np.random.default_rng(2)
    index = CuckooIndex(4500, seed=11, secret=False)  # public seeds: the attacker knows every one
    n, before = index.n_buckets, index.nbytes
    ids, rows = [], 0
    for s1, s2 in _pairs_after(11, skip=0, count=4):  # the attacker follows the index from seed pair to pair
        crafted = sharing_both_buckets(s1, s2, n, 11, rng)
        index.insert(crafted, np.arange(rows, rows + 11, dtype=np.int32))
        ids.append(crafted)
        rows += 11
    ids = np.concatenate(ids)
    assert index.n_buckets == n and index.nbytes == before
    assert index.growth_loads == [] and all(load < MIN_GROWTH_LOAD for load in index.rehash_loads)
    assert np.array_equal(index.lookup(ids), np.arange(rows, dtype=np.int32))


def _pairs_after(seed: int, skip: int, count: int):
    pairs = old_seed_pairs(seed)
    for _ in range(skip):
        next(pairs)
    for _ in range(count):
        yield next(pairs)


def test_a_flood_that_defeats_every_rehash_raises_a_typed_error_and_changes_nothing():
    """An attacker who knows every seed the index will draw (only possible with ``secret=False``)
    crafts a set for each of them; the index refuses to grow, names the id, and keeps what it had."""
    rng = np.random.default_rng(3)
    index = CuckooIndex(4500, seed=5, secret=False)
    n, before = index.n_buckets, index.nbytes
    pairs = list(_pairs_after(5, skip=0, count=MAX_REHASHES + 1))
    sets = [sharing_both_buckets(s1, s2, n, 11, rng) for s1, s2 in pairs]
    # Ten for the current seeds fit their two buckets; eleven for each later pair are harmless
    # until the index turns to that pair, which it does when the eleventh for the current seeds comes.
    planted = np.concatenate([sets[0][:10], *sets[1:]])
    index.insert(planted, np.arange(len(planted), dtype=np.int32))
    assert index.rehash_loads == []
    last = np.array([sets[0][10], 7, 8], dtype=np.int64)  # with two harmless ids: the whole call is undone
    with pytest.raises(IndexFloodError) as caught:
        index.insert(last, np.arange(len(planted), len(planted) + 3, dtype=np.int32))
    error = caught.value
    assert isinstance(error, StreamrecError)
    assert error.key == int(last[0])
    assert "id" in str(error) and str(int(last[0])) in str(error) and "load" in str(error)
    assert len(index.rehash_loads) == 1 and index.growth_loads == []
    assert index.n_buckets == n and index.nbytes == before
    assert index.size == len(planted)
    assert np.array_equal(index.lookup(planted), np.arange(len(planted), dtype=np.int32))
    assert index.lookup(last).tolist() == [-1, -1, -1]
    ids, rows = index.items()
    assert sorted(ids.tolist()) == sorted(planted.tolist()) and len(np.unique(rows)) == len(planted)


def test_a_table_evicts_an_id_it_cannot_place_and_keeps_training():
    """The table's answer to a flood (unreachable with its secret seeds, staged here by giving it
    an index with public ones): the id that found no place gets no row, and nothing else changes."""
    rng = np.random.default_rng(4)
    table = EmbeddingTable("item", SlotConfig(dim=2, initializer=Zeros(), capacity=4500))
    table.index = CuckooIndex(4500, seed=9, secret=False)
    n = table.index.n_buckets
    sets = [sharing_both_buckets(s1, s2, n, 11, rng) for s1, s2 in _pairs_after(9, skip=0, count=MAX_REHASHES + 1)]
    planted = np.concatenate([sets[0][:10], *sets[1:]])
    planted_rows = table.admit(planted, now=1)
    extra = np.array([sets[0][10], 42], dtype=np.int64)
    rows = table.admit(extra, now=2)
    assert rows[0] == -1 and rows[1] >= 0  # the flooded id is unadmitted; the batch went on
    assert table.stats.flooded == 1
    assert np.array_equal(table.rows_of(planted), planted_rows)
    assert len(table) == len(planted) + 1
    assert table.index.n_buckets == n and table.index.growth_loads == []


def test_seeds_are_secret_per_table_and_a_snapshot_keeps_them(tmp_path):
    a = EmbeddingTable("item", SlotConfig(dim=2))
    b = EmbeddingTable("item", SlotConfig(dim=2))
    assert (a.index.seed1, a.index.seed2) != (b.index.seed1, b.index.seed2)  # same slot, same config
    old = old_seed_pairs(old_table_seed("item"))
    assert (int(a.index.seed1), int(a.index.seed2)) != next(old)
    tables = EmbeddingCollection({"item": SlotConfig(dim=2, capacity=8, initializer=Zeros())})
    ids = np.arange(-300, 300, dtype=np.int64) << 20
    tables["item"].admit(ids, now=1)  # grows several times
    path = tmp_path / "snap.npz"
    from streamrec.embedding import save_collection

    save_collection(tables, path)
    restored = load_collection(path)
    for name in ("buckets", "meta", "secret"):
        assert np.array_equal(restored["item"].index.state()[name], tables["item"].index.state()[name]), name
    more = np.arange(300, 3000, dtype=np.int64) << 20  # the same growth with the same (secret) next seeds
    tables["item"].admit(more, now=2)
    restored["item"].admit(more, now=2)
    assert np.array_equal(restored["item"].index.keys, tables["item"].index.keys)


def test_an_old_snapshot_without_secret_seeds_still_loads_and_draws_secret_ones_from_then_on(tmp_path):
    tables = EmbeddingCollection({"item": SlotConfig(dim=2, capacity=8, initializer=Zeros())})
    ids = np.arange(-300, 300, dtype=np.int64) << 20
    tables["item"].admit(ids, now=1)
    arrays = collection_arrays(tables)
    old = {k: v for k, v in arrays.items() if not k.endswith(("/index.secret", "/index.rehash_loads"))}
    old["slot/item/counters"] = old["slot/item/counters"][:4]  # the old counters: step, admitted, evicted, unadmitted
    assert len(old) == len(arrays) - 2
    path = tmp_path / "old.npz"
    write_arrays_atomic(path, {"format": text_array(FORMAT), **old})
    restored = load_collection(path)
    assert np.array_equal(restored["item"].lookup(ids), tables["item"].lookup(ids))
    assert np.array_equal(restored["item"].index.keys, tables["item"].index.keys)  # the layout is kept
    assert restored["item"].stats == tables["item"].stats
    seed = int(restored["item"].index.state()["meta"][5])
    restored["item"].admit(np.arange(300, 3000, dtype=np.int64) << 20, now=2)  # grows: new seeds
    public = list(_pairs_after(seed, skip=0, count=50))
    assert restored["item"].index.growth_loads[-1] > 0.8  # it did grow after the restore
    assert (int(restored["item"].index.seed1), int(restored["item"].index.seed2)) not in public
