"""``streamrec sim history`` and ``streamrec sim run`` through the real command line app."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
from typer.testing import CliRunner

from streamrec.cli import app


def test_sim_history_writes_parquet_and_reports_json(tmp_path):
    out = tmp_path / "h.parquet"
    result = CliRunner().invoke(
        app, ["sim", "history", "--days", "0.01", "--users", "100", "--out", str(out), "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert pq.read_table(out).num_rows == summary["events"] > 0
    assert summary["impressions"] == 10 * summary["requests"]


def test_sim_run_prints_buckets_and_the_oracle_beats_popularity():
    def total(policy: str) -> dict:
        args = ["sim", "run", "--minutes", "5", "--users", "300", "--policy", policy, "--json"]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        report = json.loads(result.output.strip().splitlines()[-1])
        assert len(report["buckets"]) == 5
        return report["total"]

    assert total("oracle")["expected_ctr"] > 2 * total("popularity")["expected_ctr"]


def test_sim_run_rejects_an_unknown_policy_naming_the_option():
    result = CliRunner().invoke(app, ["sim", "run", "--minutes", "1", "--policy", "best"])
    assert result.exit_code != 0
    assert "--policy" in str(result.exception)
