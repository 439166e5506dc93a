"""The trainer: one object that steps a ranking model, for the batch stage and the online stage alike.

Two optimizers move a model. Dense parameters (the head) use a torch optimizer; sparse rows use
each slot's row optimizer inside the embedding tables (applied by ``apply_sparse_gradients`` after
``backward``). For the hashed baseline the embedding bags are torch parameters with sparse
gradients and get ``torch.optim.Adagrad``, the counterpart of the tables' default optimizer.

:meth:`Trainer.train_step` returns the batch's logits computed *before* the update, so the same
call gives progressive validation (score, then learn) — how online training is evaluated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import msgspec
import numpy as np
import torch
import torch.nn.functional as F

from streamrec.batch import ExampleBatch
from streamrec.models.hashed import HashedEmbeddingModule
from streamrec.models.ranking import RankingModel
from streamrec.quality import auc, log_loss

__all__ = ["TrainConfig", "Trainer"]


class TrainConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The ``[train]`` section."""

    batch_size: int = 512
    epochs: int = 1
    dense_optimizer: Literal["adam", "adagrad", "sgd"] = "adam"
    dense_lr: float = 0.001
    hashed_sparse_lr: float = 0.05  # Adagrad lr of the hashed baseline's bags
    seed: int = 0

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1, got {self.batch_size!r}")
        if self.epochs < 1:
            raise ValueError(f"`epochs` must be >= 1, got {self.epochs!r}")
        if not self.dense_lr > 0:
            raise ValueError(f"`dense_lr` must be > 0, got {self.dense_lr!r}")


def _dense_optimizer(kind: str, params, lr: float) -> torch.optim.Optimizer:
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr)
    if kind == "adagrad":
        return torch.optim.Adagrad(params, lr=lr)
    return torch.optim.SGD(params, lr=lr)


class Trainer:
    """Steps a :class:`RankingModel`; ``examples_seen`` and ``steps`` count its progress."""

    def __init__(self, model: RankingModel, config: TrainConfig | None = None, device: str | None = None) -> None:
        self.model = model
        self.config = config or TrainConfig()
        # ``device="cuda"``: the dense head and each batch's dense features and labels live on
        # that GPU (the tables' own ``device`` places them); logits come back to the host.
        self.device = torch.device("cpu")
        if device is not None and device != "cpu":
            from streamrec.embedding.cuda_table import torch_device

            self.device = torch_device(device)
            model.to(self.device)
        self.dense_optimizer = _dense_optimizer(
            self.config.dense_optimizer, model.dense_parameters(), self.config.dense_lr
        )
        self.sparse_optimizer = (
            torch.optim.Adagrad(model.embeddings.parameters(), lr=self.config.hashed_sparse_lr)
            if isinstance(model.embeddings, HashedEmbeddingModule)
            else None
        )
        self.examples_seen = 0
        self.steps = 0

    def train_step(self, batch: ExampleBatch) -> torch.Tensor:
        """One update on ``batch``; returns its logits from before the update (detached)."""
        self.model.train()
        batch = self.on_device(batch)
        logits = self.model(batch)
        loss = F.binary_cross_entropy_with_logits(logits, batch.labels)
        self.dense_optimizer.zero_grad()
        if self.sparse_optimizer is not None:
            self.sparse_optimizer.zero_grad()
        loss.backward()
        self.dense_optimizer.step()
        if self.sparse_optimizer is not None:
            self.sparse_optimizer.step()
        self.model.apply_sparse_gradients()
        self.examples_seen += len(batch)
        self.steps += 1
        return logits.detach().cpu()

    def on_device(self, batch: ExampleBatch) -> ExampleBatch:
        """``batch`` with its dense features, labels and sample rates on the trainer's device
        (ids stay where they are: each table moves its own; event times stay on the host)."""
        if self.device.type == "cpu":
            return batch
        dev = self.device
        return ExampleBatch(batch.sparse, batch.dense.to(dev), batch.labels.to(dev), batch.sample_rate.to(dev),
                            batch.time)  # fmt: skip

    def train(
        self,
        data: ExampleBatch,
        epochs: int | None = None,
        batch_size: int | None = None,
        on_step: Callable[[int, ExampleBatch, torch.Tensor], None] | None = None,
    ) -> dict[str, float]:
        """Train over ``data`` in order (time order for streams); returns progressive metrics."""
        epochs = epochs or self.config.epochs
        batch_size = batch_size or self.config.batch_size
        scores, labels = [], []
        step = 0
        for _ in range(epochs):
            for batch in data.batches(batch_size):
                logits = self.train_step(batch)
                step += 1
                scores.append(logits.numpy())
                labels.append(batch.labels.numpy())
                if on_step is not None:
                    on_step(step, batch, logits)
        y, s = np.concatenate(labels), np.concatenate(scores)
        return {"progressive_auc": auc(y, s), "progressive_logloss": log_loss(y, 1 / (1 + np.exp(-s)))}

    @torch.no_grad()
    def predict_logits(self, data: ExampleBatch, batch_size: int = 4096) -> np.ndarray:
        """Logits of every example, read-only (no admission, no timestamps, no updates)."""
        self.model.eval()
        out = [self.model(self.on_device(b)).cpu().numpy() for b in data.batches(batch_size)]
        self.model.train()
        return np.concatenate(out) if out else np.empty(0, dtype=np.float32)

    def evaluate(self, data: ExampleBatch, batch_size: int = 4096) -> dict[str, float]:
        """AUC and log loss of the current model on ``data``."""
        logits = self.predict_logits(data, batch_size)
        y = data.labels.numpy()
        return {"auc": auc(y, logits), "logloss": log_loss(y, 1 / (1 + np.exp(-logits))), "examples": len(data)}
