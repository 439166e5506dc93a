"""``streamrec bench embedding|training --device cuda``: the GPU placement against torch on the same GPU.

Every figure is timed in this process, on the same GPU, with the contenders alternating in each
repetition (``torch.cuda.synchronize`` around each timed run); medians of the repetitions:

* ``ratios.gpu_lookup_vs_embedding`` — lookup + gather (one kernel: probe both buckets, copy the
  row) of 1 M-id Zipf batches (about 2 % absent) from a 1 M-row table, dim 16, over
  ``F.embedding(ids % rows, weight)`` on a same-sized tensor (the collision baseline).
* ``throughput.gpu_lookup_ids_per_s_100m`` — the same lookup on a 100 M-id table at load >= 0.9
  (``--quick``: 10 M), and ``throughput.gpu_embedding_ids_per_s_100m`` its ``F.embedding``.
* ``throughput.gpu_insert_ids_per_s`` — filling that table: ``admit_distinct`` of 1 M-id batches
  of new, distinct ids (dedup, find-or-insert, row initialisation, spilled ids' cuckoo walk
  included, and the final read of the table's counters), into an index sized up front (as
  HierarchicalKV's figures are), from empty to the final load; ``extra.insert_syncs_per_batch``
  and ``extra.insert_launches_per_batch`` count its device reads and numba launches.
* ``extra.syncs_per_step`` / ``extra.launches_per_step`` (and ``numba_launches_per_step``,
  ``torch_syncs_per_step`` on a GPU) — counted over one untimed pass of the training steps, see
  :func:`count_step_work`.
* ``ratios.gpu_train_step_vs_embeddingbag`` / ``ratios.gpu_train_step_vs_torch_rowwise`` — a full
  training step (lookup with admission, forward, backward, Adagrad on rows and head) of the
  26-slot logistic model of ``bench embedding`` at batch 65,536, against ``nn.EmbeddingBag`` +
  sparse ``torch.optim.Adagrad``, and against streamrec's own design written in plain torch (one
  table for every slot, ids = rows: no hashing, admission or expiry; distinct rows gathered into
  a leaf, row-wise Adagrad after backward).
* ``ratios.gpu_train_step_grouped_vs_per_slot`` — the same step of ours through the per-slot
  path (``EmbeddingModule(grouped=False)``, tables of their own): what grouping the slots buys.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from streamrec.benchutil import median, race, rate, seconds, speedup
from streamrec.embedding.baselines import LogisticHead, ModuloBagModel, RowwiseAdagrad, modulo_lookup


@dataclass(frozen=True)
class GpuSizes:
    rows: int = 1_000_000
    dim: int = 16
    batch: int = 1_000_000
    batches: int = 20
    reps: int = 7
    big_rows: int = 100_000_000
    big_load: float = 0.93
    big_batches: int = 10
    insert_batch: int = 1_000_000
    slots: int = 26
    train_rows: int = 100_000
    train_batch: int = 65_536
    train_steps: int = 10
    train_reps: int = 5


QUICK = GpuSizes(rows=200_000, batch=200_000, batches=5, reps=3, big_rows=2_000_000, big_batches=3,
                 insert_batch=200_000, train_rows=10_000, train_batch=8_192, train_steps=3, train_reps=2)  # fmt: skip
SIM = GpuSizes(rows=2_000, batch=1_000, batches=1, reps=1, big_rows=4_000, big_batches=1, insert_batch=2_000,
               slots=3, train_rows=500, train_batch=256, train_steps=1, train_reps=1)  # fmt: skip


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _race(contenders: dict[str, Callable[[], object]], reps: int, device: torch.device) -> dict[str, float]:
    """Median seconds of each contender, alternating, after one warm-up run of each (synchronised)."""
    times = race(contenders, reps, collect=False, sync=lambda: _sync(device))
    return {name: median(v) for name, v in times.items()}


def _synced_seconds(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds of ``fn`` with the device's queued work included (synchronised before and after)."""
    _sync(device)
    return seconds(lambda: (fn(), _sync(device)))


