"""The whole loop in one process: warm-up and batch stage, then three arms stepped in lockstep.

Why this shape:

* **Warm-up once, copied three times.** The batch stage needs real impressions with the serving
  features, so a world runs for ``warmup_minutes`` with the recommender ranking by its popularity
  fallback; the joiner turns the log into examples and a DeepFM is batch-trained on them with the
  plan's slots and ``n_dense``. Its folder (profiles, log with committed offsets, joiner state) and
  a deep copy of the world are then the starting point of every arm, so the arms begin identical
  and diverge only through what they recommend.
* **Lockstep in simulated time.** Each tick serves one simulated step in every arm, then moves the
  online arm's joiner, trainer, syncs (intervals in *simulated* seconds) and serving replica. No
  threads: the result depends on the seed only; wall time only decides when to stop early.
* **Progressive online AUC**: the score each impression was served with (kept by the arm's server)
  against the label the joiner later gave it, read from ``examples`` through a consumer group of
  its own, so it measures the model users actually saw.
"""

from __future__ import annotations

import copy
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from streamrec.batch import ExampleBatch
from streamrec.embedding import EmbeddingCollection
from streamrec.errors import InvalidInputError
from streamrec.joiner import Joiner
from streamrec.loop.arm import (
    Arm,
    ArmServer,
    auc_or_nan,
    ctr,
    join_config,
    make_arm,
    open_stores,
    recommender_config,
    seeded_request_ids,
)
from streamrec.models import ModelConfig, build_model
from streamrec.records import Example
from streamrec.serving import Recommender
from streamrec.sim import InProcessDriver, World
from streamrec.training.online import OnlineConfig, OnlineTrainer
from streamrec.training.retrieval import RetrievalTrainer
from streamrec.training.serving_model import ServingModel
from streamrec.training.snapshot import load_trainer, save_trainer
from streamrec.training.trainer import TrainConfig, Trainer
from streamrec.training.updates import ModelUpdate

__all__ = ["LoopConfig", "LoopResult", "run_loop"]

ARMS = ("online", "frozen", "popularity")


@dataclass
class LoopConfig:
    """Sizes and schedules of a demo run (times in simulated seconds unless named ``wall``)."""

    seed: int = 0
    n_users: int = 500
    n_items: int = 400
    mean_request_interval_s: float = 600.0
    history_minutes: float = 60.0
    warmup_minutes: float = 60.0
    sim_minutes: float = 90.0
    wall_minutes: float = 3.0
    step_s: float = 10.0
    bucket_s: float = 300.0
    k: int = 10
    window_s: float = 60.0
    negative_rate: float = 0.5
    sparse_sync_s: float = 30.0
    dense_sync_s: float = 300.0
    batch_epochs: int = 4
    dim: int = 8
    hidden: tuple[int, ...] = (32, 16)
    # A two-tower retrieval model trained online feeds the ann source of the model arms. Off by
    # default: at the demo's world size (seeds 0 and 1, 30 simulated minutes) it turned the frozen
    # arm below popularity (last-third CTR 2.75 % vs 3.24 % on seed 0): a retriever frozen at
    # warm-up keeps offering items of that hour. `cluster up` runs it by default.
    retrieval: bool = False
    retrieval_epochs: int = 4
    world: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("warmup_minutes", "sim_minutes", "wall_minutes", "step_s", "bucket_s", "window_s"):
            if not getattr(self, name) > 0:
                raise InvalidInputError(name, getattr(self, name), "must be > 0")
        if not 0 < self.negative_rate <= 1:
            raise InvalidInputError("negative_rate", self.negative_rate, "must be in (0, 1]")


@dataclass
class LoopResult:
    """Everything the summary, report and JSON need."""

    config: LoopConfig
    times: list[float]  # simulated minutes since the arms started, per bucket end
    ctr: dict[str, list[float]]  # arm -> CTR per bucket
    auc_times: list[float]
    auc: list[float]  # cumulative progressive AUC of the online arm
    summary: dict[str, Any]


