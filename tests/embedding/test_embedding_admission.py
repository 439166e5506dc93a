"""Admission (issue 2, item 2), checked against exact counting in a dict."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from streamrec.embedding import SGD, EmbeddingCollection, EmbeddingModule, EmbeddingTable, Normal, SlotConfig, Zeros
from streamrec.embedding.admission import DEFAULT_DEPTH, DEFAULT_WIDTH


def _table(admit_after: int, width: int = DEFAULT_WIDTH, depth: int = DEFAULT_DEPTH, seed: int = 0) -> EmbeddingTable:
    config = SlotConfig(
        dim=3,
        admit_after=admit_after,
        optimizer=SGD(lr=0.1),
        initializer=Normal(std=1.0),
        sketch_width=width,
        sketch_depth=depth,
    )
    return EmbeddingTable("s", config, seed=seed)


def _admitted_one_at_a_time(table: EmbeddingTable, stream: list[int]) -> list[bool]:
    """For each occurrence, whether the id holds a row right after that occurrence."""
    return [bool(table.admit(np.array([x], dtype=np.int64), now=1)[0] >= 0) for x in stream]


def _exact(stream: list[int], k: int) -> list[bool]:
    counts: Counter[int] = Counter()
    out = []
    for x in stream:
        counts[x] += 1
        out.append(counts[x] >= k)
    return out


def test_large_sketch_admits_each_id_exactly_at_its_kth_occurrence():
    rng = np.random.default_rng(0)
    for k in (2, 3, 5):
        stream = [int(x) for x in rng.integers(-200, 200, size=2_000) * 7919]
        table = _table(k, width=1 << 20)
        assert _admitted_one_at_a_time(table, stream) == _exact(stream, k)


def test_large_sketch_admits_exactly_the_ids_counted_k_times_after_every_batch():
    rng = np.random.default_rng(1)
    k = 4
    table = _table(k, width=1 << 20)
    counts: Counter[int] = Counter()
    universe = rng.integers(-(2**63), 2**63 - 1, size=500, dtype=np.int64)
    for _ in range(40):
        batch = rng.choice(universe, size=int(rng.integers(1, 200)))
        rows = table.admit(batch, now=1)
        counts.update(batch.tolist())
        should = np.array([counts[x] >= k for x in batch.tolist()])
        # every occurrence of an id admitted by this batch gets its row, the others get -1
        assert np.array_equal(rows >= 0, should)
        assert len({r for r, ok in zip(rows.tolist(), should, strict=True) if ok}) == len(
            {x for x, ok in zip(batch.tolist(), should, strict=True) if ok}
        )
        assert np.array_equal(table.rows_of(universe) >= 0, np.array([counts[x] >= k for x in universe.tolist()]))


@settings(max_examples=150, deadline=None)
@given(
    stream=st.lists(st.integers(0, 40), min_size=1, max_size=120),
    k=st.integers(2, 6),
    depth=st.integers(1, 3),
    seed=st.integers(0, 2**32),
)
def test_tiny_sketch_never_admits_an_id_later_than_exact_counting(stream, k, depth, seed):
    table = _table(k, width=16, depth=depth, seed=seed)
    for got, exact in zip(_admitted_one_at_a_time(table, stream), _exact(stream, k), strict=True):
        assert got or not exact  # exact says admitted => the table has admitted it


@settings(max_examples=60, deadline=None)
@given(
    batches=st.lists(st.lists(st.integers(-20, 20), max_size=40), min_size=1, max_size=8),
    k=st.integers(2, 4),
    seed=st.integers(0, 2**32),
)
def test_tiny_sketch_in_batches_holds_every_id_exact_counting_admits(batches, k, seed):
    table = _table(k, width=16, depth=2, seed=seed)
    counts: Counter[int] = Counter()
    for batch in batches:
        table.admit(np.array(batch, dtype=np.int64), now=1)
        counts.update(batch)
        due = [x for x, c in counts.items() if c >= k]
        assert (table.rows_of(np.array(due, dtype=np.int64)) >= 0).all()


def test_admit_after_one_admits_at_first_sight():
    table = _table(1)
    assert table.sketch is None
    ids = np.array([5, -(2**63), 2**63 - 1, 5], dtype=np.int64)
    rows = table.admit(ids, now=1)
    assert (rows >= 0).all() and rows[0] == rows[3]
    assert len(table) == 3


def test_before_admission_lookup_is_the_default_vector_and_the_gradient_is_dropped():
    config = SlotConfig(dim=4, admit_after=3, optimizer=SGD(lr=1.0), initializer=Normal(mean=1.0, std=0.5))
    tables = EmbeddingCollection({"item": config})
    table = tables["item"]
    module = EmbeddingModule(tables)
    table.admit(np.array([1, 1, 1]), now=5)  # id 1 has a row; 2 and 3 do not
    weights_before = table.weight.clone()
    state_before = {k: v.clone() for k, v in table._state_t.items()}

    out = module({"item": torch.tensor([2, 3, 2])}, now=6)  # 2 seen twice: still below 3
    assert torch.equal(out["item"], torch.zeros(3, 4))  # the default vector
    (out["item"] * torch.arange(1.0, 5.0)).sum().backward()
    module.apply_gradients()

    assert torch.equal(table.weight, weights_before)
    assert all(torch.equal(v, state_before[k]) for k, v in table._state_t.items())
    assert table.step == 0
    assert table.rows_of(np.array([2, 3])).tolist() == [-1, -1]
    assert np.array_equal(table.lookup(np.array([2, 3])), np.zeros((2, 4), np.float32))
    assert not np.array_equal(table.lookup(np.array([1])), np.zeros((1, 4), np.float32))


def test_only_admitted_ids_of_a_mixed_batch_are_updated():
    config = SlotConfig(dim=2, admit_after=2, optimizer=SGD(lr=1.0), initializer=Zeros())
    tables = EmbeddingCollection({"item": config})
    module = EmbeddingModule(tables)
    out = module({"item": torch.tensor([7, 7, 8])}, now=1)  # 7 admitted at its 2nd sight, 8 not
    out["item"].sum().backward()
    module.apply_gradients()
    assert tables["item"].lookup(np.array([7, 8])).tolist() == [[-2.0, -2.0], [0.0, 0.0]]


def _zipf_stream(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` Zipf(1.1) occurrences over random int64 ids; returns (ids, dense index of each id)."""
    rng = np.random.default_rng(seed)
    ranks = rng.zipf(1.1, size=n)
    distinct, dense = np.unique(ranks, return_inverse=True)
    labels = rng.integers(-(2**63), 2**63 - 1, size=len(distinct), dtype=np.int64)
    return labels[dense], dense


