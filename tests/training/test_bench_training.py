"""``streamrec bench training --quick --json`` runs end to end through the real CLI, prints the
ratios and lags the issue asks for, and its serving replica agrees exactly with the trainer.
Throughput ratios are printed, not asserted: on a shared 2-core machine they are noise-bound.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time


def test_bench_training_quick_prints_ratios_lags_and_an_exact_replica():
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "streamrec", "bench", "training", "--quick", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(result["ratios"]) == {"batch_throughput_vs_modulo", "online_throughput_vs_modulo"}
    assert all(value > 0 for value in result["ratios"].values())
    for key in ("sync_lag_p50_s", "sync_lag_p99_s", "sync_bytes_per_s"):
        assert result[key] >= 0
    assert result["sync_lag_p50_s"] <= result["sync_lag_p99_s"] <= result["sync_interval_s"] + 2
    assert result["sync_bytes_per_s"] > 0 and result["updates_applied"] >= 3
    assert result["serving_exact_after_final_sync"] is True
    assert len(result["goals_met"]) == 4
    assert elapsed < 120  # --quick is meant to finish in under a minute on an idle machine
