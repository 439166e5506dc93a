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

import contextlib
import json
import os
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from streamrec.batch import ExampleBatch
from streamrec.benchutil import median, paired_rate_ratio, percentiles, rate, rate_ratio, seconds
from streamrec.training.baselines import modulo_trainer, torchrec_baseline


@dataclass(frozen=True)
class Sizes:
    batch_examples: int = 60_000
    online_examples: int = 30_000
    lag_seconds: float = 20.0
    sync_interval: float = 2.0
    reps: int = 15
    batch_size: int = 512
    dim: int = 16
    ranks_batch_size: int = 16384  # 4,096 leaves 2 ranks at ~1.0x: fixed per-step costs dominate
    ranks_reps: int = 9
    ranks_batches_per_rep: int = 2
    memory_probe_ids: int = 1_000_000


QUICK = Sizes(
    batch_examples=24_000,
    online_examples=18_000,
    lag_seconds=4.0,
    sync_interval=1.0,
    reps=9,
    ranks_reps=5,
    ranks_batches_per_rep=1,
    memory_probe_ids=200_000,
)


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


def _collisionless(data: ExampleBatch, sizes: Sizes, seed: int = 0, accumulator: float = 0.0):
    """The collisionless contender: DeepFM [64, 32] on tables of ``sizes.dim`` (Adagrad 0.05 rows,
    starting from ``accumulator``)."""
    from streamrec.embedding import EmbeddingCollection
    from streamrec.models import ModelConfig, build_model
    from streamrec.training.trainer import TrainConfig, Trainer

    optimizer = {"type": "adagrad", "lr": 0.05, "initial_accumulator_value": accumulator}
    slot = {"dim": sizes.dim, "optimizer": optimizer, "initializer": {"type": "normal"}}
    config = ModelConfig(kind="deepfm", hidden=[64, 32], n_dense=data.n_dense)
    train = TrainConfig(batch_size=sizes.batch_size, hashed_sparse_lr=0.05, seed=seed)
    torch.manual_seed(seed)
    tables = EmbeddingCollection({"slots": dict.fromkeys(data.sparse, slot), "seed": seed})
    return Trainer(build_model(config, tables), train)


def _contenders(data: ExampleBatch, sizes: Sizes, seed: int = 0):
    collisionless = _collisionless(data, sizes, seed)
    return {"collisionless": collisionless, "modulo": modulo_trainer(data, sizes.dim, sizes.batch_size, seed)}


def _summarise(per_rep: dict[str, list[float]]) -> dict[str, float]:
    """Median throughput of each contender, and ``ratio``: the median of the per-repetition ratios.

    Each repetition times both contenders back to back on the same examples, so a burst of load
    from elsewhere hits one pair; the median of paired ratios shrugs it off where a ratio of two
    medians would not."""
    ratio = paired_rate_ratio(per_rep["collisionless"], baseline_rates=per_rep["modulo"])
    return {**{name: median(values) for name, values in per_rep.items()}, "ratio": ratio}


def _train_all(trainer, data: ExampleBatch, batch_size: int) -> None:
    for batch in data.batches(batch_size):
        trainer.train_step(batch)


def _batch_phase(trainers: dict, data: ExampleBatch, sizes: Sizes) -> dict[str, float]:
    per_rep: dict[str, list[float]] = {name: [] for name in trainers}
    chunk = len(data) // sizes.reps
    for rep in range(sizes.reps):
        part = data[rep * chunk : (rep + 1) * chunk]
        order = list(trainers) if rep % 2 == 0 else list(reversed(trainers))
        for name in order:
            took = seconds(partial(_train_all, trainers[name], part, sizes.batch_size))
            per_rep[name].append(rate(len(part), took))
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
            per_rep[name].append(rate(online.stats.examples, elapsed))
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
    lags = [a.lag_s for a in serving.applied if a.kind != "full"]
    stale = [a.staleness_s for a in serving.applied if a.kind == "sparse"]
    nan = float("nan")
    lag = percentiles(lags, (50, 99)) if lags else {"p50": nan, "p99": nan}
    return {
        "sync_lag_p50_s": lag["p50"],
        "sync_lag_p99_s": lag["p99"],
        "staleness_p99_s": percentiles(stale, (99,))["p99"] if stale else nan,
        "sync_bytes_per_s": rate(stats.bytes_published - bytes_before, elapsed),
        "updates_applied": len(serving.applied),
        "lag_phase_examples": stats.examples,
        "serving_exact_after_final_sync": exact,
    }


