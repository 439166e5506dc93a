"""``streamrec bench profiles --quick --json``: runs end to end, both systems agree, ratios present."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from streamrec.profiles.bench import RedisProfiles


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
def test_quick_benchmark_prints_ratios_and_checks_answers():
    from streamrec.cli import app

    result = CliRunner().invoke(app, ["bench", "profiles", "--quick", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout[result.stdout.index("{") :])
    assert set(out["ratios"]) == {"query_qps_vs_redis", "query_p99_vs_redis", "ingest_vs_redis"}
    assert all(v > 0 for v in out["ratios"].values())
    assert out["answers_equal"] is True and out["answers_checked_users"] > 0
    assert out["scale"]["features_per_request"] == 100 and out["scale"]["slots"] >= 5
    assert out["compression_ratio"] > 1.0 and out["bytes_per_profile"] > 0
    assert 0 < out["in_process_query_p50_ms"] <= out["in_process_query_p99_ms"]
