"""A short run of the whole loop (small world, a few simulated minutes) end to end.

Counts are checked against the logs themselves (an independent record of what happened), not
against numbers the loop reported about itself alone.
"""

from __future__ import annotations

import json
import math
import os

import pytest
from typer.testing import CliRunner

from streamrec.cli import app
from streamrec.log import open_log
from streamrec.loop import LoopConfig, run_loop
from streamrec.loop.arm import auc_or_nan, ctr
from streamrec.sim import Bucket

SMALL = dict(n_users=150, history_minutes=20, warmup_minutes=8, sim_minutes=6, bucket_s=120, sparse_sync_s=20)


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    # From a fresh working directory with the default (relative) --out, as `make demo` runs it.
    cwd = tmp_path_factory.mktemp("demo")
    args = ["demo", "--json", "--minutes", "2", "--sim-minutes", "6"]
    args += ["--users", "150", "--history-minutes", "20", "--warmup-minutes", "8"]
    previous = os.getcwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(app, args)
    finally:
        os.chdir(previous)
    assert result.exit_code == 0, result.output
    return cwd / "runs" / "demo", json.loads(result.stdout.strip().splitlines()[-1])


def test_demo_json_has_each_arms_ctr_and_the_expectation(cli_run):
    _, summary = cli_run
    assert set(summary["arms"]) == {"online", "frozen", "popularity"}
    for arm in summary["arms"].values():
        assert 0.0 < arm["ctr"] < 1.0 and 0.0 <= arm["ctr_last_third"] < 1.0
        assert arm["impressions"] > 0
    # the arms serve the same users at the same times with slates of the same size
    assert len({a["impressions"] for a in summary["arms"].values()}) == 1
    assert isinstance(summary["expectations_met"], bool)


def test_online_serving_model_received_syncs_and_the_trainer_consumed_every_joined_example(cli_run):
    out, summary = cli_run
    online = summary["online"]
    assert online["sparse_syncs"] >= 5 and online["dense_syncs"] >= 1
    assert online["updates_applied"] == online["sparse_syncs"] + online["dense_syncs"]
    assert online["serving_version"] == online["updates_applied"]
    log = open_log(f"sqlite:///{out}/arm-online/log.db")
    try:
        warm = open_log(f"sqlite:///{out}/warmup/log.db")
        warm_examples = warm.end_offset("examples")
        warm.close()
        joined = log.end_offset("examples") - warm_examples
        assert joined > 0
        assert online["examples_joined"] == joined
        assert online["examples_trained"] == joined  # every joined example was trained on, once
        assert log.end_offset("model-updates") == online["updates_applied"]
    finally:
        log.close()
    assert 0.0 <= online["auc"] <= 1.0 and online["auc_examples"] > 0


def test_report_and_plots_are_written(cli_run):
    out, _ = cli_run
    for name in ("report.html", "ctr.png", "auc.png", "summary.json"):
        assert (out / name).stat().st_size > 0
    assert (out / "ctr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "ctr.png" in (out / "report.html").read_text()


def test_run_loop_from_python_reports_every_arm_per_bucket(tmp_path):
    result = run_loop(LoopConfig(**{**SMALL, "sim_minutes": 2}), tmp_path)
    assert result.summary["arms"]["popularity"]["impressions"] > 0
    assert len(result.times) >= 1 and set(result.ctr) == {"online", "frozen", "popularity"}


def test_ctr_pools_buckets_by_impressions_not_by_average_of_rates():
    buckets = [Bucket(0, 1, impressions=10, clicks=5), Bucket(1, 2, impressions=90, clicks=0)]
    assert ctr(buckets) == pytest.approx(0.05)
    assert ctr([]) == 0.0


def test_auc_is_nan_with_one_class_and_matches_a_pairwise_count():
    assert math.isnan(auc_or_nan([1.0, 1.0], [0.1, 0.2]))
    labels, scores = [0, 1, 0, 1, 0], [0.1, 0.4, 0.35, 0.8, 0.5]
    pairs = [(p, n) for p in range(5) for n in range(5) if labels[p] == 1 and labels[n] == 0]
    expected = sum(scores[p] > scores[n] for p, n in pairs) / len(pairs)
    assert auc_or_nan(labels, scores) == pytest.approx(expected)
