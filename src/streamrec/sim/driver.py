"""Drivers: run simulated traffic against a recommender and report CTR per time bucket.

One loop (:class:`Driver`) serves every transport; a subclass only says how to ask for a slate and
how to hand back events (:class:`InProcessDriver` calls Python, :class:`~streamrec.sim.HttpDriver`
speaks the HTTP API). Each step of ``step_s`` simulated seconds:

1. sample the requests of the step (:meth:`World.arrivals`);
2. ask the recommender for each request's slate, at the request's simulated time;
3. sample all users' reactions at once (:meth:`World.respond_many`, vectorized);
4. hand the step's events, sorted by time, to the recommender (one call or one POST per step);
5. advance the world by the step.

Feedback therefore reaches the recommender within one step (10 s by default). Besides sampled
clicks, every bucket adds up the *expected* clicks of what was shown and of the oracle's slate for
the same requests, so CTR can be compared with little noise and regret read off directly.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from streamrec.errors import InvalidInputError
from streamrec.records import ActionEvent
from streamrec.sim.protocol import Recommender, Slate, as_slate
from streamrec.sim.world import World

__all__ = ["Bucket", "Driver", "InProcessDriver", "SimReport"]


@dataclass
class Bucket:
    """Traffic of one time bucket ``[start, end)`` (unix seconds of the simulated clock)."""

    start: float
    end: float
    requests: int = 0
    impressions: int = 0
    clicks: int = 0
    expected_clicks: float = 0.0
    """Sum of true click probabilities (position bias included) of what was shown."""
    oracle_expected_clicks: float = 0.0
    """The same for the oracle's slate of the same requests (0 when the driver ran with ``regret=False``)."""

    @property
    def ctr(self) -> float:
        """Sampled clicks per impression."""
        return self.clicks / self.impressions if self.impressions else 0.0

    @property
    def expected_ctr(self) -> float:
        """Expected clicks per impression: CTR without the sampling noise."""
        return self.expected_clicks / self.impressions if self.impressions else 0.0

    @property
    def oracle_ctr(self) -> float:
        """The oracle's expected CTR on the same requests (same number of impressions)."""
        return self.oracle_expected_clicks / self.impressions if self.impressions else 0.0

    def add(self, other: Bucket) -> None:
        self.requests += other.requests
        self.impressions += other.impressions
        self.clicks += other.clicks
        self.expected_clicks += other.expected_clicks
        self.oracle_expected_clicks += other.oracle_expected_clicks

    def to_dict(self) -> dict[str, float]:
        return {**asdict(self), "ctr": self.ctr, "expected_ctr": self.expected_ctr, "oracle_ctr": self.oracle_ctr}


@dataclass
class SimReport:
    """What :meth:`Driver.run` returns: one :class:`Bucket` per ``bucket_s`` of simulated time."""

    buckets: list[Bucket] = field(default_factory=list)

    def total(self, start: float | None = None, end: float | None = None) -> Bucket:
        """All buckets that start in ``[start, end)`` added up (default: all)."""
        chosen = [b for b in self.buckets if (start is None or b.start >= start) and (end is None or b.start < end)]
        out = Bucket(chosen[0].start if chosen else 0.0, chosen[-1].end if chosen else 0.0)
        for b in chosen:
            out.add(b)
        return out

    def last_fraction(self, fraction: float) -> Bucket:
        """The total of the last ``fraction`` of the run's buckets (e.g. ``1/3`` for the demo's last third)."""
        n = max(1, round(len(self.buckets) * fraction))
        return self.total(start=self.buckets[-n].start) if self.buckets else Bucket(0.0, 0.0)

    def to_dict(self) -> dict[str, object]:
        return {"total": self.total().to_dict(), "buckets": [b.to_dict() for b in self.buckets]}