def distinct_ids(n: int, device: torch.device, generator: torch.Generator) -> torch.Tensor:
    """``n`` distinct ids spread over all of int64, shuffled (made on the device)."""
    raw = torch.randint(-(2**63), 2**63 - 1, (int(n * 1.001) + 64,), dtype=torch.int64, device=device,
                        generator=generator)  # fmt: skip
    ids = torch.unique(raw)[:n]
    return ids[torch.randperm(ids.numel(), device=device, generator=generator)]


def zipf_ranks(universe: int, shape: tuple[int, ...], device: torch.device, generator: torch.Generator,
               exponent: float = 1.05) -> torch.Tensor:  # fmt: skip
    """Ranks in ``[0, universe)`` with P(rank) ~ 1 / (rank + 1) ** exponent (inverse CDF on the device)."""
    cdf = torch.cumsum(torch.arange(1, universe + 1, device=device, dtype=torch.float64) ** -exponent, 0)
    cdf /= cdf[-1].clone()
    u = torch.rand(shape, device=device, dtype=torch.float64, generator=generator)
    return torch.searchsorted(cdf, u).clamp_(max=universe - 1)


def _filled_table(rows: int, dim: int, device: str, load: float | None, insert_batch: int, gen: torch.Generator):
    """A table holding ``rows`` fresh ids, its index sized for ``load``; returns (table, ids, seconds)."""
    from streamrec.embedding.config import SGD, SlotConfig, Zeros
    from streamrec.embedding.cuda_table import CudaEmbeddingTable

    table = CudaEmbeddingTable("bench", SlotConfig(dim=dim, optimizer=SGD(), initializer=Zeros(), capacity=rows),
                               device=device)  # fmt: skip
    if load is not None:
        table.index._rebuilt(math.ceil(rows / (load * 5)), None)
    ids = distinct_ids(rows, table.device, gen)

    def fill() -> None:
        for lo in range(0, rows, insert_batch):
            table.admit_distinct(ids[lo : lo + insert_batch], now=1)
        table.settle()  # the host's counters read back (one sync): part of the time

    from streamrec.embedding.cuda_table import COUNTS

    before = dict(COUNTS)
    fill_s = _synced_seconds(fill, table.device)
    batches = math.ceil(rows / insert_batch)
    work = {f"insert_{k}_per_batch": round((COUNTS[k] - before[k]) / batches, 2) for k in ("syncs", "launches")}
    return table, ids, fill_s, work


