"""``streamrec bench serving``: the latency of one recommendation, stage by stage, in process and over HTTP.

Setup (reproducible from ``seed``): generated history written into an embedded profile store with
the serving slots: users act with Zipf-Mandelbrot weights, items are picked by Zipf popularity and
carry one of ``categories`` categories (each user clicks two of them more); every exposure is a
``show``, some are clicked (with a dwell time) or liked; times spread over the last ``days`` days
before ``NOW``. The feature plan is :func:`~streamrec.serving.default_plan` over seven windows
(5m 1h 6h 1d 3d 7d 30d): 102 dense columns + 4 sparse slots = 106 model features, 100 profile
features per query (the default 4-window plan has 64, under the issue's 100). Retrieval quotas sum
to 500 (co-engaged 100, popular 300 over 7 days, fresh 100) and requests are drawn from the users
whose retrieval fills every quota, so each request ranks exactly 500 candidates. The ranker is a
DeepFM over the plan (embeddings dim 16, hidden 64-32) trained one pass over examples built with
the same plan, then served from a trainer snapshot as a deployment does (its scores do not matter
for latency).

What is measured:

* **in process**: :meth:`Recommender.recommend` one request at a time (p50/p99, mean, QPS), the
  stage split from ``Recommendation.timings``, and QPS with ``threads`` concurrent callers. As
  ``streamrec serve`` runs: after the warm-up the heap is frozen (``gc.collect(); gc.freeze()``)
  and the collector keeps running on what requests leave; the same requests again at the end
  without the freeze (``in_process_heap_not_frozen``);
* **HTTP, one process**: the real app (:func:`~streamrec.serving.api.create_app`) under uvicorn in
  a thread of this process, ``GET /v1/recommendations`` with httpx, one caller at a time and
  ``threads`` at a time (the client shares the process and the GIL with the server);
* **HTTP, every core** (``serve --workers N``, N = the cores by default): ``streamrec serve
  --workers N`` as a child process over the same world (its workers build their profile replicas
  from the log's ``actions``, where the history is written too, and load the same snapshot; a
  few answers are checked equal to this process's first), loaded with keep-alive connections
  from a small asyncio client, in three blocks alternating with blocks of one in-process thread;
* **the garbage collector**: full (generation 2) collections and their pauses.

Baselines, side by side in the same process (same requests, rotating order):

* ``features_vs_precomputed_redis``: the feature stage as served (with the item cache) against
  reading the same profile features precomputed in Redis hashes, one pipelined ``HMGET`` round
  trip per request (what a Feast-style online store does), decoded into arrays; and the same
  without the item cache (``features_uncached_vs_precomputed_redis``);
* ``features_vs_per_entity``: the uncached feature stage (one batched profile query) against one
  profile query per entity (the N+1 way). All contenders' FeatureSets are checked equal first;
* ``one_query_vs_two_queries``: the plan's one query over user + candidates against two
  entity-typed queries (user features of the user; item features of the items).

Absolute numbers on a shared 2-core machine are noise; ratios measured side by side are the result.
Torch runs on one intra-op thread.
"""

from __future__ import annotations

import gc
import json
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streamrec.benchutil import (
    median,
    paired_rate_ratio,
    paired_speedup,
    paired_time_ratio,
    percentiles,
    rate,
    rate_ratio,
    time_ratio,
)
from streamrec.serving.baselines import PrecomputedRedisFeatures, fetch_split

__all__ = ["QUICK", "Scale", "build_world", "fetch_split", "generate_events", "run_benchmark"]

WINDOWS = ("5m", "1h", "6h", "1d", "3d", "7d", "30d")
QUOTAS = {"co_engaged": 100, "popular": 300, "fresh": 100}
NOW = 1_700_000_000.0


@dataclass(frozen=True)
class Scale:
    """Sizes of one run."""

    users: int = 2000
    items: int = 3000
    events: int = 30_000
    days: float = 3.0
    categories: int = 12
    requests: int = 200
    warmup: int = 20
    threads: int = 4
    http_requests: int = 200
    baseline_requests: int = 20
    train_users: int = 20
    workers: int = 0  # 0: one per core
    worker_requests: int = 1000
    worker_connections: int = 8


QUICK = Scale(
    users=600, items=1500, events=20_000, days=2.0, requests=15, warmup=3, threads=2, http_requests=12,
    baseline_requests=3, train_users=3, worker_requests=60, worker_connections=4,
)  # fmt: skip


def _zipf(n: int, s: float, q: float) -> np.ndarray:
    w = 1.0 / (np.arange(1, n + 1) + q) ** s
    return w / w.sum()


