"""`streamrec bench serving --quick --json` runs end to end and reports numbers that hang together."""

from __future__ import annotations

import json

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
    for name in ("in_process", "http", "in_process_gc_frozen"):
        s = out["latency"][name]
        assert 0 < s["p50_ms"] <= s["p99_ms"] and s["qps"] > 0
    in_process = out["latency"]["in_process"]
    assert in_process["qps_threads"] > 0 and out["latency"]["http"]["qps_threads"] > 0
    # The stages are the request: their mean times add up to the measured mean (what recommend()
    # does outside its timed stages is a few microseconds of bookkeeping).
    stage_sum = sum(s["mean_ms"] for s in stages.values())
    assert stage_sum <= in_process["mean_ms"] * 1.001 + 0.01
    assert stage_sum >= 0.9 * in_process["mean_ms"] - 1.0
    assert abs(in_process["qps"] - 1000.0 / in_process["mean_ms"]) <= 0.01 * in_process["qps"]

    ratios = out["ratios"]
    assert set(ratios) >= {
        "features_vs_per_entity",
        "one_query_vs_two_queries",
        "http_vs_in_process_p50",
        "retrieve_excluding_vs_plain",
    }
    assert all(r > 0 for r in ratios.values())
    assert out["baselines"]["repetitions"] >= 1
    assert out["baselines"]["excluding_unfilled_requests"] == 0  # the bench users fill every quota either way
    assert out["gc"]["in_process"]["full_collections"] >= 0
