"""Distributed training on ``torch.distributed``: row-wise sharded collisionless tables, data-parallel dense.

Monolith trains on parameter servers; streamrec does the same job on the collective engine PyTorch
users already run (gloo on CPU, NCCL where CUDA is present), with no server of its own:

* **Sparse tables are sharded row-wise.** With world size W, each slot's id belongs to rank
  :func:`owner_of` ``(id, W)`` — a keyed 64-bit mix of the id, fixed for every run and every W
  (so a snapshot can be resharded). Each rank keeps its shard as an ordinary
  :class:`~streamrec.embedding.EmbeddingTable`: admission, expiry and the per-row optimizer state
  are applied by the owner, exactly as on one process.
* **Forward** (TorchRec's "input dist" and "output dist", in three collectives per step for all
  slots together): each rank sends each distinct id of its examples, with how often it occurs, to
  the id's owner (``all_to_all`` of counts, then of (id, occurrences) pairs); owners expand the
  pairs back to occurrences, admit or look up the rows in the order the global batch holds them,
  and send one vector per distinct id back (``all_to_all`` of floats). The vectors a rank receives
  become one leaf tensor per slot; lookup by the examples' inverse index, pooling and the head run
  locally.
* **Backward**: the leaf's gradient (one row per distinct id, already summed over its occurrences
  by autograd) goes back to the owners along the same routes (one more ``all_to_all``); each owner
  sums the gradients of a row over all ranks and checks them. Dense
  parameters are data parallel: the loss is ``sum / global batch size`` on each rank and dense
  gradients are summed with one ``all_reduce``, which also carries each owner's verdict on its
  sparse gradients, so every rank's head steps identically and every owner applies its row
  optimizer only if no rank refused. A training step is six collectives in all (with the
  all-gather that agrees on the step's event time and global batch size).

Why distinct ids with their counts, and why that is exact: admission counts sightings, so an owner
must see every occurrence, but within one batch every occurrence of an id gets the same row
(:meth:`EmbeddingTable.admit` gives earlier occurrences the row of an id admitted later in the
batch), so one vector per distinct id is all the requester needs. The owner expands the pairs rank
by rank, so each id's sightings arrive in the global batch's order; only the order *between*
different ids changes, which matters to nothing but the count-min sketch's collisions. So **W ranks
produce the same parameters as one** (``tests/training/test_distributed.py`` checks it within
1e-5 after 50 steps) and the bytes are per distinct id, not per occurrence (``streamrec bench
training --ranks`` reports them per example). The admission sketch is per shard, so its estimates
are closer to exact counts than one process's (a count-min sketch only overestimates); with
collisions in a small sketch, W ranks can admit an id later than one process would.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from streamrec.batch import ExampleBatch
from streamrec.embedding import EmbeddingCollection
from streamrec.embedding.module import JaggedIds, SparseInput
from streamrec.embedding.table import as_ids, check_time
from streamrec.errors import InvalidInputError, NonFiniteGradientError
from streamrec.training.trainer import TrainConfig, Trainer

__all__ = [
    "SHARD_KEY",
    "DistributedTrainer",
    "ShardedEmbeddingModule",
    "global_slice",
    "init_from_env",
    "owner_of",
]

#: The key of the owner hash. Fixed forever: snapshots record it, and resharding relies on it.
SHARD_KEY = 0x5EED_5A4D_0F1D_B175


def owner_of(ids: np.ndarray, world: int) -> np.ndarray:
    """The rank that owns each id in a world of ``world`` ranks (int64 array). Vectorised NumPy.

    A splitmix64 finaliser of ``id ^ SHARD_KEY``, modulo ``world``: uniform for any id
    distribution (sequential ids included) and unrelated to the cuckoo index's own hashes.

    >>> owner_of(np.arange(6), 1).tolist(), owner_of(np.arange(6), 3).tolist()
    ([0, 0, 0, 0, 0, 0], [0, 1, 1, 0, 0, 1])
    """
    if world == 1:
        return np.zeros(len(ids), dtype=np.int64)
    x = np.asarray(ids, dtype=np.int64).view(np.uint64) ^ np.uint64(SHARD_KEY)
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(30))
        x = x * np.uint64(0xBF58476D1CE4E5B9)
        x = x ^ (x >> np.uint64(27))
        x = x * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x % np.uint64(world)).astype(np.int64)


def global_slice(n: int, rank: int, world: int) -> tuple[int, int]:
    """Rank ``rank``'s contiguous share ``[lo, hi)`` of a global batch of ``n`` examples.

    Contiguous blocks in rank order keep the global order: rank 0's examples come first, so an owner
    that reads what it receives in rank order sees the ids in the order one process would.
    """
    return n * rank // world, n * (rank + 1) // world


def init_from_env(backend: str | None = None) -> tuple[int, int]:
    """Join the process group described by ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT``
    (what ``torchrun`` and ``streamrec train ... --ranks`` set); returns ``(rank, world)``."""
    if not dist.is_initialized():
        chosen = backend or ("nccl" if torch.cuda.is_available() and os.environ.get("STREAMREC_NCCL") else "gloo")
        dist.init_process_group(chosen)
    return dist.get_rank(), dist.get_world_size()


@dataclass
class _Lookup:
    """One forward's exchange, kept until its gradients go back to the owners.

    Distinct ids travel in one buffer laid out ``[rank][slot]``: what this rank sends to owner ``d``
    for slot ``j`` is block ``(d, j)`` of ``order`` (this rank's distinct ids per slot, slot-major,
    sorted stably by owner then slot), and what it receives from rank ``d`` for slot ``j`` is block
    ``(d, j)`` of the receive buffer. Vectors and gradients reuse the same blocks, ``dim`` floats
    per distinct id.
    """

    slots: list[str]
    dims: np.ndarray  # [S]
    bases: np.ndarray  # [S + 1]: where each slot's distinct ids start in the slot-major concatenation
    order: np.ndarray  # this rank's distinct ids in send order
    send_counts: np.ndarray  # [W, S]: distinct ids this rank sent to each owner, per slot
    recv_counts: np.ndarray  # [W, S]: distinct ids this rank received from each rank, per slot
    owner_rows: list[np.ndarray]  # per slot: rows (on this owner) of the ids received, in rank order
    leaves: list[torch.Tensor]  # per slot: received vectors in the order of the slot's values


def _starts(counts: np.ndarray) -> np.ndarray:
    """Start of each block of a buffer laid out ``[rank][slot]`` with ``counts[d, j]`` items per block."""
    flat = counts.reshape(-1)
    return (np.cumsum(flat) - flat).reshape(counts.shape)


class ShardedEmbeddingModule(nn.Module):
    """The :class:`~streamrec.embedding.EmbeddingModule` contract over a table sharded across ranks.

    ``forward(features, now)`` takes this rank's examples (``{slot: ids}``, like the one-process
    module) and returns ``{slot: [B_local, dim]}``; every rank must call it the same number of times
    (it is collective), with the same slots. After ``loss.backward()``, :meth:`apply_gradients`
    (also collective) sends each leaf's gradient to the owners, which apply their row optimizers.

    The hot path (per step) is NumPy and torch: one ``np.unique`` per slot, one sort of this rank's
    distinct ids by owner and slot, one gather into each send buffer and one scatter out of each
    receive buffer, per slot one admission and one ``index_add_`` — no Python loop over ids.

    Parameters
    ----------
    tables
        This rank's shard: an :class:`EmbeddingCollection` with the same config on every rank.
    group
        The process group (default: the world).
    """

    def __init__(self, tables: EmbeddingCollection, group: dist.ProcessGroup | None = None) -> None:
        super().__init__()
        self.tables = tables
        self.group = group
        self.rank = dist.get_rank(group)
        self.world = dist.get_world_size(group)
        self.now: float | None = None  # the step's event time, agreed by all ranks (set by the trainer)
        self._pending: list[_Lookup] = []
        self.bytes_sent = 0  # over all collectives of this rank, for the bench's bytes per example

    @property
    def trainable(self) -> bool:
        return True

    # -- collectives ------------------------------------------------------------------------------
    def _all_to_all(self, send: np.ndarray, send_splits: list[int], recv_splits: list[int]) -> np.ndarray:
        source = torch.from_numpy(send)
        out = torch.empty((sum(recv_splits), *send.shape[1:]), dtype=source.dtype)
        dist.all_to_all_single(out, source, recv_splits, send_splits, group=self.group)
        self.bytes_sent += send.nbytes
        return out.numpy()

    def _route(
        self, values: list[np.ndarray], multiplicity: list[np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Send every distinct id, with its occurrences, to its owner. Returns the slot bases, the send order, the send
        and receive counts ``[W, S]``, and the ids received (laid out ``[rank][slot]``)."""
        w, s = self.world, len(values)
        lengths = np.fromiter((len(v) for v in values), dtype=np.int64, count=s)
        bases = np.zeros(s + 1, dtype=np.int64)
        np.cumsum(lengths, out=bases[1:])
        flat = np.concatenate(values) if s else np.empty(0, dtype=np.int64)
        if w == 1:
            order = np.arange(len(flat))
            counts = lengths.reshape(1, s)
        else:
            key = owner_of(flat, w) * s + np.repeat(np.arange(s), lengths)
            order = np.argsort(key, kind="stable")
            counts = np.bincount(key, minlength=w * s).reshape(w, s)
        recv_counts = self._all_to_all(np.ascontiguousarray(counts.reshape(-1)), [s] * w, [s] * w).reshape(w, s)
        times = np.concatenate(multiplicity) if s else np.empty(0, dtype=np.int64)
        pairs = np.stack([flat[order], times[order]], axis=1)  # (distinct id, occurrences) per row
        received = self._all_to_all(pairs, counts.sum(1).tolist(), recv_counts.sum(1).tolist())
        return bases, order, counts, recv_counts, received

    # -- forward ----------------------------------------------------------------------------------
    def forward(self, features: SparseInput, now: float | None = None) -> dict[str, torch.Tensor]:
        train = self.training and torch.is_grad_enabled()
        slots = list(features)
        checked = []
        for slot in slots:
            table = self.tables[slot]
            ids = features[slot]
            jagged = isinstance(ids, JaggedIds)
            if jagged:
                ids.check(slot)
            checked.append((table, ids, jagged, as_ids(ids.values if jagged else ids, field=f"{slot}.ids")))
        if train:
            now = self.now if self.now is not None else now
            if now is None:
                raise InvalidInputError("now", now, "a training step needs the event time the ranks agreed on")
            check_time(now)
        w = self.world
        dims = np.array([c[0].dim for c in checked], dtype=np.int64)
        # Each distinct id of a slot travels once, with how often it occurs here: the owner expands
        # it back to occurrences for admission, and one vector (one summed gradient) comes back.
        distinct = [np.unique(c[3], return_inverse=True, return_counts=True) for c in checked]
        bases, order, send_counts, recv_counts, received = self._route(
            [u for u, _, _ in distinct], [n.astype(np.int64) for _, _, n in distinct]
        )
        # Owners: admit or look up what they received, answering into the same [rank][slot] blocks.
        recv_at, recv_float_at = _starts(recv_counts), _starts(recv_counts * dims)
        answer = np.empty(int((recv_counts * dims).sum()), dtype=np.float32)
        owner_rows: list[np.ndarray] = []
        for j, (table, _, _, _) in enumerate(checked):
            blocks = [(int(recv_at[d, j]), int(recv_counts[d, j])) for d in range(w)]
            pairs = (
                np.concatenate([received[a : a + n] for a, n in blocks])
                if w > 1
                else received[blocks[0][0] :][: blocks[0][1]]
            )
            ids = np.ascontiguousarray(pairs[:, 0])
            if train:
                # Occurrences in the order one process would see them: rank by rank, and each rank's
                # in its examples' order per id. An id admitted at its k-th sighting gives all of a
                # batch's occurrences its row (EmbeddingTable.admit), so one row per distinct id.
                occurrences = np.repeat(ids, pairs[:, 1])
                firsts = np.cumsum(pairs[:, 1]) - pairs[:, 1]
                rows = table.admit(occurrences, now)[firsts]
                owner_rows.append(rows)
                source, picks, missing = table.weight.numpy(), np.maximum(rows, 0), rows < 0
                missing = missing if missing.any() else None
            else:
                source, picks, missing = table.lookup(ids), None, None
            at = 0
            for d, (_, n) in enumerate(blocks):
                lo = int(recv_float_at[d, j])
                out = answer[lo : lo + n * int(dims[j])].reshape(n, int(dims[j]))
                if picks is None:
                    out[:] = source[at : at + n]
                else:
                    np.take(source, picks[at : at + n], axis=0, out=out, mode="clip")
                    if missing is not None:
                        out[missing[at : at + n]] = table.default
                at += n
        send_floats = (recv_counts * dims).sum(1).tolist()
        back = self._all_to_all(answer, send_floats, (send_counts * dims).sum(1).tolist())
        # Back home: each slot's vectors in the order of its values (one scatter), then pooled.
        send_at, send_float_at = _starts(send_counts), _starts(send_counts * dims)
        out: dict[str, torch.Tensor] = {}
        leaves = []
        for j, (slot, (table, ids, jagged, values)) in enumerate(zip(slots, checked, strict=True)):
            dim, n_values = int(dims[j]), len(distinct[j][0])
            inverse = torch.from_numpy(distinct[j][1].reshape(-1).astype(np.int64))
            if w == 1:
                vectors = back[int(send_float_at[0, j]) :][: n_values * dim].reshape(n_values, dim)
            else:
                vectors = np.empty((n_values, dim), dtype=np.float32)
                for d in range(w):
                    n, lo = int(send_counts[d, j]), int(send_at[d, j])
                    at = int(send_float_at[d, j])
                    vectors[order[lo : lo + n] - bases[j]] = back[at : at + n * dim].reshape(n, dim)
            leaf = torch.from_numpy(vectors)
            if train:
                leaf.requires_grad_(True)
                leaves.append(leaf)
            if jagged and not _one_per_bag(ids, len(values)):
                out[slot] = F.embedding_bag(inverse, leaf, ids.offsets, mode=table.config.pooling)
            else:  # a bag of one pools to itself (sum and mean alike): skip embedding_bag both ways
                out[slot] = F.embedding(inverse, leaf)
        if train:
            lookup = _Lookup(slots, dims, bases, order, send_counts, recv_counts, owner_rows, leaves)
            self._pending.append(lookup)
        return out

    # -- backward: gradients to the owners ----------------------------------------------------------
    def apply_gradients(self) -> None:
        """Send every pending lookup's gradients to the owners; each owner applies one step per row.

        Collective. Every owner checks its gradients first; if any rank finds a NaN/inf or a bad
        shape, no rank changes anything and every rank raises."""
        exchange = self.exchange_gradients()
        flags = exchange.flags.clone()
        dist.all_reduce(flags, group=self.group)
        self.finish_gradients(exchange, flags)

    def exchange_gradients(self) -> _Exchange:
        """First half of :meth:`apply_gradients` (collective): the gradients travel to the owners,
        which sum them per row and check them. Nothing changes until :meth:`finish_gradients` gets
        the flags summed over all ranks (:class:`DistributedTrainer` sums them with the dense
        gradients, saving a collective)."""
        pending, self._pending = self._pending, []
        per_slot: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        for lookup in pending:
            for slot, rows, grads in self._send_gradients(lookup):
                per_slot.setdefault(slot, []).append((rows, grads))
        slots = list(self.tables.slots)
        updates = []
        bad: Exception | None = None
        for slot in slots:
            parts = per_slot.get(slot)
            if not parts:
                continue
            table = self.tables[slot]
            if len(parts) == 1:
                rows, grads = parts[0]
            else:
                rows, inverse = torch.unique(torch.cat([r for r, _ in parts]), return_inverse=True)
                grads = torch.zeros(len(rows), table.dim).index_add_(0, inverse, torch.cat([g for _, g in parts]))
            try:
                table.check_gradients(rows, grads)
            except InvalidInputError as exc:
                bad = bad or exc
            updates.append((slot, rows, grads))
        # Did any rank refuse, and which slots had rows anywhere (a table's step counter moves when
        # the slot had rows in the global batch, as on one process).
        flags = torch.zeros(1 + len(slots), dtype=torch.int64)
        flags[0] = int(bad is not None)
        for slot, rows, _ in updates:
            flags[1 + slots.index(slot)] = int(rows.numel() > 0)
        return _Exchange(updates, flags, bad)

    def _send_gradients(self, lookup: _Lookup) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
        """One lookup's gradients to the owners; returns per slot the owner's distinct admitted rows
        and their summed gradients."""
        w, dims = self.world, lookup.dims
        send_at, send_float_at = _starts(lookup.send_counts), _starts(lookup.send_counts * dims)
        send = np.empty(int((lookup.send_counts * dims).sum()), dtype=np.float32)
        for j, leaf in enumerate(lookup.leaves):
            dim = int(dims[j])
            grad = leaf.grad.numpy() if leaf.grad is not None else np.zeros(tuple(leaf.shape), dtype=np.float32)
            for d in range(w):
                n, lo, at = int(lookup.send_counts[d, j]), int(send_at[d, j]), int(send_float_at[d, j])
                if w == 1:
                    send[at : at + n * dim] = grad.reshape(-1)
                else:
                    idx = lookup.order[lo : lo + n] - lookup.bases[j]
                    np.take(grad, idx, axis=0, out=send[at : at + n * dim].reshape(n, dim), mode="clip")
        recv_floats = (lookup.recv_counts * dims).sum(1).tolist()
        grid = self._all_to_all(send, (lookup.send_counts * dims).sum(1).tolist(), recv_floats)
        recv_float_at = _starts(lookup.recv_counts * dims)
        out = []
        for j, slot in enumerate(lookup.slots):
            dim = int(dims[j])
            rows, inverse = torch.unique(torch.from_numpy(lookup.owner_rows[j].astype(np.int64)), return_inverse=True)
            grads = torch.zeros(len(rows), dim)
            at = 0
            for d in range(w):
                n, lo = int(lookup.recv_counts[d, j]), int(recv_float_at[d, j])
                if n:
                    part = torch.from_numpy(grid[lo : lo + n * dim].reshape(n, dim))
                    grads.index_add_(0, inverse[at : at + n], part)
                at += n
            if len(rows) and int(rows[0]) < 0:  # ids not admitted yet: their gradient is dropped
                rows, grads = rows[1:], grads[1:]
            out.append((slot, rows, grads))
        return out

    def finish_gradients(self, exchange: _Exchange, flags: torch.Tensor) -> None:
        """Second half of :meth:`apply_gradients`: with ``flags`` summed over all ranks, apply every
        owner's update, or raise everywhere if any rank refused."""
        if int(flags[0]):
            if exchange.bad is not None:
                raise exchange.bad
            raise NonFiniteGradientError("grads", None, "another rank's gradient was refused; nothing was updated")
        slots = list(self.tables.slots)
        touched = {slot for slot, _, _ in exchange.updates}
        for slot, rows, grads in exchange.updates:
            if rows.numel():
                self.tables[slot].apply_gradients(rows, grads)
            elif int(flags[1 + slots.index(slot)]):
                self.tables[slot].step += 1
        for k, slot in enumerate(slots):
            if slot not in touched and int(flags[1 + k]):
                self.tables[slot].step += 1

    def discard_gradients(self) -> None:
        """Forget lookups made since the last :meth:`apply_gradients`."""
        self._pending = []


