"""History for the batch stage (events, Impressions, Parquet, the event log), the shapes a recommender
may answer in. (The sim's docstring examples run in tests/test_docstring_examples.py.)"""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from streamrec.errors import InvalidInputError
from streamrec.log import open_log
from streamrec.records import ActionEvent
from streamrec.sim import InProcessDriver, PopularityPolicy, Slate, SlateItem, World
from streamrec.sim.protocol import as_slate


@pytest.fixture(scope="module")
def history():
    world = World(seed=4, n_users=100)
    return world, world.generate_history(days=1 / 24, policy=PopularityPolicy(world))


def test_history_covers_the_period_and_the_world_continues_after_it(history):
    world, h = history
    assert h.start == world.config.start_time and h.end == world.now == h.start + 3600.0
    assert all(h.start <= e.time for e in h.events)
    shows = list(h.actions("show"))
    assert shows and max(e.time for e in shows) < h.end
    assert sum(b.requests for b in h.report.buckets) * 10 == len(shows)
    assert {e.action for e in h.events} == {"show", "click", "like"}


def test_history_impressions_have_id_features_and_positions(history):
    _, h = history
    impressions = h.impressions()
    assert len(impressions) == sum(1 for _ in h.actions("show"))
    first = impressions[0]
    assert first.sparse["user"] == [int(first.user[1:])] and first.sparse["item"] == [int(first.item[1:])]
    assert set(first.sparse) == {"user", "item", "category", "author"}
    assert {imp.position for imp in impressions} == set(range(10))


def test_history_round_trips_through_parquet(history, tmp_path):
    _, h = history
    table = pq.read_table(h.to_parquet(tmp_path / "history.parquet"))
    assert table.num_rows == len(h.events)
    row = table.slice(5, 1).to_pylist()[0]
    event = h.events[5]
    rebuilt = ActionEvent(
        user=row["user"], item=row["item"], action=row["action"], time=row["time"],
        counters=json.loads(row["counters"]), attributes=json.loads(row["attributes"]), request_id=row["request_id"],
    )  # fmt: skip
    assert rebuilt == event


def test_history_appends_to_the_event_log(history, tmp_path):
    _, h = history
    log = open_log(f"sqlite:///{tmp_path}/log.db")
    try:
        assert h.append_to(log, batch=5000) == len(h.events)
        consumer = log.consumer("actions", "check", ActionEvent)
        got = []
        while batch := consumer.poll(10_000):
            got.extend(envelope.record for envelope in batch)
        assert got == h.events
    finally:
        log.close()


def test_recommenders_may_answer_with_tuples_dicts_or_a_slate():
    assert as_slate([("i1", 0.5, "pop"), ("i2",)]) == Slate([SlateItem("i1", 0.5, "pop"), SlateItem("i2")])
    assert as_slate([{"item": "i3", "score": 1}]).items == [SlateItem("i3", 1.0, "")]
    with pytest.raises(InvalidInputError, match="recommend"):
        as_slate([42])


def test_a_recommender_returning_an_unknown_item_is_named():
    class Bad:
        def recommend(self, user, k, now):
            return [("not-an-item", 1.0, "x")]

        def record(self, events):
            pass

    with pytest.raises(InvalidInputError, match="item"):
        InProcessDriver(World(seed=0, n_users=50), Bad()).run(minutes=5)
