"""`streamrec bench serving --quick --json` runs end to end and reports numbers that hang together."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from streamrec.cli import app


def test_quick_serving_bench_reports_stages_latency_and_ratios_that_hang_together():
    result = CliRunner().invoke(app, ["bench", "serving", "--quick", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])

    config = out["config"]
    assert config["candidates"] == config["candidates_min"] == config["http_candidates_min"] == 500
    assert config["features"] >= 100 and config["profile_features"] >= 100
    assert config["features"] == config["dense"] + config["sparse"]
    assert config["threads"] >= 2

    stages = out["stages"]
    assert set(stages) == {"retrieve", "features", "rank", "log"}
    for s in stages.values():
        assert 0 < s["p50_ms"] <= s["p99_ms"]
    for name in ("in_process", "http", "in_process_heap_not_frozen"):
        s = out["latency"][name]
        assert 0 < s["p50_ms"] <= s["p99_ms"]
        assert s["qps"] == pytest.approx(1000.0 / s["mean_ms"], rel=0.01)  # one caller at a time
    in_process, http, unfrozen = (out["latency"][n] for n in ("in_process", "http", "in_process_heap_not_frozen"))
    assert in_process["qps_threads"] > 0 and http["qps_threads"] > 0
    # The stages are the request: their mean times add up to the measured mean (what recommend()
    # does outside its timed stages is bookkeeping: 0.16-0.23 ms of 37-74 ms in six runs).
    stage_sum = sum(s["mean_ms"] for s in stages.values())
    assert stage_sum <= in_process["mean_ms"] * 1.001 + 0.01
    assert stage_sum >= 0.97 * in_process["mean_ms"] - 0.5

    ratios = out["ratios"]
    assert set(ratios) >= {
        "features_vs_per_entity",
        "one_query_vs_two_queries",
        "http_vs_in_process_p50",
        "retrieve_excluding_vs_plain",
        "p99_vs_p50",
        "p99_vs_p50_heap_not_frozen",
        "features_vs_precomputed_redis",
        "features_uncached_vs_precomputed_redis",
        "http_qps_vs_in_process_one_thread",
    }
    # Side by side, GC frozen; six runs: features_vs_per_entity 2.8-4.6, one_query_vs_two_queries
    # 0.96-1.23 (2-2.7 before the store shared the answers of empty windows).
    assert ratios["features_vs_per_entity"] >= 1.5  # one batched query beats one query per entity
    assert ratios["one_query_vs_two_queries"] <= 1.8
    assert ratios["retrieve_excluding_vs_plain"] > 0  # near 1 (0.5-1.1 measured): no bound worth pinning
    # The latency ratios are the latencies reported, divided (over HTTP the client shares the GIL
    # with the server, so 0.67-1.5 was measured for p50 and no bound is pinned).
    assert ratios["http_vs_in_process_p50"] == pytest.approx(http["p50_ms"] / in_process["p50_ms"])
    assert ratios["in_process_qps_vs_http"] == pytest.approx(in_process["qps"] / http["qps"])
    assert ratios["p99_vs_p50"] == pytest.approx(in_process["p99_ms"] / in_process["p50_ms"])
    assert ratios["p99_vs_p50_heap_not_frozen"] == pytest.approx(unfrozen["p99_ms"] / unfrozen["p50_ms"])
    base = out["baselines"]
    assert base["features_cached_ms"] > 0 and base["precomputed_redis_ms"] > 0
    assert base["redis_fields_per_request"] > 100  # the user's fields and every candidate's
    assert ratios["features_vs_precomputed_redis"] > 0 and ratios["features_uncached_vs_precomputed_redis"] > 0
    # The item cache is shared across requests: it answers some lookups, and states its bound.
    cache = out["item_cache"]
    assert cache["max_age_ms"] == 500.0 and cache["hits"] > 0 and 0 < cache["hit_rate"] < 1
    # serve --workers: real processes answered every timed request; the ratio is of the medians' blocks.
    workers = out["workers"]
    assert workers["workers"] >= 1 and workers["cores"] >= 1 and workers["requests"] > 0
    assert workers["qps"] > 0 and workers["in_process_one_thread_qps"] > 0
    assert ratios["http_qps_vs_in_process_one_thread"] == workers["ratio"] > 0
    assert ratios["http_qps_vs_in_process_first_phase"] == pytest.approx(workers["qps"] / in_process["qps"])
    assert out["baselines"]["repetitions"] >= 1
    assert out["baselines"]["excluding_unfilled_requests"] == 0  # the bench users fill every quota either way
    # The garbage collector: counted per request as reported, and with the heap frozen at start
    # (as `serve` runs) a full collection walks almost nothing (0.26-1.6 ms at most in six runs,
    # against 138-296 ms for the one full collection each run hit before the freeze).
    requests = config["requests"]
    for name in ("in_process", "in_process_heap_not_frozen"):
        g = out["gc"][name]
        assert g["per_100_requests"] == pytest.approx(100.0 * g["full_collections"] / requests)
        assert g["pause_ms_max"] <= g["pause_ms_total"] + 1e-9
    assert out["gc"]["in_process"]["pause_ms_max"] < 20.0
