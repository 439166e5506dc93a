"""``streamrec bench profiles --quick --json``: runs end to end, both systems agree, ratios within bounds."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from streamrec.profiles.baselines import RedisProfiles


def test_cover_uses_the_fewest_buckets_and_matches_streamrec_rounding():
    day, hour = 86400, 3600
    now = 1_700_000_000 - 1_700_000_000 % day + 5 * hour + 17 * 60 + 30  # 05:17:30 of some day
    cover = RedisProfiles.cover(now - now % day - 3 * day, now)
    grains = [g for g, _ in cover]
    assert grains == [b"d"] * 3 + [b"h"] * 5 + [b"m"] * 18  # 3 days, 5 hours, minutes 0..17
    # Buckets tile the interval exactly, without gaps or overlaps.
    width = {b"d": day, b"h": hour, b"m": 60}
    t = now - now % day - 3 * day
    for g, b in cover:
        assert b * width[g] == t
        t += width[g]
    assert t == now - now % 60 + 60


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_quick_benchmark_beats_redis_within_bounds_and_checks_answers():
    from streamrec.cli import app

    result = CliRunner().invoke(app, ["bench", "profiles", "--quick", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout[result.stdout.index("{") :])
    ratios = out["ratios"]
    assert set(ratios) == {"query_qps_vs_redis", "query_p99_vs_redis", "ingest_vs_redis", "grpc_qps_vs_in_process"}
    # Side by side on a shared 2-core machine; nine runs measured query QPS 2.6-4.0x, ingest 2.8-4.0x
    # and p50 latency 0.24-0.28x Redis's. The p99 of 150 requests is one stall of either process
    # away from moving (0.14-2.9x in the same runs), so it is held to no bound here; the p50 is.
    assert ratios["query_qps_vs_redis"] >= 1.0
    assert ratios["ingest_vs_redis"] >= 1.0
    assert ratios["query_p99_vs_redis"] > 0
    sr, rd = out["streamrec_grpc"], out["redis"]
    assert sr["query_p50_ms"] < 0.6 * rd["query_p50_ms"]
    assert ratios["query_p99_vs_redis"] == pytest.approx(sr["query_p99_ms"] / rd["query_p99_ms"])
    assert ratios["query_qps_vs_redis"] == pytest.approx(sr["query_qps"] / rd["query_qps"])
    assert ratios["ingest_vs_redis"] == pytest.approx(sr["ingest_events_per_s"] / rd["ingest_events_per_s"])
    # Eight callers at once through one client vs one thread in process, alternating rounds: measured
    # 0.46-0.51 on the shared 2-core box (0.27-0.30 before query batching); held to a loose floor here,
    # since a busy neighbour moves a quick run's rounds.
    assert 0.1 < ratios["grpc_qps_vs_in_process"] < 5
    assert sr["concurrent_clients"] == 8 and sr["concurrent_query_qps"] > 0
    assert 0 < sr["concurrent_separate_clients_vs_in_process"] < 5
    assert out["in_process"]["query_qps"] > 0
    # What was fed and asked, counted back.
    scale = out["scale"]
    assert scale["events"] == 20_000 and scale["requests"] == 150
    assert scale["features_per_request"] == 100 and scale["slots"] >= 5
    assert 0 < out["profiles"] <= scale["users"] + scale["items"]  # at most one profile per entity
    assert out["answers_equal"] is True and out["answers_checked_users"] == 10
    # Stored size: zstd over the profile format (measured 5.4x, 377 B a profile) against the same
    # features in Redis hashes (~6,960 B a profile).
    assert out["compression_ratio"] > 3.0
    assert out["bytes_per_profile"] < rd["bytes_per_profile"] / 5
    assert 0 < out["in_process_query_p50_ms"] <= out["in_process_query_p99_ms"]