def _slots(dim: int) -> dict[str, dict[str, Any]]:
    slot = {"dim": dim, "optimizer": {"type": "adagrad", "lr": 0.05}, "initializer": {"type": "normal", "std": 0.05}}
    plan = recommender_config().features
    return {s: {**slot, "pooling": "mean" if s == "user_categories" else "sum"} for s in plan.slots}


def _world(cfg: LoopConfig) -> World:
    options = {"n_users": cfg.n_users, "n_items": cfg.n_items, "mean_request_interval_s": cfg.mean_request_interval_s}
    return World(seed=cfg.seed, **{**options, **cfg.world})


def _drain_joiner(joiner: Joiner, drain: bool = False) -> int:
    total = 0
    while True:
        n, caught_up = joiner.step(drain=drain)
        total += n
        if caught_up:
            return total


def warm_up(cfg: LoopConfig, folder: Path, say: Callable[[str], None]) -> tuple[World, Path, dict[str, Any]]:
    """History, then the world on the popularity fallback, join, batch-train; returns (world, snapshot, stats)."""
    world = _world(cfg)
    client, log = open_stores(folder, world)
    plan = recommender_config().features
    recommender = Recommender(
        client, log, None, recommender_config(), clock=lambda: world.now, request_ids=seeded_request_ids("warmup")
    )
    driver = InProcessDriver(world, ArmServer(recommender), k=cfg.k, step_s=cfg.step_s, regret=False)
    started = time.perf_counter()
    # Retrieval reads the catalogue from profiles: seed them with random-policy history (no impressions
    # logged, so nothing of it is joined), then serve the warm-up on the popularity fallback.
    history = world.generate_history(cfg.history_minutes / 1440.0, k=cfg.k)
    for lo in range(0, len(history.events), 5000):
        driver.deliver(history.events[lo : lo + 5000])
    report = driver.run(cfg.warmup_minutes)
    joiner = Joiner(log, folder / "joiner", join_config(cfg.window_s, cfg.negative_rate))
    _drain_joiner(joiner)
    consumer = log.consumer("examples", "trainer", Example)
    examples: list[Example] = []
    while batch := consumer.poll(10_000, 0):
        examples += [e.record for e in batch]
    consumer.commit()
    consumer.close()
    # The retrieval model's consumer group starts after the warm-up too (it is batch-trained on it).
    retriever_consumer = log.consumer("examples", "retriever", Example)
    while retriever_consumer.poll(10_000, 0):
        pass
    retriever_consumer.commit()
    retriever_consumer.close()
    if not examples:
        raise InvalidInputError("warmup_minutes", cfg.warmup_minutes, "produced no training examples")
    torch.manual_seed(cfg.seed)
    tables = EmbeddingCollection({"slots": _slots(cfg.dim)}, seed=cfg.seed)
    model_cfg = ModelConfig(kind="deepfm", hidden=list(cfg.hidden), n_dense=plan.n_dense)
    trainer = Trainer(build_model(model_cfg, tables), TrainConfig(batch_size=64, dense_lr=0.003, seed=cfg.seed))
    batch = ExampleBatch.from_examples(examples, plan.slots, plan.n_dense)
    split = int(len(batch) * 0.8)
    trainer.train(batch[:split], epochs=cfg.batch_epochs)
    held_out = trainer.evaluate(batch[split:]) if split < len(batch) else {}
    trainer.train(batch[split:], epochs=1)
    snapshot = folder / "batch.snapshot.npz"
    save_trainer(snapshot, trainer)
    if cfg.retrieval:
        retriever = _batch_retriever(cfg, batch)
        save_trainer(folder / "retrieval.snapshot.npz", retriever)
    stats = {
        "impressions": report.total().impressions,
        "ctr": report.total().ctr,
        "examples": len(examples),
        "positives": int(sum(e.label for e in examples)),
        "held_out_auc": held_out.get("auc"),
        "seconds": time.perf_counter() - started,
    }
    say(
        f"warm-up: {cfg.warmup_minutes:g} simulated min on popularity, {stats['impressions']} impressions, "
        f"{len(examples)} examples, batch DeepFM held-out AUC {stats['held_out_auc'] or float('nan'):.3f}"
    )
    joiner.close()
    log.close()
    client.close()
    return world, snapshot, stats


