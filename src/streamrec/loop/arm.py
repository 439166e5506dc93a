"""One arm of the demo: a simulated world, its own profile store, log and recommender.

Why each arm owns everything: the three arms (online, frozen, popularity) must not see each
other's traffic, so each has its own :class:`~streamrec.sim.World` (same seed and config: the same
users arrive at the same times), its own embedded profile store, its own SQLite log and, for the
online arm, its own joiner, online trainer and serving model. Nothing runs in a thread: :meth:`Arm.step`
advances one simulated step (serve the step's requests, record the events) and then the online
machinery by calling each part's ``step`` (joiner → trainer → syncs due in simulated time → the
serving model applies the updates it has not seen). So a run is a pure function of the seed, and
sync intervals are simulated seconds (wall-clock intervals would make the result depend on the
machine's speed).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamrec.joiner import JoinConfig, Joiner
from streamrec.log import open_log
from streamrec.profiles import ProfileClient
from streamrec.records import ActionEvent
from streamrec.serving import Recommender, RecommenderConfig, RetrievalConfig, default_plan, serving_profiles_config
from streamrec.sim import Bucket, InProcessDriver, World
from streamrec.sim.protocol import Slate, SlateItem

__all__ = ["Arm", "ArmServer", "open_stores"]


class ArmServer:
    """What the driver talks to: the recommender, with served scores kept for the online AUC."""

    def __init__(self, recommender: Recommender, keep_scores: bool = False) -> None:
        self.recommender = recommender
        self.keep_scores = keep_scores
        self.scores: dict[tuple[str, str], float] = {}

    def recommend(self, user: str, k: int, now: float) -> Slate:
        rec = self.recommender.recommend(user, k, now)
        if self.keep_scores:
            for item, score, _ in rec.items:
                self.scores[(rec.request_id, item)] = score
        return Slate([SlateItem(i, s, src) for i, s, src in rec.items], rec.request_id)

    def record(self, events: list[ActionEvent]) -> None:
        self.recommender.record(events)


def seeded_request_ids(prefix: str):
    """Request ids ``<prefix>-00000001``, ... : deterministic, so the joiner's negative sampling (a
    hash of the request id) and every count downstream repeat exactly for the same seed."""
    counter = itertools.count(1)
    return lambda: f"{prefix}-{next(counter):08d}"


def open_stores(folder: Path, world: World) -> tuple[ProfileClient, Any]:
    """An embedded profile store (clock = the world's simulated clock, merged on every write) and a log."""
    cfg = serving_profiles_config({"merge_interval": 0, "fsync": False})
    client = ProfileClient.embedded(cfg, str(folder / "profiles"), clock=lambda: world.now, background=False)
    log = open_log(f"sqlite://{Path(folder).resolve()}/log.db")  # absolute: --out may be relative
    return client, log


def recommender_config(sample_rate: float = 1.0, ann: bool = False) -> RecommenderConfig:
    """The demo's serving config: the default plan over 5 min and 1 day, 100 candidates from three
    sources (four with ``ann``: the retrieval model's nearest items).

    Smaller than the serving defaults because feature fetch dominates a request's cost and three
    arms share two cores; the short window is what lets even a frozen model see a trend.

    No item cache (``item_cache_ms=0``): its bound is wall-clock time, and the loop steps a
    simulated clock far faster than the wall one, so the arms answer every request exactly as of
    its simulated instant. (With the cache, answers a few hundred wall milliseconds old changed
    seed 3's last-third CTRs from 3.72 / 2.75 / 2.25 % to 3.53 / 3.67 / 2.75 %: the arms' order on
    this small world turns on a few dozen clicks.)
    """
    quotas = (
        {"co_engaged": 40, "ann": 40, "popular": 40, "fresh": 20}
        if ann
        else {"co_engaged": 40, "popular": 40, "fresh": 20}
    )
    retrieval = RetrievalConfig(quotas=quotas)
    return RecommenderConfig(
        features=default_plan(("5m", "1d")), retrieval=retrieval, sample_rate=sample_rate, item_cache_ms=0.0
    )


@dataclass
class Arm:
    """A world and the loop serving it; ``model`` is ``None`` for the popularity arm."""

    name: str
    world: World
    client: ProfileClient
    log: Any
    server: ArmServer
    driver: InProcessDriver
    model: Any = None
    joiner: Joiner | None = None
    trainer: Any = None
    updates: Any = None  # the serving model's consumer of model-updates
    retrieval: Any = None  # the retrieval model's serving replica (feeds the ann source)
    retrieval_trainer: Any = None  # its online trainer (in-batch softmax on the examples' positives)
    retrieval_updates: Any = None  # the replica's consumer of retrieval-updates
    auc_reader: Any = None  # consumer of examples for the progressive AUC
    buckets: list[Bucket] = field(default_factory=list)
    events: int = 0

    def serve_step(self, dt: float) -> Bucket:
        """Serve one simulated step of traffic; returns its counts."""
        counts = self.driver.step(dt, on_events=self._count)
        self.buckets.append(counts)
        return counts

    def _count(self, events: list[ActionEvent]) -> None:
        self.events += len(events)

    def close(self) -> None:
        for part in (self.retrieval_updates, self.retrieval_trainer, self.updates, self.trainer, self.joiner):
            if part is not None:
                part.close()
        self.log.close()
        self.client.close()


def make_arm(
    name: str, world: World, folder: Path, model: Any, *, k: int, step_s: float, sample_rate: float,
    retrieval: Any = None,
) -> Arm:  # fmt: skip
    """An arm over an existing folder of stores (copied from the warm-up); ``retrieval`` (a two-tower
    serving model) adds the ann source, its index rebuilt whenever the replica's version moves (no
    wall-clock refresh and no thread, so a run stays a function of the seed)."""
    client, log = open_stores(folder, world)
    config = recommender_config(sample_rate, ann=retrieval is not None)
    extra = None
    if retrieval is not None:
        from streamrec.serving.ann import AnnSource

        ann = AnnSource(client, retrieval, config.features, refresh_s=1e12, min_interval_s=0.0, background=False)
        extra = {"ann": ann}
    recommender = Recommender(
        client, log, model, config, clock=lambda: world.now, request_ids=seeded_request_ids(name), extra_sources=extra
    )
    server = ArmServer(recommender, keep_scores=model is not None)
    driver = InProcessDriver(world, server, k=k, step_s=step_s, regret=False)
    return Arm(name, world, client, log, server, driver, model, retrieval=retrieval)


def join_config(window_s: float, negative_rate: float) -> JoinConfig:
    return JoinConfig(window_s=window_s, allowed_lateness_s=30.0, negative_rate=negative_rate, sync=False)


def ctr(buckets: list[Bucket]) -> float:
    imps = sum(b.impressions for b in buckets)
    return sum(b.clicks for b in buckets) / imps if imps else 0.0


def auc_or_nan(labels: list[float], scores: list[float]) -> float:
    from streamrec.quality import auc

    y = np.asarray(labels, dtype=np.float64)
    if len(y) == 0 or y.min() == y.max():
        return float("nan")
    return float(auc(y, np.asarray(scores, dtype=np.float64)))
