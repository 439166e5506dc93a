"""The application layer: the stream writer (log -> store) and the batch writer (Parquet/CSV -> store)."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from streamrec.errors import InvalidInputError
from streamrec.log import open_log
from streamrec.profiles import Feature, FeatureQuery, ProfileStore
from streamrec.profiles.ingest import ingest
from streamrec.profiles.loader import load_file
from streamrec.records import ActionEvent

NOW = 1_700_000_000.0


def count(store, entity, slot, counter, window="30d", now=NOW):
    f = Feature(slot=slot, window=window, counters=(counter,))
    return store.query(FeatureQuery(entities=[entity], features=[f], now=now)).results[0][0].scalar()


def test_ingest_consumes_the_log_and_commits_after_durable_writes(tmp_path):
    url = f"sqlite:///{tmp_path / 'events.db'}"
    log = open_log(url)
    events = [
        ActionEvent(user=str(i % 5), item=f"m{i}", action="click", time=NOW - i, attributes={"category": "c"})
        for i in range(230)
    ]
    log.append("actions", events)
    log.append("actions", [ActionEvent(user="9", item="m", action="click", time=NOW, counters={"bogus": 1.0})])
    store = ProfileStore(None, path=tmp_path / "store", clock=lambda: NOW, background=False)
    stats = ingest(store, url, batch=50, idle_exit_s=0.3)
    assert (stats.polled, stats.accepted, stats.rejected) == (231, 230, 1)
    assert log.committed("actions", "profiles") == log.end_offset("actions")
    # A second run resumes after the committed offset: nothing is counted twice.
    again = ingest(store, url, batch=50, idle_exit_s=0.3)
    assert again.polled == 0
    store.merge()
    assert sum(count(store, f"user:{u}", "clicked_category", "click") for u in range(5)) == 230
    store.close()
    log.close()


def test_load_movielens_csv_with_a_constant_action_and_event_clock(tmp_path):
    path = tmp_path / "ratings.csv"
    rows = [
        (u, m, r, 978300000 + 60 * i)
        for i, (u, m, r) in enumerate((u, m, 1 + (u + m) % 5) for u in range(1, 6) for m in range(1, 21))
    ]
    path.write_text("userId,movieId,rating,timestamp\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    store = ProfileStore({"clock": "event", "merge_interval": 0}, background=False)
    stats = load_file(store, path, user="userId", item="movieId", time_col="timestamp", action="rate", batch=32)
    assert (stats.rows, stats.accepted, stats.rejected, stats.too_old) == (100, 100, 0, 0)
    now = store.now()
    assert now == rows[-1][3]
    # item 7's ratings: counters named like a slot's counter ("rating") are summed per item.
    want = sum(r for u, m, r, t in rows if m == 7)
    assert count(store, "item:7", "item_engagement", "rating", now=now) == want
    # item_last_rating keeps the latest rating.
    last = max((t, r) for u, m, r, t in rows if m == 7)[1]
    assert count(store, "item:7", "item_last_rating", "rating", now=now) == last
    store.close()


def test_load_parquet_reports_bad_rows_and_loads_the_rest(tmp_path):
    path = tmp_path / "actions.parquet"
    table = pa.table(
        {
            "user": ["1", "2", "", "1"],
            "item": ["a", "b", "c", "d"],
            "action": ["click", "show", "click", "click"],
            "time": [NOW - 10, NOW - 20, NOW - 30, float("nan")],
            "dwell_ms": [100.0, None, 3.0, 4.0],
            "category": ["x", "y", "x", "x"],
        }
    )
    pq.write_table(table, path)
    store = ProfileStore({"merge_interval": 0}, clock=lambda: NOW, background=False)
    stats = load_file(store, path)
    assert (stats.rows, stats.accepted, stats.rejected) == (4, 2, 2)
    assert "user" in stats.first_errors[0] and "time" in stats.first_errors[1]
    assert count(store, "user:1", "clicked_category", "click") == 1.0
    assert count(store, "user:1", "clicked_category", "dwell_ms") == 100.0
    with pytest.raises(InvalidInputError, match="missing column"):
        load_file(store, path, user="userId")
    with pytest.raises(InvalidInputError, match="no such file"):
        load_file(store, tmp_path / "nope.csv")
    store.close()


def test_cli_load_and_sql(tmp_path):
    from streamrec.cli import app

    path = tmp_path / "a.csv"
    path.write_text("user,item,action,time,category\n1,a,click,1000000000,x\n1,b,click,1000000060,y\n")
    runner = CliRunner()
    res = runner.invoke(app, ["profiles", "load", str(path), "--store", str(tmp_path / "s"), "--event-clock", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output.strip().splitlines()[-1])["accepted"] == 2
    sql = "SELECT value, click FROM clicked_category WHERE entity = 'user:1' AND window = '1h' AND now = 1000000060"
    res = runner.invoke(app, ["profiles", "sql", sql, "--store", str(tmp_path / "s"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["rows"] == [["x", 1.0], ["y", 1.0]]
