"""The baselines of ``bench embedding`` (CPU and GPU) compute what they stand for: the ratios compare equal work."""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from streamrec.embedding.baselines import (
    DictLookup,
    LogisticHead,
    ModuloBagModel,
    RowwiseAdagrad,
    dict_insert,
    modulo_lookup,
)
from streamrec.embedding.config import Normal, SlotConfig
from streamrec.embedding.table import EmbeddingTable

torch.set_num_threads(1)


def test_modulo_lookup_is_the_row_at_id_mod_rows():
    weight = torch.randn(7, 3)
    ids = torch.tensor([0, 6, 7, 13, 100, 2**40 + 5])
    want = torch.stack([weight[int(i) % 7] for i in ids])
    assert torch.equal(modulo_lookup(ids, weight), want)


def test_dict_lookup_answers_as_the_embedding_table():
    rng = np.random.default_rng(0)
    ids = rng.choice(2**62, size=500, replace=False).astype(np.int64)
    table = EmbeddingTable("t", SlotConfig(dim=4, initializer=Normal(), capacity=500))
    table.admit(ids[:400], now=1)
    assert np.array_equal(table.rows_of(ids[:400]), np.arange(400))  # the bench's premise: row i holds ids[i]
    by_dict = DictLookup(ids[:400], table.weight.numpy(), table.default)
    query = rng.choice(ids, size=2000)  # a fifth of them absent
    assert np.array_equal(by_dict.lookup(query), np.asarray(table.lookup(query)))


def test_dict_insert_gives_each_id_the_next_row():
    chunks = [np.array([5, 9, 2]), np.array([40, 1]), np.array([], dtype=np.int64), np.array([77])]
    assert dict_insert(chunks) == {5: 0, 9: 1, 2: 2, 40: 3, 1: 4, 77: 5}


def _batch(names, rows, batch, seed=0):
    gen = torch.Generator().manual_seed(seed)
    features = {n: torch.randint(0, 10 * rows, (batch,), generator=gen) for n in names}
    labels = (torch.rand(batch, generator=gen) < 0.3).float()
    return features, labels


def test_modulo_bag_model_is_the_head_over_rows_at_id_mod_rows_and_learns():
    torch.manual_seed(0)
    names, rows, dim, batch = ["a", "b", "c"], 50, 4, 64
    model = ModuloBagModel(names, rows, dim, batch, lr=0.1)
    features, labels = _batch(names, rows, batch)
    logits = model(features)
    assert logits.shape == (batch,)
    by_hand = model.head([bag.weight[features[n] % rows] for bag, n in zip(model.bags, names, strict=True)])
    assert torch.allclose(logits, by_hand)
    losses = [float(model.step(features, labels)) for _ in range(30)]
    assert losses[-1] < 0.8 * losses[0]


def test_rowwise_adagrad_updates_as_torch_adagrad_on_the_dense_table():
    torch.manual_seed(0)
    slots, rows, dim, batch, lr = 3, 20, 4, 32, 0.1
    model = RowwiseAdagrad(slots, rows, dim, lr=lr)
    # the reference: the same table as one dense parameter, the same head, torch's own Adagrad
    table = torch.nn.Parameter(model.weight.clone())
    head = copy.deepcopy(model.head)
    opt = torch.optim.Adagrad([table, *head.parameters()], lr=lr, eps=1e-10)
    gen = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(20):
        ranks = torch.randint(0, rows, (slots, batch), generator=gen)
        labels = (torch.rand(batch, generator=gen) < 0.3).float()
        losses.append(float(model.step(ranks, labels)))
        emb = F.embedding(ranks + (torch.arange(slots) * rows).unsqueeze(1), table)
        loss = F.binary_cross_entropy_with_logits(head(list(emb.unbind(0))), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert abs(float(loss.detach()) - losses[-1]) < 1e-5
    assert torch.allclose(model.weight, table.detach(), atol=1e-5)
    assert losses[-1] < losses[0]


def test_logistic_head_is_one_linear_layer_over_the_concatenation():
    head = LogisticHead(2, 3)
    a, b = torch.randn(5, 3), torch.randn(5, 3)
    want = torch.cat([a, b], 1) @ head.linear.weight.T + head.linear.bias
    assert torch.allclose(head([a, b]), want.squeeze(1))