def generate_events(scale: Scale, now: float = NOW, seed: int = 0) -> list[Any]:
    """``scale.events`` exposures (plus their clicks and likes) over ``scale.days`` days before ``now``.

    Users have Zipf-Mandelbrot activity (s=0.9, q=20), items Zipf popularity (s=1.0, q=5); each user
    clicks more on two favourite categories (CTR 0.35 there, 0.08 elsewhere); a click carries a
    log-normal dwell time and is a like with probability 0.2. Time-ordered, stamped as
    ``Recommender.record`` stamps them (catalogue fields).
    """
    from streamrec.records import ActionEvent
    from streamrec.serving.slots import stamp

    rng = np.random.default_rng(seed)
    n = scale.events
    users = rng.permutation(scale.users)[rng.choice(scale.users, size=n, p=_zipf(scale.users, 0.9, 20.0))]
    items = rng.permutation(scale.items)[rng.choice(scale.items, size=n, p=_zipf(scale.items, 1.0, 5.0))]
    category = rng.integers(0, scale.categories, size=scale.items)
    favourite = rng.integers(0, scale.categories, size=(scale.users, 2))
    times = np.sort(now - rng.uniform(1.0, scale.days * 86400.0, size=n))
    liked = (category[items] == favourite[users, 0]) | (category[items] == favourite[users, 1])
    click = rng.random(n) < np.where(liked, 0.35, 0.08)
    like = click & (rng.random(n) < 0.2)
    dwell = np.round(rng.lognormal(8.0, 1.0, size=n)) + 1.0
    out = []
    for j in range(n):
        u, i, t = f"u{users[j]}", f"i{items[j]}", float(times[j])
        attrs = {"category": f"c{category[items[j]]:02d}"}
        out.append(stamp(ActionEvent(user=u, item=i, action="show", time=t, attributes=attrs)))
        if click[j]:
            counters = {"dwell_ms": float(dwell[j])}
            out.append(
                stamp(ActionEvent(user=u, item=i, action="click", time=t + 1, attributes=attrs, counters=counters))
            )
            if like[j]:
                out.append(stamp(ActionEvent(user=u, item=i, action="like", time=t + 2, attributes=attrs)))
    return out


# --------------------------------------------------------------------------- setup


@dataclass
class Bench:
    """What one run serves with: the stores, the plan, the model, the recommender, the request users."""

    folder: Path
    client: Any
    log: Any
    plan: Any
    recommender: Any
    users: list[str]
    qualified: int
    checked: int
    events: int
    setup_s: float

    def close(self) -> None:
        self.log.close()
        self.client.close()


def bench_plan() -> Any:
    """The default plan over seven windows: 102 dense columns, 4 sparse slots."""
    from streamrec.serving.features import default_plan

    return default_plan(WINDOWS)


def _train_model(client: Any, plan: Any, retriever: Any, users: Sequence[str], folder: Path, seed: int) -> Any:
    """A DeepFM over the plan, one pass over examples built by the plan (labels: a coin), served from a snapshot."""
    import torch

    from streamrec.batch import ExampleBatch
    from streamrec.embedding import EmbeddingCollection, SlotConfig
    from streamrec.models.ranking import ModelConfig, build_model
    from streamrec.training.serving_model import ServingModel
    from streamrec.training.snapshot import save_trainer
    from streamrec.training.trainer import TrainConfig, Trainer

    rng = np.random.default_rng(seed)
    examples = []
    for user in users:
        fs = plan.fetch(client, user, retriever.retrieve(user, NOW).items, NOW)
        examples += fs.examples((rng.random(len(fs)) < 0.1).astype(float).tolist())
    torch.manual_seed(seed)
    tables = EmbeddingCollection({slot: SlotConfig(dim=16) for slot in plan.slots})
    trainer = Trainer(
        build_model(ModelConfig(kind="deepfm", hidden=[64, 32], n_dense=plan.n_dense), tables),
        TrainConfig(batch_size=256, epochs=1, dense_lr=0.003),
    )
    trainer.train(ExampleBatch.from_examples(examples, plan.slots, plan.n_dense))
    path = folder / "deepfm.snapshot"
    save_trainer(path, trainer)
    return ServingModel.from_snapshot(path)


