"""ProfileStore behaviour: bad input, retention, compaction and truncation invariants, storage."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamrec.errors import ConfigError, InvalidInputError, StreamrecError, UnknownSlotError
from streamrec.profiles import Feature, FeatureQuery, ProfileStore, profiles_config
from streamrec.records import ActionEvent

NOW = 1_700_000_000.0
DAY = 86400.0
CONFIG = {
    "slots": {
        "cat": {"entity": "user", "value": "category", "counters": ["show", "click"]},
        "top3": {"entity": "user", "value": "item", "counters": ["click", "show"], "truncate": 3},
        "authors": {"entity": "item", "value": "author", "counters": ["count"]},
    },
    "merge_interval": 0,
}


def ev(user="1", item="i1", action="click", time=NOW - 10, **kw):
    return ActionEvent(user=user, item=item, action=action, time=time, **kw)


def clicks(store, entity="user:1", slot="cat", window="30d", now=NOW, **kw):
    f = Feature(slot=slot, window=window, counters=("click",), **kw)
    return store.query(FeatureQuery(entities=[entity], features=[f], now=now)).results[0][0].scalar()


@pytest.fixture
def store():
    s = ProfileStore(CONFIG, clock=lambda: NOW, background=False)
    yield s
    s.close()


def test_bad_events_are_rejected_with_field_and_value_and_the_rest_applied(store):
    batch = [
        ev(attributes={"category": "a"}),  # 0 ok
        {"user": "", "item": "i1", "action": "click", "time": NOW},  # 1 empty user
        {"user": "1", "item": "i1", "action": "click", "time": float("nan")},  # 2 NaN time
        {"user": "1", "item": "i1", "action": "click", "time": NOW, "counters": {"bogus": 1.0}},  # 3 unknown counter
        {"user": "1", "item": "i1", "action": "click"},  # 4 missing time
        {"user": "1", "item": "i1", "action": "zap", "time": NOW},  # 5 feeds no slot
        {"user": "1", "item": "i1", "action": "click", "time": NOW + 3 * DAY},  # 6 too far in the future
        "not an event",  # 7
        {"user": "1", "item": "i1", "action": "click", "time": NOW, "counters": {"click": float("inf")}},  # 8
        ev(attributes={"category": "a"}, time=NOW - 5),  # 9 ok
    ]
    res = store.write(batch)
    assert res.accepted == 2
    reasons = dict(res.rejected)
    assert sorted(reasons) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert "user" in reasons[1]
    assert "time" in reasons[2] and "nan" in reasons[2]
    assert "bogus" in reasons[3]
    assert "time" in reasons[4]
    assert "zap" in reasons[5]
    assert "time" in reasons[6]
    assert "inf" in reasons[8]
    assert clicks(store) == 2.0
    assert store.stats()["rejected"] == 8


def test_events_older_than_retention_are_counted_and_dropped(store):
    res = store.write([ev(time=NOW - 40 * DAY, attributes={"category": "a"}), ev(attributes={"category": "a"})])
    assert (res.accepted, res.too_old, res.rejected) == (1, 1, [])
    assert clicks(store, window="60d") == 1.0


def test_out_of_order_events_land_in_their_slices(store):
    store.write([ev(time=NOW - 60, attributes={"category": "a"})])
    store.write([ev(time=NOW - 2 * DAY, attributes={"category": "a"})])  # late, hour tier
    store.write([ev(time=NOW - 9 * DAY, attributes={"category": "a"})])  # later still, day tier
    assert [clicks(store, window=w) for w in ("5m", "3d", "7d", "30d")] == [1.0, 2.0, 2.0, 3.0]


def test_bad_queries_name_the_problem(store):
    def q(**kw):
        return store.query(FeatureQuery(entities=["user:1"], features=[Feature(**kw)], now=NOW))

    with pytest.raises(UnknownSlotError, match="nope"):
        q(slot="nope")
    with pytest.raises(InvalidInputError, match="window"):
        q(slot="cat", window="7 fortnights")
    with pytest.raises(InvalidInputError, match="numerator"):
        q(slot="cat", agg="ratio", numerator="like", denominator="show")
    with pytest.raises(InvalidInputError, match="top_k"):
        q(slot="cat", agg="distinct", top_k=3)
    with pytest.raises(InvalidInputError, match="by"):
        q(slot="cat", top_k=3, by="dwell")
    with pytest.raises(InvalidInputError, match="counters"):
        q(slot="cat", counters=("click", "zzz"))
    with pytest.raises(InvalidInputError, match="entities"):
        store.query(FeatureQuery(entities=["42"], features=[Feature(slot="cat")]))
    with pytest.raises(InvalidInputError, match="entity"):
        store.query(FeatureQuery(entities=["usr:42"], features=[Feature(slot="cat")]))
    with pytest.raises(InvalidInputError, match="keys"):
        store.query(FeatureQuery(keys=[b"short"], features=[Feature(slot="cat")]))
    with pytest.raises(InvalidInputError, match="now"):
        store.query(FeatureQuery(entities=["user:1"], features=[Feature(slot="cat")], now=float("nan")))


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"profiles\.slots\.x\.truncate_by"):
        profiles_config({"slots": {"x": {"counters": ["a"], "truncate_by": "b"}}})
    with pytest.raises(ConfigError, match=r"profiles\.slots\.x\.retention"):
        profiles_config({"slots": {"x": {"retention": "forever"}}})
    with pytest.raises(ConfigError, match=r"profiles\.merge_intervall"):
        profiles_config({"merge_intervall": "1s"})
    with pytest.raises(ConfigError, match=r"profiles\.tiers"):
        profiles_config({"tiers": [{"width": "1h", "until": "1d"}, {"width": "1m"}]})


def test_raw_ids_are_not_stored(tmp_path):
    s = ProfileStore(CONFIG, path=tmp_path / "p", clock=lambda: NOW, background=False)
    s.write([ev(user="alice-secret-id", item="item-secret-id", action="show", attributes={"category": "a"})])

    def stored() -> bytes:
        return b"".join(p.read_bytes() for p in (tmp_path / "p").rglob("*") if p.is_file())

    assert b"alice-secret-id" not in stored()  # the WAL holds keyed hashes
    s.close()
    assert b"alice-secret-id" not in stored()  # and so does LMDB
    other = ProfileStore({**CONFIG, "secret": "other"}, background=False)
    assert other.entity_key("user", "42") != ProfileStore(CONFIG, background=False).entity_key("user", "42")


def test_compaction_keeps_profiles_bounded_and_sums_exact():
    """A user active every 10 minutes for 60 days: rows stay bounded, aligned, and totals exact."""
    clock = [NOW - 60 * DAY]
    s = ProfileStore(CONFIG, clock=lambda: clock[0], background=False)
    key = s.entity_key("user", "1")
    times = []
    sizes = []
    for step in range(60 * 24):  # one batch per simulated hour
        clock[0] = NOW - 60 * DAY + step * 3600
        batch = [ev(time=clock[0] - m * 600, item=f"i{m}", attributes={"category": "abc"[m % 3]}) for m in range(6)]
        times += [e.time for e in batch]
        s.write(batch)
        if step % 24 == 0:
            s.compact()
            p = s._cache.profiles[key]
            sizes.append(len(p.slots[0].starts))
    s.compact()
    slot = s._cache.profiles[key].slots[0]
    # 3 values x (120 minute slices + 70 hour slices + 31 day slices) at most.
    assert len(slot.starts) <= 3 * (120 + 72 + 31)
    assert max(sizes) <= 3 * (120 + 72 + 31)
    # Every row start is aligned to the width of the tier its age puts it in.
    spec = s.specs[0]
    for start in np.unique(slot.starts):
        width = spec.plan.width_at(float(start), clock[0])
        assert start % width == 0
    # Sum over 30d equals the events since the rounded window start (compaction lost nothing).
    ws = spec.plan.window_start(clock[0] - 30 * DAY, clock[0])
    assert clicks(s, now=clock[0]) == sum(1 for t in times if ws <= t <= clock[0])
    s.close()


def test_truncation_keeps_the_top_values_of_each_slice(store):
    # In one minute slice: item i0..i5 with i clicks each (ties broken by value index).
    batch = [ev(item=f"i{i}", time=NOW - 30) for i in range(6) for _ in range(i)]
    store.write(batch)
    slot = store._cache.profiles[store.entity_key("user", "1")].slots[1]
    assert len(slot.starts) == 3
    kept = sorted(slot.vocab[v] for v in slot.vals)
    assert kept == ["i3", "i4", "i5"]
    # Per slice at most `truncate` values, however many arrive.
    store.write([ev(item=f"x{i}", time=NOW - 3600 * (i % 50)) for i in range(500)])
    slot = store._cache.profiles[store.entity_key("user", "1")].slots[1]
    _, per_slice = np.unique(slot.starts, return_counts=True)
    assert per_slice.max() <= 3


def test_last_max_min_reduces():
    cfg = {
        "slots": {
            "r": {
                "entity": "item",
                "value": "action",
                "counters": ["a", "b", "c"],
                "reduce": {"a": "last", "b": "max", "c": "min"},
            }
        },
        "merge_interval": 0,
    }
    s = ProfileStore(cfg, clock=lambda: NOW, background=False)
    vals = [(NOW - 500, 3.0), (NOW - 100, 1.0), (NOW - 9000, 7.0), (NOW - 200, 5.0)]
    for t, x in vals:  # one write each: out of order
        s.write([ev(action="rate", time=t, counters={"a": x, "b": x, "c": x})])
    out = s.query(FeatureQuery(entities=["item:i1"], features=[Feature(slot="r", window="30d")], now=NOW))
    assert out.results[0][0].data[0] == [1.0, 7.0, 1.0]
    out = s.query(FeatureQuery(entities=["item:i1"], features=[Feature(slot="r", window="5m")], now=NOW))
    assert out.results[0][0].data[0] == [1.0, 5.0, 1.0]
    s.close()


def test_profiles_survive_close_and_reopen(tmp_path):
    s = ProfileStore(CONFIG, path=tmp_path, clock=lambda: NOW, background=False)
    s.write([ev(user=str(u), attributes={"category": "a"}) for u in range(50)])
    s.close()
    s = ProfileStore(CONFIG, path=tmp_path, clock=lambda: NOW, background=False)
    assert s.stats()["entities"] == 50  # the item has no author attribute: no item profile
    assert clicks(s, entity="user:7") == 1.0
    s.close()


def test_memory_budget_evicts_clean_profiles_and_misses_load_them(tmp_path):
    cfg = {**CONFIG, "memory_budget_mb": 0.05}
    s = ProfileStore(cfg, path=tmp_path, clock=lambda: NOW, background=False)
    for u in range(300):
        s.write([ev(user=str(u), item=f"i{j}", attributes={"category": f"c{j}"}) for j in range(5)])
    s.flush()
    st = s.stats()
    assert st["evictions"] > 0 and st["cached_entities"] < 300
    assert st["memory_bytes"] <= 0.05 * (1 << 20)
    assert all(clicks(s, entity=f"user:{u}") == 5.0 for u in range(300))
    assert s.stats()["loads"] > 0
    s.close()


def test_export_import_merges_by_reduce_and_delete_removes(tmp_path):
    a = ProfileStore(CONFIG, clock=lambda: NOW, background=False)
    b = ProfileStore(CONFIG, path=tmp_path, clock=lambda: NOW, background=False)
    a.write([ev(attributes={"category": "a"}, time=NOW - 3 * DAY), ev(attributes={"category": "b"})])
    b.write([ev(attributes={"category": "a"})])
    key = a.entity_key("user", "1")
    blobs = a.export_profiles([key, a.entity_key("user", "nobody")])
    assert list(blobs) == [key]
    b.import_profiles(blobs)
    assert clicks(b) == 3.0
    assert clicks(b, values=("a",)) == 2.0
    b.close()
    b = ProfileStore(CONFIG, path=tmp_path, clock=lambda: NOW, background=False)
    assert clicks(b) == 3.0  # durable
    assert key in set(b.entity_keys())
    b.delete_profiles([key])
    assert clicks(b) == 0.0 and key not in set(b.entity_keys())
    b.close()
    b = ProfileStore(CONFIG, path=tmp_path, clock=lambda: NOW, background=False)
    assert clicks(b) == 0.0
    with pytest.raises(InvalidInputError):
        b.import_profiles({key: b"garbage"})
    with pytest.raises(InvalidInputError):
        b.delete_profiles([b"123"])
    b.close()
    with pytest.raises(StreamrecError):
        b.write([ev()])


def test_event_clock_loads_history():
    s = ProfileStore({**CONFIG, "clock": "event"}, background=False)
    res = s.write([ev(time=900_000_000.0 + i * 60, attributes={"category": "a"}) for i in range(10)])
    assert res.accepted == 10 and res.too_old == 0
    assert s.now() == 900_000_000.0 + 540
    assert clicks(s, now=s.now(), window="1h") == 10.0
    s.close()


def test_writes_become_visible_within_the_merge_interval():
    s = ProfileStore({**CONFIG, "merge_interval": "0.05s"}, clock=lambda: NOW)
    s.write([ev(attributes={"category": "a"})])
    import time

    deadline = time.monotonic() + 2
    while clicks(s) == 0.0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert clicks(s) == 1.0
    s.close()


def test_ratio_and_distinct_and_filters(store):
    store.write(
        [ev(action="show", attributes={"category": c}) for c in "aabbbc"]
        + [ev(action="click", attributes={"category": c}) for c in "ab"]
    )

    def one(**kw):
        return store.query(
            FeatureQuery(entities=["user:1"], features=[Feature(slot="cat", window="1h", **kw)], now=NOW)
        )

    ctr = one(agg="ratio", numerator="click", denominator="show", alpha=1, beta=2).results[0][0].scalar()
    assert math.isclose(ctr, (2 + 1) / (6 + 2))
    assert one(agg="distinct").results[0][0].scalar() == 3.0
    assert one(agg="distinct", values=("a", "zz")).results[0][0].scalar() == 1.0
    top = one(agg="ratio", numerator="click", denominator="show", top_k=2, by="ratio").results[0][0]
    assert top.values == ["a", "b"] and top.data == [[0.5], [1 / 3]]


def test_write_owns_filter_keeps_only_owned_entities(store):
    mine = store.entity_key("user", "1")
    res = store.write([ev(attributes={"category": "a", "author": "x"})], owns=lambda k: k == mine)
    assert res.accepted == 1
    assert clicks(store) == 1.0
    out = store.query(FeatureQuery(entities=["item:i1"], features=[Feature(slot="authors")], now=NOW))
    assert out.results[0][0].scalar() == 0.0  # the item row belonged to another node


def test_bad_input_on_the_other_entry_points(store, tmp_path):
    with pytest.raises(InvalidInputError, match="events"):
        store.write(42)
    with pytest.raises(InvalidInputError, match="query"):
        store.query("SELECT 1")
    with pytest.raises(InvalidInputError, match="features"):
        store.query(FeatureQuery(entities=["user:1"], features=[{"slot": "cat"}]))
    with pytest.raises(InvalidInputError, match="keys"):
        store.export_profiles([b"x"])
    with pytest.raises(InvalidInputError, match="entity"):
        store.entity_key("user", "")
    with pytest.raises(ConfigError, match=r"profiles\.slots\.a\.entity"):
        ProfileStore({"slots": {"a": {"entity": "action"}}})
    with pytest.raises(ConfigError, match=r"profiles\.slots\.a\.reduce"):
        ProfileStore({"slots": {"a": {"counters": ["x"], "reduce": {"x": "median"}}}})
    nothing_changed = store.stats()
    assert nothing_changed["accepted"] == 0 and nothing_changed["entities"] == 0


def test_the_example_in_the_class_docs_runs():
    import doctest

    import streamrec.profiles.store as module

    assert doctest.testmod(module).failed == 0
