"""A factorization machine over slot embeddings: the smallest model that learns interactions.

``logit = b + w · concat(e_1..e_n) + Σ_{i<j} <e_i, e_j>``, with the pairwise sum computed in
O(n·dim) as ``½ (‖Σ e_i‖² − Σ ‖e_i‖²)`` (Rendle 2010). The embeddings come from an
:class:`~streamrec.embedding.EmbeddingModule`; this module holds only the dense parameters, which
train with any torch optimizer.
"""

from __future__ import annotations

import torch
from torch import nn


class FactorizationMachine(nn.Module):
    """Second-order FM plus a linear term over the given slots' embeddings (each ``[B, dim]``).

    Examples
    --------
    >>> fm = FactorizationMachine(["user", "item"], dim=2)
    >>> with torch.no_grad():
    ...     _ = fm.linear.weight.zero_(); _ = fm.linear.bias.zero_()
    >>> fm({"user": torch.tensor([[1.0, 2.0]]), "item": torch.tensor([[3.0, 4.0]])}).tolist()  # <u, i> = 11
    [11.0]
    """

    def __init__(self, slots: list[str], dim: int) -> None:
        super().__init__()
        self.slots = list(slots)
        self.linear = nn.Linear(len(self.slots) * dim, 1)

    def forward(self, embeddings: dict[str, torch.Tensor]) -> torch.Tensor:
        stacked = torch.stack([embeddings[s] for s in self.slots], dim=1)  # [B, n, dim]
        pairwise = 0.5 * (stacked.sum(dim=1).pow(2) - stacked.pow(2).sum(dim=1)).sum(dim=1)
        return self.linear(stacked.flatten(1)).squeeze(1) + pairwise
