"""The collision baseline: slots on ``nn.EmbeddingBag`` tables indexed by ``id % rows``.

This is what most systems do when ids outnumber memory, and what Monolith's collisionless table is
measured against (``streamrec eval collisions``, ``streamrec bench``). It has the same call
signature as :class:`~streamrec.embedding.EmbeddingModule` (``forward(features, now)``) so the same
ranking heads run on either; its parameters are sparse-gradient ``nn.Parameter`` tensors trained
by a torch optimizer (``Adagrad`` supports sparse gradients).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from streamrec.embedding import JaggedIds


class HashedEmbeddingModule(nn.Module):
    """One ``EmbeddingBag(rows[slot], dim[slot], sparse=True)`` per slot, ids taken modulo rows."""

    def __init__(
        self, dims: Mapping[str, int], rows: Mapping[str, int], pooling: Mapping[str, str] | None = None, std=0.01
    ) -> None:
        super().__init__()
        pooling = pooling or {}
        self.rows = dict(rows)
        self.bags = nn.ModuleDict(
            {
                slot: nn.EmbeddingBag(self.rows[slot], dim, mode=pooling.get(slot, "sum"), sparse=True)
                for slot, dim in dims.items()
            }
        )
        for bag in self.bags.values():
            nn.init.normal_(bag.weight, std=std)

    def forward(self, features: Mapping[str, JaggedIds | torch.Tensor], now: float | None = None) -> dict:
        out = {}
        for slot, ids in features.items():
            if not isinstance(ids, JaggedIds):
                ids = JaggedIds(ids, torch.arange(len(ids)))
            out[slot] = self.bags[slot](torch.remainder(ids.values, self.rows[slot]), ids.offsets)
        return out

    def apply_gradients(self) -> None:
        """Nothing to do: the torch optimizer updates these tables (kept for a common interface)."""
