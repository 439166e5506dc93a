"""``streamrec bench embedding``: the collisionless table against the baselines people use.

Every figure is measured in this process on the same ids, alternating the contenders in each
repetition (:func:`streamrec.benchutil.race`: rotating order) so a noisy neighbour hurts both, and
the median of the repetitions is reported:

* ``lookup_vs_modulo`` — lookup + gather throughput of a ``rows``-row table (dim 16) on batches of
  65,536 Zipf-distributed ids (about 2 % absent), divided by ``F.embedding`` on a same-sized
  tensor indexed by ``id % rows`` (the collision baseline).
* ``lookup_vs_dict`` — the same, divided by a Python dict ``id -> row`` plus a numpy gather.
* ``train_step_vs_modulo`` — a full training step (lookup, forward, backward, Adagrad update) of a
  26-slot logistic model with batch 4,096, divided by the same model on ``nn.EmbeddingBag`` with
  modulo hashing and ``torch.optim.Adagrad`` on sparse gradients.
* ``insert_vs_dict`` — admitting new ids (at first sight) vs inserting them in a Python dict.
* ``load_factor_at_growth`` (mean and min over every growth while the table fills up),
  ``overhead_bytes_per_id`` (index + per-row metadata per stored id, at the full table; the
  worst value seen while it grew is reported too) and the admission filter's false-admission rate
  at its default size on a Zipf stream.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from streamrec.benchutil import median, race, rate, rate_ratio, speedup
from streamrec.embedding.baselines import DictLookup, LogisticHead, ModuloBagModel, dict_insert, modulo_lookup
from streamrec.embedding.collection import EmbeddingCollection
from streamrec.embedding.config import Adagrad, Normal, SlotConfig, Zeros
from streamrec.embedding.module import EmbeddingModule
from streamrec.embedding.table import EmbeddingTable


@dataclass
class Sizes:
    rows: int = 1_000_000
    dim: int = 16
    batch: int = 65_536
    batches: int = 16
    dict_batches: int = 2
    reps: int = 5
    slots: int = 26
    train_batch: int = 4_096
    train_rows: int = 100_000
    train_steps: int = 12
    stream: int = 4_000_000
    stream_universe: int = 4_000_000


QUICK = Sizes(
    rows=100_000, batch=16_384, batches=4, dict_batches=1, reps=3, train_rows=10_000, train_steps=4,
    stream=200_000, stream_universe=200_000,
)  # fmt: skip


@dataclass
class Result:
    ratios: dict[str, float] = field(default_factory=dict)
    throughput: dict[str, float] = field(default_factory=dict)
    extra: dict[str, float | int | str] = field(default_factory=dict)


def zipf_ranks(rng: np.random.Generator, universe: int, shape: tuple[int, ...], exponent: float = 1.05) -> np.ndarray:
    """Ranks in ``[0, universe)`` drawn with probability proportional to ``1 / (rank + 1) ** exponent``."""
    cdf = np.cumsum(1.0 / np.arange(1, universe + 1, dtype=np.float64) ** exponent)
    cdf /= cdf[-1]
    return np.searchsorted(cdf, rng.random(shape)).astype(np.int64)


def scattered_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` distinct ids spread over all of int64 (ids in the wild are hashes, not 0..n)."""
    ids = np.unique(rng.integers(-(2**63), 2**63 - 1, size=int(n * 1.01) + 16, dtype=np.int64))
    return rng.permutation(ids)[:n]


def _race(contenders: dict[str, Callable[[], object]], reps: int) -> dict[str, float]:
    """Median seconds of each contender, run alternately ``reps`` times after one warm-up."""
    return {name: median(times) for name, times in race(contenders, reps).items()}