def build_world(scale: Scale, folder: Path, seed: int = 0, progress: Callable[[str], None] = lambda s: None) -> Bench:
    """Stores filled with generated history, a DeepFM, and the users whose retrieval fills every quota."""
    from streamrec.log import open_log
    from streamrec.profiles import ProfileClient
    from streamrec.serving.recommender import Recommender, RecommenderConfig
    from streamrec.serving.retrieval import RetrievalConfig, Retriever
    from streamrec.serving.slots import serving_profiles_config

    started = time.perf_counter()
    progress("generating history")
    events = generate_events(scale, NOW, seed)
    cfg = serving_profiles_config({"merge_interval": 0, "fsync": False})
    client = ProfileClient.embedded(cfg, str(folder / "profiles"), clock=lambda: NOW, background=False)
    progress(f"writing {len(events):,} events to the profile store")
    for lo in range(0, len(events), 5000):
        result = client.write(events[lo : lo + 5000])
        if result.rejected:
            raise RuntimeError(f"the profile store rejected generated events: {result.rejected[:3]}")
    client.flush()
    plan = bench_plan()
    retrieval = RetrievalConfig(quotas=dict(QUOTAS), popular_window="7d")
    retriever = Retriever(client, retrieval)
    # Request users: the most active ones whose retrieval fills every quota (500 candidates).
    progress("choosing request users")
    counts: dict[str, int] = {}
    for e in events:
        counts[e.user] = counts.get(e.user, 0) + 1
    ranked = sorted(counts, key=lambda u: (-counts[u], u))[: max(4 * scale.requests, 100)]
    total = sum(QUOTAS.values())
    users = [u for u in ranked if len(retriever.retrieve(u, NOW)) == total]
    if not users:
        raise RuntimeError(f"no user's retrieval yields {total} candidates; grow Scale.events or Scale.items")
    progress("training the DeepFM")
    model = _train_model(client, plan, retriever, users[: scale.train_users], folder, seed)
    log = open_log(f"sqlite://{folder.resolve()}/log.db")
    # The history in the log as well: `serve --workers N` builds each worker's profile replica from it.
    progress("writing the history to the log's actions topic")
    for lo in range(0, len(events), 5000):
        log.append("actions", events[lo : lo + 5000], key="user")
    rcfg = RecommenderConfig(features=plan, retrieval=retrieval, sample_rate=0.1)
    ids = iter(range(1 << 62))
    recommender = Recommender(
        client, log, model, rcfg, write_profiles=False, clock=lambda: NOW, request_ids=lambda: f"bench-{next(ids)}"
    )
    return Bench(
        folder, client, log, plan, recommender, users, len(users), len(ranked), len(events),
        time.perf_counter() - started,
    )  # fmt: skip


def _same(a: Any, b: Any) -> bool:
    return bool(np.array_equal(a.dense, b.dense)) and a.sparse == b.sparse and a.categories == b.categories


# --------------------------------------------------------------------------- measuring


def _summary(xs: Sequence[float]) -> dict[str, float]:
    """p50, p99 and mean of latencies in seconds, in milliseconds."""
    p = percentiles(xs, (50, 99))
    return {"p50_ms": 1000.0 * p["p50"], "p99_ms": 1000.0 * p["p99"], "mean_ms": 1000.0 * statistics.fmean(xs)}


