"""LiveStats against independent references: brute-force pairwise AUC, a direct count of clicked
impressions, numpy.percentile over the same latencies, and a set model of a serving table."""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from types import SimpleNamespace

import numpy as np
import pytest

from streamrec.embedding import ServingCollection
from streamrec.embedding.delta import CollectionDelta, TableDelta
from streamrec.errors import InvalidInputError
from streamrec.serving.live import SERIES, LiveStats
from streamrec.training.serving_model import AppliedUpdate

T0 = 1_000.0


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def brute_auc(labels: list[bool], scores: list[float]) -> float:
    """Fraction of (positive, negative) pairs ranked right; ties count half."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def _traffic(live: LiveStats, clock: Clock, seed: int, n_requests: int, window: float):
    """Requests with tied scores, clicks (some late, duplicated, unmatched or not positive).

    Returns every impression as ``[serve bucket, score, clicked in window]`` in serve order.
    """
    rng = random.Random(seed)
    impressions: list[list] = []
    by_request: dict[str, list[int]] = {}
    items_of: dict[str, list[str]] = {}
    for r in range(n_requests):
        clock.t += rng.uniform(0.0, 0.4)
        k = rng.randint(1, 6)
        items = [(f"i{rng.randrange(50)}-{j}", round(rng.random(), 1), "popular") for j in range(k)]
        rid = f"r{r}"
        live.observe_request(rid, items, rng.uniform(0.001, 0.05))
        by_request[rid] = []
        items_of[rid] = [i for i, _, _ in items]
        for _, score, _ in items:
            by_request[rid].append(len(impressions))
            impressions.append([int(clock.t // 1), score, False, clock.t])
        # clicks on earlier requests, more likely for high scores
        for _ in range(rng.randint(0, 3)):
            old = f"r{rng.randrange(r + 1)}"
            j = rng.randrange(len(items_of[old]))
            imp = impressions[by_request[old][j]]
            action = rng.choice(["click", "click", "like", "show"])
            if rng.random() > imp[1]:
                continue
            live.observe_actions([{"request_id": old, "item": items_of[old][j], "action": action}])
            if action != "show" and clock.t - imp[3] < window:
                imp[2] = True
        unmatched = [{"request_id": "nope", "item": "i1", "action": "click"}, {"item": "i1", "action": "click"}]
        live.observe_actions(unmatched)
    return impressions


def test_online_auc_matches_brute_force_pairwise_auc_over_finalized_impressions():
    clock = Clock()
    live = LiveStats(click_window_s=5.0, auc_last_n=100_000, clock=clock)
    impressions = _traffic(live, clock, seed=1, n_requests=300, window=5.0)
    clock.t += 6.0  # every click window has passed
    s = live.snapshot(seconds=600)
    labels = [imp[2] for imp in impressions]
    assert 0 < sum(labels) < len(labels)
    assert s["auc"]["n"] == len(impressions)
    assert s["auc"]["value"] == pytest.approx(brute_auc(labels, [imp[1] for imp in impressions]), abs=1e-6)


def test_online_auc_is_over_the_last_n_finalized_impressions_only():
    clock = Clock()
    live = LiveStats(click_window_s=2.0, auc_last_n=97, clock=clock)
    impressions = _traffic(live, clock, seed=2, n_requests=200, window=2.0)
    clock.t += 3.0
    s = live.snapshot(seconds=600)
    last = impressions[-97:]  # finalized in serve order
    assert s["auc"]["n"] == 97
    assert s["auc"]["value"] == pytest.approx(brute_auc([i[2] for i in last], [i[1] for i in last]), abs=1e-6)
    # the series carries the rolling value at each bucket close; the last one is the value above
    assert s["series"]["auc"][-1] == pytest.approx(s["auc"]["value"], abs=1e-6)


def test_ctr_per_bucket_is_clicked_impressions_over_impressions_served_in_it():
    clock = Clock()
    live = LiveStats(click_window_s=4.0, smooth_buckets=3, clock=clock)
    impressions = _traffic(live, clock, seed=3, n_requests=250, window=4.0)
    clock.t += 1.0
    s = live.snapshot(seconds=600)
    series = s["series"]
    served: dict[int, int] = {}
    clicked: dict[int, int] = {}
    for bucket, _, was_clicked, _ in impressions:
        served[bucket] = served.get(bucket, 0) + 1
        clicked[bucket] = clicked.get(bucket, 0) + was_clicked
    buckets = [int(t) for t in series["t"]]
    assert buckets == list(range(int(T0), int(clock.t)))
    assert series["impressions"] == [served.get(b, 0) for b in buckets]
    assert series["clicks"] == [clicked.get(b, 0) for b in buckets]
    for j, b in enumerate(buckets):
        expect = clicked[b] / served[b] if served.get(b) else None
        assert series["ctr"][j] == (None if expect is None else pytest.approx(expect, abs=1e-6))
        window = buckets[max(0, j - 2) : j + 1]
        n = sum(served.get(w, 0) for w in window)
        smooth = sum(clicked.get(w, 0) for w in window) / n if n else None
        assert series["ctr_smooth"][j] == (None if smooth is None else pytest.approx(smooth, abs=1e-6))
    totals = s["totals"]
    assert totals["impressions"] == len(impressions)
    assert totals["clicks"] == sum(imp[2] for imp in impressions)
    assert totals["ctr"] == pytest.approx(totals["clicks"] / totals["impressions"], abs=1e-6)


def test_each_impression_is_clicked_once_and_only_positive_actions_with_its_request_count():
    clock = Clock()
    live = LiveStats(click_window_s=10, clock=clock)
    live.observe_request("r1", [("a", 0.5, "x"), ("b", 0.4, "x")], 0.01)
    events = [
        {"request_id": "r1", "item": "a", "action": "click"},
        {"request_id": "r1", "item": "a", "action": "like"},  # the same impression again
        {"request_id": "r1", "item": "b", "action": "show"},  # not a positive action
        {"request_id": "r1", "item": "zz", "action": "click"},  # not served in r1
        {"request_id": "r2", "item": "a", "action": "click"},  # no such request
    ]
    assert live.observe_actions(events) == 1
    clock.t += 1
    s = live.snapshot()
    assert s["series"]["clicks"] == [1] and s["series"]["events"] == [5] and s["totals"]["events"] == 5


def test_latency_percentiles_per_bucket_equal_numpy_percentile_of_its_samples():
    clock = Clock()
    live = LiveStats(clock=clock)
    rng = np.random.default_rng(4)
    samples: dict[int, list[float]] = {}
    for _ in range(600):
        clock.t += float(rng.uniform(0, 0.02))
        latency = float(rng.lognormal(-5, 1))
        samples.setdefault(int(clock.t), []).append(latency)
        live.observe_request("r", [], latency)
    clock.t += 1
    series = live.snapshot()["series"]
    for t, p50, p99, requests in zip(series["t"], series["p50_ms"], series["p99_ms"], series["requests"], strict=True):
        got = samples[int(t)]
        assert requests == len(got)
        assert p50 == pytest.approx(1000 * np.percentile(got, 50), abs=1e-5)
        assert p99 == pytest.approx(1000 * np.percentile(got, 99), abs=1e-5)
        assert series["qps"][series["t"].index(t)] == len(got)


def test_a_busy_bucket_keeps_a_bounded_reservoir_of_latencies():
    clock = Clock()
    live = LiveStats(max_samples=64, clock=clock)
    for i in range(5000):
        live.observe_request("r", [], i / 5000)  # uniform on [0, 1): the median is near 0.5
    clock.t += 1
    series = live.snapshot()["series"]
    assert series["requests"] == [5000]
    assert 300 < series["p50_ms"][0] < 700


def test_buckets_roll_over_idle_gaps_reset_and_only_the_horizon_is_kept():
    clock = Clock()
    live = LiveStats(bucket_s=1.0, horizon_s=10.0, clock=clock)
    live.observe_request("a", [("i", 0.1, "s")], 0.01)
    clock.t += 0.5
    live.observe_request("b", [("i", 0.1, "s")], 0.01)
    assert live.snapshot()["series"]["t"] == []  # the open bucket is not reported
    clock.t += 3.0  # idle buckets in between
    live.observe_request("c", [("i", 0.1, "s")], 0.01)
    clock.t += 1.0
    s = live.snapshot()
    assert s["series"]["t"] == [T0, T0 + 1, T0 + 2, T0 + 3]
    assert s["series"]["requests"] == [2, 0, 0, 1]
    assert s["series"]["p50_ms"][1] is None and s["series"]["ctr"][1] is None
    assert set(SERIES) | {"t"} == set(s["series"])
    clock.t += 25.0  # longer than the horizon: nothing old survives
    live.observe_request("d", [("i", 0.1, "s")], 0.01)
    clock.t += 1.0
    s = live.snapshot(seconds=1000)
    assert len(s["series"]["t"]) == 9  # horizon buckets minus the open one
    assert sum(s["series"]["requests"]) == 1 and s["totals"]["requests"] == 4
    assert s["series"]["t"] == [float(b) for b in range(int(clock.t) - 9, int(clock.t))]
    assert len(live.snapshot(seconds=3)["series"]["t"]) == 3


def test_bad_settings_raise_typed_errors_naming_the_field():
    with pytest.raises(InvalidInputError, match="bucket_s"):
        LiveStats(bucket_s=0)
    with pytest.raises(InvalidInputError, match="auc_last_n"):
        LiveStats(auc_last_n=0)
    with pytest.raises(InvalidInputError, match="horizon_s"):
        LiveStats(bucket_s=1, horizon_s=1)
    with pytest.raises(InvalidInputError, match="seconds"):
        LiveStats().snapshot(seconds=-1)


def _delta(slot: str, ids, evicted=()) -> CollectionDelta:
    ids = np.asarray(ids, dtype=np.int64)
    vectors = np.ones((len(ids), 2), dtype=np.float32)
    return CollectionDelta({slot: TableDelta(slot, ids, vectors, np.asarray(evicted, dtype=np.int64))})


def test_serving_table_admitted_and_evicted_counts_equal_a_set_model():
    tables = ServingCollection({"item": 2})
    held: set[int] = set()
    admitted = evicted = 0
    rng = random.Random(5)
    for _ in range(60):
        ids = [rng.randrange(3000) for _ in range(rng.randint(0, 400))]
        gone = [rng.randrange(3000) for _ in range(rng.randint(0, 200))]
        tables.apply(_delta("item", ids, gone))
        # reference: evictions first, except ids the same delta re-admits; then upserts
        kept_out = set(gone) - set(ids)
        evicted += len(held & kept_out)
        held -= kept_out
        admitted += len(set(ids) - held)
        held |= set(ids)
    assert tables.stats() == {"item": {"ids": len(held), "admitted": admitted, "evicted": evicted}}


def test_model_sampling_gives_sync_lag_rows_and_admitted_evicted_per_bucket():
    clock = Clock()
    tables = ServingCollection({"item": 2, "user": 2})
    tables.apply(_delta("item", range(100)))  # the initial load: a baseline, not admissions
    model = SimpleNamespace(version=3, examples_seen=10, error=None, tables=tables, applied=deque(maxlen=4))
    live = LiveStats(clock=clock, model=lambda: model)
    clock.t += 1  # bucket 0 closes: baseline sample
    live.snapshot()
    tables.apply(_delta("item", range(90, 130), evicted=range(10)))  # +30, -10
    tables.apply(_delta("user", range(5)))
    for lag in (0.5, 2.0, 1.25, 0.7, 0.9):  # more than the deque keeps: the lost one is not seen
        model.applied.append(AppliedUpdate("sparse", 4, 20, 100, lag, lag))
    clock.t += 1
    s = live.snapshot()
    series = s["series"]
    assert series["admitted"] == [0, 35] and series["evicted"] == [0, 10]
    assert series["table_rows"] == [100.0, 125.0]
    assert series["sync_lag_s"] == [None, 2.0] and series["updates"] == [0, 4]
    assert s["model"]["rows"] == {"item": 120, "user": 5} and s["model"]["last_sync_lag_s"] == 0.9
    clock.t += 1  # nothing new applied
    series = live.snapshot()["series"]
    assert series["sync_lag_s"][-1] is None and series["admitted"][-1] == 0
    # a "full" update swaps the collection: a new baseline, not 1000 admissions
    model.tables = ServingCollection({"item": 2})
    model.tables.apply(_delta("item", range(1000)))
    clock.t += 1
    series = live.snapshot()["series"]
    assert series["admitted"][-1] == 0 and series["table_rows"][-1] == 1000.0


def test_without_a_model_there_is_no_model_summary_and_no_rows():
    clock = Clock()
    live = LiveStats(clock=clock, model=lambda: None)
    clock.t += 2
    s = live.snapshot()
    assert s["model"] is None and s["series"]["table_rows"] == [None, None]


def test_repeated_request_ids_and_the_pending_cap_finalize_the_older_impressions():
    clock = Clock()
    live = LiveStats(click_window_s=100, max_pending=3, clock=clock)
    live.observe_request("r", [("a", 0.9, "x")], 0.01)
    live.observe_request("r", [("b", 0.1, "x")], 0.01)  # replaces the first; it is finalized
    assert live.observe_actions([{"request_id": "r", "item": "a", "action": "click"}]) == 0
    assert live.observe_actions([{"request_id": "r", "item": "b", "action": "click"}]) == 1
    for i in range(5):
        live.observe_request(f"q{i}", [("c", 0.5, "x")], 0.01)
    clock.t += 1
    s = live.snapshot()
    assert s["pending_requests"] == 3 and s["auc"]["n"] == 4  # a when replaced; b, q0, q1 over the cap


def test_the_docstring_example_runs_and_prints_what_it_says():
    import doctest

    import streamrec.serving.live as module

    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_recent_users_are_distinct_newest_first_and_at_most_ten():
    live = LiveStats(clock=Clock())
    for i in [1, 2, 3, 2, *range(10, 25), 3]:
        live.observe_request(f"r{i}", [], 0.01, user=f"u{i}")
    live.observe_request("anonymous", [], 0.01)
    assert live.snapshot()["recent_users"] == ["u3", *[f"u{i}" for i in range(24, 15, -1)]]


def test_concurrent_requests_actions_reads_and_model_updates_lose_nothing():
    tables = ServingCollection({"item": 2})
    model = SimpleNamespace(version=1, examples_seen=0, error=None, tables=tables, applied=deque(maxlen=50))
    live = LiveStats(bucket_s=0.01, horizon_s=600.0, click_window_s=1.5, model=lambda: model)  # wall clock
    n_threads, n_requests = 4, 300
    errors: list[BaseException] = []

    def serve(t: int) -> None:
        try:
            for i in range(n_requests):
                rid = f"{t}-{i}"
                live.observe_request(rid, [("a", 0.9, "s"), ("b", 0.1, "s")], 0.001, user=f"u{t}")
                live.observe_actions([{"request_id": rid, "item": "a", "action": "click"}])
        except BaseException as exc:  # reported below
            errors.append(exc)

    def churn() -> None:
        for v in range(200):
            tables.apply(_delta("item", [v]))
            model.applied.append(AppliedUpdate("sparse", v + 2, 0, 10, 0.01, 0.01))
            live.snapshot(seconds=1)

    threads = [threading.Thread(target=serve, args=(t,)) for t in range(n_threads)] + [threading.Thread(target=churn)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    time.sleep(1.6)  # every click window has passed
    s = live.snapshot(seconds=600)
    total = n_threads * n_requests
    assert s["totals"]["requests"] == total and sum(s["series"]["requests"]) == total
    assert s["totals"]["impressions"] == 2 * total == sum(s["series"]["impressions"])
    assert s["totals"]["clicks"] == total == sum(s["series"]["clicks"])  # each "a" clicked at once
    assert s["auc"]["value"] == 1.0 and s["model"]["rows"] == {"item": 200}
    assert sum(s["series"]["admitted"]) <= 200 and s["pending_requests"] == 0