RETRIEVAL_TOPIC = "retrieval-updates"


def _batch_retriever(cfg: LoopConfig, batch: ExampleBatch) -> RetrievalTrainer:
    """The two-tower retrieval model, batch-trained on the warm-up's positives (in-batch softmax, log-Q).

    The user tower reads the user's id and top categories, the item tower the item's id and
    category; no dense column (they describe the impression's item, which the user tower must not see).
    """
    torch.manual_seed(cfg.seed + 1)
    slots = _slots(cfg.dim)
    user, item = ["user", "user_categories"], ["item", "category"]
    tables = EmbeddingCollection({"slots": {s: slots[s] for s in user + item}}, seed=cfg.seed + 1)
    model_cfg = ModelConfig(
        kind="two_tower", hidden=[32], out_dim=16, n_dense=batch.n_dense, user_dense=False, user_slots=user,
        item_slots=item, temperature=0.1,
    )  # fmt: skip
    retriever = RetrievalTrainer(build_model(model_cfg, tables), item_slot="item", dense_lr=0.003)
    retriever.train(batch, epochs=cfg.retrieval_epochs, batch_size=64, seed=cfg.seed)
    return retriever


def _arms(cfg: LoopConfig, world: World, warm: Path, snapshot: Path, out: Path) -> dict[str, Arm]:
    arms: dict[str, Arm] = {}
    for name in ARMS:
        folder = out / f"arm-{name}"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(warm, folder)
        model = None if name == "popularity" else ServingModel.from_snapshot(snapshot)
        rate = cfg.negative_rate if model is not None else 1.0
        retrieval_snapshot = warm / "retrieval.snapshot.npz"
        retrieval = ServingModel.from_snapshot(retrieval_snapshot) if model is not None and cfg.retrieval else None
        arm = make_arm(
            name, copy.deepcopy(world), folder, model, k=cfg.k, step_s=cfg.step_s, sample_rate=rate,
            retrieval=retrieval,
        )  # fmt: skip
        if name == "online" and retrieval is not None:
            never = 1e12
            retrieval_cfg = OnlineConfig(
                sparse_sync_interval=never, dense_sync_interval=never, snapshot_interval=never,
                expiry_interval=never, poll_timeout_s=0.0, publish_full_on_start=False, group="retriever",
                updates_topic=RETRIEVAL_TOPIC,
            )  # fmt: skip
            restored = RetrievalTrainer.from_trainer(load_trainer(retrieval_snapshot)[0])
            arm.retrieval_trainer = OnlineTrainer(restored, arm.log, None, retrieval_cfg)
            arm.retrieval_updates = arm.log.consumer(RETRIEVAL_TOPIC, "serving-online", ModelUpdate)
        if name == "online":
            arm.joiner = Joiner(arm.log, folder / "joiner", join_config(cfg.window_s, cfg.negative_rate))
            trainer, _ = load_trainer(snapshot)
            never = 1e12  # syncs are called on the simulated schedule, never on the wall clock
            online_cfg = OnlineConfig(
                sparse_sync_interval=never, dense_sync_interval=never, snapshot_interval=never,
                expiry_interval=never, poll_timeout_s=0.0, publish_full_on_start=False,
            )  # fmt: skip
            arm.trainer = OnlineTrainer(trainer, arm.log, None, online_cfg)
            arm.updates = arm.log.consumer("model-updates", "serving-online", ModelUpdate)
            arm.auc_reader = arm.log.consumer("examples", "auc", Example)
            # the progressive AUC starts at the arms' start: skip the warm-up's examples
            while arm.auc_reader.poll(10_000, 0):
                pass
        arms[name] = arm
    return arms