def bench_lookup(s: GpuSizes, device: str, out: dict, gen: torch.Generator, big: bool) -> None:
    rows = s.big_rows if big else s.rows
    label = "_100m" if big and s.big_rows == 100_000_000 else ("_big" if big else "")
    table, ids, fill_s, work = _filled_table(rows, s.dim, device, s.big_load if big else None, s.insert_batch, gen)
    dev = table.device
    if big:
        out["throughput"]["gpu_insert_ids_per_s"] = rate(rows, fill_s)
        out["extra"].update(work)  # device reads (host syncs) and numba launches per admit_distinct
        out["extra"]["insert_setup"] = (
            f"{rows:,} new distinct ids in batches of {s.insert_batch:,}, index sized for load {s.big_load}"
        )
    out["extra"][f"table_ids{label or '_1m'}"] = len(table)
    out["extra"][f"load_factor{label or '_1m'}"] = round(table.index.load_factor, 4)
    absent = distinct_ids(max(1, rows // 50), dev, gen)  # ~2 % of the universe is not in the table
    universe = torch.cat([ids, absent])
    n_batches = s.big_batches if big else s.batches
    batches = [universe[zipf_ranks(universe.numel(), (s.batch,), dev, gen)] for _ in range(n_batches)]
    weight = torch.randn(rows, s.dim, device=dev)
    del ids
    buffer = torch.empty(s.batch, s.dim, device=dev)
    gather = table.index.gather

    def ours() -> None:
        for b in batches:
            gather(b, table.weight, table.default, buffer)

    def embedding() -> None:
        for b in batches:
            modulo_lookup(b, weight)

    # the same answer as the host-side lookup (bit-identical vectors), on one batch's first ids
    check = batches[0][:4096]
    assert torch.equal(gather(check, table.weight, table.default), table.weight[table.index.lookup(check).long()]
                       .masked_fill((table.index.lookup(check) < 0).unsqueeze(1), 0.0))  # fmt: skip
    times = _race({"ours": ours, "embedding": embedding}, s.reps, dev)
    n = n_batches * s.batch
    out["throughput"][f"gpu_lookup_ids_per_s{label}"] = rate(n, times["ours"])
    out["throughput"][f"gpu_embedding_ids_per_s{label}"] = rate(n, times["embedding"])
    if not big:
        out["ratios"]["gpu_lookup_vs_embedding"] = speedup(times["ours"], baseline_seconds=times["embedding"])


def bench_train_step(s: GpuSizes, device: str, out: dict, gen: torch.Generator) -> None:
    from streamrec.embedding.collection import EmbeddingCollection
    from streamrec.embedding.config import Adagrad, SlotConfig
    from streamrec.embedding.cuda_table import torch_device
    from streamrec.embedding.module import EmbeddingModule

    dev = torch_device(device)
    torch.manual_seed(0)
    names = [f"c{i}" for i in range(s.slots)]
    universes = {name: distinct_ids(s.train_rows, dev, gen) for name in names}
    steps = []
    for _ in range(s.train_steps):
        ranks = zipf_ranks(s.train_rows, (s.slots, s.train_batch), dev, gen)
        labels = (torch.rand(s.train_batch, device=dev, generator=gen) < 0.25).float()
        steps.append((ranks, {n: universes[n][ranks[i]] for i, n in enumerate(names)}, labels))
    lr = 0.05

    def our_model(grouped: bool):  # type: ignore[no-untyped-def]
        """Tables, module, head and head optimizer of our step, and the step over ``steps``."""
        tables = EmbeddingCollection({n: SlotConfig(dim=s.dim, optimizer=Adagrad(lr=lr), capacity=s.train_rows)
                                      for n in names}, device=device)  # fmt: skip
        module = EmbeddingModule(tables, grouped=grouped)
        head = LogisticHead(s.slots, s.dim).to(dev)
        head_opt = torch.optim.Adagrad(head.parameters(), lr=lr)

        def run() -> None:
            for _, features, labels in steps:
                emb = module(features, now=1)
                loss = F.binary_cross_entropy_with_logits(head([emb[n] for n in names]), labels)
                head_opt.zero_grad()
                loss.backward()
                head_opt.step()
                module.apply_gradients()

        return tables, module, head, head_opt, run

    tables, module, head, head_opt, ours = our_model(grouped=True)
    # the same step through the per-slot path (grouped=False): what grouping the slots buys, side by side
    *_, ours_per_slot = our_model(grouped=False)

    bag_model = ModuloBagModel(names, s.train_rows, s.dim, s.train_batch, lr=lr, device=dev)

    def embeddingbag() -> None:
        for _, features, labels in steps:
            bag_model.step(features, labels)

    # streamrec's design in plain torch: one table for all slots, ids are rows (no hashing).
    row_model = RowwiseAdagrad(s.slots, s.train_rows, s.dim, lr=lr, device=dev)

    def rowwise() -> None:
        for ranks, _, labels in steps:
            row_model.step(ranks, labels)

    contenders = {"ours": ours, "ours_per_slot": ours_per_slot, "embeddingbag": embeddingbag, "rowwise": rowwise}
    times = _race(contenders, s.train_reps, dev)
    # where our step's time goes (synchronised phases, one pass), and one kernel launch's cost
    phases = {"lookup": 0.0, "head_and_backward": 0.0, "sparse_update": 0.0}
    for _, features, labels in steps:
        _sync(dev)
        t0 = time.perf_counter()
        emb = module(features, now=1)
        _sync(dev)
        t1 = time.perf_counter()
        loss = F.binary_cross_entropy_with_logits(head([emb[n] for n in names]), labels)
        head_opt.zero_grad()
        loss.backward()
        head_opt.step()
        _sync(dev)
        t2 = time.perf_counter()
        module.apply_gradients()
        _sync(dev)
        phases["lookup"] += t1 - t0
        phases["head_and_backward"] += t2 - t1
        phases["sparse_update"] += time.perf_counter() - t2
    for name, t in phases.items():
        out["extra"][f"ours_ms_per_step_{name}"] = round(1000 * t / len(steps), 3)
    out["extra"].update(count_step_work(module, head, head_opt, names, steps, dev))
    table = tables[names[0]]
    one = universes[names[0]][:1]
    for _ in range(3):
        table.index.lookup(one)
    call_s = _synced_seconds(lambda: [table.index.lookup(one) for _ in range(200)], dev)
    out["extra"]["lookup_call_us"] = round(call_s / 200 * 1e6, 1)  # one id: launch + alloc
    out["extra"]["kernel_launches"] = dict(table.launch.launches)  # direct cuLaunchKernel vs numba's dispatcher
    n = s.train_steps * s.train_batch
    for name, t in times.items():
        out["throughput"][f"gpu_train_examples_per_s_{name}"] = rate(n, t)
    out["ratios"]["gpu_train_step_vs_embeddingbag"] = speedup(times["ours"], baseline_seconds=times["embeddingbag"])
    out["ratios"]["gpu_train_step_vs_torch_rowwise"] = speedup(times["ours"], baseline_seconds=times["rowwise"])
    out["ratios"]["gpu_train_step_grouped_vs_per_slot"] = speedup(
        times["ours"], baseline_seconds=times["ours_per_slot"]
    )
    out["extra"]["train_setup"] = (
        f"{s.slots} slots x {s.train_rows:,} ids, dim {s.dim}, batch {s.train_batch:,}, "
        f"{s.train_steps} steps per timed run, Zipf(1.05) ids, Adagrad lr {lr}"
    )


class _OpTally(TorchDispatchMode):
    """Counts the torch ops that run a kernel (views and allocations excluded) while active."""

    def __init__(self) -> None:
        super().__init__()
        self.kernels = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view and not func.overloadpacket.__name__.startswith(("empty", "detach", "lift")):
            self.kernels += 1
        return func(*args, **(kwargs or {}))


def count_step_work(module, head, head_opt, names: list[str], steps: list, dev: torch.device) -> dict:
    """Host syncs and launches per training step, counted over one untimed pass of ``steps``:

    * ``syncs_per_step``: reads of device memory by the GPU tables' code (``cuda_table.device_read``,
      the only way it reads the device), over the whole step;
    * ``torch_syncs_per_step`` (a GPU only): every synchronising CUDA call torch saw in the whole
      step (head, loss and optimizer included), by ``torch.cuda.set_sync_debug_mode("warn")``;
    * ``launches_per_step``: numba kernel launches plus kernel-running torch ops of the embedding
      module's forward and ``apply_gradients`` (``numba_launches_per_step`` the first part)."""
    import warnings

    from streamrec.embedding import cuda_table

    tally = _OpTally()
    before = dict(cuda_table.COUNTS)
    torch_syncs = 0
    for _, features, labels in steps:
        _sync(dev)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            if dev.type == "cuda":
                torch.cuda.set_sync_debug_mode("warn")
            try:
                with tally:
                    emb = module(features, now=1)
                loss = F.binary_cross_entropy_with_logits(head([emb[n] for n in names]), labels)
                head_opt.zero_grad()
                loss.backward()
                head_opt.step()
                with tally:
                    module.apply_gradients()
            finally:
                if dev.type == "cuda":
                    torch.cuda.set_sync_debug_mode(0)
        torch_syncs += sum("synchroniz" in str(w.message) for w in seen)
    n = len(steps)
    numba = (cuda_table.COUNTS["launches"] - before["launches"]) / n
    out = {
        "syncs_per_step": round((cuda_table.COUNTS["syncs"] - before["syncs"]) / n, 2),
        "launches_per_step": round(numba + tally.kernels / n, 1),
        "numba_launches_per_step": round(numba, 1),
    }
    if dev.type == "cuda":
        out["torch_syncs_per_step"] = round(torch_syncs / n, 2)
    return out


GOALS = {
    "gpu_lookup_vs_embedding": (">=", 8.0),
    "gpu_lookup_ids_per_s_100m": (">=", 8e9),
    "gpu_insert_ids_per_s": (">=", 1e9),
    "gpu_train_step_vs_embeddingbag": (">=", 15.0),
    "gpu_train_step_vs_torch_rowwise": (">=", 1.0),
}


def _sizes(quick: bool, device: torch.device) -> GpuSizes:
    if device.type != "cuda":
        return SIM  # the simulator: a smoke run of the same code
    return QUICK if quick else GpuSizes()


def _header(device: torch.device) -> dict:
    import numba

    info = {"device": str(device), "torch": torch.__version__, "numba": numba.__version__}
    try:
        import numba_cuda

        info["numba_cuda"] = getattr(numba_cuda, "__version__", "?")
    except ImportError:
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    else:
        info["gpu"] = "numba CUDA simulator (no GPU: sizes are a smoke test)"
    return info


def _finish(out: dict, as_json: bool, title: str) -> dict:
    out["ratios"] = {k: round(v, 3) for k, v in out["ratios"].items()}
    out["throughput"] = {k: round(v) for k, v in out["throughput"].items()}
    goals = {}
    for key, (_, bound) in GOALS.items():
        value = out["ratios"].get(key, out["throughput"].get(key))
        if value is not None:
            goals[key] = bool(value >= bound)
    out["goals_met"] = goals
    if as_json:
        print(json.dumps(out))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"{title} on {out['gpu']} (ratios > 1: streamrec faster)")
        table.add_column("measure")
        table.add_column("value", justify="right")
        table.add_column("goal", justify="right")
        for section in ("ratios", "throughput"):
            for key, value in out[section].items():
                goal = GOALS.get(key)
                table.add_row(key, f"{value:,.3f}" if section == "ratios" else f"{value:,.0f}",
                              f"{goal[0]} {goal[1]:g}" if goal else "")  # fmt: skip
        Console().print(table)
    return out


def run_embedding(device: str = "cuda", as_json: bool = False, quick: bool = False) -> dict:
    """``streamrec bench embedding --device cuda``."""
    from streamrec.embedding.cuda_table import torch_device

    dev = torch_device(device)
    s = _sizes(quick, dev)
    gen = torch.Generator(device=dev).manual_seed(42)
    out = {**_header(dev), "ratios": {}, "throughput": {}, "extra": {}}
    for big in (False, True):
        print(f"bench embedding --device {device}: lookup at {s.big_rows if big else s.rows:,} ids", file=sys.stderr)
        bench_lookup(s, device, out, gen, big)
        if dev.type == "cuda":
            torch.cuda.empty_cache()  # the 1 M table's memory back before the 100 M one
    return _finish(out, as_json, "streamrec bench embedding")


def run_training(device: str = "cuda", as_json: bool = False, quick: bool = False) -> dict:
    """``streamrec bench training --device cuda``."""
    from streamrec.embedding.cuda_table import torch_device

    dev = torch_device(device)
    s = _sizes(quick, dev)
    gen = torch.Generator(device=dev).manual_seed(7)
    out = {**_header(dev), "ratios": {}, "throughput": {}, "extra": {}}
    print(f"bench training --device {device}: {s.slots}-slot step at batch {s.train_batch:,}", file=sys.stderr)
    bench_train_step(s, device, out, gen)
    return _finish(out, as_json, "streamrec bench training")
