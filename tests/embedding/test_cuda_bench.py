"""``streamrec bench embedding|training --device cuda`` on Numba's CUDA simulator: the GPU bench's JSON
keys (docs/embedding.md and scripts/gpu_check.sh read them) and how its figures hang together.

The simulator runs the same code at smoke-test sizes (``cuda_bench.SIM``; smaller still here), so the
timings mean nothing: only the shape of the result and the arithmetic between its numbers are checked.
"""

import json
from dataclasses import replace

import pytest
import torch

from streamrec.embedding import cuda_bench

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the simulator's run; a GPU runs the real sizes")

TINY = replace(cuda_bench.SIM, rows=400, batch=200, big_rows=800, insert_batch=400)


def _printed(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_gpu_embedding_bench_keys_and_figures(monkeypatch, capsys):
    monkeypatch.setattr(cuda_bench, "SIM", TINY)
    out = cuda_bench.run_embedding("cuda", as_json=True)
    assert _printed(capsys) == out
    assert {"device", "torch", "numba", "gpu", "ratios", "throughput", "extra", "goals_met"} <= set(out)
    assert set(out["ratios"]) == {"gpu_lookup_vs_embedding"}
    assert set(out["throughput"]) == {
        "gpu_lookup_ids_per_s",
        "gpu_embedding_ids_per_s",
        "gpu_insert_ids_per_s",
        "gpu_lookup_ids_per_s_big",
        "gpu_embedding_ids_per_s_big",
    }
    assert set(out["extra"]) == {
        "load_factor_1m",
        "table_ids_1m",
        "insert_setup",
        "load_factor_big",
        "table_ids_big",
        "insert_syncs_per_batch",
        "insert_launches_per_batch",
    }
    # admit_distinct reads nothing back: the fill's one read is its final settle (2 batches here)
    assert out["extra"]["insert_syncs_per_batch"] <= 0.5
    assert out["extra"]["insert_launches_per_batch"] == 2  # find-or-insert; init with the walk
    assert set(out["goals_met"]) == {"gpu_lookup_vs_embedding", "gpu_insert_ids_per_s"}
    t = out["throughput"]
    assert all(v > 0 for v in t.values())
    # the ratio is the two throughputs divided (each rounded in the output)
    ratio = t["gpu_lookup_ids_per_s"] / t["gpu_embedding_ids_per_s"]
    assert out["ratios"]["gpu_lookup_vs_embedding"] == pytest.approx(ratio, rel=0.02, abs=1e-3)
    assert out["extra"]["table_ids_1m"] == TINY.rows and out["extra"]["table_ids_big"] == TINY.big_rows
    assert out["extra"]["load_factor_big"] >= 0.9  # the big index is sized for load 0.93 up front


def test_gpu_training_bench_keys_and_figures(capsys):
    out = cuda_bench.run_training("cuda", as_json=True)
    assert _printed(capsys) == out
    assert set(out["ratios"]) == {
        "gpu_train_step_vs_embeddingbag",
        "gpu_train_step_vs_torch_rowwise",
        "gpu_train_step_grouped_vs_per_slot",
    }
    names = ("ours", "ours_per_slot", "embeddingbag", "rowwise")
    assert set(out["throughput"]) == {f"gpu_train_examples_per_s_{n}" for n in names}
    assert {"lookup_call_us", "kernel_launches", "train_setup"} <= set(out["extra"])
    extra = out["extra"]
    # the grouped step: one host sync, four numba launches per slot plus a few torch ops in all
    assert extra["syncs_per_step"] == 1 and extra["numba_launches_per_step"] == 4 * cuda_bench.SIM.slots
    assert extra["numba_launches_per_step"] < extra["launches_per_step"] <= 8 * cuda_bench.SIM.slots + 40
    assert {f"ours_ms_per_step_{p}" for p in ("lookup", "head_and_backward", "sparse_update")} <= set(out["extra"])
    assert set(out["goals_met"]) == {"gpu_train_step_vs_embeddingbag", "gpu_train_step_vs_torch_rowwise"}
    t = {n: out["throughput"][f"gpu_train_examples_per_s_{n}"] for n in names}
    assert all(v > 0 for v in t.values()) and out["extra"]["lookup_call_us"] > 0
    for base, key in (
        ("embeddingbag", "gpu_train_step_vs_embeddingbag"),
        ("rowwise", "gpu_train_step_vs_torch_rowwise"),
        ("ours_per_slot", "gpu_train_step_grouped_vs_per_slot"),
    ):
        assert out["ratios"][key] == pytest.approx(t["ours"] / t[base], rel=0.02, abs=1e-3)
