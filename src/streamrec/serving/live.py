"""Live statistics of one serving process: the numbers behind the dashboard at ``/``.

A :class:`LiveStats` keeps a ring of time buckets (1 s wide, the last 10 minutes by default) fed
by :class:`~streamrec.serving.recommender.Recommender`: each request adds its latency and its
``k`` served impressions, each recorded action may mark one of them clicked. ``GET /v1/stats``
reads the ring as columns (``docs/dashboard.md``).

Why it is built this way:

* **buckets are numpy rings indexed by ``bucket id % n``**, so a request costs a few scalar
  updates and a rollover a few slot resets; nothing grows with traffic. A bucket is *closed*
  (percentiles, AUC, model sample written) when the first call after its end arrives, request or
  stats read alike, so an idle server closes its buckets when the dashboard asks;
* **latency percentiles are computed once per bucket** from that bucket's samples with
  ``numpy.percentile`` (a reservoir of ``max_samples`` keeps a busy bucket bounded), not on every
  read;
* **clicks are joined to impressions, not counted on their own**: a served impression waits
  ``click_window_s`` for a positive action (the joiner's ``positive_actions``) carrying its
  ``request_id`` and ``item``; the click is credited to the bucket the impression was *served* in,
  so a bucket's CTR is "of what we showed then, how much was clicked" (recent buckets are
  provisional until their window passes). Clicks without a matching impression are not clicks
  here — the same rule the joiner labels by, so dashboard CTR and training labels agree;
* **online AUC is rolling**: when an impression's window passes it is *finalized* with its served
  score and label into a ring of the last ``auc_last_n``; at each bucket close the AUC of that ring
  (``streamrec.quality.auc``) is the bucket's point. Pending impressions are kept per request
  (one dict entry and two small arrays, not one entry per item), so the hot path stays O(k) with
  no per-item dict work;
* **the model is sampled, not hooked**: at bucket close the collector reads the serving model's
  ``applied`` updates (sync lag) and its tables' row counts and admitted/evicted counters
  (``ServingTable.admitted``/``evicted``); the model thread never calls in here.

One lock guards everything: requests run in FastAPI's thread pool and the work under the lock is
a handful of scalar writes (a bucket close adds one sort of at most ``auc_last_n`` scores).
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamrec.errors import InvalidInputError
from streamrec.joiner.config import DEFAULT_POSITIVE_ACTIONS
from streamrec.quality import auc

__all__ = ["SERIES", "LiveStats"]

# The per-bucket columns of ``LiveStats.snapshot()["series"]`` (besides ``t``).
SERIES = (
    "requests", "qps", "events", "impressions", "clicks", "ctr", "ctr_smooth", "auc", "auc_n",
    "p50_ms", "p99_ms", "sync_lag_s", "updates", "table_rows", "admitted", "evicted",
)  # fmt: skip


@dataclass
class _Served:
    """One request's impressions waiting for clicks."""

    t: float
    bucket: int
    items: tuple[str, ...]
    scores: np.ndarray  # float64 [k]
    clicked: np.ndarray  # bool [k]


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise InvalidInputError(name, value, "must be a finite number > 0")
    return float(value)


