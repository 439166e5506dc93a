"""Top-k metrics against a brute-force reference (per-user Python loops) on tiny random logs."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamrec.eval.recommend import interaction_scores
from streamrec.eval.topk import TopKScores, bootstrap_ci, coverage, csr_from_pairs, ranking_metrics, top_k_items


def brute_metrics(top: list[list[int]], relevant: list[set[int]], k: int):
    """recall, ndcg, hit of each user with a relevant item, by the textbook definitions."""
    out = []
    for row, rel in zip(top, relevant, strict=True):
        if not rel:
            continue
        row = [i for i in row[:k]]
        hits = [1.0 if (i >= 0 and i in rel) else 0.0 for i in row]
        dcg = sum(h / math.log2(j + 2) for j, h in enumerate(hits))
        idcg = sum(1 / math.log2(j + 2) for j in range(min(k, len(rel))))
        out.append((sum(hits) / len(rel), dcg / idcg, float(any(hits))))
    return out


def brute_top(scores: np.ndarray, k: int, exclude: list[set[int]]) -> list[list[int]]:
    out = []
    for u, row in enumerate(scores):
        ranked = sorted(
            (i for i in range(len(row)) if i not in exclude[u] and np.isfinite(row[i])), key=lambda i: (-row[i], i)
        )
        out.append((ranked + [-1] * k)[:k])
    return out


@st.composite
def logs(draw):
    n_users = draw(st.integers(1, 6))
    n_items = draw(st.integers(1, 9))
    k = draw(st.integers(1, 10))
    seed = draw(st.integers(0, 10_000))
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 4, size=(n_users, n_items)).astype(float)  # many ties
    scores[rng.random((n_users, n_items)) < 0.1] = -np.inf
    relevant = [set(np.nonzero(rng.random(n_items) < 0.3)[0].tolist()) for _ in range(n_users)]
    exclude = [set(np.nonzero(rng.random(n_items) < 0.2)[0].tolist()) for _ in range(n_users)]
    return scores, relevant, exclude, k


def to_csr(sets: list[set[int]]):
    rows = np.array([u for u, s in enumerate(sets) for _ in s], dtype=np.int64)
    cols = np.array([i for s in sets for i in sorted(s)], dtype=np.int64)
    return csr_from_pairs(rows, cols, len(sets))


@settings(max_examples=200, deadline=None)
@given(logs())
def test_top_k_and_metrics_match_brute_force(log):
    scores, relevant, exclude, k = log
    n_items = scores.shape[1]
    top = top_k_items(scores, k, exclude=to_csr(exclude))
    expected_top = brute_top(scores, min(k, n_items), exclude)
    assert top.tolist() == expected_top
    m = ranking_metrics(top, to_csr(relevant), n_items)
    ref = brute_metrics(expected_top, relevant, min(k, n_items))
    assert len(m["users"]) == len(ref)
    for name, j in (("recall", 0), ("ndcg", 1), ("hit", 2)):
        assert m[name] == pytest.approx([r[j] for r in ref], abs=1e-12)
    chosen = {i for row in expected_top for i in row if i >= 0}
    assert coverage(top, n_items) == pytest.approx(len(chosen) / n_items)


def test_a_perfect_list_scores_one_and_a_list_of_misses_zero():
    relevant = to_csr([{0, 1}, {2}])
    perfect = np.array([[1, 0, 3], [2, 0, 1]])
    m = ranking_metrics(perfect, relevant, 4)
    assert m["recall"].tolist() == [1.0, 1.0] and m["ndcg"].tolist() == [1.0, 1.0]
    misses = np.array([[2, 3, -1], [0, 1, 3]])
    m = ranking_metrics(misses, relevant, 4)
    assert m["recall"].tolist() == [0.0, 0.0] and m["hit"].tolist() == [0.0, 0.0]


def test_bootstrap_interval_holds_the_mean_and_narrows_with_more_users():
    rng = np.random.default_rng(1)
    small, large = rng.random(50), rng.random(5000)
    lo, hi = bootstrap_ci(small)
    assert lo <= small.mean() <= hi
    lo2, hi2 = bootstrap_ci(large)
    assert lo2 <= large.mean() <= hi2 and (hi2 - lo2) < (hi - lo) / 5
    assert bootstrap_ci(np.full(10, 0.25)) == (0.25, 0.25)
    # the 95 % interval of a mean of uniforms: +- 1.96 * sqrt(1/12 / n), within bootstrap noise
    half = 1.96 * math.sqrt(1 / 12 / len(large))
    assert (hi2 - lo2) / 2 == pytest.approx(half, rel=0.15)


def test_scores_of_a_group_of_users_are_those_of_the_sub_log():
    rng = np.random.default_rng(3)
    relevant_sets = [set(np.nonzero(rng.random(12) < 0.3)[0].tolist()) | {u % 12} for u in range(20)]
    top = top_k_items(rng.random((20, 12)), 5)
    rows = np.array([1, 4, 5, 17])
    part = TopKScores.of(top, to_csr(relevant_sets), 12, 5, rows)
    alone = TopKScores.of(top[rows], to_csr([relevant_sets[r] for r in rows]), 12, 5)
    assert part == alone
    ref = brute_metrics(top[rows].tolist(), [relevant_sets[r] for r in rows], 5)
    assert part.recall == pytest.approx(np.mean([r[0] for r in ref]))


def test_prequential_scores_average_interactions_per_user_then_users():
    # user 0: two interactions (hit, miss); user 1: one hit -> per user 0.5 and 1.0 -> 0.75
    top = np.array([[3, 1], [2, 0], [5, 4]])
    users = np.array([0, 0, 1])
    items = np.array([1, 7, 5])
    s = interaction_scores(top, users, items, n_items=8, k=2, rows=np.arange(3))
    assert s.recall == pytest.approx(0.75) and s.hit == pytest.approx(0.75) and s.users == 2
    assert s.ndcg == pytest.approx(((1 / math.log2(3)) / 2 + 1.0) / 2)
