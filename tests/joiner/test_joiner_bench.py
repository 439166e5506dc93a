"""`streamrec bench joiner` runs and its three joins agree."""

from __future__ import annotations


def test_bench_runs_the_three_joins_to_the_same_examples(capsys):
    from streamrec.joiner.bench import run_benchmark

    result = run_benchmark(events=3000, as_json=True, batch=500)
    assert result["same_examples"] and result["examples"] > 0
    assert set(result["ratios"]) == {"lmdb_state_vs_dict", "sqlite_joiner_vs_dict"}