class LiveStats:
    """Time-bucketed counters, latency percentiles, CTR and online AUC of a serving process.

    Parameters
    ----------
    bucket_s
        Width of a bucket in seconds.
    horizon_s
        How much history the ring keeps (``horizon_s / bucket_s`` buckets).
    click_window_s
        How long a served impression waits for its click before it is finalized (a negative if
        none came) into the online AUC; clicks later than that are not counted.
    auc_last_n
        The online AUC is over the last this many finalized impressions.
    smooth_buckets
        ``ctr_smooth`` is the CTR over this many trailing buckets.
    positive_actions
        Actions that count as a click (default: the joiner's).
    max_samples
        Latency samples kept per bucket (a uniform reservoir beyond that).
    max_pending
        Requests waiting for clicks at most; the oldest are finalized early beyond that.
    clock
        Wall clock in seconds (tests pass a fake one).
    model
        Returns the serving model to sample (``None``: no model), called at bucket close.

    Examples
    --------
    >>> t = [100.0]
    >>> live = LiveStats(click_window_s=5, clock=lambda: t[0])
    >>> live.observe_request("r1", [("i1", 0.9, "popular"), ("i2", 0.2, "fresh")], 0.004)
    >>> live.observe_request("r2", [("i3", 0.7, "popular"), ("i4", 0.4, "fresh")], 0.006)
    >>> live.observe_actions([{"request_id": "r1", "item": "i1", "action": "click"},
    ...                       {"request_id": "r2", "item": "i4", "action": "click"}])
    2
    >>> t[0] = 106.0  # the click window passed: four impressions finalized
    >>> s = live.snapshot(seconds=10)
    >>> s["totals"]["impressions"], s["totals"]["clicks"], s["totals"]["ctr"]
    (4, 2, 0.5)
    >>> s["auc"]["value"], s["auc"]["n"]  # clicked 0.9, 0.4 vs not 0.2, 0.7: 3 of 4 pairs right
    (0.75, 4)
    >>> s["series"]["requests"][0], s["series"]["p50_ms"][0]
    (2, 5.0)
    """

    def __init__(
        self,
        *,
        bucket_s: float = 1.0,
        horizon_s: float = 600.0,
        click_window_s: float = 30.0,
        auc_last_n: int = 5000,
        smooth_buckets: int = 10,
        positive_actions: Iterable[str] = DEFAULT_POSITIVE_ACTIONS,
        max_samples: int = 2048,
        max_pending: int = 100_000,
        clock: Callable[[], float] = time.time,
        model: Callable[[], Any] | None = None,
    ) -> None:
        self.bucket_s = _positive("bucket_s", bucket_s)
        self.click_window_s = _positive("click_window_s", click_window_s)
        n = int(_positive("horizon_s", horizon_s) / self.bucket_s)
        if n < 2:
            raise InvalidInputError("horizon_s", horizon_s, f"must hold at least 2 buckets of {bucket_s} s")
        for name, value in [("auc_last_n", auc_last_n), ("smooth_buckets", smooth_buckets),
                            ("max_samples", max_samples), ("max_pending", max_pending)]:  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(name, value, "must be an integer >= 1")
        self.n_buckets = n
        self.smooth_buckets = smooth_buckets
        self.positive_actions = frozenset(positive_actions)
        self.max_samples = max_samples
        self.max_pending = max_pending
        self.clock = clock
        self.model = model
        self._lock = threading.Lock()
        self._rng = random.Random(0)
        self._ids = np.full(n, -1, dtype=np.int64)  # which bucket id each slot holds
        counted = ("requests", "events", "impressions", "clicks", "updates", "admitted", "evicted", "auc_n")
        self._counts = {name: np.zeros(n, dtype=np.int64) for name in counted}
        self._floats = {name: np.full(n, np.nan) for name in ("p50_ms", "p99_ms", "auc", "sync_lag_s", "table_rows")}
        self._start = self._bucket(clock())
        self._current = self._start
        self._reset(self._start)
        self._samples: list[float] = []  # latencies (s) of the open bucket
        self._seen = 0  # latencies offered to the open bucket's reservoir
        self._pending: dict[str, _Served] = {}
        self._order: deque[tuple[float, str, _Served]] = deque()  # (served at, request id, entry), oldest first
        self._fin_scores = np.zeros(auc_last_n)
        self._fin_labels = np.zeros(auc_last_n, dtype=bool)
        self._fin_pos = 0
        self._fin_count = 0  # finalized impressions ever
        self._fin_computed = -1  # _fin_count at the last AUC computation
        self._auc = math.nan
        self._totals = {"requests": 0, "impressions": 0, "clicks": 0, "events": 0}
        self._model_seen: dict[str, Any] = {"collection": None, "admitted": 0, "evicted": 0, "last": None}
        self._model_summary: dict[str, Any] | None = None
        self._recent_users: deque[str] = deque(maxlen=64)

    # -- feeding (hot path) -------------------------------------------------------------------
    def observe_request(
        self, request_id: str, items: Sequence[tuple[str, float, str]], latency_s: float, user: str | None = None
    ) -> None:
        """One answered request: its latency and its ``k`` served ``(item, score, source)``; O(k).

        ``user`` joins the few recent users the dashboard offers as examples.
        """
        now = self.clock()
        with self._lock:
            self._advance(now)
            if user is not None:
                self._recent_users.append(user)
            slot = self._current % self.n_buckets
            self._counts["requests"][slot] += 1
            self._totals["requests"] += 1
            self._seen += 1
            if len(self._samples) < self.max_samples:
                self._samples.append(latency_s)
            else:  # reservoir: each of the bucket's latencies is kept with the same probability
                j = self._rng.randrange(self._seen)
                if j < self.max_samples:
                    self._samples[j] = latency_s
            if not items:
                return
            self._counts["impressions"][slot] += len(items)
            self._totals["impressions"] += len(items)
            scores = np.fromiter((s for _, s, _ in items), dtype=np.float64, count=len(items))
            served = _Served(now, self._current, tuple(i for i, _, _ in items), scores, np.zeros(len(items), bool))
            if request_id in self._pending:  # a repeated id: the older request is done
                self._finalize(self._pending.pop(request_id))
            self._pending[request_id] = served
            self._order.append((now, request_id, served))
            while len(self._pending) > self.max_pending:
                self._pop_oldest()

    def observe_actions(self, events: Iterable[Any]) -> int:
        """Recorded actions (dicts or :class:`~streamrec.records.ActionEvent`); returns the clicks matched.

        A click is a positive action whose ``request_id`` and ``item`` match an impression still in
        its click window; each impression counts once however many positive actions it gets.
        """
        now = self.clock()
        matched = 0
        with self._lock:
            self._advance(now)
            n_events = 0
            for e in events:
                n_events += 1
                get = e.get if isinstance(e, dict) else (lambda name, e=e: getattr(e, name, None))
                rid = get("request_id")
                if rid is None or get("action") not in self.positive_actions:
                    continue
                served = self._pending.get(rid)
                if served is None or now - served.t >= self.click_window_s:  # its window passed
                    continue
                try:
                    j = served.items.index(get("item"))
                except ValueError:
                    continue
                if served.clicked[j]:
                    continue
                served.clicked[j] = True
                matched += 1
                slot = served.bucket % self.n_buckets
                if self._ids[slot] == served.bucket:
                    self._counts["clicks"][slot] += 1
            self._counts["events"][self._current % self.n_buckets] += n_events
            self._totals["events"] += n_events
            self._totals["clicks"] += matched
        return matched

    # -- reading ------------------------------------------------------------------------------
    def snapshot(self, seconds: float = 300.0) -> dict[str, Any]:
        """The closed buckets of the last ``seconds`` as columns, plus totals, AUC and the model.

        ``series["t"]`` is each bucket's start (epoch seconds); counts are per bucket, ``qps`` per
        second; ``ctr``, ``auc``, percentiles, lag and rows are ``None`` where a bucket has none.
        """
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
            raise InvalidInputError("seconds", seconds, "must be a number > 0")
        with self._lock:
            self._advance(self.clock())
            last = self._current - 1  # the open bucket is not reported
            oldest = max(self._start, last - self.n_buckets + 2)
            first = max(oldest, last - math.ceil(seconds / self.bucket_s) + 1)
            ids = np.arange(first, last + 1, dtype=np.int64)
            slots = ids % self.n_buckets
            counts = {name: a[slots].copy() for name, a in self._counts.items()}
            floats = {name: a[slots].copy() for name, a in self._floats.items()}
            # the trailing CTR of the first buckets shown reaches back past them
            before = np.arange(max(oldest, first - self.smooth_buckets + 1), first, dtype=np.int64) % self.n_buckets
            imps_before, clicks_before = self._counts["impressions"][before], self._counts["clicks"][before]
            out: dict[str, Any] = {
                "now": self.clock(),
                "bucket_s": self.bucket_s,
                "click_window_s": self.click_window_s,
                "auc_last_n": len(self._fin_scores),
                "totals": {**self._totals, "ctr": _ratio(self._totals["clicks"], self._totals["impressions"])},
                "auc": {"value": _num(self._auc), "n": min(self._fin_count, len(self._fin_scores))},
                "pending_requests": len(self._pending),
                "recent_users": list(dict.fromkeys(reversed(self._recent_users)))[:10],  # newest first
                "model": self._model_summary,
            }
        imps, clicks = counts["impressions"], counts["clicks"]
        smooth_imps = _trailing_sum(np.concatenate([imps_before, imps]), self.smooth_buckets)[len(imps_before) :]
        smooth_clicks = _trailing_sum(np.concatenate([clicks_before, clicks]), self.smooth_buckets)[len(imps_before) :]
        series: dict[str, list[Any]] = {"t": (ids * self.bucket_s).astype(float).tolist()}
        series["requests"] = counts["requests"].tolist()
        series["qps"] = (counts["requests"] / self.bucket_s).tolist()
        series["events"] = counts["events"].tolist()
        series["impressions"] = imps.tolist()
        series["clicks"] = clicks.tolist()
        series["ctr"] = [_ratio(c, i) for c, i in zip(clicks.tolist(), imps.tolist(), strict=True)]
        series["ctr_smooth"] = [_ratio(c, i) for c, i in zip(smooth_clicks.tolist(), smooth_imps.tolist(), strict=True)]
        series["auc"] = _nums(floats["auc"])
        series["auc_n"] = counts["auc_n"].tolist()
        series["p50_ms"] = _nums(floats["p50_ms"])
        series["p99_ms"] = _nums(floats["p99_ms"])
        series["sync_lag_s"] = _nums(floats["sync_lag_s"])
        series["updates"] = counts["updates"].tolist()
        series["table_rows"] = _nums(floats["table_rows"])
        series["admitted"] = counts["admitted"].tolist()
        series["evicted"] = counts["evicted"].tolist()
        out["series"] = series
        return out

    # -- inside the lock ----------------------------------------------------------------------
    def _bucket(self, t: float) -> int:
        return math.floor(t / self.bucket_s)

    def _reset(self, bucket: int) -> None:
        slot = bucket % self.n_buckets
        self._ids[slot] = bucket
        for a in self._counts.values():
            a[slot] = 0
        for a in self._floats.values():
            a[slot] = np.nan

    def _advance(self, now: float) -> None:
        """Close the open bucket if ``now`` is past it, and open ``now``'s bucket."""
        bucket = self._bucket(now)
        if bucket <= self._current:
            return
        closing = self._current % self.n_buckets
        if self._samples:
            p50, p99 = np.percentile(np.asarray(self._samples), [50, 99])
            self._floats["p50_ms"][closing] = 1000.0 * p50
            self._floats["p99_ms"][closing] = 1000.0 * p99
        self._samples, self._seen = [], 0
        # finalize every impression whose click window has passed (those of idle stretches too)
        while self._order and self._order[0][0] <= now - self.click_window_s:
            self._pop_oldest()
        if self._fin_count != self._fin_computed:
            n = min(self._fin_count, len(self._fin_scores))
            self._auc = auc(self._fin_labels[:n], self._fin_scores[:n])
            self._fin_computed = self._fin_count
        self._floats["auc"][closing] = self._auc
        self._counts["auc_n"][closing] = min(self._fin_count, len(self._fin_scores))
        self._sample_model(closing)
        first_new = max(self._current + 1, bucket - self.n_buckets + 1)
        for b in range(first_new, bucket + 1):
            self._reset(b)
            if b < bucket:  # an idle bucket closes with the rolling AUC as it stands
                self._floats["auc"][b % self.n_buckets] = self._auc
                self._counts["auc_n"][b % self.n_buckets] = min(self._fin_count, len(self._fin_scores))
        self._current = bucket

    def _pop_oldest(self) -> None:
        _, rid, served = self._order.popleft()
        # a repeated request id replaced (and finalized) the older entry: its stale place in the
        # order must not finalize the newer one early
        if self._pending.get(rid) is served:
            del self._pending[rid]
            self._finalize(served)

    def _finalize(self, served: _Served) -> None:
        size = len(self._fin_scores)
        k = len(served.scores)
        if k >= size:
            self._fin_scores[:] = served.scores[-size:]
            self._fin_labels[:] = served.clicked[-size:]
        else:
            at = (self._fin_pos + np.arange(k)) % size
            self._fin_scores[at] = served.scores
            self._fin_labels[at] = served.clicked
        self._fin_pos = (self._fin_pos + k) % size
        self._fin_count += k

    def _sample_model(self, slot: int) -> None:
        """Sync lag of updates applied since the last sample, and table sizes, into bucket ``slot``."""
        model = self.model() if self.model is not None else None
        if model is None:
            self._model_summary = None
            return
        seen = self._model_seen
        applied = getattr(model, "applied", None) or ()
        lags: list[float] = []
        newest = applied[-1] if applied else None
        # walk back from the newest update to the last one seen (deque indexing near the right end
        # is O(1) and safe while the model thread appends)
        for back in range(1, min(len(applied), 10_000) + 1):
            try:
                update = applied[-back]
            except IndexError:
                break
            if update is seen["last"]:
                break
            lags.append(float(update.lag_s))
        seen["last"] = newest
        if lags:
            self._floats["sync_lag_s"][slot] = max(lags)
            self._counts["updates"][slot] = len(lags)
        tables = getattr(model, "tables", None)
        rows: dict[str, int] = {}
        admitted = evicted = 0
        if tables is not None:
            for name, table in tables.tables.items():
                rows[name] = len(table)
                admitted += int(getattr(table, "admitted", 0))
                evicted += int(getattr(table, "evicted", 0))
            self._floats["table_rows"][slot] = float(sum(rows.values()))
            if seen["collection"] is tables:
                self._counts["admitted"][slot] = admitted - seen["admitted"]
                self._counts["evicted"][slot] = evicted - seen["evicted"]
            # a new collection (first sample, or a "full" update swapped the tables) is a new
            # baseline: its initial load is not counted as admissions
            seen.update(collection=tables, admitted=admitted, evicted=evicted)
        error = getattr(model, "error", None)
        self._model_summary = {
            "version": getattr(model, "version", None),
            "examples_seen": getattr(model, "examples_seen", None),
            "error": None if error is None else str(error),
            "rows": rows,
            "admitted": admitted,
            "evicted": evicted,
            "last_sync_lag_s": None if newest is None else float(newest.lag_s),
        }


def _trailing_sum(a: np.ndarray, n: int) -> np.ndarray:
    """``out[i] = a[max(0, i - n + 1) : i + 1].sum()``."""
    c = np.concatenate([[0], np.cumsum(a)])
    i = np.arange(1, len(a) + 1)
    return c[i] - c[np.maximum(0, i - n)]


def _num(x: float) -> float | None:
    return None if math.isnan(x) else round(float(x), 6)


def _nums(a: np.ndarray) -> list[float | None]:
    return [None if x != x else round(x, 6) for x in a.tolist()]


def _ratio(num: float, den: float) -> float | None:
    return None if not den else round(num / den, 6)
