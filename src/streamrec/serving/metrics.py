"""Prometheus metrics of one serving process, in a registry of its own.

A registry per :class:`ServingMetrics` (not the process-wide default) so that several apps in one
process (tests, the demo's arms) never collide on metric names, and ``/metrics`` shows only this
app's series. Names follow Prometheus conventions: ``_seconds`` histograms, ``_total`` counters.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "STAGES", "ServingMetrics"]

STAGES = ("retrieve", "features", "rank", "log")
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ServingMetrics:
    """Request counts and latencies per route, stage latencies, candidates per source, events."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "streamrec_http_requests", "HTTP requests by route, method and status.",
            ["route", "method", "status"], registry=r,
        )  # fmt: skip
        self.request_seconds = Histogram(
            "streamrec_http_request_seconds", "HTTP request latency by route.", ["route"], buckets=_BUCKETS, registry=r
        )
        self.stage_seconds = Histogram(
            "streamrec_recommend_stage_seconds", "Time of each recommend stage.", ["stage"], buckets=_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.recommend_seconds = Histogram(
            "streamrec_recommend_seconds", "Whole recommend latency (in process).", buckets=_BUCKETS, registry=r
        )
        self.candidates = Counter("streamrec_candidates", "Candidates retrieved, by source.", ["source"], registry=r)
        self.served = Counter("streamrec_served_items", "Items returned, by source.", ["source"], registry=r)
        self.events = Counter("streamrec_events", "Action events by outcome.", ["outcome"], registry=r)
        self.nonfinite_scores = Counter(
            "streamrec_nonfinite_scores", "Candidates the model scored NaN or infinite (answered as null).", registry=r
        )

    def observe_stages(self, timings: dict[str, float]) -> None:
        for stage, seconds in timings.items():
            self.stage_seconds.labels(stage).observe(seconds)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
