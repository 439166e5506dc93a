"""The baselines that ``streamrec bench embedding`` (CPU) and its GPU bench (``cuda_bench.py``) race.

Each stands for what a team uses today instead of a collisionless table, built the way that team
would build it, and each gets the same ids, sizes and (for training) the same head, loss and
optimizer as streamrec's side in the same process; only the embedding source differs:

* :func:`modulo_lookup` — ``F.embedding(ids % rows, weight)`` on a dense tensor of the same size:
  the hashing trick of most production recommenders (TF's ``categorical_column_with_hash_bucket``,
  DLRM's ``id % rows``). It is the fastest lookup there is (one gather, no probe), and it answers
  wrongly for colliding ids: the ratio is what collision-freedom costs in lookup speed.
* :class:`DictLookup` — a Python ``dict`` ``id -> row`` plus a NumPy gather, absent ids given the
  default row: what a hand-written collisionless table in Python looks like. Same answers as
  :meth:`EmbeddingTable.lookup <streamrec.embedding.table.EmbeddingTable.lookup>`.
* :func:`dict_insert` — adding new ids to that dict, batch by batch (the row is the next free one).
* :class:`ModuloBagModel` — one ``nn.EmbeddingBag(rows, dim, mode="sum", sparse=True)`` per slot
  indexed by ``id % rows`` and ``torch.optim.Adagrad`` on sparse gradients, under the same
  :class:`LogisticHead`: the standard PyTorch recipe (DLRM's reference model) for sparse features.
* :class:`RowwiseAdagrad` — streamrec's own design written in plain torch (one table for every
  slot, ids are rows: no hashing, admission or expiry; the distinct rows gathered into a leaf
  tensor, row-wise Adagrad on them after backward): what the GPU table's hashing, admission and
  kernels cost over the same update done by torch ops alone. Its update equals
  ``torch.optim.Adagrad``'s on the dense table (``tests/embedding/test_embedding_baselines.py``).

Device-agnostic: the CPU bench runs them on CPU tensors, the GPU bench on CUDA ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DictLookup", "LogisticHead", "ModuloBagModel", "RowwiseAdagrad", "dict_insert", "modulo_lookup"]


class LogisticHead(nn.Module):
    """A logistic model over concatenated slot embeddings: the part every contender shares."""

    def __init__(self, slots: int, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(slots * dim, 1)

    def forward(self, embeddings: list[torch.Tensor]) -> torch.Tensor:
        return self.linear(torch.cat(embeddings, dim=1)).squeeze(1)


def modulo_lookup(ids: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The rows of ``weight`` at ``ids % len(weight)``: the collision baseline's lookup."""
    return F.embedding(ids % weight.shape[0], weight)


class DictLookup:
    """``ids[i]`` at row ``i`` of ``weight`` through a Python dict; absent ids get ``default``."""

    def __init__(self, ids: np.ndarray, weight: np.ndarray, default: np.ndarray) -> None:
        self.mapping = dict(zip(ids.tolist(), range(len(ids)), strict=True))
        self.weight = weight
        self.default = default

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        mapping = self.mapping
        rows = np.fromiter((mapping.get(i, -1) for i in ids.tolist()), dtype=np.int64, count=len(ids))
        out = self.weight[rows]
        out[rows < 0] = self.default
        return out


def dict_insert(chunks: Sequence[np.ndarray]) -> dict[int, int]:
    """A dict of every id in ``chunks`` (distinct ids) to its row, the next free one, batch by batch."""
    d: dict[int, int] = {}
    for chunk in chunks:
        base = len(d)
        d.update(zip(chunk.tolist(), range(base, base + len(chunk)), strict=True))
    return d


class ModuloBagModel(nn.Module):
    """Per slot an ``nn.EmbeddingBag`` of ``rows`` rows indexed by ``id % rows``, a :class:`LogisticHead`,
    and one ``torch.optim.Adagrad`` over both (sparse gradients for the bags); one id per example.

    ``batch`` is the examples per step (the bags' offsets are made once for it).
    """

    def __init__(self, names: Sequence[str], rows: int, dim: int, batch: int, lr: float = 0.05, device=None) -> None:
        super().__init__()
        self.names = list(names)
        self.rows = rows
        self.bags = nn.ModuleList(nn.EmbeddingBag(rows, dim, mode="sum", sparse=True) for _ in self.names).to(device)
        self.head = LogisticHead(len(self.names), dim).to(device)
        self.opt = torch.optim.Adagrad([*self.bags.parameters(), *self.head.parameters()], lr=lr)
        self.offsets = torch.arange(batch, device=device)

    def forward(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The logits of a batch: ``features[name]`` holds one id per example."""
        emb = [bag(features[n] % self.rows, self.offsets) for bag, n in zip(self.bags, self.names, strict=True)]
        return self.head(emb)

    def step(self, features: Mapping[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """One training step (forward, log loss, backward, Adagrad); returns the loss before it."""
        loss = F.binary_cross_entropy_with_logits(self(features), labels)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return loss.detach()


class RowwiseAdagrad:
    """``slots`` tables of ``rows`` rows in one tensor (slot ``s``'s id ``i`` is row ``s * rows + i``),
    trained row-wise: the distinct rows of a batch gathered into a leaf, Adagrad on those rows only.

    The head (:class:`LogisticHead`) has its own ``torch.optim.Adagrad``; the table's update is
    ``acc += g * g; w -= lr * g / (sqrt(acc) + 1e-10)`` on the rows the batch touched.
    """

    def __init__(self, slots: int, rows: int, dim: int, lr: float = 0.05, device=None) -> None:
        self.slots, self.lr = slots, lr
        self.weight = torch.randn(slots * rows, dim, device=device) * 0.01
        self.acc = torch.zeros_like(self.weight)
        self.head = LogisticHead(slots, dim).to(device)
        self.opt = torch.optim.Adagrad(self.head.parameters(), lr=lr)
        self.slot_base = (torch.arange(slots, device=device) * rows).unsqueeze(1)

    def step(self, ranks: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One training step on ``ranks`` (``slots x batch`` ids, each below ``rows``); returns the loss before it."""
        weight, acc = self.weight, self.acc
        flat = (ranks + self.slot_base).reshape(-1)
        distinct, inverse = torch.unique(flat, return_inverse=True)
        leaf = weight.index_select(0, distinct).requires_grad_(True)
        emb = F.embedding(inverse.view(self.slots, ranks.shape[1]), leaf)
        loss = F.binary_cross_entropy_with_logits(self.head(list(emb.unbind(0))), labels)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        grad = leaf.grad
        state = acc.index_select(0, distinct).addcmul_(grad, grad)
        acc.index_copy_(0, distinct, state)
        weight.index_copy_(0, distinct, leaf.detach().addcdiv_(grad, state.sqrt_().add_(1e-10), value=-self.lr))
        return loss.detach()
