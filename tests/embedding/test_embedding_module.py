"""The PyTorch module (issue 2, item 5): pooling, eval/train parity, summed steps, dense params."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from streamrec.embedding import (
    SGD,
    Adagrad,
    EmbeddingCollection,
    EmbeddingModule,
    JaggedIds,
    Normal,
    SlotConfig,
)

DIM = 4


def _collection(pooling: str = "sum", optimizer=None, admit_after: int = 1) -> EmbeddingCollection:
    return EmbeddingCollection(
        {
            "genres": SlotConfig(
                dim=DIM,
                pooling=pooling,
                admit_after=admit_after,
                optimizer=optimizer or SGD(lr=0.5),
                initializer=Normal(std=1.0),
            ),
            "user": SlotConfig(dim=DIM, optimizer=optimizer or SGD(lr=0.5), initializer=Normal(std=1.0)),
        },
        seed=21,
    )


BAGS = [[1, 2, 3], [], [2, 2], [7], [3, 1, 7, 7, 9]]


def _manual_pool(table, bags, mode: str) -> np.ndarray:
    out = np.zeros((len(bags), DIM), dtype=np.float64)
    for b, bag in enumerate(bags):
        if bag:
            vectors = table.lookup(np.array(bag, dtype=np.int64)).astype(np.float64)
            out[b] = vectors.sum(0) if mode == "sum" else vectors.mean(0)
    return out


@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_pooled_slot_equals_manual_pooling_in_train_and_eval(mode):
    tables = _collection(mode)
    module = EmbeddingModule(tables)
    trained = module({"genres": JaggedIds.from_lists(BAGS)}, now=1)["genres"]
    expected = _manual_pool(tables["genres"], BAGS, mode)
    np.testing.assert_allclose(trained.detach().numpy(), expected, rtol=1e-6, atol=1e-6)
    module.discard_gradients()
    module.eval()
    evaluated = module({"genres": JaggedIds.from_lists(BAGS)})["genres"]
    np.testing.assert_allclose(evaluated.numpy(), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_pooled_gradient_reaches_each_id_as_the_closed_form(mode):
    lr = 0.5
    tables = _collection(mode, SGD(lr=lr))
    module = EmbeddingModule(tables)
    upstream = torch.arange(1.0, 1.0 + len(BAGS) * DIM).reshape(len(BAGS), DIM)
    out = module({"genres": JaggedIds.from_lists(BAGS)}, now=1)["genres"]
    before = {i: tables["genres"].lookup(np.array([i]))[0] for i in (1, 2, 3, 7, 9)}
    (out * upstream).sum().backward()
    module.apply_gradients()
    grad = dict.fromkeys(before, np.zeros(DIM))
    for b, bag in enumerate(BAGS):
        for i in bag:
            share = 1.0 if mode == "sum" else 1.0 / len(bag)
            grad[i] = grad[i] + share * upstream[b].numpy()
    for i, w in before.items():
        np.testing.assert_allclose(tables["genres"].lookup(np.array([i]))[0], w - lr * grad[i], rtol=1e-6, atol=1e-6)


def test_not_admitted_ids_pool_as_the_default_vector():
    tables = _collection("sum", admit_after=2)
    module = EmbeddingModule(tables)
    out = module({"genres": JaggedIds.from_lists([[5, 6], [5]])}, now=1)["genres"]  # 5 admitted, 6 not
    v5 = tables["genres"].lookup(np.array([5]))[0]
    assert tables["genres"].rows_of(np.array([6]))[0] == -1
    np.testing.assert_allclose(out.detach().numpy(), np.stack([v5, v5]), rtol=1e-6)


def test_eval_mode_output_equals_training_mode_output_for_the_same_ids():
    tables = _collection("mean")
    module = EmbeddingModule(tables)
    ids = torch.tensor([4, -(2**63), 4, 2**63 - 1, 11])
    features = {"user": ids, "genres": JaggedIds.from_lists(BAGS)}
    trained = module(features, now=3)
    module.discard_gradients()
    module.eval()
    evaluated = module(features)
    with torch.no_grad():
        module.train()
        no_grad = module(features, now=3)
    for slot in features:
        assert torch.equal(trained[slot].detach(), evaluated[slot])
        assert torch.equal(trained[slot].detach(), no_grad[slot])
    assert not evaluated["user"].requires_grad


def test_a_slot_looked_up_twice_gets_one_step_with_the_summed_gradient():
    opt_kwargs = {"lr": 0.3, "lr_decay": 0.1}  # lr_decay makes a second step visible
    tables = _collection(optimizer=Adagrad(**opt_kwargs))
    module = EmbeddingModule(tables)
    universe = np.array([10, 20, 30, 40], dtype=np.int64)
    tables["user"].admit(universe, now=0)
    ref = nn.Embedding(len(universe), DIM)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(tables["user"].lookup(universe)))
    ref_opt = torch.optim.Adagrad(ref.parameters(), **opt_kwargs)
    first, second = np.array([0, 1, 1]), np.array([1, 2, 2, 0])
    rng = np.random.default_rng(0)
    p1 = torch.from_numpy(rng.normal(size=(3, DIM)).astype(np.float32))
    p2 = torch.from_numpy(rng.normal(size=(4, DIM)).astype(np.float32))

    def loss(a, b):
        return (a * p1).sum().pow(2) + (b * p2).sum() + a.pow(2).sum() * b.pow(2).sum()

    for _ in range(3):
        a = module({"user": torch.from_numpy(universe[first])}, now=1)["user"]
        b = module({"user": torch.from_numpy(universe[second])}, now=1)["user"]
        loss(a, b).backward()
        module.apply_gradients()
        ref_opt.zero_grad()
        loss(ref(torch.from_numpy(first)), ref(torch.from_numpy(second))).backward()
        ref_opt.step()
    assert tables["user"].step == 3
    np.testing.assert_allclose(tables["user"].lookup(universe), ref.weight.detach().numpy(), rtol=1e-5, atol=1e-6)


class _Model(nn.Module):
    def __init__(self, embeddings: nn.Module) -> None:
        super().__init__()
        self.embeddings = embeddings
        self.head = nn.Linear(2 * DIM, 1)
        torch.manual_seed(0)
        nn.init.normal_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, user, genres):
        if isinstance(self.embeddings, EmbeddingModule):
            e = self.embeddings({"user": user, "genres": genres}, now=1)
            x = torch.cat([e["user"], e["genres"]], dim=1)
        else:
            u, g = self.embeddings
            x = torch.cat([u(user), g(genres.values, genres.offsets)], dim=1)
        return self.head(x).squeeze(1)


def test_dense_parameters_train_with_a_torch_optimizer_alongside_the_tables():
    lr = 0.05
    tables = _collection("sum", SGD(lr=lr))
    users = np.array([1, 2, 3, 4], dtype=np.int64)
    genres = np.array([1, 2, 3, 7, 9], dtype=np.int64)
    tables["user"].admit(users, now=0)
    tables["genres"].admit(genres, now=0)
    model = _Model(EmbeddingModule(tables))
    assert list(model.embeddings.parameters()) == []  # tables are not torch parameters
    dense_opt = torch.optim.SGD(model.parameters(), lr=lr)

    u_ref = nn.Embedding(4, DIM)
    g_ref = nn.EmbeddingBag(5, DIM, mode="sum")
    with torch.no_grad():
        u_ref.weight.copy_(torch.from_numpy(tables["user"].lookup(users)))
        g_ref.weight.copy_(torch.from_numpy(tables["genres"].lookup(genres)))
    ref = _Model(nn.ModuleList([u_ref, g_ref]))
    ref_opt = torch.optim.SGD(ref.parameters(), lr=lr)
    position = {int(g): i for i, g in enumerate(genres)}

    rng = np.random.default_rng(1)
    for _ in range(5):
        u = rng.integers(0, 4, size=6)
        bags = [rng.choice(genres, size=int(rng.integers(1, 4))).tolist() for _ in range(6)]
        y = torch.from_numpy(rng.normal(size=6).astype(np.float32))
        loss = (model(torch.from_numpy(users[u]), JaggedIds.from_lists(bags)) - y).pow(2).mean()
        dense_opt.zero_grad()
        loss.backward()
        dense_opt.step()
        model.embeddings.apply_gradients()
        ref_bags = JaggedIds.from_lists([[position[g] for g in bag] for bag in bags])
        ref_loss = (ref(torch.from_numpy(u), ref_bags) - y).pow(2).mean()
        ref_opt.zero_grad()
        ref_loss.backward()
        ref_opt.step()

    for p, q in zip(model.head.parameters(), ref.head.parameters(), strict=True):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tables["user"].lookup(users), u_ref.weight.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tables["genres"].lookup(genres), g_ref.weight.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_module_over_a_serving_replica_returns_the_training_embeddings():
    tables = _collection("mean")
    module = EmbeddingModule(tables)
    features = {"user": torch.tensor([1, 2, 99]), "genres": JaggedIds.from_lists(BAGS)}
    out = module(features, now=1)
    sum(v.sum() for v in out.values()).backward()
    module.apply_gradients()
    serving = EmbeddingModule(tables.serving_replica())
    module.eval()
    expected = module(features)
    served = serving(features)
    for slot in features:
        assert torch.equal(served[slot], expected[slot])