# -- ranks: the same training over W processes, one core each ----------------------------------------

#: Adagrad's initial accumulator in the ranks phase. With streamrec's default (0, eps 1e-10) a
#: coordinate whose first gradient is at float-rounding level steps by a full lr either way, so
#: the equivalence check would measure rounding luck; 0.1 (TensorFlow's default) keeps every step
#: linear in the gradient. Throughput does not depend on it.
RANKS_ACCUMULATOR = 0.1


@dataclass(frozen=True)
class _RankJob:
    rank: int
    world: int
    port: int
    examples: int
    sizes: Sizes


def _rank_main(job: _RankJob, conn) -> None:
    """One rank of the ranks phase, in a spawned process: answer the parent's commands until "stop".

    W = 1 is the ordinary one-process :class:`Trainer` (what ``--ranks 1`` runs); W > 1 wraps the
    same model in a :class:`DistributedTrainer`, and every global batch is cut by ``global_slice``.
    """
    import numba
    import torch.distributed as dist

    from streamrec.embedding.warmup import warm_embedding
    from streamrec.training.distributed import DistributedTrainer, global_slice

    # Cores for cores: rank r on core r (its threads, gloo's included, inherit it), one torch thread,
    # and one Numba thread — Numba's parallel kernels would otherwise raise the process's OpenMP
    # threads (torch's too) to the core count. Unpinned, the scheduler moved the ranks and their
    # gloo threads between the two cores at every collective: 2 ranks took 24-28 ms per step of
    # 4,096 where pinned they took 13-16 ms (same machine, minutes apart).
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if job.world <= len(cores):
        os.sched_setaffinity(0, {cores[job.rank]})
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    warm_embedding()  # no rank compiles a kernel inside a timed step (the other ranks would wait)
    sharded = job.world > 1
    if sharded:
        url = f"tcp://127.0.0.1:{job.port}"
        dist.init_process_group("gloo", init_method=url, rank=job.rank, world_size=job.world)
    data, _ = examples_for_bench(job.examples)
    trainer = _collisionless(data, job.sizes, accumulator=RANKS_ACCUMULATOR)
    if sharded:
        trainer = DistributedTrainer.from_trainer(trainer)
    conn.send("ready")
    while True:
        command, *args = conn.recv()
        if command == "train":
            lo, hi = args
            if sharded:
                dist.barrier()
            started = time.perf_counter()
            for batch in data.batches(job.sizes.ranks_batch_size, lo, hi):
                a, b = global_slice(len(batch), job.rank, job.world)
                trainer.train_step(batch[a:b])
            if sharded:
                dist.barrier()
            conn.send(time.perf_counter() - started)
        elif command == "dump":
            embeddings = trainer.model.embeddings
            memory = [table.memory() for table in embeddings.tables.tables.values()]
            sent = embeddings.bytes_sent if sharded else 0
            dense = sum(p.numel() for p in trainer.model.dense_parameters())
            conn.send({"parameters": _parameters(trainer.model), "bytes_sent": sent, "memory": memory, "dense": dense})
        else:
            break
    if sharded:
        dist.destroy_process_group()


def _parameters(model) -> dict[str, np.ndarray]:
    """The head's state and, per slot, every stored id's row and optimizer state, sorted by id."""
    out = {f"dense/{k}": v.detach().numpy().copy() for k, v in model.head.state_dict().items()}
    for slot, table in model.embeddings.tables.tables.items():
        ids, rows = table.index.items()
        order = np.argsort(ids)
        ids, rows = ids[order], rows[order].astype(np.int64)
        out[f"{slot}/ids"] = ids
        out[f"{slot}/weights"] = table.weight.numpy()[rows]
        for name, array in table.state_arrays().items():
            if name.startswith("state."):
                out[f"{slot}/{name}"] = array[rows]
    return out