@dataclass
class _Exchange:
    """What :meth:`ShardedEmbeddingModule.exchange_gradients` leaves for ``finish_gradients``."""

    updates: list[tuple[str, torch.Tensor, torch.Tensor]]  # (slot, distinct rows, summed gradients)
    flags: torch.Tensor  # int64 [1 + S]: this rank refused; slot j had rows here
    bad: Exception | None


def _one_per_bag(ids: JaggedIds, n_values: int) -> bool:
    """Whether every example holds exactly one id (``offsets == arange``): pooling is then the identity."""
    return n_values == len(ids) and bool(torch.equal(ids.offsets, torch.arange(n_values)))


class DistributedTrainer(Trainer):
    """A :class:`Trainer` whose model runs on a :class:`ShardedEmbeddingModule`, one per rank.

    :meth:`train_step` takes this rank's share of a global batch (any size, empty too; see
    :func:`global_slice`). The ranks agree on the step's event time (the largest) and the global
    batch size, the loss is the global mean, and dense gradients are summed over ranks, so the
    parameters after a step equal one process's on the whole batch.
    """

    def __init__(self, model: nn.Module, config: TrainConfig | None = None, group: dist.ProcessGroup | None = None):
        if not isinstance(model.embeddings, ShardedEmbeddingModule):
            raise InvalidInputError("model.embeddings", type(model.embeddings).__name__, "must be sharded")
        super().__init__(model, config)
        self.group = group
        for param in model.dense_parameters():  # identical heads everywhere, whatever each rank built
            dist.broadcast(param.data, src=0, group=group)

    @classmethod
    def from_trainer(cls, trainer: Trainer, group: dist.ProcessGroup | None = None) -> DistributedTrainer:
        """This rank's distributed trainer over ``trainer``'s model and tables (its shard), keeping the
        dense optimizer's state and the counters (what :func:`~streamrec.training.shards.load_shard` returns)."""
        model = trainer.model
        if not isinstance(model.embeddings, ShardedEmbeddingModule):
            model.embeddings = ShardedEmbeddingModule(model.embeddings.tables, group)
        out = cls(model, trainer.config, group)
        out.dense_optimizer.load_state_dict(trainer.dense_optimizer.state_dict())
        out.examples_seen, out.steps = trainer.examples_seen, trainer.steps
        return out

    def _agree(self, batch: ExampleBatch) -> tuple[float, int]:
        mine = torch.tensor([batch.max_time if len(batch) else -np.inf, float(len(batch))], dtype=torch.float64)
        everyone = [torch.empty(2, dtype=torch.float64) for _ in range(dist.get_world_size(self.group))]
        dist.all_gather(everyone, mine, group=self.group)
        stacked = torch.stack(everyone)
        return float(stacked[:, 0].max()), int(stacked[:, 1].sum())

    def train_step(self, batch: ExampleBatch) -> torch.Tensor:
        """One collective update on this rank's share of a global batch; returns its logits (before)."""
        now, total = self._agree(batch)
        if total == 0:
            return torch.empty(0)
        self.model.train()
        self.model.embeddings.now = max(now, 0.0)
        logits = self.model(batch)
        loss = F.binary_cross_entropy_with_logits(logits, batch.labels, reduction="sum") / total
        self.dense_optimizer.zero_grad()
        loss.backward()
        sparse = self.model.embeddings.exchange_gradients()  # rows' gradients to their owners
        # One all-reduce sums the dense gradients and the owners' verdicts (the flags are small
        # integers, exact in float32).
        params = self.model.dense_parameters()
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads] + [sparse.flags.to(torch.float32)])
        dist.all_reduce(flat, group=self.group)
        at = 0
        for param, grad in zip(params, grads, strict=True):
            param.grad = flat[at : at + grad.numel()].view_as(grad).clone()
            at += grad.numel()
        self.dense_optimizer.step()
        self.model.embeddings.finish_gradients(sparse, flat[at:].round().to(torch.int64))
        self.examples_seen += total  # the global count, the same on every rank (as one process counts)
        self.steps += 1
        return logits.detach()

    @torch.no_grad()
    def predict_logits(self, data: ExampleBatch, batch_size: int = 4096) -> np.ndarray:
        """Logits of this rank's ``data``; collective, so every rank runs as many batches as the largest."""
        self.model.eval()
        counts = [torch.zeros(1, dtype=torch.int64) for _ in range(dist.get_world_size(self.group))]
        dist.all_gather(counts, torch.tensor([len(data)]), group=self.group)
        most = int(max(int(c) for c in counts))
        out = []
        for lo in range(0, max(most, 1), batch_size):
            part = data[min(lo, len(data)) : min(lo + batch_size, len(data))]
            out.append(self.model(part).numpy())
        self.model.train()
        return np.concatenate(out) if out else np.empty(0, dtype=np.float32)
