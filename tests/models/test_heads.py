import itertools

import numpy as np
import pytest
import torch

from streamrec.embedding import EmbeddingCollection, JaggedIds, SlotConfig
from streamrec.errors import ConfigError
from streamrec.models import DCNv2Head, DeepFMHead, HashedEmbeddingModule, ModelConfig, TwoTowerHead, build_model
from streamrec.training import ExampleBatch


def test_deepfm_second_order_term_equals_the_sum_over_all_pairs():
    torch.manual_seed(0)
    head = DeepFMHead(["a", "b", "c"], dim=4, n_dense=2, hidden=[8])
    emb = {s: torch.randn(5, 4) for s in "abc"}
    dense = torch.randn(5, 2)
    pairs = sum((emb[x] * emb[y]).sum(1) for x, y in itertools.combinations("abc", 2))
    x = torch.cat([emb["a"], emb["b"], emb["c"], dense], 1)
    expected = head.linear(x).squeeze(1) + head.out(head.deep(x)).squeeze(1) + pairs
    assert torch.allclose(head(emb, dense), expected, atol=1e-5)


def test_dcnv2_cross_layers_follow_the_published_recurrence():
    torch.manual_seed(0)
    head = DCNv2Head(["a", "b"], dim=3, n_dense=1, hidden=[4], cross_layers=2)
    emb = {"a": torch.randn(2, 3), "b": torch.randn(2, 3)}
    dense = torch.randn(2, 1)
    x0 = torch.cat([emb["a"], emb["b"], dense], 1)
    x = x0
    for layer in head.cross:
        x = x0 * (x @ layer.weight.T + layer.bias) + x
    assert torch.allclose(head(emb, dense), head.out(head.deep(x)).squeeze(1), atol=1e-6)


def test_two_tower_logit_is_the_inner_product_of_the_towers():
    torch.manual_seed(0)
    head = TwoTowerHead(["u"], ["i"], dim=3, n_dense=0, hidden=[5], out_dim=4)
    emb = {"u": torch.randn(3, 3), "i": torch.randn(3, 3)}
    dense = torch.zeros(3, 0)
    u, v = head.user_vector(emb, dense), head.item_vector(emb)
    assert torch.allclose(head(emb, dense), (u * v).sum(1) + head.bias)


def test_hashed_module_maps_ids_modulo_rows_like_a_plain_lookup():
    module = HashedEmbeddingModule({"a": 2}, {"a": 7})
    ids = JaggedIds.from_lists([[3, 10], [-4], []])
    out = module({"a": ids})["a"]
    w = module.bags["a"].weight
    expected = torch.stack([w[3] + w[10 % 7], w[-4 % 7], torch.zeros(2)])
    assert torch.allclose(out, expected)


def _batch(n=16):
    rng = np.random.default_rng(0)
    lists = {s: [[int(x) for x in rng.integers(0, 50, rng.integers(1, 3))] for _ in range(n)] for s in ("u", "i")}
    return ExampleBatch(
        {s: JaggedIds.from_lists(v) for s, v in lists.items()},
        torch.randn(n, 2),
        torch.from_numpy(rng.integers(0, 2, n).astype(np.float32)),
        time=torch.full((n,), 100.0, dtype=torch.float64),
    )


@pytest.mark.parametrize("kind", ["deepfm", "dcnv2", "two_tower"])
def test_a_serving_replica_scores_exactly_like_the_training_model(kind):
    tables = EmbeddingCollection({"u": SlotConfig(dim=4), "i": SlotConfig(dim=4)})
    config = ModelConfig(kind=kind, n_dense=2, hidden=[8], user_slots=["u"], item_slots=["i"])
    torch.manual_seed(0)
    model = build_model(config, tables)
    opt = torch.optim.Adam(model.head.parameters(), lr=0.01)
    batch = _batch()
    for _ in range(3):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(batch), batch.labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.apply_sparse_gradients()
    serving = build_model(config, tables.serving_replica())
    serving.head.load_state_dict(model.head.state_dict())
    model.eval()
    serving.eval()
    with torch.no_grad():
        assert torch.equal(model(batch), serving(batch))


def test_two_tower_needs_disjoint_user_and_item_slots():
    tables = EmbeddingCollection({"u": SlotConfig(dim=4), "i": SlotConfig(dim=4)})
    with pytest.raises(ConfigError, match="user_slots"):
        build_model(ModelConfig(kind="two_tower", user_slots=["u"], item_slots=["u"]), tables)


def test_heads_need_one_dim_for_every_slot():
    tables = EmbeddingCollection({"u": SlotConfig(dim=4), "i": SlotConfig(dim=8)})
    with pytest.raises(ConfigError, match=r"embedding\.slots"):
        build_model(ModelConfig(), tables)