def _merge(shards: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """W shards' parameters as one model's: rows of every shard, sorted by id (dense from rank 0)."""
    out = {k: v for k, v in shards[0].items() if k.startswith("dense/")}
    slots = {k.split("/", 1)[0] for k in shards[0] if not k.startswith("dense/")}
    for slot in slots:
        order = np.argsort(np.concatenate([s[f"{slot}/ids"] for s in shards]), kind="stable")
        for key in (k for k in shards[0] if k.startswith(f"{slot}/")):
            out[key] = np.concatenate([s[key] for s in shards])[order]
    return out


def max_abs_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """Largest difference of any parameter; ``inf`` when the two hold different ids or shapes."""
    worst = 0.0
    for key in a.keys() | b.keys():
        if key not in a or key not in b or a[key].shape != b[key].shape:
            return float("inf")
        if key.endswith("/ids"):
            if not np.array_equal(a[key], b[key]):
                return float("inf")
        elif a[key].size:
            worst = max(worst, float(np.abs(a[key].astype(np.float64) - b[key]).max()))
    return worst


class _Group:
    """W spawned ranks driven over pipes; ``ask`` sends one command to every rank, returns the answers."""

    def __init__(self, world: int, examples: int, sizes: Sizes) -> None:
        import multiprocessing

        from streamrec.redis_server import free_port

        context = multiprocessing.get_context("spawn")
        port = free_port()
        self.world = world
        self.procs, self.pipes = [], []
        for rank in range(world):
            mine, theirs = context.Pipe()
            job = _RankJob(rank, world, port, examples, sizes)
            proc = context.Process(target=_rank_main, args=(job, theirs), daemon=True, name=f"bench-rank-{rank}")
            proc.start()
            self.procs.append(proc)
            self.pipes.append(mine)

    def answers(self, timeout_s: float = 600.0) -> list:
        out = []
        for rank, (proc, pipe) in enumerate(zip(self.procs, self.pipes, strict=True)):
            deadline = time.monotonic() + timeout_s
            while not pipe.poll(0.2):
                if not proc.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"bench rank {rank} of {self.world} died (exit code {proc.exitcode})")
            out.append(pipe.recv())
        return out

    def ask(self, *command) -> list:
        for pipe in self.pipes:
            pipe.send(command)
        return self.answers()

    def close(self) -> None:
        for proc, pipe in zip(self.procs, self.pipes, strict=True):
            if proc.is_alive():
                with contextlib.suppress(OSError):  # a rank that just died
                    pipe.send(("stop",))
        for proc in self.procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
                proc.join()


def ranks_examples(sizes: Sizes) -> int:
    """Examples the ranks phase trains: one warm-up batch, then ``ranks_reps`` chunks of whole batches."""
    return sizes.ranks_batch_size * (1 + sizes.ranks_reps * sizes.ranks_batches_per_rep)