def test_false_admission_rate_at_the_default_sketch_size_on_a_zipf_stream():
    """Measures the filter's false-admission rate (issue 2 asks for the number).

    Setup: 2,000,000 Zipf(1.1) occurrences over ~650k distinct random int64 ids, admit_after=3,
    default sketch (4 x 2**19 one-byte counters = 2 MiB), batches of 2,048. The rate is the share
    of the ids seen fewer than 3 times in the whole stream (which exact counting never admits)
    that got a row anyway.

    Bound: a false admission needs all ``d`` = 4 counters of the id inflated by other ids. An id
    seen k-1 times is admitted early if its first occurrence found all its counters >= 1, which
    happens with probability at most ``(1 - exp(-D / w))**d`` (D distinct ids hashed into w cells
    per row); an id seen fewer times needs all its counters >= 2, at most ``(1 - exp(-D2 / w))**d``
    with D2 the ids seen at least twice (the only ones that lift a counter to 2 without being
    inflated themselves). Weighted by how many ineligible ids are seen k-1 times, this gives
    ~1.1% here (counters seen at the end of the stream, so an over-estimate); we assert the
    measured rate stays below it, and below 1% outright.
    """
    k = 3
    ids, dense = _zipf_stream(2_000_000, seed=42)
    table = _table(k)
    counts = np.zeros(dense.max() + 1, dtype=np.int64)
    falsely_admitted = np.zeros_like(counts, dtype=bool)
    for lo in range(0, len(ids), 2048):
        batch, where = ids[lo : lo + 2048], dense[lo : lo + 2048]
        rows = table.admit(batch, now=1)
        np.add.at(counts, where, 1)
        falsely_admitted[where[(rows >= 0) & (counts[where] < k)]] = True
        assert not ((rows < 0) & (counts[where] >= k)).any(), "an id was admitted later than exact counting"

    ineligible = counts < k
    false_ids = (falsely_admitted & ineligible).sum()
    rate = false_ids / ineligible.sum()
    d, w = DEFAULT_DEPTH, DEFAULT_WIDTH
    p_one_short = (1 - math.exp(-len(counts) / w)) ** d
    p_more_short = (1 - math.exp(-(counts >= 2).sum() / w)) ** d
    share_one_short = (counts == k - 1).sum() / ineligible.sum()
    bound = p_one_short * share_one_short + p_more_short
    print(
        f"\nfalse admissions at the default sketch ({d}x{w}, {table.sketch.nbytes} bytes), admit_after={k}, "
        f"{len(ids):,} Zipf(1.1) occurrences, {len(counts):,} distinct ids: "
        f"{false_ids} of {ineligible.sum():,} ids seen < {k} times got a row = {rate:.4%} "
        f"(bound {bound:.4%}); {falsely_admitted.sum()} of the {len(table):,} rows were admitted early"
    )
    assert rate < bound
    assert rate < 0.01
    assert len(table) == ((counts >= k) | falsely_admitted).sum()
