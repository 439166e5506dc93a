"""The baselines of ``bench serving`` answer a request as the feature stage does: the ratios compare equal work."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from streamrec.profiles.types import FeatureQuery
from streamrec.serving.baselines import PrecomputedRedisFeatures, fetch_split
from streamrec.serving.bench import NOW, QUICK, QUOTAS, _same, bench_plan, generate_events


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from streamrec.profiles import ProfileClient
    from streamrec.serving.retrieval import RetrievalConfig, Retriever
    from streamrec.serving.slots import serving_profiles_config

    events = generate_events(dataclasses.replace(QUICK, events=6000, users=200, items=600), NOW, seed=5)
    cfg = serving_profiles_config({"merge_interval": 0, "fsync": False})
    folder = tmp_path_factory.mktemp("serving-baselines")
    client = ProfileClient.embedded(cfg, str(folder / "profiles"), clock=lambda: NOW, background=False)
    assert not client.write(events).rejected
    client.flush()
    retriever = Retriever(client, RetrievalConfig(quotas=dict(QUOTAS), popular_window="7d"))
    counts: dict[str, int] = {}
    for e in events:
        counts[e.user] = counts.get(e.user, 0) + 1
    users = sorted(counts, key=lambda u: (-counts[u], u))[:3]
    requests = [(u, retriever.retrieve(u, NOW).items[:40]) for u in users]
    assert all(len(items) == 40 for _, items in requests)
    yield client, bench_plan(), requests
    client.close()


def test_entity_typed_and_per_entity_queries_assemble_the_feature_stage_answer(world):
    client, plan, requests = world
    for user, items in requests:
        served = plan.fetch(client, user, items, NOW)
        assert np.count_nonzero(served.dense) > 0
        for per_entity in (False, True):
            assert _same(fetch_split(plan, client, user, items, NOW, per_entity=per_entity), served)


def test_precomputed_redis_hashes_hold_the_profile_store_answers(world, redis_url):
    import redis

    client, plan, requests = world
    r = redis.Redis.from_url(redis_url)
    try:
        precomputed = PrecomputedRedisFeatures(r, plan)
        precomputed.load(client, requests, NOW)
        for user, items in requests:
            numbers, categories, answers = precomputed.read(user, items)
            assert categories == plan.fetch(client, user, items, NOW).categories
            want = client.query(
                FeatureQuery(features=precomputed.item_feats, entities=[f"item:{i}" for i in items], now=NOW)
            )
            expected = np.array([[res.data[0][0] for res in row[:-1]] for row in want.results])
            assert numbers.shape == (len(items), len(precomputed.inames) - 1)
            assert np.array_equal(numbers, expected, equal_nan=True) and np.count_nonzero(expected) > 0
            row = client.query(
                FeatureQuery(features=precomputed.user_feats, entities=[f"user:{user}"], now=NOW)
            ).results[0]
            for name, res in zip(precomputed.unames, row, strict=True):
                if res.values is None and len(res.data) == 1 and len(res.data[0]) == 1:
                    assert answers[name] == res.data[0][0] or (np.isnan(answers[name]) and np.isnan(res.data[0][0])), (
                        name
                    )
                else:
                    assert answers[name] == [res.values, res.data], name
    finally:
        r.delete(*[f"f:user:{u}" for u, _ in requests], *[f"f:item:{i}" for _, items in requests for i in items])
        r.close()