def _ranks_phase(worlds: list[int], sizes: Sizes) -> dict:
    """Examples/s of each world size on the same examples, bytes exchanged, and the parameters of
    every W > 1 against the first W's after the same batches (all of them, warm-up included).

    Each world size is a group of processes started once; repetitions alternate the groups (order
    rotating) over the same chunk of examples, so both train the same batches in the same order.
    A group's time for a chunk is its slowest rank's. ``examples_per_s`` is the best repetition:
    on a shared machine other jobs only ever slow a repetition down, and W ranks need W cores free
    at once where one needs one, so the best is the fairest estimate of what each can do (the
    median is reported beside it, ``examples_per_s_median``).
    """
    n, size = ranks_examples(sizes), sizes.ranks_batch_size
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    groups: dict[int, _Group] = {}
    try:
        for world in worlds:
            groups[world] = _Group(world, n, sizes)
        for group in groups.values():
            group.answers()  # "ready": kernels warm, group joined, data loaded, model built
        for group in groups.values():  # warm-up: first admissions, allocator, the collectives' buffers
            group.ask("train", 0, size)
        per_rep: dict[int, list[float]] = {world: [] for world in worlds}
        chunk = size * sizes.ranks_batches_per_rep
        for rep in range(sizes.ranks_reps):
            lo = size + rep * chunk
            for world in worlds[rep % len(worlds) :] + worlds[: rep % len(worlds)]:
                per_rep[world].append(rate(chunk, max(groups[world].ask("train", lo, lo + chunk))))
        dumps = {world: group.ask("dump") for world, group in groups.items()}
    finally:
        for group in groups.values():
            group.close()
    base = worlds[0]
    reference = _merge([d["parameters"] for d in dumps[base]])
    rates = {world: max(per_rep[world]) for world in worlds}
    out: dict = {
        "ranks": worlds,
        "examples": n,
        "batch_size": size,
        "steps": n // size,
        "reps": sizes.ranks_reps,
        "dim": sizes.dim,
        "adagrad_initial_accumulator": RANKS_ACCUMULATOR,
        "dense_parameters": dumps[base][0]["dense"],
        "examples_per_s": {},
        "examples_per_s_median": {},
        "examples_per_s_per_rank": {},
        "all_to_all_bytes_per_example": {},
        "table_bytes_per_id": {},
        "equivalence_max_abs_diff_by_ranks": {},
    }
    for world in worlds:
        shards = dumps[world]
        ids = sum(len(v) for d in shards for k, v in d["parameters"].items() if k.endswith("/ids"))
        held = sum(sum(v for k, v in m.items() if k.endswith("_bytes")) for d in shards for m in d["memory"])
        out["examples_per_s"][str(world)] = round(rates[world])
        out["examples_per_s_median"][str(world)] = round(median(per_rep[world]))
        out["examples_per_s_per_rank"][str(world)] = round(rates[world] / world)
        out["all_to_all_bytes_per_example"][str(world)] = sum(d["bytes_sent"] for d in shards) / n
        out["table_bytes_per_id"][str(world)] = round(held / max(ids, 1), 1)
        if world != base:
            diff = max_abs_diff(reference, _merge([d["parameters"] for d in shards]))
            out["equivalence_max_abs_diff_by_ranks"][str(world)] = diff
    out["equivalence_max_abs_diff"] = max(out["equivalence_max_abs_diff_by_ranks"].values(), default=0.0)
    out["ratios"] = {
        f"examples_per_s_{world}_vs_{base}_ranks": round(
            rate_ratio(out["examples_per_s"][str(world)], baseline_rate=out["examples_per_s"][str(base)]), 3
        )
        for world in worlds
        if world != base
    }
    out["load_average_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def table_bytes_per_id(ids: int) -> dict[str, float]:
    """Bytes per id of one table holding ``ids`` random ids, by the table's own ``memory()``
    accounting (vectors, optimizer state, index, row metadata, growth slack): the cost model's
    memory per id per shard, for the dims and optimizers it assumes."""
    from streamrec.embedding import EmbeddingCollection

    out = {}
    keys = np.random.default_rng(0).integers(0, 2**62, size=ids)
    for dim, optimizer in ((16, "adagrad"), (64, "adagrad"), (64, "adam")):
        slot = {"dim": dim, "optimizer": {"type": optimizer}}
        table = EmbeddingCollection({"slots": {"x": slot}})["x"]
        for lo in range(0, ids, 100_000):
            table.admit(keys[lo : lo + 100_000], 1.0)
        memory = table.memory()
        out[f"dim{dim}_{optimizer}"] = round(sum(v for k, v in memory.items() if k.endswith("_bytes")) / len(table), 1)
    return out


def parse_ranks(value: str) -> list[int]:
    """``"1,2"`` -> ``[1, 2]``: distinct world sizes >= 1, the first the one the others are compared with."""
    from streamrec.errors import InvalidInputError

    try:
        worlds = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise InvalidInputError("--ranks", value, "comma-separated world sizes, e.g. 1,2") from None
    if not worlds or min(worlds) < 1 or len(set(worlds)) != len(worlds):
        raise InvalidInputError("--ranks", value, "distinct world sizes >= 1, e.g. 1,2")
    return worlds


def _fit_ranks(sizes: Sizes, batch_size: int | None) -> Sizes:
    """``sizes`` with the ranks phase's global batch, and as many repetitions as the data holds."""
    from dataclasses import replace

    from streamrec.errors import InvalidInputError

    if batch_size:
        sizes = replace(sizes, ranks_batch_size=batch_size)
    available = len(examples_for_bench(ranks_examples(sizes))[0])
    reps = min(sizes.ranks_reps, (available // sizes.ranks_batch_size - 1) // sizes.ranks_batches_per_rep)
    if reps < 2:
        raise InvalidInputError("--ranks-batch-size", sizes.ranks_batch_size, f"{available:,} examples hold too few")
    return replace(sizes, ranks_reps=reps)


def run_bench(
    quick: bool = False,
    folder: str | Path | None = None,
    threads: int = 1,
    ranks: list[int] | None = None,
    ranks_batch_size: int | None = None,
) -> dict:
    """Run every phase; returns the JSON-ready result (``ratios``, lags, ``goals_met``, details).

    ``threads`` sets torch's intra-op threads for the whole run (0 keeps torch's default). One is
    the default because steps of 512 examples are too small to split, and on a busy machine idle
    OpenMP workers spinning for cores cost both contenders 10x or more, burying the ratio in noise.
    ``ranks`` (e.g. ``[1, 2]``) adds the ranks phase: result ``distributed``, ratios
    ``examples_per_s_W_vs_1_ranks``, global batches of ``ranks_batch_size`` (default 16,384).
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

    distributed = None
    if ranks:
        distributed = _ranks_phase(ranks, _fit_ranks(sizes, ranks_batch_size))
        distributed["data"] = source
        distributed["table_bytes_per_id_at_scale"] = {
            "ids": sizes.memory_probe_ids,
            **table_bytes_per_id(sizes.memory_probe_ids),
        }
        distributed["torchrec_baseline"] = torchrec_baseline()
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
    result = {
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
    if distributed is not None:
        result["ratios"].update(distributed.pop("ratios"))
        result["distributed"] = distributed
    return result


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
    if "distributed" in result:
        console.print(_ranks_table(result))
        console.print(torchrec_line(result["distributed"]))


def _ranks_table(result: dict):
    from rich.table import Table

    d = result["distributed"]
    table = Table(
        title=f"ranks phase ({d['data']}, global batch {d['batch_size']:,}, {d['steps']} steps, one thread per rank)"
    )
    for column in ("ranks", "examples/s", "per rank", f"vs {d['ranks'][0]} rank(s)", "all-to-all B/example"):
        table.add_column(column, justify="right")
    table.add_column("max |param diff|", justify="right")
    base = str(d["ranks"][0])
    for world in map(str, d["ranks"]):
        ratio = result["ratios"].get(f"examples_per_s_{world}_vs_{base}_ranks")
        table.add_row(
            world,
            f"{d['examples_per_s'][world]:,}",
            f"{d['examples_per_s_per_rank'][world]:,}",
            "" if ratio is None else f"{ratio:.3f}",
            f"{d['all_to_all_bytes_per_example'][world]:,.1f}",
            "" if world == base else f"{d['equivalence_max_abs_diff_by_ranks'][world]:.2e}",
        )
    return table


def torchrec_line(distributed: dict) -> str:
    """One line: the TorchRec baseline's ratio, or why it did not run."""
    baseline = distributed["torchrec_baseline"]
    if baseline["ran"]:
        return f"TorchRec baseline: ratio {baseline['ratio']:.3f}"
    return f"TorchRec baseline skipped: {baseline['reason']}"


def run_benchmark(
    as_json: bool = False,
    quick: bool = False,
    threads: int = 1,
    ranks: str | None = None,
    ranks_batch_size: int | None = None,
    device: str = "cpu",
) -> dict:
    """Entry point of the CLI command (``device="cuda"``: the GPU bench of ``embedding/cuda_bench.py``)."""
    if device != "cpu":
        from streamrec.embedding.cuda_bench import run_training

        return run_training(device, as_json=as_json, quick=quick)
    worlds = parse_ranks(ranks) if ranks else None
    result = run_bench(quick=quick, threads=threads, ranks=worlds, ranks_batch_size=ranks_batch_size)
    if as_json:
        if "distributed" in result:
            print(torchrec_line(result["distributed"]), file=sys.stderr)
        print(json.dumps(result))
    else:
        print_result(result)
    return result
