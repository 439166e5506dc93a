"""The PyTorch face of the tables: ids per slot in, embeddings that take part in autograd out.

Why not an ``nn.Parameter`` per table: a table holds millions of rows that change membership
every step (admission, expiry), and torch optimizers would keep dense state for all of them.
Instead, a training forward gathers only the *distinct* rows the batch touches into a small leaf
tensor (``[unique rows, dim]``, requires grad) and builds the batch's embeddings from it with
``F.embedding`` / ``F.embedding_bag``. Autograd therefore sums the gradients of duplicate ids for
free. After ``loss.backward()``, :meth:`EmbeddingModule.apply_gradients` hands each leaf's
gradient to its table's row optimizer. Dense parameters of the model keep their torch optimizer.

Ids that are not admitted yet map to one extra leaf row holding the slot's default vector; its
gradient is dropped.

Tables in GPU memory (:class:`~streamrec.embedding.cuda_table.CudaEmbeddingTable`) fed one id
per example take a *grouped* path, built so that a step costs a fixed number of launches per slot
and one host sync in all: the ids of all such slots (same device, dim and batch size) are stacked
into one ``[S, B]`` tensor and deduplicated without a sync (one ``torch.sort(dim=1)``, a cumulative
sum of first-occurrence flags gives each position's distinct index; every array keeps the batch's
size and the distinct counts stay on the device); per slot, one find-or-insert kernel over the
sorted ids (the table's allocator counters live on the device), the spilled ids' walk, the new
rows' init and a gather into one ``[S * B, dim]`` leaf. After backward, one device reduction flags
NaN/inf gradients of every slot and one read brings those flags to the host together with every
table's allocator counters (settling them, placing any failed cuckoo walk); then one fused
optimizer kernel per slot. Jagged ids and CPU tables take the per-slot path.

In ``eval()`` mode (or under ``torch.no_grad()``) the module only reads: no admission, no
timestamps, no gradient bookkeeping — and the same code path runs on a
:class:`~streamrec.embedding.serving.ServingCollection`, so a serving replica that applied the
latest delta returns bit-identical embeddings.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from streamrec.embedding.collection import EmbeddingCollection
from streamrec.embedding.serving import ServingCollection
from streamrec.embedding.table import EmbeddingTable, as_ids, check_time
from streamrec.errors import InvalidInputError


@dataclass(frozen=True)
class JaggedIds:
    """Several ids per example: ``values`` (int64 [N]) split into bags by ``offsets`` (int64 [B]).

    ``offsets[b]`` is where example ``b``'s ids start in ``values`` (as ``nn.EmbeddingBag``);
    example ``b`` holds ``values[offsets[b]:offsets[b + 1]]`` and the last runs to the end.
    """

    values: torch.Tensor
    offsets: torch.Tensor

    @classmethod
    def from_lists(cls, lists: Sequence[Sequence[int]]) -> JaggedIds:
        lengths = [len(x) for x in lists]
        values = torch.tensor([i for x in lists for i in x], dtype=torch.int64)
        offsets = torch.tensor(np.concatenate([[0], np.cumsum(lengths)[:-1]]) if lengths else [], dtype=torch.int64)
        return cls(values, offsets)

    def __len__(self) -> int:
        return int(self.offsets.numel())

    def lengths(self) -> torch.Tensor:
        """Number of ids of each example."""
        ends = torch.cat([self.offsets[1:], torch.tensor([self.values.numel()], dtype=torch.int64)])
        return ends - self.offsets

    def slice(self, lo: int, hi: int) -> JaggedIds:
        """Examples ``lo..hi-1`` as their own jagged batch (views, no copy of the ids)."""
        n = len(self)
        lo, hi = max(0, min(lo, n)), max(0, min(hi, n))
        if hi <= lo:
            return JaggedIds(self.values[:0], self.offsets[:0])
        start = int(self.offsets[lo])
        stop = int(self.offsets[hi]) if hi < n else self.values.numel()
        return JaggedIds(self.values[start:stop], self.offsets[lo:hi] - start)

    def take(self, index: torch.Tensor) -> JaggedIds:
        """The examples at ``index`` (any order, repeats allowed), as a new jagged batch."""
        lengths = self.lengths()[index]
        starts = self.offsets[index]
        offsets = torch.cumsum(lengths, 0) - lengths
        # position of every output id in `values`: its bag's start plus its rank within the bag
        total = int(lengths.sum())
        within = torch.arange(total) - torch.repeat_interleave(offsets, lengths)
        return JaggedIds(self.values[torch.repeat_interleave(starts, lengths) + within], offsets)

    def check(self, slot: str) -> None:
        o = self.offsets
        if not isinstance(o, torch.Tensor) or o.dtype != torch.int64 or o.dim() != 1:
            raise InvalidInputError(f"{slot}.offsets", o, "offsets must be a 1-D int64 tensor")
        n = self.values.numel()
        if o.numel() and (int(o[0]) != 0 or bool((o[1:] < o[:-1]).any()) or int(o[-1]) > n):
            raise InvalidInputError(
                f"{slot}.offsets", o.tolist()[:10], f"offsets must start at 0, not decrease, and stay <= {n}"
            )


SparseInput = Mapping[str, "torch.Tensor | np.ndarray | JaggedIds"]


@dataclass
class _Touched:
    table: EmbeddingTable
    rows: torch.Tensor  # distinct rows; -1 = not admitted (or, on a GPU table, padding)
    leaf: torch.Tensor


@dataclass
class _GroupTouched:
    """One grouped lookup (GPU tables, see the module docstring)."""

    tables: list  # CudaEmbeddingTable of each of the S slots
    rows: torch.Tensor  # [S, B] int32: row of each slot's d-th distinct id; -1 = not admitted / padding
    leaf: torch.Tensor  # [S * B, dim]: the rows' vectors, slot s at [s * B, (s + 1) * B)
    # slot s's output got a gradient in backward (set by a hook): a slot left out of the loss is
    # not updated, as on the per-slot path (where its leaf has no grad), though the shared leaf's
    # grad holds zeros for it
    reached: list[bool]


class EmbeddingModule(nn.Module):
    """Embeddings for a batch of ids per slot, over training tables or a serving replica.

    ``forward(features, now)`` takes ``{slot: ids}`` where ids are a 1-D int64 tensor (one id per
    example -> ``[B, dim]``) or :class:`JaggedIds` (pooled by the slot's ``pooling`` -> ``[B, dim]``),
    and returns ``{slot: embeddings}``. ``now`` is the batch's event time (seconds; defaults to
    the wall clock), used for admission timestamps and expiry.

    Examples
    --------
    >>> from streamrec.embedding.config import SlotConfig, SGD, Zeros
    >>> tables = EmbeddingCollection({"item": SlotConfig(dim=2, optimizer=SGD(lr=1.0), initializer=Zeros())})
    >>> module = EmbeddingModule(tables)
    >>> out = module({"item": torch.tensor([3, 3, 5])}, now=10)
    >>> (out["item"] * torch.tensor([1.0, 2.0])).sum().backward()
    >>> module.apply_gradients()           # id 3 occurred twice: its gradient is summed
    >>> tables["item"].lookup(np.array([3, 5])).tolist()
    [[-2.0, -4.0], [-1.0, -2.0]]
    """

    def __init__(self, tables: EmbeddingCollection | ServingCollection, grouped: bool = True) -> None:
        super().__init__()
        self.tables = tables
        self.grouped = grouped  # False: every slot takes the per-slot path (tests compare the two)
        self._touched: list[_Touched | _GroupTouched] = []

    @property
    def trainable(self) -> bool:
        return isinstance(self.tables, EmbeddingCollection)

    def forward(self, features: SparseInput, now: float | None = None) -> dict[str, torch.Tensor]:
        train = self.training and self.trainable and torch.is_grad_enabled()
        if train and now is None:
            now = time.time()
        # Check every slot's input before admitting anything, so a bad slot changes no table.
        checked = []
        for slot, ids in features.items():
            table = self.tables[slot]
            jagged = isinstance(ids, JaggedIds)
            if jagged:
                ids.check(slot)
            raw = ids.values if jagged else ids
            on_gpu = getattr(table, "device_ids", None)  # a CudaEmbeddingTable keeps ids on its device
            checked.append(
                (slot, table, ids, jagged, on_gpu(raw, f"{slot}.ids") if on_gpu else as_ids(raw, f"{slot}.ids"))
            )
        if train:
            check_time(now)
        out = {}
        if train and self.grouped:
            groups: dict[tuple, list] = {}
            for slot, table, _, jagged, values in checked:
                if not jagged and isinstance(values, torch.Tensor) and values.numel():
                    groups.setdefault((values.device, table.dim, values.numel()), []).append((slot, table, values))
            for group in groups.values():
                out.update(self._train_group(group, now))
        for slot, table, ids, jagged, values in checked:
            if slot in out:
                continue
            if train:
                out[slot] = self._train_lookup(table, values, ids if jagged else None, now)
            else:
                on_gpu = isinstance(values, torch.Tensor)
                vectors = table.lookup_tensor(values) if on_gpu else torch.from_numpy(table.lookup(values))
                index = torch.arange(len(values), device=vectors.device)
                out[slot] = self._pool(slot, index, vectors, ids) if jagged else vectors
        return out

    def _pool(self, slot: str, index: torch.Tensor, weight: torch.Tensor, ids: JaggedIds) -> torch.Tensor:
        mode = (
            self.tables.pooling[slot]
            if isinstance(self.tables, ServingCollection)
            else self.tables[slot].config.pooling
        )
        return F.embedding_bag(index, weight, ids.offsets.to(index.device), mode=mode)

    def _train_lookup(
        self, table: EmbeddingTable, values: np.ndarray, jagged: JaggedIds | None, now: float
    ) -> torch.Tensor:
        if isinstance(values, torch.Tensor):  # a table on a GPU: one row per distinct id, no host trip
            distinct, inverse = table.admit_distinct(values, now)
            distinct = distinct.to(torch.int64)
            leaf = table.weight.index_select(0, distinct.clamp(min=0))
            leaf = torch.where((distinct < 0).unsqueeze(1), table.default, leaf)
        else:
            rows = torch.from_numpy(table.admit(values, now)).to(torch.int64)
            distinct, inverse = torch.unique(rows, return_inverse=True)
            leaf = table.weight.index_select(0, distinct.clamp(min=0))
            if distinct.numel() and int(distinct[0]) < 0:
                leaf[0] = torch.from_numpy(table.default)
        leaf.requires_grad_(True)
        self._touched.append(_Touched(table, distinct, leaf))
        if jagged is None:
            return F.embedding(inverse, leaf)
        return self._pool(table.slot, inverse, leaf, jagged)

    def _train_group(self, group: list, now: float) -> dict[str, torch.Tensor]:
        """The grouped training lookup of GPU tables (see the module docstring): no host sync."""
        from streamrec.embedding.cuda_table import first_occurrence_index, settle_tables

        tables = [table for _, table, _ in group]
        settle_tables(tables)  # a no-op after apply_gradients, which settles them
        t = int(now)
        ids = torch.stack([values for _, _, values in group])
        n_slots, batch = ids.shape
        dim = tables[0].dim
        sorted_ids, order = torch.sort(ids, dim=1)
        dpos = first_occurrence_index(sorted_ids)
        inverse = torch.empty_like(dpos).scatter_(1, order, dpos)
        rows = torch.empty((n_slots, batch), dtype=torch.int32, device=ids.device)
        leaf = torch.empty((n_slots * batch, dim), dtype=torch.float32, device=ids.device)
        for s, table in enumerate(tables):
            table.find_or_insert_sorted(sorted_ids[s], dpos[s], rows[s], t)
            table.gather_rows(rows[s], leaf[s * batch : (s + 1) * batch])
        leaf.requires_grad_(True)
        inverse += torch.arange(0, n_slots * batch, batch, device=ids.device).unsqueeze(1)
        emb = F.embedding(inverse, leaf)
        record = _GroupTouched(tables, rows, leaf, [False] * n_slots)
        self._touched.append(record)
        # unbind, not emb[s]: its backward is one stack, where S selects would each zero-fill [S, B, dim]
        outs = emb.unbind(0)
        for s, e in enumerate(outs):
            e.register_hook(functools.partial(_reached, record.reached, s))
        return {slot: e for (slot, _, _), e in zip(group, outs, strict=True)}

    def apply_gradients(self) -> None:
        """Apply the sparse update for everything looked up since the last call.

        Every gradient is checked first; if any is bad (NaN/inf, wrong shape) an error names the
        slot and no table changes. A slot looked up several times gets one step with the sum.
        """
        touched, self._touched = self._touched, []
        slots = [table.slot for t in touched if isinstance(t, _GroupTouched) for table in t.tables]
        slots += [t.table.slot for t in touched if isinstance(t, _Touched)]
        if len(slots) != len(set(slots)):  # a slot looked up twice: sum its parts per slot
            touched = [part for t in touched for part in _per_slot(t)]
        groups = [t for t in touched if isinstance(t, _GroupTouched) and t.leaf.grad is not None]
        per_table: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        for t in touched:
            if isinstance(t, _GroupTouched) or t.leaf.grad is None:
                continue
            keep = t.rows >= 0
            per_table.setdefault(t.table.slot, []).append((t.rows[keep], t.leaf.grad[keep]))
        updates = []
        for slot, parts in per_table.items():
            table = self.tables[slot]
            if len(parts) == 1:
                rows, grads = parts[0]
            else:
                all_rows = torch.cat([r for r, _ in parts])
                rows, inverse = torch.unique(all_rows, return_inverse=True)
                grads = torch.zeros(len(rows), table.dim, device=rows.device).index_add_(
                    0, inverse, torch.cat([g for _, g in parts])
                )
            table.check_gradients(rows, grads)
            updates.append((table, rows, grads))
        group_updates = [u for g in groups for u in _check_group(g)]
        for table, rows, grads in updates:
            if hasattr(table, "device_ids"):  # a GPU table: checked above, once (each check is a sync)
                table.apply_gradients(rows, grads, checked=True)
            else:
                table.apply_gradients(rows, grads)
        for table, rows, grads in group_updates:
            table.update_rows(rows, grads)

    def discard_gradients(self) -> None:
        """Forget lookups made since the last :meth:`apply_gradients` (e.g. after a bad batch)."""
        self._touched = []


def _reached(reached: list[bool], s: int, grad: torch.Tensor | None) -> None:
    if grad is not None:  # unbind's backward calls the hooks of outputs left out of the loss with None
        reached[s] = True


def _per_slot(t: _Touched | _GroupTouched) -> list[_Touched]:
    """A grouped lookup as per-slot records (rows int64), for the general path."""
    if isinstance(t, _Touched):
        return [t]
    batch = t.rows.shape[1]
    grad = t.leaf.grad
    out = []
    for s, table in enumerate(t.tables):
        leaf = t.leaf.detach()[s * batch : (s + 1) * batch].requires_grad_(True)
        if grad is not None and t.reached[s]:
            leaf.grad = grad[s * batch : (s + 1) * batch]
        out.append(_Touched(table, t.rows[s].to(torch.int64), leaf))
    return out


def _check_group(g: _GroupTouched) -> list[tuple]:
    """Check a grouped lookup's gradients: one reduction flags every slot with a NaN/inf in the
    gradient of an admitted id, and one device read brings the flags together with every table's
    allocator counters (settling the tables). Raises naming the first bad slot (nothing updated);
    returns the per-slot updates (fixed-size rows, -1 skipped by the kernels)."""
    from streamrec.embedding.cuda_table import raise_non_finite, settle_tables

    n_slots, batch = g.rows.shape
    grad = g.leaf.grad.view(n_slots, batch, -1)
    bad = ((~torch.isfinite(grad)).any(dim=2) & (g.rows >= 0)).any(dim=1)
    flags = settle_tables(g.tables, extra=bad)
    for s, table in enumerate(g.tables):
        if flags[s] and g.reached[s]:
            raise_non_finite(table.slot, grad[s][g.rows[s] >= 0])
    return [(table, g.rows[s], grad[s]) for s, table in enumerate(g.tables) if g.reached[s]]