class _Online:
    """The online arm's machinery, stepped after each serving step."""

    def __init__(self, arm: Arm, cfg: LoopConfig, start: float) -> None:
        self.arm = arm
        self.cfg = cfg
        self.next_sparse = start + cfg.sparse_sync_s
        self.next_dense = start + cfg.dense_sync_s
        self.labels: list[float] = []
        self.scores: list[float] = []
        self.lags: list[float] = []  # simulated seconds from a training step to the replica applying it
        self.examples_joined = 0
        self.applied = 0
        self.retrieval_applied = 0
        self._trained_at: float | None = None

    def step(self, now: float) -> None:
        arm = self.arm
        self.examples_joined += _drain_joiner(arm.joiner)
        while arm.trainer.step():
            if self._trained_at is None:
                self._trained_at = now
        trainers = [arm.trainer] + ([arm.retrieval_trainer] if arm.retrieval_trainer is not None else [])
        for trainer in trainers[1:]:  # the retrieval model learns the same examples (their positives)
            while trainer.step():
                pass
        published = False
        if now >= self.next_sparse:
            for trainer in trainers:
                trainer.sync_sparse()
            self.next_sparse += self.cfg.sparse_sync_s
            published = True
        if now >= self.next_dense:
            for trainer in trainers:
                trainer.sync_dense()
            self.next_dense += self.cfg.dense_sync_s
            published = True
        for envelope in arm.updates.poll(1000, 0):
            arm.model.apply(envelope.record)
            self.applied += 1
        arm.updates.commit()
        if arm.retrieval_updates is not None:
            for envelope in arm.retrieval_updates.poll(1000, 0):
                arm.retrieval.apply(envelope.record)  # the ann index is rebuilt on the next request
                self.retrieval_applied += 1
            arm.retrieval_updates.commit()
        if published and self._trained_at is not None:
            self.lags.append(now - self._trained_at)
            self._trained_at = None
        for envelope in arm.auc_reader.poll(100_000, 0):
            e = envelope.record
            score = arm.server.scores.pop((e.request_id, e.item), None)
            if score is not None:
                self.labels.append(e.label)
                self.scores.append(score)

    @property
    def auc(self) -> float:
        return auc_or_nan(self.labels, self.scores)


def run_loop(
    cfg: LoopConfig,
    out: Path,
    *,
    say: Callable[[str], None] = lambda _: None,
    on_tick: Callable[[dict[str, Any]], None] | None = None,
) -> LoopResult:
    """Warm up, batch-train, then step the three arms until ``sim_minutes`` or ``wall_minutes``."""
    torch.set_num_threads(1)  # batches of a few hundred rows: threads only contend on a shared machine
    out.mkdir(parents=True, exist_ok=True)
    warm = out / "warmup"
    shutil.rmtree(warm, ignore_errors=True)
    warm.mkdir(parents=True)
    world, snapshot, warm_stats = warm_up(cfg, warm, say)
    arms = _arms(cfg, world, warm, snapshot, out)
    deadline = time.monotonic() + cfg.wall_minutes * 60.0  # the arms' time; setup comes on top
    start = world.now
    online = _Online(arms["online"], cfg, start)
    end = start + cfg.sim_minutes * 60.0
    times: list[float] = []
    series: dict[str, list[float]] = {name: [] for name in ARMS}
    auc_times: list[float] = []
    auc_series: list[float] = []
    bucket_start = {name: 0 for name in ARMS}
    started = time.perf_counter()
    now = start
    stopped_early = False
    try:
        while now < end - 1e-9:
            dt = min(cfg.step_s, end - now)
            for arm in arms.values():
                arm.serve_step(dt)
            now = arms["online"].world.now
            online.step(now)
            if now - start >= (len(times) + 1) * cfg.bucket_s - 1e-9 or now >= end - 1e-9:
                times.append((now - start) / 60.0)
                for name, arm in arms.items():
                    series[name].append(ctr(arm.buckets[bucket_start[name] :]))
                    bucket_start[name] = len(arm.buckets)
                auc_times.append((now - start) / 60.0)
                auc_series.append(online.auc)
            if on_tick is not None:
                elapsed = time.perf_counter() - started
                on_tick(
                    {
                        "sim_minutes": (now - start) / 60.0,
                        "events_per_s": sum(a.events for a in arms.values()) / max(elapsed, 1e-9),
                        "ctr": {name: ctr(arm.buckets) for name, arm in arms.items()},
                        "auc": online.auc,
                        "sync_lag_s": online.lags[-1] if online.lags else float("nan"),
                        "syncs": online.applied,
                    }
                )
            if time.monotonic() >= deadline:
                stopped_early = now < end - 1e-9
                break
        online.step(now)
        if len(arms["online"].buckets) > bucket_start["online"]:  # a partial bucket when stopped early
            times.append((now - start) / 60.0)
            for name, arm in arms.items():
                series[name].append(ctr(arm.buckets[bucket_start[name] :]))
            auc_times.append((now - start) / 60.0)
            auc_series.append(online.auc)
        summary = _summary(cfg, arms, online, warm_stats, now - start, time.perf_counter() - started, stopped_early)
    finally:
        for arm in arms.values():
            if getattr(arm, "auc_reader", None) is not None:
                arm.auc_reader.close()
            arm.close()
    return LoopResult(cfg, times, series, auc_times, auc_series, summary)


