"""The two-tower model trained as a retriever: in-batch softmax with a log-Q popularity correction.

A ranker is a classifier of items that were shown; a retriever must pick the few items a user
will engage with out of the whole catalogue. So the two-tower model here trains on *positives
only*: for a batch of B (user, item) positives, every other item of the batch is a negative for
each user, and the loss is the softmax cross entropy of the true item among the B
(``logits[i, j] = <u_i, v_j>``). Items enter a batch in proportion to their popularity, so the
in-batch softmax over-penalises popular items; the log-Q correction (Yi et al., RecSys 2019,
"Sampling-bias-corrected neural modeling") subtracts ``log q_j``, the item's sampling
probability, from its logit during training only. ``q`` is estimated online from the stream
itself (:class:`ItemFrequency`: counts of every item seen so far, in a hashed array), so the
trainer runs the same way over history (batch stage) and over the log (online). Rows of the
same item in one batch are not negatives of each other (masked).

Sparse rows (both towers' slots) live in the collisionless tables and take their row optimizer
after ``backward`` exactly as in :class:`~streamrec.training.trainer.Trainer`; the towers take
Adam. Hot path: one ``[B, B]`` matrix product per step; the frequency counts are NumPy.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from streamrec.batch import ExampleBatch
from streamrec.errors import InvalidInputError
from streamrec.models.heads import TwoTowerHead
from streamrec.models.ranking import RankingModel
from streamrec.training.trainer import TrainConfig, Trainer

__all__ = ["ItemFrequency", "RetrievalTrainer", "first_ids"]


def first_ids(batch: ExampleBatch, slot: str) -> np.ndarray:
    """The first id of every example's bag of ``slot`` (int64 ``[B]``); an empty bag is an error."""
    ids = batch.sparse[slot]
    lengths = ids.lengths().numpy()
    if len(lengths) and lengths.min() < 1:
        row = int(np.argmin(lengths))
        raise InvalidInputError(f"sparse.{slot}", row, "every example needs an id in this slot (row has none)")
    return ids.values.numpy()[ids.offsets.numpy()]


class ItemFrequency:
    """Streaming counts of item ids in ``2**bits`` hashed cells (a one-row count-min sketch).

    ``log_q(ids)`` is ``log(count / total)`` of each id's cell, the probability that a positive
    drawn from the stream so far is that item. With 2**22 cells, collisions among the items of a
    catalogue of a million are rare and only raise q (a smaller correction), never lower it.

    Examples
    --------
    >>> f = ItemFrequency(bits=8)
    >>> f.update(np.array([5, 5, 5, 7]))
    >>> np.round(np.exp(f.log_q(np.array([5, 7]))), 2).tolist()
    [0.75, 0.25]
    """

    def __init__(self, bits: int = 22) -> None:
        self.bits = bits
        self.counts = np.zeros(1 << bits, dtype=np.int64)
        self.total = 0

    def _cells(self, ids: np.ndarray) -> np.ndarray:
        mixed = ids.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        return (mixed >> np.uint64(64 - self.bits)).astype(np.int64)

    def update(self, ids: np.ndarray) -> None:
        np.add.at(self.counts, self._cells(ids), 1)
        self.total += len(ids)

    def log_q(self, ids: np.ndarray) -> np.ndarray:
        counts = np.maximum(self.counts[self._cells(ids)], 1)
        return np.log(counts / max(self.total, 1))


class RetrievalTrainer:
    """Steps a two-tower :class:`RankingModel` with in-batch softmax and log-Q correction.

    Parameters
    ----------
    model: a ranking model whose head is a :class:`~streamrec.models.heads.TwoTowerHead`.
    item_slot: the slot holding the item id (for duplicates in a batch and for ``q``).
    dense_lr: Adam learning rate of the towers.
    log_q: apply the correction (off: the plain in-batch softmax, for comparison).
    """

    def __init__(
        self,
        model: RankingModel,
        item_slot: str = "item",
        dense_lr: float = 0.003,
        log_q: bool = True,
        optimizer: torch.optim.Optimizer | None = None,
    ):
        if not isinstance(model.head, TwoTowerHead):
            raise InvalidInputError("model.kind", type(model.head).__name__, "retrieval training needs two_tower")
        if item_slot not in model.head.item_slots:
            raise InvalidInputError("item_slot", item_slot, f"must be one of the item slots {model.head.item_slots}")
        self.model = model
        self.item_slot = item_slot
        self.use_log_q = log_q
        self.frequency = ItemFrequency()
        # The names a Trainer has, so snapshots (save_trainer) and OnlineTrainer take this one too.
        self.config = TrainConfig(dense_optimizer="adam", dense_lr=dense_lr)
        self.dense_optimizer = optimizer or torch.optim.Adam(model.dense_parameters(), lr=dense_lr)
        self.sparse_optimizer = None
        self.examples_seen = 0
        self.steps = 0

    @classmethod
    def from_trainer(cls, trainer: Trainer, item_slot: str = "item", log_q: bool = True) -> RetrievalTrainer:
        """Continue a two-tower model restored by ``load_trainer`` (its Adam state included) as a retriever."""
        out = cls(trainer.model, item_slot, trainer.config.dense_lr, log_q, optimizer=trainer.dense_optimizer)
        out.examples_seen, out.steps = trainer.examples_seen, trainer.steps
        return out

    def train_step(self, batch: ExampleBatch) -> float:
        """One update on the positives of ``batch`` (rows with label > 0); returns the loss (nan if
        fewer than two positives, when there is no negative to learn from)."""
        positive = batch.labels > 0
        if not bool(positive.all()):
            batch = batch.take(torch.nonzero(positive).squeeze(1))
        items = first_ids(batch, self.item_slot)
        self.frequency.update(items)
        if len(batch) < 2:
            return float("nan")
        head: TwoTowerHead = self.model.head
        self.model.train()
        emb = self.model.embeddings({s: batch.sparse[s] for s in head.slots}, now=batch.max_time)
        u = head.user_vector(emb, batch.dense)
        v = head.item_vector(emb)
        logits = u @ v.T
        if self.use_log_q:
            logits = logits - torch.from_numpy(self.frequency.log_q(items)).to(logits.dtype)[None, :]
        same = torch.from_numpy(items[:, None] == items[None, :])
        same.fill_diagonal_(False)
        logits = logits.masked_fill(same, float("-inf"))
        loss = F.cross_entropy(logits, torch.arange(len(batch)))
        self.dense_optimizer.zero_grad()
        loss.backward()
        self.dense_optimizer.step()
        self.model.apply_sparse_gradients()
        self.examples_seen += len(batch)
        self.steps += 1
        return float(loss.detach())

    def train(self, data: ExampleBatch, epochs: int = 1, batch_size: int = 256, seed: int = 0) -> list[float]:
        """Epochs over the positives of ``data``: the first in time order (as a stream), later
        ones shuffled (as a batch stage would); returns each step's loss."""
        positives = torch.nonzero(data.labels > 0).squeeze(1)
        data = data.take(positives)
        gen = torch.Generator().manual_seed(seed)
        losses = []
        for epoch in range(epochs):
            ordered = data if epoch == 0 else data.take(torch.randperm(len(data), generator=gen))
            for batch in ordered.batches(batch_size):
                losses.append(self.train_step(batch))
        return losses