class Driver:
    """The traffic loop; subclasses implement :meth:`serve` and :meth:`deliver`.

    Parameters
    ----------
    world
        The world the users live in; its clock moves forward as the driver runs.
    k
        Items asked for per request.
    step_s
        Simulated seconds per step (the delay with which events reach the recommender).
    bucket_s
        Simulated seconds per reported bucket.
    impressions
        Send ``action="show"`` events for every item shown (profiles count shows).
    regret
        Also compute the oracle's expected clicks for every request (costs one matrix per step).
    activity_scale
        Multiplies every user's request rate.
    """

    def __init__(
        self,
        world: World,
        *,
        k: int = 10,
        step_s: float = 10.0,
        bucket_s: float = 60.0,
        impressions: bool = True,
        regret: bool = True,
        activity_scale: float = 1.0,
    ) -> None:
        if not isinstance(k, int) or k < 1:
            raise InvalidInputError("k", k, "must be a positive integer")
        if not step_s > 0:
            raise InvalidInputError("step_s", step_s, "must be > 0 seconds")
        if not bucket_s > 0:
            raise InvalidInputError("bucket_s", bucket_s, "must be > 0 seconds")
        self.world = world
        self.k = k
        self.step_s = float(step_s)
        self.bucket_s = float(bucket_s)
        self.impressions = impressions
        self.regret = regret
        self.activity_scale = activity_scale
        self._ids = itertools.count()

    def serve(self, user: str, k: int, now: float) -> Slate:
        """Ask the recommender for one slate."""
        raise NotImplementedError

    def deliver(self, events: list[ActionEvent]) -> None:
        """Hand one step's events (sorted by time) to the recommender."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the driver holds (nothing for the in-process driver)."""

    def run(
        self,
        minutes: float,
        *,
        on_bucket: Callable[[Bucket], None] | None = None,
        on_events: Callable[[list[ActionEvent]], None] | None = None,
    ) -> SimReport:
        """Run ``minutes`` of simulated traffic from the world's current time.

        ``on_bucket`` is called with each finished bucket (live progress); ``on_events`` with each
        step's events (to also append them to a log or keep them).
        """
        if not minutes > 0:
            raise InvalidInputError("minutes", minutes, "must be > 0")
        world = self.world
        start = world.now
        end = start + minutes * 60.0
        report = SimReport()
        bucket = Bucket(start, min(start + self.bucket_s, end))
        while world.now < end - 1e-9:
            dt = min(self.step_s, end - world.now)
            while world.now >= bucket.end - 1e-9:
                self._close(bucket, report, on_bucket)
                bucket = Bucket(bucket.end, min(bucket.end + self.bucket_s, end))
            bucket.add(self.step(dt, on_events))
        self._close(bucket, report, on_bucket)
        return report

    def _close(self, bucket: Bucket, report: SimReport, on_bucket: Callable[[Bucket], None] | None) -> None:
        report.buckets.append(bucket)
        if on_bucket is not None:
            on_bucket(bucket)

    def step(self, dt: float, on_events: Callable[[list[ActionEvent]], None] | None = None) -> Bucket:
        """One step of ``dt`` seconds (see the module docstring); returns its counts."""
        world = self.world
        users, times = world.arrivals(dt, self.activity_scale)
        slates = np.full((len(users), self.k), -1, dtype=np.int64)
        request_ids: list[str] = []
        for r, (u, t) in enumerate(zip(users, times, strict=True)):
            slate = self.serve(world.user_id(u), self.k, float(t))
            request_ids.append(slate.request_id or f"sim-{world.seed}-{next(self._ids)}")
            shown = [world.item_index(s.item) for s in slate.items[: self.k]]
            slates[r, : len(shown)] = shown
        feedback = world.respond_many(users, slates, times, request_ids, impressions=self.impressions)
        if feedback.events:
            self.deliver(feedback.events)
            if on_events is not None:
                on_events(feedback.events)
        counts = Bucket(world.now, world.now + dt, requests=len(users))
        counts.impressions = int(feedback.impressions.sum())
        counts.clicks = int(feedback.clicks.sum())
        counts.expected_clicks = float(feedback.expected_clicks.sum())
        if self.regret and len(users):
            oracle = world.oracle_expected_clicks(users, times, self.k)
            # Normalise to the impressions actually shown, so a short slate is not charged for empty slots.
            full = np.maximum(1, (slates >= 0).sum(axis=1))
            counts.oracle_expected_clicks = float((oracle * full / self.k).sum())
        world.advance(dt)
        return counts


class InProcessDriver(Driver):
    """Drive a :class:`~streamrec.sim.Recommender` in this process (see :class:`Driver` for the options).

    Examples
    --------
    >>> from streamrec.sim import OraclePolicy, PopularityPolicy, World
    >>> def ctr(make_policy):
    ...     world = World(seed=3, n_users=300)
    ...     return InProcessDriver(world, make_policy(world)).run(minutes=20).total().expected_ctr
    >>> ctr(OraclePolicy) > 2 * ctr(PopularityPolicy)
    True
    """

    def __init__(self, world: World, recommender: Recommender, **options: object) -> None:
        super().__init__(world, **options)  # type: ignore[arg-type]
        self.recommender = recommender

    def serve(self, user: str, k: int, now: float) -> Slate:
        return as_slate(self.recommender.recommend(user, k, now))

    def deliver(self, events: Sequence[ActionEvent]) -> None:  # type: ignore[override]
        self.recommender.record(list(events))
