"""``streamrec log tail|lag``, on a typer app holding only the log commands (``bench log``: test_log_bench.py)."""

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
        "partitions": 1,
        "end_offset": 5,
        "end_offsets": [5],
        "groups": {"streamrec-tail": {"committed": 0, "lag": 5, "committed_offsets": [0], "lags": [5]}},
    }


def test_lag_reports_each_partition_and_the_sums(tmp_path):
    url = f"sqlite://{tmp_path}/x.db"
    events = [ActionEvent(user=f"u{n % 5}", item=f"i{n}", action="click", time=float(n)) for n in range(40)]
    with open_log(url) as log:
        log.create_topic("actions", partitions=3)
        log.append("actions", events, key="user")
        ends = log.end_offsets("actions")
        with log.consumer("actions", "profiles", ActionEvent, partitions=[1]) as consumer:
            while consumer.poll(max_records=100, timeout_s=0):
                consumer.commit()
    result = CliRunner().invoke(app(), ["log", "lag", url, "actions", "profiles", "fresh", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["partitions"], report["end_offsets"], report["end_offset"]) == (3, ends, 40)
    done = [0, ends[1], 0]
    assert report["groups"]["profiles"] == {
        "committed": ends[1],
        "lag": 40 - ends[1],
        "committed_offsets": done,
        "lags": [ends[0], 0, ends[2]],
    }
    assert report["groups"]["fresh"]["lags"] == ends
    text = CliRunner().invoke(app(), ["log", "lag", url, "actions", "profiles"]).output
    assert f"partition 1: end {ends[1]}, committed {ends[1]}, lag 0" in text


def test_create_topics_makes_each_count_and_refuses_a_bad_spec_or_another_count(tmp_path):
    url = f"sqlite:///{tmp_path}/log.db"
    result = CliRunner().invoke(app(), ["log", "create-topics", url, "actions:3", "model-updates"])
    assert result.exit_code == 0, result.output
    with open_log(url) as log:
        assert (len(log.end_offsets("actions")), len(log.end_offsets("model-updates"))) == (3, 1)
    again = CliRunner().invoke(app(), ["log", "create-topics", url, "actions:3"])  # same count: a no-op
    assert again.exit_code == 0, again.output
    other = CliRunner().invoke(app(), ["log", "create-topics", url, "actions:2"])
    assert other.exit_code != 0 and "actions" in str(other.exception)
    bad = CliRunner().invoke(app(), ["log", "create-topics", url, "examples:0"])
    assert bad.exit_code != 0 and "examples:0" in str(bad.exception)
