"""``streamrec bench training``: the training loop on collisionless tables against modulo hashing.

Everything runs in this process, on the same examples, with the same DeepFM head, batch size and
dense optimizer; only the embedding source differs (collisionless
:class:`~streamrec.embedding.EmbeddingCollection` vs ``nn.EmbeddingBag`` tables indexed by
``id % rows`` with one row per distinct id, trained by sparse Adagrad: ``build_hashed_model``).

* ``batch_throughput_vs_modulo``: examples/s of ``Trainer.train_step`` over an in-memory
  :class:`ExampleBatch` (MovieLens ratings in time order; synthetic Zipf ids when the data set is
  absent). Each repetition times both contenders back to back on the same examples (order
  alternating); the ratio is the median of the per-repetition ratios.
* ``online_throughput_vs_modulo``: examples/s of :class:`OnlineTrainer` consuming topic
  ``examples`` from a SQLite log: poll, msgpack decode, ``ExampleBatch.from_examples``, train step.
  Both contenders continue the models of the batch phase on the later examples, each with its own
  consumer group. The collisionless one also publishes its sparse (and dense) syncs on schedule,
  which the baseline cannot do at all: their cost is inside the ratio (the end-of-run flush is not).
* ``sync_lag_p50_s`` / ``sync_lag_p99_s``: a :class:`ServingModel` follows ``model-updates`` in a
  thread while the trainer trains on a stream appended at a steady rate; per update, from the
  trainer making it (``created_at``) to the replica answering with it. ``staleness_p99_s`` is from
  the oldest training step an update carries to that moment (goal: interval + 2 s).
  ``sync_bytes_per_s`` is the update bytes published per second of that phase.

Absolute numbers on a shared 2-core machine are noise; the ratios are the result. Torch runs on
one intra-op thread by default (``--threads``), the same for both contenders.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from streamrec.training.batch import ExampleBatch


@dataclass(frozen=True)
class Sizes:
    batch_examples: int = 60_000
    online_examples: int = 30_000
    lag_seconds: float = 20.0
    sync_interval: float = 2.0
    reps: int = 15
    batch_size: int = 512
    dim: int = 16


QUICK = Sizes(batch_examples=24_000, online_examples=18_000, lag_seconds=4.0, sync_interval=1.0, reps=9)


def examples_for_bench(n: int) -> tuple[ExampleBatch, str]:
    """``n`` examples in time order: MovieLens if shipped, else synthetic Zipf ids (7 slots)."""
    from streamrec.datasets.movielens import find_dataset, load_movielens, movielens_examples

    path = find_dataset("ml-100k")
    if path is not None:
        data = movielens_examples(load_movielens(path))
        return data[: min(n, len(data))], "ml-100k"
    return synthetic_examples(n), "synthetic"


def synthetic_examples(n: int, seed: int = 0) -> ExampleBatch:
    """Criteo-like data: 7 single-id slots with Zipf-distributed ids, a label from two of them."""
    from streamrec.embedding import JaggedIds

    rng = np.random.default_rng(seed)
    universes = [1_000, 2_000, 20, 50, 7, 10_000, 500]
    sparse, ranks = {}, []
    for i, universe in enumerate(universes):
        r = np.minimum(rng.zipf(1.2, n) - 1, universe - 1).astype(np.int64)
        ranks.append(r)
        ids = (r * 0x9E3779B1 + i).astype(np.int64)
        sparse[f"c{i}"] = JaggedIds(torch.from_numpy(ids), torch.arange(n))
    labels = ((ranks[0] + ranks[1]) % 4 == 0).astype(np.float32)
    return ExampleBatch(sparse, torch.zeros((n, 0)), torch.from_numpy(labels), torch.ones(n), torch.arange(n) * 1.0)


def to_records(data: ExampleBatch) -> list:
    """The examples of ``data`` as :class:`~streamrec.records.Example` records (what the joiner writes)."""
    from streamrec.records import Example

    per_slot = {}
    for slot, ids in data.sparse.items():
        values = ids.values.numpy()
        per_slot[slot] = [part.tolist() for part in np.split(values, ids.offsets.numpy()[1:])]
    dense = data.dense.numpy().tolist()
    labels, rates, times = data.labels.tolist(), data.sample_rate.tolist(), data.time.tolist()
    return [
        Example(
            sparse={slot: lists[i] for slot, lists in per_slot.items()},
            dense=dense[i],
            label=labels[i],
            sample_rate=rates[i],
            time=times[i],
        )
        for i in range(len(data))
    ]


def _contenders(data: ExampleBatch, sizes: Sizes, seed: int = 0):
    from streamrec.embedding import EmbeddingCollection
    from streamrec.models import ModelConfig, build_hashed_model, build_model
    from streamrec.training.trainer import TrainConfig, Trainer

    slots = list(data.sparse)
    slot = {"dim": sizes.dim, "optimizer": {"type": "adagrad", "lr": 0.05}, "initializer": {"type": "normal"}}
    config = ModelConfig(kind="deepfm", hidden=[64, 32], n_dense=data.n_dense)
    train = TrainConfig(batch_size=sizes.batch_size, hashed_sparse_lr=0.05, seed=seed)
    torch.manual_seed(seed)
    tables = EmbeddingCollection({"slots": dict.fromkeys(slots, slot), "seed": seed})
    collisionless = Trainer(build_model(config, tables), train)
    rows = {s: max(1, len(np.unique(data.sparse[s].values.numpy()))) for s in slots}
    torch.manual_seed(seed)
    hashed = Trainer(build_hashed_model(config, dict.fromkeys(slots, sizes.dim), rows, {}), train)
    return {"collisionless": collisionless, "modulo": hashed}


def _summarise(per_rep: dict[str, list[float]]) -> dict[str, float]:
    """Median throughput of each contender, and ``ratio``: the median of the per-repetition ratios.

    Each repetition times both contenders back to back on the same examples, so a burst of load
    from elsewhere hits one pair; the median of paired ratios shrugs it off where a ratio of two
    medians would not."""
    ratios = [a / b for a, b in zip(per_rep["collisionless"], per_rep["modulo"], strict=True)]
    return {**{name: statistics.median(values) for name, values in per_rep.items()}, "ratio": statistics.median(ratios)}


def _batch_phase(trainers: dict, data: ExampleBatch, sizes: Sizes) -> dict[str, float]:
    per_rep: dict[str, list[float]] = {name: [] for name in trainers}
    chunk = len(data) // sizes.reps
    for rep in range(sizes.reps):
        part = data[rep * chunk : (rep + 1) * chunk]
        order = list(trainers) if rep % 2 == 0 else list(reversed(trainers))
        for name in order:
            started = time.perf_counter()
            for batch in part.batches(sizes.batch_size):
                trainers[name].train_step(batch)
            per_rep[name].append(len(part) / (time.perf_counter() - started))
    return _summarise(per_rep)


def _online_phase(trainers: dict, url: str, topics: list[str], sizes: Sizes) -> dict[str, float]:
    from streamrec.training.online import OnlineConfig, OnlineTrainer

    per_rep: dict[str, list[float]] = {name: [] for name in trainers}
    for rep, topic in enumerate(topics):
        order = list(trainers) if rep % 2 == 0 else list(reversed(trainers))
        for name in order:
            config = OnlineConfig(
                batch_size=sizes.batch_size,
                sparse_sync_interval=sizes.sync_interval,
                dense_sync_interval=sizes.sync_interval * 5,
                poll_timeout_s=0.01,
                examples_topic=topic,
                group=f"bench-{name}",
                publish=name == "collisionless",
                publish_full_on_start=False,
                updates_topic="bench-online-updates",
            )
            with OnlineTrainer(trainers[name], url, None, config) as online:
                started = time.perf_counter()
                while online.step():  # scheduled syncs included; the last, empty poll is not
                    pass
                elapsed = time.perf_counter() - started - config.poll_timeout_s
                online.finish()  # the end-of-run flush is not steady state
            per_rep[name].append(online.stats.examples / max(elapsed, 1e-9))
    return _summarise(per_rep)


def _lag_phase(trainer, url: str, records: list, sizes: Sizes) -> dict[str, float]:
    from streamrec.log import open_log
    from streamrec.training.online import OnlineConfig, OnlineTrainer
    from streamrec.training.serving_model import ServingModel

    config = OnlineConfig(
        batch_size=sizes.batch_size,
        sparse_sync_interval=sizes.sync_interval,
        dense_sync_interval=sizes.sync_interval,
        expiry_interval=sizes.sync_interval,
        poll_timeout_s=0.05,
        group="bench-lag",
        examples_topic="bench-lag-examples",
    )
    log = open_log(url)
    online = OnlineTrainer(trainer, log, None, config)
    online.step()  # publishes the full update a replica starts from
    serving = ServingModel.from_update_log(log, trainer.model.config)
    serving.follow(url)
    stop = threading.Event()
    per_tick = max(1, int(len(records) / (sizes.lag_seconds / 0.05)))

    def produce() -> None:
        with open_log(url) as producer:
            for lo in range(0, len(records), per_tick):
                if stop.wait(0.05):
                    return
                producer.append(config.examples_topic, records[lo : lo + per_tick])

    producer = threading.Thread(target=produce, daemon=True)
    bytes_before = online.stats.bytes_published
    started = time.monotonic()
    producer.start()
    stats = online.run(max_seconds=sizes.lag_seconds)
    elapsed = time.monotonic() - started
    stop.set()
    producer.join()
    caught_up = serving.wait_for(online.version, timeout_s=10.0)
    probe = ExampleBatch.from_examples(records[:2048], trainer.model.slots, trainer.model.config.n_dense)
    exact = caught_up and bool(np.array_equal(serving.predict_logits(probe), trainer.predict_logits(probe)))
    serving.stop()
    online.close()
    log.close()
    lags = np.array([a.lag_s for a in serving.applied if a.kind != "full"])
    stale = np.array([a.staleness_s for a in serving.applied if a.kind == "sparse"])
    return {
        "sync_lag_p50_s": float(np.percentile(lags, 50)) if len(lags) else float("nan"),
        "sync_lag_p99_s": float(np.percentile(lags, 99)) if len(lags) else float("nan"),
        "staleness_p99_s": float(np.percentile(stale, 99)) if len(stale) else float("nan"),
        "sync_bytes_per_s": (stats.bytes_published - bytes_before) / elapsed,
        "updates_applied": len(serving.applied),
        "lag_phase_examples": stats.examples,
        "serving_exact_after_final_sync": exact,
    }


def run_bench(quick: bool = False, folder: str | Path | None = None, threads: int = 1) -> dict:
    """Run every phase; returns the JSON-ready result (``ratios``, lags, ``goals_met``, details).

    ``threads`` sets torch's intra-op threads for the whole run (0 keeps torch's default). One is
    the default because steps of 512 examples are too small to split, and on a busy machine idle
    OpenMP workers spinning for cores cost both contenders 10x or more, burying the ratio in noise.
    """
    from streamrec.log import open_log

    if threads:
        torch.set_num_threads(threads)
    sizes = QUICK if quick else Sizes()
    # torch warns once that sparse invariant checks are off (the baseline's sparse Adagrad); noise here
    warnings.filterwarnings("ignore", message="Sparse invariant checks", category=UserWarning)
    data, source = examples_for_bench(sizes.batch_examples + sizes.online_examples * 2)
    batch_part = data[: min(sizes.batch_examples, len(data) // 2)]
    rest = data[len(batch_part) :]
    online_part = rest[: min(sizes.online_examples, len(rest) // 2)]
    lag_part = rest[len(online_part) : len(online_part) * 2]
    trainers = _contenders(data, sizes)
    for trainer in trainers.values():  # warm up: JIT caches, allocator, first admissions
        trainer.train_step(batch_part[: sizes.batch_size])
    batch = _batch_phase(trainers, batch_part, sizes)

    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        url = f"sqlite://{tmp}/bench.db"
        topics = [f"examples-{rep}" for rep in range(sizes.reps)]
        chunk = len(online_part) // sizes.reps
        with open_log(url) as log:
            for rep, topic in enumerate(topics):
                log.append(topic, to_records(online_part[rep * chunk : (rep + 1) * chunk]))
        online = _online_phase(trainers, url, topics, sizes)
        lag = _lag_phase(trainers["collisionless"], url, to_records(lag_part), sizes)

    ratios = {
        "batch_throughput_vs_modulo": batch.pop("ratio"),
        "online_throughput_vs_modulo": online.pop("ratio"),
    }
    goals = {
        "batch_throughput_vs_modulo >= 0.7": ratios["batch_throughput_vs_modulo"] >= 0.7,
        "online_throughput_vs_modulo >= 0.7": ratios["online_throughput_vs_modulo"] >= 0.7,
        "sync_lag_p99_s <= interval + 2": lag["sync_lag_p99_s"] <= sizes.sync_interval + 2,
        "staleness_p99_s <= interval + 2": lag["staleness_p99_s"] <= sizes.sync_interval + 2,
    }
    return {
        "benchmark": "training",
        "data": source,
        "quick": quick,
        "torch_threads": torch.get_num_threads(),
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
        "sync_lag_p50_s": round(lag["sync_lag_p50_s"], 4),
        "sync_lag_p99_s": round(lag["sync_lag_p99_s"], 4),
        "staleness_p99_s": round(lag["staleness_p99_s"], 4),
        "sync_bytes_per_s": round(lag["sync_bytes_per_s"]),
        "sync_interval_s": sizes.sync_interval,
        "throughput_examples_per_s": {
            "batch": {k: round(v) for k, v in batch.items()},
            "online": {k: round(v) for k, v in online.items()},
        },
        "examples": {"batch": len(batch_part), "online": len(online_part), "lag": lag["lag_phase_examples"]},
        "updates_applied": lag["updates_applied"],
        "serving_exact_after_final_sync": lag["serving_exact_after_final_sync"],
        "goals_met": goals,
    }


def print_result(result: dict) -> None:
    """The result as a table on the terminal."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"streamrec bench training ({result['data']}{', quick' if result['quick'] else ''})")
    table.add_column("measure")
    table.add_column("collisionless", justify="right")
    table.add_column("modulo", justify="right")
    table.add_column("ratio / value", justify="right")
    tp = result["throughput_examples_per_s"]
    for phase in ("batch", "online"):
        table.add_row(
            f"{phase} examples/s",
            f"{tp[phase]['collisionless']:,}",
            f"{tp[phase]['modulo']:,}",
            f"{result['ratios'][f'{phase}_throughput_vs_modulo']:.3f}",
        )
    interval = result["sync_interval_s"]
    table.add_row("sync lag p50 / p99 (s)", "", "", f"{result['sync_lag_p50_s']:.3f} / {result['sync_lag_p99_s']:.3f}")
    table.add_row(f"staleness p99 (s), interval {interval:g} s", "", "", f"{result['staleness_p99_s']:.3f}")
    table.add_row("sync bytes/s", "", "", f"{result['sync_bytes_per_s']:,}")
    table.add_row("serving exact after final sync", "", "", str(result["serving_exact_after_final_sync"]))
    console = Console()
    console.print(table)
    for goal, met in result["goals_met"].items():
        console.print(f"{'[green]met' if met else '[red]missed'}[/]  {goal}")


def run_benchmark(as_json: bool = False, quick: bool = False, threads: int = 1) -> dict:
    """Entry point of the CLI command."""
    result = run_bench(quick=quick, threads=threads)
    if as_json:
        print(json.dumps(result))
    else:
        print_result(result)
    return result
