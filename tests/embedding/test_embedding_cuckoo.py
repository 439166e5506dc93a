"""Ids and the cuckoo index (issue 2, item 1), checked against a Python dict model."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from streamrec.embedding import EmbeddingTable, SlotConfig, Zeros
from streamrec.embedding.cuckoo import PARALLEL_MIN, CuckooIndex, aligned_full
from streamrec.embedding.serving import ServingTable

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
EXTREMES = [INT64_MIN, INT64_MIN + 1, -1, 0, 1, INT64_MAX - 1, INT64_MAX]


def _ids(values) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def _adversarial_sets(n: int) -> dict[str, np.ndarray]:
    k = np.arange(n, dtype=np.int64)
    return {
        "consecutive": k,
        "consecutive_negative": -k - 1,
        "multiples_of_2**40": k << 40,
        "signed_multiples_of_2**47": (k - n // 2) << 47,  # large positive and negative
        "shared_low_bits": (k << 32) | 7,
        "near_int64_min": INT64_MIN + k,
        "near_int64_max": INT64_MAX - k,
    }


def test_every_int64_extreme_is_a_storable_id():
    index = CuckooIndex(capacity=4, seed=3)
    ids = _ids(EXTREMES)
    index.insert(ids, np.arange(len(ids), dtype=np.int32))
    assert index.lookup(ids).tolist() == list(range(len(ids)))
    assert index.lookup(_ids([2, -2, 12345])).tolist() == [-1, -1, -1]
    index.delete(_ids([0, INT64_MIN]))
    assert index.lookup(ids).tolist() == [-1, 1, 2, -1, 4, 5, 6]


def test_extreme_ids_get_distinct_rows_through_the_table():
    table = EmbeddingTable("s", SlotConfig(dim=2, initializer=Zeros()))
    rows = table.admit(_ids(EXTREMES), now=1)
    assert (rows >= 0).all()
    assert len(set(rows.tolist())) == len(EXTREMES)
    assert table.rows_of(_ids(EXTREMES)).tolist() == rows.tolist()
    assert table.rows_of(_ids([2, 3])).tolist() == [-1, -1]


@pytest.mark.parametrize("name", list(_adversarial_sets(1)))
def test_adversarial_ids_inserted_in_bulk_are_all_found_on_distinct_rows(name):
    n = 60_000
    ids = _adversarial_sets(n)[name]
    rows = np.random.default_rng(0).permutation(n).astype(np.int32)
    index = CuckooIndex(capacity=64, seed=11)  # tiny: forces many growths
    index.insert(ids, rows)
    assert index.size == n
    assert np.array_equal(index.lookup(ids), rows)
    held_ids, held_rows = index.items()
    assert sorted(held_ids.tolist()) == sorted(ids.tolist())
    assert len(np.unique(held_rows)) == n  # never two ids on one row
    assert index.growth_loads, "the tiny index must have grown"
    assert all(0.85 <= load <= 1.0 for load in index.growth_loads), index.growth_loads


@pytest.mark.parametrize("name", list(_adversarial_sets(1)))
def test_growth_loses_nothing_inserted_earlier(name):
    ids = _adversarial_sets(30_000)[name]
    index = CuckooIndex(capacity=16, seed=5)
    model: dict[int, int] = {}
    for start in range(0, len(ids), 3_000):
        chunk = ids[start : start + 3_000]
        rows = np.arange(start, start + len(chunk), dtype=np.int32)
        index.insert(chunk, rows)
        model.update(zip(chunk.tolist(), rows.tolist(), strict=True))
        known = _ids(list(model))
        assert np.array_equal(index.lookup(known), _ids(list(model.values())).astype(np.int32))
    assert len(index.growth_loads) >= 5
    assert min(index.growth_loads) >= 0.85


def test_mixed_adversarial_ids_reach_high_load_before_growth_in_the_table():
    sets = _adversarial_sets(20_000)
    ids = np.unique(np.concatenate([*sets.values(), _ids(EXTREMES)]))
    ids = np.random.default_rng(1).permutation(ids)
    table = EmbeddingTable("s", SlotConfig(dim=1, initializer=Zeros(), capacity=8))
    rows = np.concatenate([table.admit(ids[i : i + 5_000], now=1) for i in range(0, len(ids), 5_000)])
    assert len(table) == len(ids)
    assert len(np.unique(rows)) == len(ids)
    assert np.array_equal(table.rows_of(ids), rows)
    assert table.index.growth_loads and min(table.index.growth_loads) >= 0.85


_ID = st.one_of(
    st.sampled_from(EXTREMES),
    st.integers(-50, 50),
    st.integers(0, 40).map(lambda k: k << 40),
    st.integers(0, 40).map(lambda k: (k << 32) | 7),
    st.integers(INT64_MIN, INT64_MAX),
)


class CuckooAgainstDict(RuleBasedStateMachine):
    """Random insert/delete/lookup sequences; the model is a dict id -> row."""

    def __init__(self) -> None:
        super().__init__()
        self.index = CuckooIndex(capacity=8, seed=7)
        self.model: dict[int, int] = {}
        self.next_row = 0

    @rule(ids=st.lists(_ID, max_size=40, unique=True))
    def insert(self, ids):
        new = [i for i in ids if i not in self.model]
        rows = list(range(self.next_row, self.next_row + len(new)))
        self.next_row += len(new)
        self.index.insert(_ids(new), np.array(rows, dtype=np.int32))
        self.model.update(zip(new, rows, strict=True))

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def delete_some(self, data):
        gone = data.draw(st.lists(st.sampled_from(sorted(self.model)), max_size=10, unique=True))
        absent = data.draw(st.lists(_ID, max_size=3))
        freed = self.index.delete(_ids(gone + [i for i in absent if i not in self.model and i not in gone]))
        assert sorted(freed.tolist()) == sorted(self.model.pop(i) for i in gone)

    @rule(ids=st.lists(_ID, max_size=20))
    def lookup(self, ids):
        assert self.index.lookup(_ids(ids)).tolist() == [self.model.get(i, -1) for i in ids]

    @invariant()
    def matches_model(self):
        assert self.index.size == len(self.model)
        held_ids, held_rows = self.index.items()
        assert dict(zip(held_ids.tolist(), held_rows.tolist(), strict=True)) == self.model
        assert all(load <= 1.0 for load in self.index.growth_loads)


CuckooAgainstDict.TestCase.settings = settings(
    max_examples=60, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_cuckoo_matches_a_dict_model_under_random_insert_delete_lookup = CuckooAgainstDict.TestCase


def test_random_churn_keeps_the_index_equal_to_a_dict_model():
    rng = np.random.default_rng(3)
    index = CuckooIndex(capacity=32, seed=9)
    model: dict[int, int] = {}
    next_row = 0
    for _ in range(200):
        candidates = rng.integers(INT64_MIN, INT64_MAX, size=200, dtype=np.int64, endpoint=True)
        candidates[:50] = rng.integers(-1000, 1000, size=50) << rng.integers(0, 50)
        new = [i for i in dict.fromkeys(candidates.tolist()) if i not in model]
        index.insert(_ids(new), np.arange(next_row, next_row + len(new), dtype=np.int32))
        model.update(zip(new, range(next_row, next_row + len(new)), strict=True))
        next_row += len(new)
        victims = rng.choice(list(model), size=min(len(model), 120), replace=False).tolist()
        index.delete(_ids(victims))
        for v in victims:
            del model[v]
        probe = _ids(list(model) + candidates.tolist())
        assert index.lookup(probe).tolist() == [model.get(i, -1) for i in probe.tolist()]
    assert index.size == len(model)


@pytest.mark.parametrize(
    "n", [0, 1, 11, 12, 13, 23, 24, 25, 4095, 4096, 4097, PARALLEL_MIN - 1, PARALLEL_MIN, PARALLEL_MIN + 4097]
)
def test_gather_returns_each_ids_row_or_the_default_for_every_batch_size(n):
    rng = np.random.default_rng(n)
    stored = rng.integers(INT64_MIN, INT64_MAX, size=5_000, dtype=np.int64)
    index = CuckooIndex(capacity=5_000, seed=2)
    index.insert(stored, np.arange(5_000, dtype=np.int32))
    weights = rng.normal(size=(5_000, 5)).astype(np.float32)
    default = np.full(5, -7.0, dtype=np.float32)
    absent = rng.integers(INT64_MIN, INT64_MAX, size=n, dtype=np.int64)
    ids = np.where(rng.random(n) < 0.7, rng.choice(stored, size=n), absent)
    model = {int(k): r for r, k in enumerate(stored)}
    expected = np.stack([weights[model[i]] if i in model else default for i in ids.tolist()] or [default])[:n]
    assert np.array_equal(index.gather(ids, weights, default), expected)


def _line_offset(array: np.ndarray) -> int:
    return array.ctypes.data % 64


@pytest.mark.parametrize("shape,fill,dtype", [(7, -1, np.int64), ((1000, 16), 0.5, np.float32), ((3, 5), 0, np.uint8)])
def test_aligned_full_starts_a_cache_line_and_holds_the_fill(shape, fill, dtype):
    array = aligned_full(shape, fill, dtype)
    assert _line_offset(array) == 0
    assert array.flags.c_contiguous and array.dtype == np.dtype(dtype)
    assert np.array_equal(array, np.full(shape, fill, dtype=dtype))


def test_rows_stay_on_cache_lines_through_growth_restore_and_replicas():
    # A 64-byte row (dim 16) straddling two lines costs a second cache miss per lookup.
    table = EmbeddingTable("item", SlotConfig(dim=16, capacity=8, initializer=Zeros()))  # Adagrad: a state array
    ids = np.arange(-500, 500, dtype=np.int64) * (2**40)
    table.admit(ids, now=1)  # grows the rows several times
    arrays = [table._weights, *table._state.values(), table.index.keys]
    assert all(_line_offset(a) == 0 for a in arrays)
    restored = EmbeddingTable.from_state_arrays("item", table.config, 0, table.state_arrays())
    assert all(_line_offset(a) == 0 for a in [restored._weights, *restored._state.values(), restored.index.keys])
    assert np.array_equal(restored.lookup(ids), table.lookup(ids))
    replica = ServingTable("item", dim=16, capacity=4)
    replica.apply(table.export_delta())  # grows the replica's rows
    assert _line_offset(replica._weights) == 0 and _line_offset(replica.index.keys) == 0
    assert np.array_equal(replica.lookup(ids), table.lookup(ids))
