"""A ranking model = an embedding source (collisionless tables or a hashed baseline) + a dense head.

:class:`ModelConfig` (the ``[model]`` TOML section) names the head and its sizes;
:func:`build_model` wires it to an :class:`~streamrec.embedding.EmbeddingCollection` (training), a
:class:`~streamrec.embedding.ServingCollection` (serving replica), or hashed tables (baseline).
Scores are logits of P(label | example was kept); see ``streamrec.joiner.sampling`` for the
correction of negative sampling at serving time.
"""

from __future__ import annotations

from typing import Literal

import msgspec
import torch
from torch import nn

from streamrec.batch import ExampleBatch
from streamrec.embedding import EmbeddingCollection, EmbeddingModule, ServingCollection
from streamrec.errors import ConfigError
from streamrec.models.hashed import HashedEmbeddingModule
from streamrec.models.heads import DCNv2Head, DeepFMHead, TwoTowerHead


class ModelConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Which head, its sizes, and the dense inputs it expects."""

    kind: Literal["deepfm", "dcnv2", "two_tower"] = "deepfm"
    hidden: list[int] = msgspec.field(default_factory=lambda: [64, 32])
    cross_layers: int = 2
    dropout: float = 0.0
    n_dense: int = 0
    user_slots: list[str] = msgspec.field(default_factory=list)  # two_tower only
    item_slots: list[str] = msgspec.field(default_factory=list)  # two_tower only
    out_dim: int = 32  # two_tower only
    temperature: float | None = None  # two_tower only: unit vectors, logit = cosine / temperature
    user_dense: bool = True  # two_tower only: the user tower reads the n_dense columns (off: ids only)


class RankingModel(nn.Module):
    """``forward(batch) -> logits`` over ``embeddings(batch.sparse)`` and ``batch.dense``."""

    def __init__(self, embeddings: nn.Module, head: nn.Module, config: ModelConfig) -> None:
        super().__init__()
        self.embeddings = embeddings
        self.head = head
        self.config = config

    @property
    def slots(self) -> list[str]:
        return list(self.head.slots)

    def forward(self, batch: ExampleBatch) -> torch.Tensor:
        features = {slot: batch.sparse[slot] for slot in self.slots}
        return self.head(self.embeddings(features, now=batch.max_time), batch.dense)

    def dense_parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters())

    def apply_sparse_gradients(self) -> None:
        self.embeddings.apply_gradients()


def build_head(config: ModelConfig, slots: list[str], dim: int) -> nn.Module:
    if config.kind == "deepfm":
        return DeepFMHead(slots, dim, config.n_dense, config.hidden, config.dropout)
    if config.kind == "dcnv2":
        return DCNv2Head(slots, dim, config.n_dense, config.hidden, config.cross_layers, config.dropout)
    user, item = config.user_slots, config.item_slots
    if not user or not item or set(user) & set(item) or not set(user) | set(item) <= set(slots):
        raise ConfigError("model.user_slots", f"two_tower needs disjoint user_slots and item_slots among {slots}")
    n_dense = config.n_dense if config.user_dense else 0
    return TwoTowerHead(user, item, dim, n_dense, config.hidden or [64], config.out_dim, config.temperature)


def _common_dim(dims: dict[str, int]) -> int:
    values = set(dims.values())
    if len(values) != 1:
        raise ConfigError("embedding.slots", f"these models need one dim for every slot, got {dims}")
    return values.pop()


def build_model(config: ModelConfig, tables: EmbeddingCollection | ServingCollection) -> RankingModel:
    """A ranking model whose embeddings are the given training tables or serving replica."""
    if isinstance(tables, EmbeddingCollection):
        dims = {slot: t.dim for slot, t in tables.tables.items()}
    else:
        dims = {slot: t.dim for slot, t in tables.tables.items()}
    head = build_head(config, list(dims), _common_dim(dims))
    return RankingModel(EmbeddingModule(tables), head, config)


def build_hashed_model(config: ModelConfig, dims: dict[str, int], rows: dict[str, int], pooling: dict[str, str]):
    """The same head on modulo-hashed ``EmbeddingBag`` tables (the collision baseline)."""
    head = build_head(config, list(dims), _common_dim(dims))
    return RankingModel(HashedEmbeddingModule(dims, rows, pooling), head, config)
