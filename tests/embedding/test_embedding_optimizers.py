"""Row optimizers and initializers (issue 2, item 4), against dense PyTorch / numpy references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from streamrec.embedding import (
    FTRL,
    SGD,
    Adagrad,
    Adam,
    EmbeddingCollection,
    EmbeddingModule,
    Normal,
    SlotConfig,
    Uniform,
    Zeros,
)
from streamrec.embedding.initializers import initial_vectors

DIM = 8
N_IDS = 40
BATCH = 64  # drawn from N_IDS ids: every batch repeats ids
STEPS = 12
RTOL, ATOL = 1e-5, 1e-6


def _batches(seed: int = 0):
    """Random batches of indices into the id universe (with duplicates) plus loss targets."""
    rng = np.random.default_rng(seed)
    for _ in range(STEPS):
        size = int(rng.integers(BATCH // 2, BATCH))
        # a changing subset of the universe each step, so some rows skip steps
        pool = rng.choice(N_IDS, size=N_IDS // 2, replace=False)
        idx = rng.choice(pool, size=size)
        proj = torch.from_numpy(rng.normal(size=(size, DIM)).astype(np.float32))
        target = torch.from_numpy(rng.normal(size=size).astype(np.float32))
        yield idx, proj, target


def _loss(emb: torch.Tensor, proj: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # nonlinear in the embeddings, so a wrong step changes every later gradient
    return ((emb * proj).sum(1) - target).pow(2).mean() + 0.05 * emb.pow(2).sum()


def _setup(optimizer, initializer=None):
    initializer = initializer or Normal(mean=0.0, std=0.3)
    config = SlotConfig(dim=DIM, optimizer=optimizer, initializer=initializer)
    tables = EmbeddingCollection({"item": config}, seed=13)
    universe = np.random.default_rng(99).integers(-(2**63), 2**63 - 1, size=N_IDS, dtype=np.int64)
    initial = initial_vectors(initializer, universe, DIM, seed=int(tables["item"].seed))
    return tables, EmbeddingModule(tables), universe, initial


def _train_table(module, universe, idx, proj, target, now):
    out = module({"item": torch.from_numpy(universe[idx])}, now=now)
    _loss(out["item"], proj, target).backward()
    module.apply_gradients()


def _assert_close(tables, universe, reference: np.ndarray) -> None:
    got = tables["item"].lookup(universe)
    np.testing.assert_allclose(got, reference, rtol=RTOL, atol=ATOL)


def _check_against_torch(optimizer_config, make_torch_optimizer, sparse: bool = False) -> None:
    tables, module, universe, initial = _setup(optimizer_config)
    ref = nn.Embedding(N_IDS, DIM, sparse=sparse)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(initial))
    opt = make_torch_optimizer(ref.parameters())
    touched = np.zeros(N_IDS, dtype=bool)
    for step, (idx, proj, target) in enumerate(_batches()):
        _train_table(module, universe, idx, proj, target, now=step)
        opt.zero_grad()
        _loss(ref(torch.from_numpy(idx)), proj, target).backward()
        opt.step()
        touched[idx] = True
        # untouched ids are not in the table: they read as the default (zero) vector
        expected = np.where(touched[:, None], ref.weight.detach().numpy(), 0.0)
        _assert_close(tables, universe, expected)


def test_first_rows_equal_initial_vectors_of_the_initializer():
    tables, _, universe, initial = _setup(SGD())
    tables["item"].admit(universe[::-1].copy(), now=0)
    assert np.array_equal(tables["item"].lookup(universe), initial)


def test_sgd_matches_torch_sgd_on_a_dense_embedding():
    _check_against_torch(SGD(lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lr": 0.1},
        {"lr": 0.1, "initial_accumulator_value": 0.5},
        {"lr": 0.2, "lr_decay": 0.05},
        {"lr": 0.05, "initial_accumulator_value": 0.1, "lr_decay": 0.01, "eps": 1e-6},
    ],
)
def test_adagrad_matches_torch_adagrad_on_a_dense_embedding(kwargs):
    _check_against_torch(Adagrad(**kwargs), lambda p: torch.optim.Adagrad(p, **kwargs))


@pytest.mark.parametrize(
    "kwargs", [{"lr": 0.01}, {"lr": 0.05, "beta1": 0.5, "beta2": 0.9, "eps": 1e-6}], ids=["default", "custom"]
)
def test_adam_matches_torch_sparse_adam_on_a_sparse_embedding(kwargs):
    torch_kwargs = {"lr": kwargs["lr"], "betas": (kwargs.get("beta1", 0.9), kwargs.get("beta2", 0.999))}
    if "eps" in kwargs:
        torch_kwargs["eps"] = kwargs["eps"]
    _check_against_torch(Adam(**kwargs), lambda p: torch.optim.SparseAdam(list(p), **torch_kwargs), sparse=True)


class NumpyFTRL:
    """FTRL-Proximal per coordinate, Algorithm 1 of McMahan et al. 2013, in float64.

    The weight of a coordinate is a function of its ``z`` and ``n``; a row starts at its
    initializer's vector, which the first update folds into ``z`` through ``-sigma * w``.
    """

    def __init__(self, initial: np.ndarray, alpha: float, beta: float, l1: float, l2: float) -> None:
        self.w = initial.astype(np.float64).copy()
        self.z = np.zeros_like(self.w)
        self.n = np.zeros_like(self.w)
        self.alpha, self.beta, self.l1, self.l2 = alpha, beta, l1, l2

    def update(self, i: int, g: np.ndarray) -> None:
        for d in range(len(g)):
            sigma = (np.sqrt(self.n[i, d] + g[d] ** 2) - np.sqrt(self.n[i, d])) / self.alpha
            self.z[i, d] += g[d] - sigma * self.w[i, d]
            self.n[i, d] += g[d] ** 2
            z = self.z[i, d]
            if abs(z) <= self.l1:
                self.w[i, d] = 0.0
            else:
                denominator = (self.beta + np.sqrt(self.n[i, d])) / self.alpha + self.l2
                self.w[i, d] = -(z - np.sign(z) * self.l1) / denominator


@pytest.mark.parametrize(
    "params",
    [
        {"alpha": 0.1, "beta": 1.0, "l1": 0.0, "l2": 0.0},
        {"alpha": 0.2, "beta": 0.5, "l1": 0.05, "l2": 0.1},
    ],
)
@pytest.mark.parametrize("initializer", [Zeros(), Normal(std=0.3)], ids=["zeros", "normal"])
def test_ftrl_matches_a_numpy_ftrl_proximal_per_coordinate(params, initializer):
    tables, module, universe, initial = _setup(FTRL(**params), initializer)
    ref = NumpyFTRL(initial, **params)
    touched = np.zeros(N_IDS, dtype=bool)
    for step, (idx, proj, target) in enumerate(_batches(seed=5)):
        _train_table(module, universe, idx, proj, target, now=step)
        # the gradient at the reference's current weights, duplicate ids summed by autograd
        weight = torch.tensor(ref.w, dtype=torch.float32, requires_grad=True)
        _loss(weight[torch.from_numpy(idx)], proj, target).backward()
        for i in np.unique(idx):
            ref.update(int(i), weight.grad[i].numpy().astype(np.float64))
        touched[idx] = True
        _assert_close(tables, universe, np.where(touched[:, None], ref.w, 0.0))
    if params["l1"]:
        assert (tables["item"].lookup(universe)[touched] == 0).any(), "l1 should zero some coordinates"


def test_optimizer_state_is_per_row_and_only_touched_rows_change():
    tables, module, universe, _ = _setup(Adagrad(lr=0.1))
    table = tables["item"]
    table.admit(universe, now=0)
    before = table.lookup(universe)
    acc_before = table._state["sum"][table.rows_of(universe)].copy()
    _train_table(module, universe, np.array([0, 0, 3]), torch.ones(3, DIM), torch.zeros(3), now=1)
    after = table.lookup(universe)
    changed = np.flatnonzero((after != before).any(axis=1)).tolist()
    assert changed == [0, 3]
    acc_after = table._state["sum"][table.rows_of(universe)]
    assert np.flatnonzero((acc_after != acc_before).any(axis=1)).tolist() == [0, 3]


# -- initializers ------------------------------------------------------------------------------

_IDS = np.random.default_rng(7).integers(-(2**63), 2**63 - 1, size=20_000, dtype=np.int64)


def _rows(initializer, seed: int, order: np.ndarray | None = None, dim: int = 16) -> np.ndarray:
    tables = EmbeddingCollection({"x": SlotConfig(dim=dim, initializer=initializer)}, seed=seed)
    ids = _IDS if order is None else _IDS[order]
    for lo in range(0, len(ids), 3_333):
        tables["x"].admit(ids[lo : lo + 3_333], now=0)
    return tables["x"].lookup(_IDS)


@pytest.mark.parametrize("initializer", [Uniform(low=-0.5, high=0.25), Normal(mean=0.1, std=0.2)], ids=str)
def test_initial_rows_depend_on_the_seed_and_not_on_insertion_order(initializer):
    a = _rows(initializer, seed=1)
    shuffled = _rows(initializer, seed=1, order=np.random.default_rng(0).permutation(len(_IDS)))
    other_seed = _rows(initializer, seed=2)
    assert np.array_equal(a, shuffled)
    assert np.array_equal(a, _rows(initializer, seed=1))
    assert not np.isclose(a, other_seed).all(axis=1).any(), "a row equal under two seeds"
    assert len(np.unique(a, axis=0)) == len(_IDS), "two ids got the same initial row"


def test_zeros_initializer_gives_zero_rows():
    assert not _rows(Zeros(), seed=1).any()


def test_uniform_initializer_has_the_right_range_mean_and_std():
    low, high = -0.5, 0.25
    values = _rows(Uniform(low=low, high=high), seed=3).ravel().astype(np.float64)
    n = len(values)
    assert values.min() >= low and values.max() < high
    std = (high - low) / np.sqrt(12)
    assert abs(values.mean() - (low + high) / 2) < 5 * std / np.sqrt(n)
    assert abs(values.std() - std) < 0.01 * std
    # uniform: each tenth of the range holds a tenth of the values (5 standard errors)
    hist, _ = np.histogram(values, bins=10, range=(low, high))
    assert np.all(np.abs(hist / n - 0.1) < 5 * np.sqrt(0.1 * 0.9 / n))


def test_normal_initializer_has_the_right_mean_std_and_shape():
    mean, std = 0.1, 0.2
    values = _rows(Normal(mean=mean, std=std), seed=4).astype(np.float64)
    flat = values.ravel()
    n = len(flat)
    assert abs(flat.mean() - mean) < 5 * std / np.sqrt(n)
    assert abs(flat.std() - std) < 0.01 * std
    within = [np.mean(np.abs(flat - mean) < k * std) for k in (1, 2, 3)]
    for got, expected in zip(within, (0.682689, 0.954500, 0.997300), strict=True):
        assert abs(got - expected) < 5 * np.sqrt(expected * (1 - expected) / n)
    # coordinates of one row are independent draws
    corr = np.corrcoef(values[:, 0], values[:, 1])[0, 1]
    assert abs(corr) < 5 / np.sqrt(len(values))
