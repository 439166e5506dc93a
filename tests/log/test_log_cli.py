"""``streamrec log tail|lag`` and ``streamrec bench log``, on a typer app holding only the log commands."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from streamrec.log import open_log
from streamrec.log.cli import register
from streamrec.records import ActionEvent


def app() -> typer.Typer:
    root, bench = typer.Typer(), typer.Typer()
    root.add_typer(bench, name="bench")
    register(root, bench)
    return root


def test_tail_prints_records_as_json_and_commits_nothing(tmp_path):
    url = f"sqlite://{tmp_path}/x.db"
    events = [ActionEvent(user="u", item=f"i{n}", action="click", time=float(n)) for n in range(5)]
    with open_log(url) as log:
        log.append("actions", events)
    result = CliRunner().invoke(app(), ["log", "tail", url, "actions", "-n", "3"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert [(x["offset"], x["record"]["item"]) for x in lines] == [(0, "i0"), (1, "i1"), (2, "i2")]
    result = CliRunner().invoke(app(), ["log", "lag", url, "actions", "streamrec-tail", "--json"])
    assert json.loads(result.output) == {
        "topic": "actions",
        "end_offset": 5,
        "groups": {"streamrec-tail": {"committed": 0, "lag": 5}},
    }


def test_bench_log_quick_reports_that_batching_wins():
    result = CliRunner().invoke(app(), ["bench", "log", "--quick", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["ratios"]["sqlite_append_vs_per_record"] > 1
    assert set(report["backends"]["sqlite"]) >= {"append_per_s", "raw_append_per_s", "consume_per_s"}
