"""The ann source: usearch neighbours against an exact inner-product search, and refresh on sync."""

from __future__ import annotations

import numpy as np
import torch

from conftest import NOW
from streamrec.serving import Recommender, RecommenderConfig
from streamrec.serving.ann import AnnSource
from streamrec.serving.retrieval import RetrievalConfig


def _exact(source: AnnSource, user: str, n: int) -> list[str]:
    items = list(source._state[1])
    vectors = source.item_vectors(items, NOW)
    scores = vectors @ source.user_vector(user, NOW)
    return [items[i] for i in np.argsort(-scores, kind="stable")[:n]]


def test_ann_neighbours_match_an_exact_inner_product_search(world, two_tower):
    source = AnnSource(world.client, two_tower, world.plan, min_interval_s=0.0, background=False)
    for user in ("u0", "u5", "u13", "stranger"):
        got = source(user, NOW, 10)
        expected = _exact(source, user, 10)
        assert len(got) == 10 and len(set(got) & set(expected)) >= 9, (got, expected)
    assert source.rebuilds == 1  # the model did not change: the index is reused
    assert len(source._state[1]) == len({e.item for e in world.events})  # the whole catalogue is indexed


def test_ann_index_is_rebuilt_when_the_model_syncs(world, two_tower):
    source = AnnSource(world.client, two_tower, world.plan, min_interval_s=0.0, background=False)
    before = source("u3", NOW, 10)
    head = two_tower._model.head
    saved = {k: v.clone() for k, v in head.state_dict().items()}
    try:
        with torch.no_grad():
            for p in head.item_tower.parameters():
                p.copy_(torch.randn_like(p))
        two_tower.version += 1  # what applying an update does
        after = source("u3", NOW, 10)
        assert source.rebuilds == 2
        assert len(set(after) & set(_exact(source, "u3", 10))) >= 9
        assert after != before
    finally:
        head.load_state_dict(saved)
        two_tower.version -= 1


def test_recommender_with_a_two_tower_model_retrieves_from_ann(world, two_tower):
    quotas = {"co_engaged": 10, "ann": 15, "popular": 10, "fresh": 5}
    cfg = RecommenderConfig(features=world.plan, retrieval=RetrievalConfig(quotas=quotas))
    rec = Recommender(world.client, world.log, two_tower, cfg, clock=lambda: NOW)
    merged = rec.retriever.retrieve("u8", NOW)
    assert merged.sources.count("ann") == 15
    out = rec.recommend("u8", 10)
    assert len(out.items) == 10 and {s for _, _, s in out.items} <= set(quotas)


def test_background_rebuild_keeps_serving_the_old_index_until_the_new_one_is_ready(world, two_tower):
    import time

    source = AnnSource(world.client, two_tower, world.plan, min_interval_s=0.0)
    first = source("u2", NOW, 10)
    old_state = source._state
    two_tower.version += 1
    try:
        assert source("u2", NOW, 10) == first  # answered from the live index while the rebuild runs
        deadline = time.monotonic() + 10
        while source.rebuilds < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert source.rebuilds == 2 and source._state is not old_state and source.error is None
    finally:
        two_tower.version -= 1