class _GcWatch:
    """Counts the garbage collector's full (generation 2) collections and their pauses while active."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self.collections = 0
        self._t0 = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.collections += 1
            self.pauses.append(time.perf_counter() - self._t0)

    def __enter__(self) -> _GcWatch:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)

    def summary(self, requests: int, seconds: float) -> dict[str, float]:
        total = sum(self.pauses)
        return {
            "full_collections": self.collections,
            "per_100_requests": 100.0 * self.collections / max(requests, 1),
            "pause_ms_total": 1000.0 * total,
            "pause_ms_max": 1000.0 * max(self.pauses, default=0.0),
            "share_of_time": total / seconds if seconds > 0 else 0.0,
        }


def _sequential(rec: Any, users: Sequence[str], k: int) -> tuple[list[float], dict[str, list[float]], list[int]]:
    """Wall time, stage times and candidate count of each request, one at a time."""
    totals: list[float] = []
    stages: dict[str, list[float]] = {}
    candidates: list[int] = []
    for u in users:
        t0 = time.perf_counter()
        out = rec.recommend(u, k, NOW)
        totals.append(time.perf_counter() - t0)
        candidates.append(out.n_candidates)
        for stage, sec in out.timings.items():
            stages.setdefault(stage, []).append(sec)
    return totals, stages, candidates


def _concurrent(call: Callable[[int], Any], n: int, threads: int) -> float:
    """Requests per second with ``threads`` callers sharing ``n`` requests."""
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(call, range(n)))
    return rate(n, time.perf_counter() - started)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Server:
    """The real app under uvicorn in a daemon thread of this process."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = _free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="bench-uvicorn", daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        deadline = time.monotonic() + 30.0
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10.0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def measure(scale: Scale, seed: int = 0, progress: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Build the world, then time in process, over HTTP, and the feature-stage baselines."""
    import httpx
    import torch

    from streamrec.serving.api import create_app

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="streamrec-bench-serving-") as tmp:
        bench = build_world(scale, Path(tmp), seed, progress)
        try:
            return _measure(bench, scale, seed, progress, httpx, create_app)
        finally:
            bench.close()


def _measure(bench: Bench, scale: Scale, seed: int, progress: Callable[[str], None], httpx: Any, create_app: Any):
    rec, plan = bench.recommender, bench.plan
    rng = np.random.default_rng(seed + 1)
    users = bench.users
    draw = [users[i] for i in rng.integers(0, len(users), size=max(scale.requests, scale.http_requests))]
    k = 10

    progress("in process: warm-up")
    for u in draw[: scale.warmup]:
        rec.recommend(u, k, NOW)
    # As `streamrec serve` does once everything is built: what is alive now is moved out of the
    # collector's view; the collector keeps running on what requests leave behind.
    gc.collect()
    gc.freeze()
    try:
        progress(f"in process: {scale.requests} requests")
        with _GcWatch() as watch:
            totals, stages, candidates = _sequential(rec, draw[: scale.requests], k)
        gc_stats = watch.summary(len(totals), sum(totals))
        progress(f"in process: {scale.threads} threads")
        qps_threads = _concurrent(lambda i: rec.recommend(draw[i], k, NOW), scale.requests, scale.threads)
        http_totals, http_candidates, http_qps_threads = _http_one_process(
            rec, draw, scale, k, progress, httpx, create_app
        )
        workers = _workers(bench, draw, scale, k, progress)
        progress("baselines: the feature stage side by side")
        base = _baselines(bench, draw[: scale.baseline_requests])
        progress("baselines: precomputed features in Redis")
        base.update(_redis_baseline(bench, draw[: scale.baseline_requests]))
    finally:
        gc.unfreeze()
    # The same requests with the whole heap in the collector's view (no gc.freeze): every full
    # collection walks torch, numba, the model and the profiles.
    progress(f"in process, heap not frozen: {scale.requests} requests")
    with _GcWatch() as watch:
        unfrozen, _, _ = _sequential(rec, draw[: scale.requests], k)
    gc_unfrozen = watch.summary(len(unfrozen), sum(unfrozen))
    in_process = {**_summary(totals), "qps": rate(len(totals), sum(totals)), "qps_threads": qps_threads}
    in_unfrozen = {**_summary(unfrozen), "qps": rate(len(unfrozen), sum(unfrozen))}
    http_qps = rate(len(http_totals), sum(http_totals))
    http_lat = {**_summary(http_totals), "qps": http_qps, "qps_threads": http_qps_threads}
    ratios = {
        "p99_vs_p50": time_ratio(in_process["p99_ms"], baseline_seconds=in_process["p50_ms"]),
        "p99_vs_p50_heap_not_frozen": time_ratio(in_unfrozen["p99_ms"], baseline_seconds=in_unfrozen["p50_ms"]),
        "features_vs_precomputed_redis": base.pop("features_vs_precomputed_redis"),
        "features_uncached_vs_precomputed_redis": base.pop("features_uncached_vs_precomputed_redis"),
        "features_vs_per_entity": base.pop("features_vs_per_entity"),
        "one_query_vs_two_queries": base.pop("one_query_vs_two_queries"),
        "retrieve_excluding_vs_plain": base.pop("retrieve_excluding_vs_plain"),
        "http_vs_in_process_p50": time_ratio(http_lat["p50_ms"], baseline_seconds=in_process["p50_ms"]),
        "in_process_qps_vs_http": rate_ratio(in_process["qps"], baseline_rate=http_lat["qps"]),
        "http_qps_vs_in_process_one_thread": workers["ratio"],
        # The same workers' QPS against the in-process QPS of the first phase (200 requests in a
        # row, the item cache at its busiest): not side by side, but never in the workers' favour
        # when the alternating blocks caught the in-process side in a slow stretch.
        "http_qps_vs_in_process_first_phase": rate_ratio(workers["qps"], baseline_rate=in_process["qps"]),
    }
    return {
        "config": {
            "candidates": int(median(candidates)),
            "candidates_min": int(min(candidates)),
            "http_candidates_min": int(min(http_candidates)),
            "quotas": dict(QUOTAS),
            "features": plan.n_dense + len(plan.sparse),
            "dense": plan.n_dense,
            "sparse": len(plan.sparse),
            "profile_features": len(plan._query_features()),
            "windows": list(WINDOWS),
            "model": "deepfm dim 16, hidden 64-32",
            "threads": scale.threads,
            "requests": scale.requests,
            "http_requests": scale.http_requests,
            "users": scale.users,
            "items": scale.items,
            "events": bench.events,
            "request_users": f"{bench.qualified} of the {bench.checked} most active fill every quota",
            "seed": seed,
            "setup_s": bench.setup_s,
        },
        "stages": {stage: _summary(xs) for stage, xs in stages.items()},
        "latency": {"in_process": in_process, "http": http_lat, "in_process_heap_not_frozen": in_unfrozen},
        "gc": {"in_process": gc_stats, "in_process_heap_not_frozen": gc_unfrozen},
        "item_cache": rec.item_cache.stats() if rec.item_cache is not None else None,
        "workers": workers,
        "ratios": ratios,
        "baselines": base,
    }


def _http_one_process(rec, draw, scale, k, progress, httpx, create_app):  # type: ignore[no-untyped-def]
    """The app under uvicorn in a thread of this process: one caller at a time, then ``threads``."""
    progress("HTTP: starting uvicorn")
    http_totals: list[float] = []
    http_candidates: list[int] = []
    with _Server(create_app(rec)) as server, httpx.Client(base_url=server.url, timeout=60.0) as http:

        def get(user: str, session: Any = http) -> dict[str, Any]:
            r = session.get("/v1/recommendations", params={"user_id": user, "k": k, "now": NOW})
            r.raise_for_status()
            return r.json()

        for u in draw[: scale.warmup]:
            get(u)
        progress(f"HTTP: {scale.http_requests} requests")
        for u in draw[: scale.http_requests]:
            t0 = time.perf_counter()
            body = get(u)
            http_totals.append(time.perf_counter() - t0)
            http_candidates.append(body["candidates"])
        progress(f"HTTP: {scale.threads} threads")
        local = threading.local()

        def call(i: int) -> Any:
            if not hasattr(local, "client"):
                local.client = httpx.Client(base_url=server.url, timeout=60.0)
            return get(draw[i], local.client)

        http_qps_threads = _concurrent(call, scale.http_requests, scale.threads)
    return http_totals, http_candidates, http_qps_threads


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def serve_config(bench: Bench) -> str:
    """The bench's ``[profiles]`` and ``[serving]`` as TOML for ``streamrec serve --config``.

    The store's clock is the event clock (the history ends at ``NOW``, years before the wall clock).
    """
    import msgspec

    rcfg = bench.recommender.config
    lines = ["[profiles]", 'clock = "event"', "", "[serving]", f"sample_rate = {rcfg.sample_rate!r}"]
    lines += [f"item_cache_ms = {rcfg.item_cache_ms!r}", "", "[serving.retrieval]"]
    retrieval = msgspec.to_builtins(rcfg.retrieval)
    lines += [f"{k} = {_toml_value(v)}" for k, v in retrieval.items() if not isinstance(v, dict) and v is not None]
    lines += ["", "[serving.retrieval.quotas]", *(f"{k} = {v}" for k, v in rcfg.retrieval.quotas.items())]
    plan = msgspec.to_builtins(bench.plan)
    lines += ["", "[serving.features]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in plan.items() if not isinstance(v, list)]
    for part in ("sparse", "dense"):
        for entry in plan[part]:
            lines += ["", f"[[serving.features.{part}]]"]
            lines += [f"{k} = {_toml_value(v)}" for k, v in entry.items() if v is not None]
    return "\n".join(lines) + "\n"


async def _load(port: int, paths: list[str], connections: int) -> list[bytes]:
    """Send ``paths`` as GET requests over ``connections`` keep-alive HTTP/1.1 connections; the bodies.

    A few lines of asyncio streams rather than an HTTP client library, so the load generator (in
    this process, on the same cores) costs little next to the servers it measures.
    """
    import asyncio

    todo = iter(enumerate(paths))
    bodies: list[bytes] = [b""] * len(paths)

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i, path in todo:
                writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
                head = await reader.readuntil(b"\r\n\r\n")
                status = head.split(b" ", 2)[1]
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                bodies[i] = await reader.readexactly(length)
                if status != b"200":
                    raise RuntimeError(f"GET {path}: HTTP {status.decode()}: {bodies[i][:200]!r}")
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    return bodies


def _workers(bench: Bench, draw: Sequence[str], scale: Scale, k: int, progress: Callable[[str], None]) -> dict:
    """``streamrec serve --workers N`` (a real child process) over the bench's world: requests per second.

    The workers build their profile replicas from the log's ``actions`` and load the same snapshot;
    a few of their answers are checked equal to this process's before timing.
    """
    import asyncio
    import os
    import subprocess
    import sys
    from urllib.parse import urlencode

    cores = os.cpu_count() or 1
    n = scale.workers or cores
    folder = bench.folder
    (folder / "serve.toml").write_text(serve_config(bench))
    port = _free_port()
    argv = [
        sys.executable, "-m", "streamrec", "serve", "--workers", str(n), "--port", str(port),
        "--log", f"sqlite://{folder.resolve()}/log.db", "--profiles", str(folder / "serve-profiles"),
        "--snapshot", str(folder / "deepfm.snapshot"), "--config", str(folder / "serve.toml"),
    ]  # fmt: skip
    progress(f"serve --workers {n}: starting (each worker replays the history into its replica)")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    try:
        for line in proc.stderr:  # type: ignore[union-attr]
            lines.append(line.rstrip())
            if "workers ready" in line:
                break
        else:
            raise RuntimeError(f"serve --workers {n} exited ({proc.wait()}): {lines[-5:]}")
        threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()  # type: ignore[union-attr]
        path = lambda u: "/v1/recommendations?" + urlencode({"user_id": u, "k": k, "now": NOW})  # noqa: E731
        check = list(dict.fromkeys(draw))[:4]
        bodies = asyncio.run(_load(port, [path(u) for u in check], 1))
        for u, body in zip(check, bodies, strict=True):
            got = [(x["item"], round(x["score"], 4)) for x in json.loads(body)["items"]]
            want = [(i, round(s, 4)) for i, s, _ in bench.recommender.recommend(u, k, NOW).items]
            if got != want:
                raise RuntimeError(f"serve --workers answers user {u!r} with {got[:3]}..., this process {want[:3]}...")
        conns = scale.worker_connections
        paths = [path(draw[i % len(draw)]) for i in range(scale.worker_requests)]
        progress(f"serve --workers {n}: warm-up")
        asyncio.run(_load(port, paths[: 10 * conns], conns))
        # Alternating blocks, so both sides share whatever else the machine runs meanwhile.
        one: list[float] = []
        many: list[float] = []
        stages: dict[str, list[float]] = {}
        block = max(len(paths) // 3, 1)
        sequential = max(scale.requests // 2, 1)
        for rep in range(3):
            progress(f"serve --workers {n}: block {rep + 1} of 3 ({block} requests over {conns} connections)")
            for u in draw[-30:]:  # untimed: the item cache back to its steady state after the pause
                bench.recommender.recommend(u, k, NOW)
            t0 = time.perf_counter()
            for u in draw[:sequential]:
                for stage, sec in bench.recommender.recommend(u, k, NOW).timings.items():
                    stages.setdefault(stage, []).append(sec)
            one.append(rate(sequential, time.perf_counter() - t0))
            t0 = time.perf_counter()
            asyncio.run(_load(port, paths[rep * block : (rep + 1) * block], conns))
            many.append(rate(block, time.perf_counter() - t0))
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return {
        "workers": n,
        "cores": cores,
        "clients": conns,
        "requests": 3 * block,
        "qps": median(many),
        "in_process_one_thread_qps": median(one),
        "in_process_stages_p50_ms": {stage: 1000.0 * median(xs) for stage, xs in stages.items()},
        "ratio": paired_rate_ratio(many, baseline_rates=one),
        "note": f"this machine has {cores} cores; the load generator and other work share them with the workers",
    }


def _redis_baseline(bench: Bench, users: Sequence[str]) -> dict[str, Any]:
    """The feature stage against reading the same features precomputed in Redis hashes (Feast-style).

    Before timing, every request's user and candidates get their hashes
    (:class:`~streamrec.serving.baselines.PrecomputedRedisFeatures`, which says what is stored and
    read). Timed: one pipelined round trip of ``HMGET`` (the user's 57 fields, each candidate's 43)
    and the decoding into a float64 item matrix, the categories and the user's answers.
    Contenders, in rotating order on the same (user, candidates): the
    feature stage as served (``plan.fetch`` with the recommender's item cache, warm from the
    measured requests) and without the cache. The categories read back are checked equal to the
    served ones.
    """
    import redis

    from streamrec.redis_server import RedisServer

    plan, client, retriever = bench.plan, bench.client, bench.recommender.retriever
    cache = bench.recommender.item_cache
    requests = [(u, retriever.retrieve(u, NOW).items) for u in users]
    with RedisServer() as server:
        r = redis.Redis.from_url(server.url)
        precomputed = PrecomputedRedisFeatures(r, plan)
        precomputed.load(client, requests, NOW)
        unames, inames = precomputed.unames, precomputed.inames

        ways: dict[str, Callable[[str, list[str]], Any]] = {
            "features": lambda u, items: plan.fetch(client, u, items, NOW, cache),
            "uncached": lambda u, items: plan.fetch(client, u, items, NOW),
            "redis": precomputed.read,
        }
        times: dict[str, list[float]] = {name: [] for name in ways}
        for rep in range(3):  # each request three times: the cache stays warm as when serving
            for n, (u, items) in enumerate(requests):
                names = list(ways)
                names = names[(n + rep) % 3 :] + names[: (n + rep) % 3]
                got = {}
                for name in names:
                    t0 = time.perf_counter()
                    got[name] = ways[name](u, items)
                    times[name].append(time.perf_counter() - t0)
                if got["redis"][1] != got["features"].categories:
                    raise RuntimeError(f"the categories read from Redis differ from the served ones for user {u!r}")
        r.close()
    return {
        "features_vs_precomputed_redis": paired_time_ratio(times["features"], baseline_seconds=times["redis"]),
        "features_uncached_vs_precomputed_redis": paired_time_ratio(times["uncached"], baseline_seconds=times["redis"]),
        "features_cached_ms": 1000.0 * median(times["features"]),
        "features_uncached_ms": 1000.0 * median(times["uncached"]),
        "precomputed_redis_ms": 1000.0 * median(times["redis"]),
        "redis_fields_per_request": len(unames) + len(inames) * int(median([len(i) for _, i in requests])),
    }


def _baselines(bench: Bench, users: Sequence[str]) -> dict[str, Any]:
    """The feature stage against one query per entity and against two entity-typed queries.

    Each repetition runs the three on the same (user, candidates), in rotating order; the ratios
    are medians of per-repetition ratios. The three FeatureSets are checked equal first.
    """
    plan, client, retriever = bench.plan, bench.client, bench.recommender.retriever
    ways: dict[str, Callable[[str, list[str]], Any]] = {
        "features": lambda u, items: plan.fetch(client, u, items, NOW),
        "two_queries": lambda u, items: fetch_split(plan, client, u, items, NOW, per_entity=False),
        "per_entity": lambda u, items: fetch_split(plan, client, u, items, NOW, per_entity=True),
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    for r, u in enumerate(users):
        items = retriever.retrieve(u, NOW).items
        answers = {}
        names = list(ways)
        names = names[r % 3 :] + names[: r % 3]
        for name in names:
            t0 = time.perf_counter()
            answers[name] = ways[name](u, items)
            times[name].append(time.perf_counter() - t0)
        if not (
            _same(answers["features"], answers["two_queries"]) and _same(answers["features"], answers["per_entity"])
        ):
            raise RuntimeError(f"the baselines' features differ from the plan's for user {u!r}")
    return {
        **_exclusion(bench, users),
        "features_vs_per_entity": paired_speedup(times["features"], baseline_seconds=times["per_entity"]),
        "one_query_vs_two_queries": paired_time_ratio(times["features"], baseline_seconds=times["two_queries"]),
        "features_ms": 1000.0 * median(times["features"]),
        "two_queries_ms": 1000.0 * median(times["two_queries"]),
        "per_entity_ms": 1000.0 * median(times["per_entity"]),
        "repetitions": len(users),
    }


def _exclusion(bench: Bench, users: Sequence[str]) -> dict[str, Any]:
    """Retrieval that drops the items the user clicked in 7 days against the same retrieval without.

    Alternating per request; the cost is the extra top-k in the first query and the deeper lists
    the sources return. Checked on every request: no excluded item is a candidate; requests whose
    quotas no longer fill (too few unclicked items) are counted.
    """
    import msgspec

    from streamrec.profiles.types import Feature, FeatureQuery
    from streamrec.serving.retrieval import Retriever

    plain = bench.recommender.retriever
    config = msgspec.structs.replace(plain.config, exclude_clicked_window="7d")
    excluding = Retriever(bench.client, config)
    clicked = Feature(slot="clicked_item", window="7d", counters=("click",), top_k=config.exclude_clicked_max)
    times: dict[str, list[float]] = {"plain": [], "excluding": []}
    excluded_total = unfilled = 0
    for r, u in enumerate(users):
        row = bench.client.query(FeatureQuery(features=[clicked], entities=[f"user:{u}"], now=NOW)).results[0]
        excluded = {v for v, d in zip(row[0].values or [], row[0].data, strict=False) if d[0] > 0}
        for name in ("plain", "excluding") if r % 2 == 0 else ("excluding", "plain"):
            t0 = time.perf_counter()
            got = (plain if name == "plain" else excluding).retrieve(u, NOW)
            times[name].append(time.perf_counter() - t0)
            if name == "excluding":
                if excluded & set(got.items):
                    raise RuntimeError(f"retrieval with exclusion returned an item user {u!r} clicked")
                unfilled += len(got) < config.total
        excluded_total += len(excluded)
    return {
        "retrieve_excluding_vs_plain": paired_time_ratio(times["excluding"], baseline_seconds=times["plain"]),
        "retrieve_plain_ms": 1000.0 * median(times["plain"]),
        "retrieve_excluding_ms": 1000.0 * median(times["excluding"]),
        "excluded_per_user": excluded_total / max(len(users), 1),
        "excluding_unfilled_requests": unfilled,
    }


# --------------------------------------------------------------------------- report


def run_benchmark(
    as_json: bool = False, quick: bool = False, seed: int = 0, threads: int | None = None, workers: int = 0
) -> dict:
    """Measure, then print a table and a summary (or one JSON object with ``--json``)."""
    from rich.console import Console
    from rich.table import Table

    scale = QUICK if quick else Scale()
    if threads is not None:
        scale = Scale(**{**scale.__dict__, "threads": threads})
    if workers:
        scale = Scale(**{**scale.__dict__, "workers": workers})
    console = Console(stderr=True)
    with console.status("benchmarking") as status:
        out = measure(scale, seed, progress=lambda s: status.update(f"benchmarking: {s}"))
    if as_json:
        print(json.dumps(out))
        return out
    c = out["config"]
    table = Table(title=f"streamrec bench serving: {c['candidates']} candidates, {c['features']} features")
    for col in ("measure", "p50 ms", "p99 ms", "mean ms", "QPS (1)", f"QPS ({c['threads']} threads)"):
        table.add_column(col, justify="left" if col == "measure" else "right")
    for stage, s in out["stages"].items():
        table.add_row(f"  stage: {stage}", f"{s['p50_ms']:.1f}", f"{s['p99_ms']:.1f}", f"{s['mean_ms']:.1f}", "", "")
    for name, s in out["latency"].items():
        table.add_row(
            name.replace("_", " "), f"{s['p50_ms']:.1f}", f"{s['p99_ms']:.1f}", f"{s['mean_ms']:.1f}",
            f"{s['qps']:.1f}", f"{s['qps_threads']:.1f}" if "qps_threads" in s else "",
        )  # fmt: skip
    Console().print(table)
    b = out["baselines"]
    ratios = Table(title="side by side (same process, same requests)")
    ratios.add_column("ratio")
    ratios.add_column("value", justify="right")
    ratios.add_column("what", justify="left")
    r = out["ratios"]
    ratios.add_row(
        "features_vs_per_entity", f"{r['features_vs_per_entity']:.1f}x",
        f"one query per entity {b['per_entity_ms']:.0f} ms / plan.fetch {b['features_ms']:.0f} ms",
    )  # fmt: skip
    ratios.add_row(
        "one_query_vs_two_queries", f"{r['one_query_vs_two_queries']:.2f}x",
        f"plan.fetch {b['features_ms']:.0f} ms / user + items queries {b['two_queries_ms']:.0f} ms (was 2.7x)",
    )  # fmt: skip
    ratios.add_row(
        "retrieve_excluding_vs_plain", f"{r['retrieve_excluding_vs_plain']:.2f}x",
        f"retrieval without the user's clicked items (7d, {b['excluded_per_user']:.0f} per user) "
        f"{b['retrieve_excluding_ms']:.1f} ms / plain {b['retrieve_plain_ms']:.1f} ms",
    )  # fmt: skip
    ratios.add_row("http_vs_in_process_p50", f"{r['http_vs_in_process_p50']:.2f}x", "HTTP p50 / in-process p50")
    ratios.add_row("in_process_qps_vs_http", f"{r['in_process_qps_vs_http']:.2f}x", "one caller at a time")
    lat = out["latency"]
    ratios.add_row(
        "p99_vs_p50", f"{r['p99_vs_p50']:.2f}x",
        f"in process, collector running, heap frozen at start as `serve` does: p99 {lat['in_process']['p99_ms']:.1f} ms"
        f" / p50 {lat['in_process']['p50_ms']:.1f} ms (goal <= 3)",
    )  # fmt: skip
    ratios.add_row(
        "p99_vs_p50_heap_not_frozen", f"{r['p99_vs_p50_heap_not_frozen']:.2f}x",
        f"the same without gc.freeze(): p99 {lat['in_process_heap_not_frozen']['p99_ms']:.1f} ms"
        f" / p50 {lat['in_process_heap_not_frozen']['p50_ms']:.1f} ms",
    )  # fmt: skip
    ratios.add_row(
        "features_vs_precomputed_redis", f"{r['features_vs_precomputed_redis']:.2f}x",
        f"feature stage as served {b['features_cached_ms']:.2f} ms / the same features precomputed in Redis hashes, "
        f"one pipelined HMGET round trip {b['precomputed_redis_ms']:.2f} ms (goal <= 1)",
    )  # fmt: skip
    ratios.add_row(
        "features_uncached_vs_precomputed_redis", f"{r['features_uncached_vs_precomputed_redis']:.2f}x",
        f"without the item cache {b['features_uncached_ms']:.2f} ms / Redis",
    )  # fmt: skip
    if "http_qps_vs_in_process_one_thread" in r:
        w = out["workers"]
        ratios.add_row(
            "http_qps_vs_in_process_one_thread", f"{r['http_qps_vs_in_process_one_thread']:.2f}x",
            f"`serve --workers {w['workers']}` ({w['clients']} keep-alive clients) {w['qps']:.0f} req/s"
            f" / in process, one thread {w['in_process_one_thread_qps']:.0f} req/s, alternating blocks;"
            f" this machine has {w['cores']} cores (goal >= 1.5)",
        )  # fmt: skip
        ratios.add_row(
            "http_qps_vs_in_process_first_phase", f"{r['http_qps_vs_in_process_first_phase']:.2f}x",
            f"the same {w['qps']:.0f} req/s / the first phase's one thread {lat['in_process']['qps']:.0f} req/s",
        )  # fmt: skip
    Console().print(ratios)
    stage_sum = sum(s["mean_ms"] for s in out["stages"].values())
    Console().print(
        f"{c['events']:,} events of {c['users']:,} users on {c['items']:,} items; {c['request_users']}; "
        f"{c['dense']} dense + {c['sparse']} sparse features ({c['profile_features']} profile features per query); "
        f"stages sum to {stage_sum:.1f} ms of the {out['latency']['in_process']['mean_ms']:.1f} ms mean; "
        f"setup {c['setup_s']:.0f} s."
    )
    cache = out["item_cache"]
    if cache is not None:
        Console().print(
            f"item cache: item features at most {cache['max_age_ms']:.0f} ms old; {100 * cache['hit_rate']:.0f} % hits"
            f" ({cache['hits']:,} of {cache['hits'] + cache['misses']:,} item lookups), {cache['entries']:,} items held"
        )
    g = out["gc"]["in_process"]
    Console().print(
        f"garbage collector, in process: {g['full_collections']} full collections in {c['requests']} requests, "
        f"{g['pause_ms_total']:.0f} ms ({100 * g['share_of_time']:.0f} % of the time), "
        f"longest {g['pause_ms_max']:.0f} ms"
    )
    return out
