"""Dense heads that turn slot embeddings (+ dense features) into a logit.

* :class:`DeepFMHead` (Guo et al. 2017): a factorization machine over the slot vectors (first-order
  linear term + all pairwise inner products in O(n·d)) plus an MLP over the concatenation, summed.
* :class:`DCNv2Head` (Wang et al. 2021): full-rank cross layers ``x_{l+1} = x0 ⊙ (W x_l + b) + x_l``
  over ``x0 = [embeddings, dense]`` stacked with an MLP.
* :class:`TwoTowerHead`: a user tower and an item tower, each an MLP to a shared space; the logit is
  their inner product, so item vectors can be indexed for nearest-neighbour retrieval.

Every head takes ``(embeddings: {slot: [B, dim]}, dense: [B, n_dense])``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn


def mlp(sizes: Sequence[int], dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class DeepFMHead(nn.Module):
    def __init__(self, slots: Sequence[str], dim: int, n_dense: int, hidden: Sequence[int] = (64, 32), dropout=0.0):
        super().__init__()
        self.slots = list(slots)
        width = len(self.slots) * dim + n_dense
        self.linear = nn.Linear(width, 1)
        self.deep = mlp([width, *hidden], dropout)
        self.out = nn.Linear(hidden[-1] if hidden else width, 1)

    def forward(self, embeddings: dict[str, torch.Tensor], dense: torch.Tensor) -> torch.Tensor:
        stacked = torch.stack([embeddings[s] for s in self.slots], dim=1)  # [B, n, d]
        fm = 0.5 * (stacked.sum(dim=1).pow(2) - stacked.pow(2).sum(dim=1)).sum(dim=1)
        x = torch.cat([stacked.flatten(1), dense], dim=1)
        return (self.linear(x) + self.out(self.deep(x))).squeeze(1) + fm


class DCNv2Head(nn.Module):
    def __init__(
        self,
        slots: Sequence[str],
        dim: int,
        n_dense: int,
        hidden: Sequence[int] = (64, 32),
        cross_layers: int = 2,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.slots = list(slots)
        width = len(self.slots) * dim + n_dense
        self.cross = nn.ModuleList(nn.Linear(width, width) for _ in range(cross_layers))
        self.deep = mlp([width, *hidden], dropout)
        self.out = nn.Linear(hidden[-1] if hidden else width, 1)

    def forward(self, embeddings: dict[str, torch.Tensor], dense: torch.Tensor) -> torch.Tensor:
        x0 = torch.cat([*(embeddings[s] for s in self.slots), dense], dim=1)
        x = x0
        for layer in self.cross:
            x = x0 * layer(x) + x
        return self.out(self.deep(x)).squeeze(1)


class TwoTowerHead(nn.Module):
    def __init__(
        self,
        user_slots: Sequence[str],
        item_slots: Sequence[str],
        dim: int,
        n_dense: int,
        hidden: Sequence[int] = (64,),
        out_dim: int = 32,
        temperature: float | None = None,
    ):
        super().__init__()
        # With a temperature, both towers' vectors are unit length scaled by 1/sqrt(t), so the inner
        # product is cosine / t (how retrieval towers train well with softmax) and the vectors the
        # ANN index holds are the ones the model scores with.
        self.temperature = temperature
        self.n_dense = n_dense  # 0: the user tower ignores the dense columns it is handed
        self.user_slots, self.item_slots = list(user_slots), list(item_slots)
        user_width = len(self.user_slots) * dim + n_dense
        self.user_tower = nn.Sequential(mlp([user_width, *hidden]), nn.Linear(hidden[-1], out_dim))
        self.item_tower = nn.Sequential(mlp([len(self.item_slots) * dim, *hidden]), nn.Linear(hidden[-1], out_dim))
        self.bias = nn.Parameter(torch.zeros(()))

    @property
    def slots(self) -> list[str]:
        return [*self.user_slots, *self.item_slots]

    def _scale(self, v: torch.Tensor) -> torch.Tensor:
        if self.temperature is None:
            return v
        return torch.nn.functional.normalize(v, dim=1) / self.temperature**0.5

    def user_vector(self, embeddings: dict[str, torch.Tensor], dense: torch.Tensor) -> torch.Tensor:
        dense = dense[:, : self.n_dense]
        return self._scale(self.user_tower(torch.cat([*(embeddings[s] for s in self.user_slots), dense], dim=1)))

    def item_vector(self, embeddings: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._scale(self.item_tower(torch.cat([embeddings[s] for s in self.item_slots], dim=1)))

    def forward(self, embeddings: dict[str, torch.Tensor], dense: torch.Tensor) -> torch.Tensor:
        u = self.user_vector(embeddings, dense)
        v = self.item_vector(embeddings)
        return (u * v).sum(dim=1) + self.bias
