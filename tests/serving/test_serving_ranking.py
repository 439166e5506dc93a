"""Ranking, the category cap, and impressions: checked against the model run independently."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from conftest import NOW, reference_scores
from streamrec.errors import InvalidInputError
from streamrec.joiner.sampling import correct_probability
from streamrec.records import Example, Impression
from streamrec.serving import top_k


def _impressions(log, topic: str = "impressions") -> list[Impression]:
    with log.consumer(topic, f"reader-{np.random.default_rng().integers(1 << 60)}", Impression) as consumer:
        out, end = [], log.end_offset(topic)
        while len(out) < end:
            out += [e.record for e in consumer.poll(10_000, 0.2)]
    return out


def test_ranking_order_equals_sorting_candidates_by_the_model_scores(world):
    rec = world.recommender()
    out = rec.recommend("u3", 10)
    candidates = rec.retriever.retrieve("u3", NOW)
    fs = world.plan.fetch(world.client, "u3", candidates.items, NOW)
    scores = reference_scores(world.model, fs.examples([0.0] * len(fs)), world.plan)
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:10]
    assert [i for i, _, _ in out.items] == [candidates.items[i] for i in order]
    assert np.allclose([s for _, s, _ in out.items], scores[order], rtol=1e-6)
    assert [src for _, _, src in out.items] == [candidates.sources[i] for i in order]
    assert out.n_candidates == len(candidates) > 10


def test_scores_are_corrected_for_negative_sampling(world):
    plain = world.recommender().recommend("u5", 5)
    sampled = world.recommender(sample_rate=0.1).recommend("u5", 5)
    assert [i for i, _, _ in plain.items] == [i for i, _, _ in sampled.items]  # monotone correction
    expected = correct_probability(np.array([s for _, s, _ in plain.items]), 0.1)
    assert np.allclose([s for _, s, _ in sampled.items], expected, rtol=1e-6)


def test_category_cap_keeps_the_best_items_of_each_category_up_to_the_cap(world):
    rec = world.recommender(category_cap=2)
    out = rec.recommend("u7", 12)
    candidates = rec.retriever.retrieve("u7", NOW)
    fs = world.plan.fetch(world.client, "u7", candidates.items, NOW)
    scores = reference_scores(world.model, fs.examples([0.0] * len(fs)), world.plan)
    taken: Counter[str] = Counter()
    expected = []
    for i in sorted(range(len(scores)), key=lambda i: (-scores[i], i)):  # brute force greedy
        c = fs.categories[i]
        if c and taken[c] >= 2:
            continue
        taken[c] += 1
        expected.append(candidates.items[i])
    assert [i for i, _, _ in out.items] == expected[:12]
    per_category = Counter(fs.categories[candidates.items.index(i)] for i, _, _ in out.items)
    assert max(per_category.values()) <= 2


def test_top_k_with_cap_matches_a_brute_force_on_random_inputs():
    rng = np.random.default_rng(3)
    for _ in range(200):
        n = int(rng.integers(1, 40))
        scores = rng.integers(0, 5, n).astype(float)  # many ties
        cats = [str(c) if c else "" for c in rng.integers(0, 4, n)]
        k, cap = int(rng.integers(1, 10)), int(rng.integers(1, 3))
        seen: Counter[str] = Counter()
        ref = []
        for i in sorted(range(n), key=lambda i: (-scores[i], i)):
            if cats[i] and seen[cats[i]] >= cap:
                continue
            seen[cats[i]] += 1
            ref.append(i)
        assert top_k(scores, k, cats, cap).tolist() == ref[:k]


def test_impressions_hold_exactly_the_features_the_ranker_scored(world):
    rec = world.recommender()
    before = world.log.end_offset("impressions")
    out = rec.recommend("u11", 8)
    logged = [i for i in _impressions(world.log) if i.request_id == out.request_id]
    assert world.log.end_offset("impressions") == before + 8
    assert [i.item for i in logged] == [i for i, _, _ in out.items]
    assert [i.position for i in logged] == list(range(8))
    assert all(i.user == "u11" and i.time == NOW for i in logged)
    # Recompute the scores from the logged features only: they must be the served scores.
    examples = [Example(sparse=i.sparse, dense=i.dense, label=0.0, time=i.time) for i in logged]
    recomputed = reference_scores(world.model, examples, world.plan)
    assert np.allclose(recomputed, [s for _, s, _ in out.items], rtol=1e-6)
    assert np.allclose(recomputed, [i.score for i in logged], rtol=1e-6)
    # And they are what the plan builds for training now (no training/serving skew).
    fs = world.plan.fetch(world.client, "u11", [i.item for i in logged], NOW)
    for p, imp in enumerate(logged):
        assert imp.sparse == fs.sparse_of(p)
        assert np.array_equal(np.float32(imp.dense), fs.dense[p])
        assert len(imp.dense) == world.plan.n_dense >= 50


def test_bad_requests_name_the_field(world):
    rec = world.recommender()
    with pytest.raises(InvalidInputError, match="k"):
        rec.recommend("u1", 0)
    with pytest.raises(InvalidInputError, match="user_id"):
        rec.recommend("", 3)


def test_without_a_model_the_fallback_column_ranks(world):
    from streamrec.serving import Recommender, RecommenderConfig

    cfg = RecommenderConfig(features=world.plan)
    rec = Recommender(world.client, world.log, None, cfg, clock=lambda: NOW)
    out = rec.recommend("u2", 5)
    scores = [s for _, s, _ in out.items]
    assert scores == sorted(scores, reverse=True)
    fs = world.plan.fetch(world.client, "u2", [i for i, _, _ in out.items], NOW)
    assert np.allclose(fs.column("item_ctr_1d"), scores)
    assert set(out.timings) == {"retrieve", "features", "rank", "log"}


def test_concurrent_requests_each_log_their_own_impressions(world):
    from concurrent.futures import ThreadPoolExecutor

    rec = world.recommender()
    users = [f"u{i % 20}" for i in range(24)]
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda u: rec.recommend(u, 5), users))
    by_request = {}
    for imp in _impressions(world.log):
        by_request.setdefault(imp.request_id, []).append(imp)
    for user, out in zip(users, outs, strict=True):
        logged = sorted(by_request[out.request_id], key=lambda i: i.position)
        assert [i.item for i in logged] == [i for i, _, _ in out.items] and {i.user for i in logged} == {user}
        examples = [Example(sparse=i.sparse, dense=i.dense, label=0.0, time=i.time) for i in logged]
        assert np.allclose(reference_scores(world.model, examples, world.plan), [s for _, s, _ in out.items])
