"""The typed batch every model trains and scores on: :class:`ExampleBatch`.

One type carries a batch through readers, the trainer, evaluation and the serving ranker: sparse
ids per slot (always :class:`~streamrec.embedding.JaggedIds`, so single-id and multi-id slots take
the same path: a single-id slot is a bag of one), a dense float matrix, labels, the probability
each example was kept by negative sampling, and event times.

It sits beside :mod:`streamrec.records` (the log's records) rather than in ``training/``: data
sets build it, models and the serving ranker consume it, and none of them should import the
trainer to get it.

A whole data set in memory is just a large batch; ``batch[lo:hi]`` slices examples without
copying ids, and :meth:`ExampleBatch.from_examples` builds one from ``streamrec.records.Example``
records read off the log.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from streamrec.embedding import JaggedIds
from streamrec.errors import InvalidInputError


@dataclass(frozen=True)
class ExampleBatch:
    """Examples as tensors.

    Attributes
    ----------
    sparse: slot -> ids of each example (``JaggedIds``; an example may have 0, 1 or many ids).
    dense: float32 ``[B, n_dense]`` (``n_dense`` may be 0).
    labels: float32 ``[B]`` (1 positive, 0 negative).
    sample_rate: float32 ``[B]``: probability the example was kept (negatives sampled at r carry r).
    time: float64 ``[B]``: event time of each example, unix seconds.
    """

    sparse: dict[str, JaggedIds]
    dense: torch.Tensor
    labels: torch.Tensor
    sample_rate: torch.Tensor = field(default=None)  # type: ignore[assignment]
    time: torch.Tensor = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        n = int(self.labels.shape[0])
        if self.sample_rate is None:
            object.__setattr__(self, "sample_rate", torch.ones(n))
        if self.time is None:
            object.__setattr__(self, "time", torch.zeros(n, dtype=torch.float64))
        if self.dense.dim() != 2 or self.dense.shape[0] != n:
            raise InvalidInputError("dense", tuple(self.dense.shape), f"must be [{n}, n_dense]")
        for slot, ids in self.sparse.items():
            if len(ids) != n:
                raise InvalidInputError(f"sparse.{slot}", len(ids), f"must hold {n} examples")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: slice) -> ExampleBatch:
        if not isinstance(index, slice) or index.step not in (None, 1):
            raise TypeError("ExampleBatch supports contiguous slices only; use take() for an index")
        lo, hi, _ = index.indices(len(self))
        return ExampleBatch(
            {slot: ids.slice(lo, hi) for slot, ids in self.sparse.items()},
            self.dense[lo:hi],
            self.labels[lo:hi],
            self.sample_rate[lo:hi],
            self.time[lo:hi],
        )

    def take(self, index: torch.Tensor) -> ExampleBatch:
        """The examples at ``index`` (e.g. a shuffled order)."""
        return ExampleBatch(
            {slot: ids.take(index) for slot, ids in self.sparse.items()},
            self.dense[index],
            self.labels[index],
            self.sample_rate[index],
            self.time[index],
        )

    def batches(self, batch_size: int, lo: int = 0, hi: int | None = None) -> Iterator[ExampleBatch]:
        """Consecutive slices of ``batch_size`` examples over ``[lo, hi)``."""
        hi = len(self) if hi is None else hi
        for start in range(lo, hi, batch_size):
            yield self[start : min(start + batch_size, hi)]

    @property
    def n_dense(self) -> int:
        return int(self.dense.shape[1])

    @property
    def max_time(self) -> float:
        return float(self.time.max()) if len(self) else 0.0

    @classmethod
    def from_examples(cls, examples: Sequence, slots: Sequence[str], n_dense: int) -> ExampleBatch:
        """Build a batch from ``streamrec.records.Example``-like records (``.sparse``, ``.dense``...).

        Slots missing from an example give it an empty bag; a record whose dense vector is not
        ``n_dense`` long raises :class:`InvalidInputError` naming its position.
        """
        sparse = {}
        for slot in slots:
            lists = [e.sparse.get(slot, ()) for e in examples]
            lengths = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
            values = np.fromiter((i for x in lists for i in x), dtype=np.int64, count=int(lengths.sum()))
            offsets = np.zeros(len(lists), dtype=np.int64)
            np.cumsum(lengths[:-1], out=offsets[1:])
            sparse[slot] = JaggedIds(torch.from_numpy(values), torch.from_numpy(offsets))
        dense = np.zeros((len(examples), n_dense), dtype=np.float32)
        for i, e in enumerate(examples):
            if len(e.dense) != n_dense:
                raise InvalidInputError(f"examples[{i}].dense", len(e.dense), f"expected {n_dense} values")
            if n_dense:
                dense[i] = e.dense
        return cls(
            sparse,
            torch.from_numpy(dense),
            torch.tensor([e.label for e in examples], dtype=torch.float32),
            torch.tensor([e.sample_rate for e in examples], dtype=torch.float32),
            torch.tensor([e.time for e in examples], dtype=torch.float64),
        )

    @classmethod
    def concat(cls, batches: Sequence[ExampleBatch]) -> ExampleBatch:
        """One batch holding the examples of ``batches`` in order."""
        slots = list(batches[0].sparse)
        sparse = {}
        for slot in slots:
            parts = [b.sparse[slot] for b in batches]
            shifts = np.cumsum([0] + [p.values.numel() for p in parts[:-1]])
            sparse[slot] = JaggedIds(
                torch.cat([p.values for p in parts]),
                torch.cat([p.offsets + int(s) for p, s in zip(parts, shifts, strict=True)]),
            )
        return cls(
            sparse,
            torch.cat([b.dense for b in batches]),
            torch.cat([b.labels for b in batches]),
            torch.cat([b.sample_rate for b in batches]),
            torch.cat([b.time for b in batches]),
        )