def _retrieval_summary(arm: Arm, online: _Online) -> dict[str, Any] | None:
    if arm.retrieval_trainer is None:
        return None
    ann = arm.server.recommender.retriever.extra.get("ann")
    stats = arm.retrieval_trainer.stats
    return {
        "examples_trained": stats.examples,
        "steps": arm.retrieval_trainer.trainer.steps,
        "sparse_syncs": stats.sparse_syncs,
        "dense_syncs": stats.dense_syncs,
        "updates_applied": online.retrieval_applied,
        "serving_version": arm.retrieval.version,
        "ann_rebuilds": getattr(ann, "rebuilds", 0),
    }


def _summary(
    cfg: LoopConfig, arms: dict[str, Arm], online: _Online, warm: dict[str, Any], sim_s: float, wall_s: float,
    stopped_early: bool,
) -> dict[str, Any]:  # fmt: skip
    out_arms = {}
    for name, arm in arms.items():
        n = len(arm.buckets)
        last = arm.buckets[n - max(1, round(n / 3)) :] if n else []
        n_imps = sum(b.impressions for b in arm.buckets)
        out_arms[name] = {
            "ctr": ctr(arm.buckets),
            "ctr_last_third": ctr(last),
            "impressions": sum(b.impressions for b in arm.buckets),
            "clicks": sum(b.clicks for b in arm.buckets),
            "expected_ctr": sum(b.expected_clicks for b in arm.buckets) / max(1, n_imps),
        }
    trainer = arms["online"].trainer
    tables = {slot: len(t) for slot, t in trainer.tables.tables.items()} if trainer.tables is not None else {}
    o, f, p = (out_arms[a]["ctr_last_third"] for a in ARMS)
    stats = trainer.stats
    return {
        "arms": out_arms,
        "expectations_met": bool(o > f > p),
        "online": {
            "auc": online.auc,
            "auc_examples": len(online.labels),
            "examples_joined": online.examples_joined,
            "examples_trained": stats.examples,
            "sparse_syncs": stats.sparse_syncs,
            "dense_syncs": stats.dense_syncs,
            "updates_applied": online.applied,
            "serving_version": arms["online"].model.version,
            "sync_lag_sim_s_mean": float(np.mean(online.lags)) if online.lags else None,
            "tables": tables,
        },
        "retrieval": _retrieval_summary(arms["online"], online),
        "warmup": warm,
        "simulated_minutes": sim_s / 60.0,
        "wall_seconds": wall_s,
        "stopped_early": stopped_early,
        "seed": cfg.seed,
    }
