"""``streamrec bench training --ranks 1,2 --quick --json`` runs end to end through the real CLI, prints the
ratios and lags the issue asks for, and its serving replica agrees exactly with the trainer; its
ranks phase reports numbers that hang together (the ratio is the quotient of the rates, two ranks
train the parameters of one, the bytes are what the exchange's closed form predicts).
Throughput ratios are printed, not asserted: on a shared 2-core machine they are noise-bound.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest


@pytest.fixture(scope="module")
def bench():
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "streamrec", "bench", "training", "--quick", "--ranks", "1,2", "--json"],
        capture_output=True,
        text=True,
        timeout=400,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr, time.monotonic() - started


def test_bench_training_quick_prints_ratios_lags_and_an_exact_replica(bench):
    result, _, elapsed = bench
    assert set(result["ratios"]) == {
        "batch_throughput_vs_modulo",
        "online_throughput_vs_modulo",
        "examples_per_s_2_vs_1_ranks",
    }
    assert all(value > 0 for value in result["ratios"].values())
    for key in ("sync_lag_p50_s", "sync_lag_p99_s", "sync_bytes_per_s"):
        assert result[key] >= 0
    assert result["sync_lag_p50_s"] <= result["sync_lag_p99_s"] <= result["sync_interval_s"] + 2
    assert result["sync_bytes_per_s"] > 0 and result["updates_applied"] >= 3
    assert result["serving_exact_after_final_sync"] is True
    assert len(result["goals_met"]) == 4
    assert elapsed < 240  # --quick: under a minute without --ranks, about as long again with 1,2 (idle machine)


def test_bench_training_ranks_numbers_hang_together(bench):
    from streamrec.training.bench import examples_for_bench
    from streamrec.training.distributed import global_slice

    result, stderr, _ = bench
    d = result["distributed"]
    print(f"\nranks phase: {json.dumps(d['examples_per_s'])} examples/s, ratio "
          f"{result['ratios']['examples_per_s_2_vs_1_ranks']}, load {d['load_average_1min']}")  # fmt: skip
    rates = d["examples_per_s"]
    assert rates["1"] > 0 and rates["2"] > 0
    assert result["ratios"]["examples_per_s_2_vs_1_ranks"] == pytest.approx(rates["2"] / rates["1"], abs=1e-3)
    assert d["examples_per_s_per_rank"]["2"] == pytest.approx(rates["2"] / 2, abs=1)
    assert d["equivalence_max_abs_diff"] <= 1e-5

    # The closed form, from the examples themselves: each rank sends every distinct id of a slot in
    # its share of a batch to the id's owner with its number of occurrences (8 + 8 bytes), the
    # vector comes back and the gradient goes out (4 * dim bytes each way); each step, every rank
    # also sends every rank its counts per slot (int64).
    world, n, steps, dim, size = 2, d["examples"], d["steps"], d["dim"], d["batch_size"]
    assert steps * size == n
    data, source = examples_for_bench(n)
    assert source == d["data"] and len(data) == n
    distinct = 0
    for step in range(steps):
        for rank in range(world):
            lo, hi = global_slice(size, rank, world)
            part = data[step * size + lo : step * size + hi]
            distinct += sum(len(np.unique(ids.values.numpy())) for ids in part.sparse.values())
    counts = steps * world * world * len(data.sparse) * 8
    expected = (distinct * (16 + 4 * dim + 4 * dim) + counts) / n
    assert d["all_to_all_bytes_per_example"]["1"] == 0
    assert d["all_to_all_bytes_per_example"]["2"] > 0
    assert np.isclose(d["all_to_all_bytes_per_example"]["2"], expected, rtol=1e-12, atol=0)

    baseline = d["torchrec_baseline"]
    if baseline["ran"]:
        assert baseline["ratio"] > 0
    else:  # one line saying why, on stderr beside the JSON
        assert baseline["reason"] and f"TorchRec baseline skipped: {baseline['reason']}" in stderr