# -- lookups ---------------------------------------------------------------------------------------
def bench_lookup(s: Sizes, rng: np.random.Generator, result: Result, label: str = "") -> None:
    universe = int(s.rows * 1.02)  # ids beyond `rows` are absent: "mostly present"
    all_ids = scattered_ids(rng, universe)
    table = EmbeddingTable("bench", SlotConfig(dim=s.dim, initializer=Normal(), capacity=s.rows))
    present = all_ids[: s.rows]
    for lo in range(0, s.rows, 1 << 20):
        table.admit(present[lo : lo + (1 << 20)], now=1)
    batches = all_ids[zipf_ranks(rng, universe, (s.batches, s.batch))]
    weight = torch.randn(s.rows, s.dim)

    def ours() -> None:
        for b in batches:
            table.lookup(b)

    def modulo() -> None:
        for b in batches:
            modulo_lookup(torch.from_numpy(b), weight)

    times = _race({"ours": ours, "modulo": modulo}, s.reps)
    n_ids = s.batches * s.batch
    result.throughput[f"lookup_ids_per_s{label}"] = rate(n_ids, times["ours"])
    result.throughput[f"modulo_lookup_ids_per_s{label}"] = rate(n_ids, times["modulo"])
    result.ratios[f"lookup_vs_modulo{label}"] = speedup(times["ours"], baseline_seconds=times["modulo"])
    if label:
        return

    by_dict = DictLookup(present, table.weight.numpy(), table.default)  # admitted in order: row i holds present[i]
    dict_batches = batches[: s.dict_batches]

    def python_dict() -> None:
        for b in dict_batches:
            by_dict.lookup(b)

    # The dict is ~10x slower, so it runs on fewer batches; compare per-id throughputs.
    times = _race({"dict": python_dict}, max(2, s.reps // 2))
    result.throughput["dict_lookup_ids_per_s"] = rate(s.dict_batches * s.batch, times["dict"])
    result.ratios["lookup_vs_dict"] = rate_ratio(
        result.throughput["lookup_ids_per_s"], baseline_rate=result.throughput["dict_lookup_ids_per_s"]
    )

    memory = table.memory()
    overhead = memory["index_bytes"] + memory["row_metadata_bytes"]
    result.extra["overhead_bytes_per_id"] = round(overhead / len(table), 2)
    result.extra["table_ids"] = len(table)
    result.extra["index_load_factor"] = round(table.index.load_factor, 4)


# -- inserts, growth, overhead ---------------------------------------------------------------------
def bench_insert(s: Sizes, rng: np.random.Generator, result: Result) -> None:
    ids = scattered_ids(rng, s.rows)
    chunks = np.array_split(ids, max(1, s.rows // 65_536))
    worst_overhead = 0.0

    def ours() -> None:
        nonlocal worst_overhead
        table = EmbeddingTable("insert", SlotConfig(dim=s.dim, initializer=Zeros()))
        for chunk in chunks:
            table.admit(chunk, now=1)
            m = table.memory()
            worst_overhead = max(worst_overhead, (m["index_bytes"] + m["row_metadata_bytes"]) / len(table))
        ours.table = table  # type: ignore[attr-defined]

    def python_dict() -> None:
        dict_insert(chunks)

    times = _race({"ours": ours, "dict": python_dict}, max(2, s.reps // 2))
    table: EmbeddingTable = ours.table  # type: ignore[attr-defined]
    result.throughput["insert_ids_per_s"] = rate(s.rows, times["ours"])
    result.throughput["dict_insert_ids_per_s"] = rate(s.rows, times["dict"])
    result.ratios["insert_vs_dict"] = speedup(times["ours"], baseline_seconds=times["dict"])
    loads = table.index.growth_loads
    result.extra["load_factor_at_growth"] = round(float(np.mean(loads)), 4) if loads else float("nan")
    result.extra["load_factor_at_growth_min"] = round(float(np.min(loads)), 4) if loads else float("nan")
    result.extra["growths"] = len(loads)
    result.extra["overhead_bytes_per_id_worst"] = round(worst_overhead, 2)


# -- training step ---------------------------------------------------------------------------------
def bench_train_step(s: Sizes, rng: np.random.Generator, result: Result) -> None:
    torch.manual_seed(0)
    names = [f"c{i}" for i in range(s.slots)]
    universes = {name: scattered_ids(rng, s.train_rows) for name in names}
    steps = []
    for _ in range(s.train_steps):
        ranks = zipf_ranks(rng, s.train_rows, (s.slots, s.train_batch))
        steps.append(
            (
                {name: torch.from_numpy(universes[name][ranks[i]]) for i, name in enumerate(names)},
                torch.from_numpy((rng.random(s.train_batch) < 0.25).astype(np.float32)),
            )
        )

    opt = Adagrad(lr=0.05)
    tables = EmbeddingCollection({n: SlotConfig(dim=s.dim, optimizer=opt, capacity=s.train_rows) for n in names})
    module = EmbeddingModule(tables)
    head = LogisticHead(s.slots, s.dim)
    head_opt = torch.optim.Adagrad(head.parameters(), lr=0.05)

    baseline = ModuloBagModel(names, s.train_rows, s.dim, s.train_batch, lr=0.05)

    def ours() -> None:
        for features, labels in steps:
            emb = module(features, now=1)
            loss = F.binary_cross_entropy_with_logits(head([emb[n] for n in names]), labels)
            head_opt.zero_grad()
            loss.backward()
            head_opt.step()
            module.apply_gradients()

    def modulo() -> None:
        for features, labels in steps:
            baseline.step(features, labels)

    times = _race({"ours": ours, "modulo": modulo}, s.reps)
    n = s.train_steps * s.train_batch
    result.throughput["train_examples_per_s"] = rate(n, times["ours"])
    result.throughput["modulo_train_examples_per_s"] = rate(n, times["modulo"])
    result.ratios["train_step_vs_modulo"] = speedup(times["ours"], baseline_seconds=times["modulo"])


# -- admission filter ------------------------------------------------------------------------------
def bench_admission(s: Sizes, rng: np.random.Generator, result: Result, admit_after: int = 3) -> None:
    """False admissions of the default-sized filter: ids admitted before their true count
    (through the batch that admitted them) reached ``admit_after``."""
    table = EmbeddingTable("admission", SlotConfig(dim=1, admit_after=admit_after, initializer=Zeros()))
    universe = scattered_ids(rng, s.stream_universe)
    ranks = zipf_ranks(rng, s.stream_universe, (s.stream,), exponent=1.1)
    counts = np.zeros(s.stream_universe, dtype=np.int64)
    admitted = np.zeros(s.stream_universe, dtype=bool)
    false_admissions = 0
    for lo in range(0, s.stream, 8192):
        chunk = ranks[lo : lo + 8192]
        np.add.at(counts, chunk, 1)
        table.admit(universe[chunk], now=1)
        distinct = np.unique(chunk)
        now_in = table.rows_of(universe[distinct]) >= 0
        new = distinct[now_in & ~admitted[distinct]]
        false_admissions += int(np.count_nonzero(counts[new] < admit_after))
        admitted[new] = True
    eligible = int(np.count_nonzero(counts >= admit_after))
    seen = int(np.count_nonzero(counts))
    result.extra["false_admission_rate"] = false_admissions / max(1, seen - eligible)
    result.extra["false_admissions"] = false_admissions
    depth, width = table.sketch.counts.shape
    result.extra["admission_setup"] = (
        f"admit_after={admit_after}, {s.stream:,} Zipf(1.1) occurrences over {seen:,} distinct ids, "
        f"sketch {width:,}x{depth} ({table.sketch.nbytes / 2**20:.1f} MiB)"
    )


# -- driver ----------------------------------------------------------------------------------------
GOALS = {
    "lookup_vs_modulo": (">=", 0.7),
    "lookup_vs_dict": (">=", 10.0),
    "train_step_vs_modulo": (">=", 0.7),
    "load_factor_at_growth": (">=", 0.85),
    "overhead_bytes_per_id": ("<=", 24.0),
}


def measure(large: bool = False, quick: bool = False, progress: Callable[[str], None] | None = None) -> Result:
    s = QUICK if quick else Sizes()
    rng = np.random.default_rng(42)
    result = Result()
    steps: list[tuple[str, Callable[[], None]]] = [
        ("lookup", lambda: bench_lookup(s, rng, result)),
        ("insert", lambda: bench_insert(s, rng, result)),
        ("train step", lambda: bench_train_step(s, rng, result)),
        ("admission filter", lambda: bench_admission(s, rng, result)),
    ]
    if large:
        big = Sizes(rows=10_000_000, batches=8, reps=3)
        steps.append(("lookup at 10M rows", lambda: bench_lookup(big, rng, result, label="_10m")))
    for name, step in steps:
        if progress:
            progress(name)
        step()
    return result


def report(result: Result) -> dict:
    out = {
        "ratios": {k: round(v, 3) for k, v in result.ratios.items()},
        "throughput": {k: round(v) for k, v in result.throughput.items()},
        **result.extra,
        "torch_threads": torch.get_num_threads(),
    }
    goals = {}
    for key, (op, bound) in GOALS.items():
        value = out["ratios"].get(key, out.get(key))
        if isinstance(value, int | float):
            goals[key] = bool(value >= bound if op == ">=" else value <= bound)
    out["goals_met"] = goals
    return out


def run_benchmark(as_json: bool = False, large: bool = False, quick: bool = False) -> dict:
    console = Console(stderr=True)
    warnings.filterwarnings("ignore", message="Sparse invariant checks")  # torch's sparse Adagrad baseline
    with console.status("benchmarking") as status:
        result = measure(large, quick, progress=lambda name: status.update(f"benchmarking: {name}"))
    out = report(result)
    if as_json:
        print(json.dumps(out))
        return out
    table = Table(title="streamrec bench embedding (ratios > 1: streamrec faster)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("goal", justify="right")
    for key, value in out["ratios"].items():
        goal = GOALS.get(key)
        table.add_row(key, f"{value:.3f}", f"{goal[0]} {goal[1]}" if goal else "")
    for key in ("load_factor_at_growth", "load_factor_at_growth_min", "overhead_bytes_per_id",
                "overhead_bytes_per_id_worst", "false_admission_rate"):  # fmt: skip
        goal = GOALS.get(key)
        table.add_row(key, f"{out[key]:.4g}", f"{goal[0]} {goal[1]}" if goal else "")
    for key, value in out["throughput"].items():
        table.add_row(key, f"{value:,.0f}", "")
    Console().print(table)
    Console().print(f"admission filter: {out['admission_setup']}")
    return out
