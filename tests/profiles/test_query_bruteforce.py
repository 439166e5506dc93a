"""Every query answer equals a brute-force recomputation from the raw events (hypothesis)."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from profiles_reference import expected

from streamrec.profiles import Feature, FeatureQuery, ProfileStore

NOW = 1_700_000_000.0
TIERS = [(60.0, 7200.0), (3600.0, 3 * 86400.0), (86400.0, None)]
SLOTS = {
    "cat": {"entity": "user", "value": "category", "counters": ["show", "click", "dwell"], "reduce": {"dwell": "max"}},
    "item": {
        "entity": "user",
        "value": "item",
        "counters": ["click", "rating", "dwell"],
        "reduce": {"rating": "last", "dwell": "first"},
    },
    "ia": {"entity": "item", "value": "action", "counters": ["count", "dwell"], "reduce": {"dwell": "min"}},
    "rates": {"entity": "user", "value": "item", "counters": ["rating"], "actions": ["rate"]},
}
CONFIG = {
    "slots": SLOTS,
    "tiers": [{"width": w, "until": u} if u is not None else {"width": w} for w, u in TIERS],
    "merge_interval": 0,
}
WINDOWS = {"5m": 300.0, "1h": 3600.0, "1d": 86400.0, "7d": 7 * 86400.0, "30d": 30 * 86400.0, "90m": 5400.0}

ages = st.one_of(
    st.floats(0, 600), st.floats(0, 3 * 3600), st.floats(0, 4 * 86400), st.floats(0, 29 * 86400), st.floats(-120, 0)
)


@st.composite
def events(draw):
    n = draw(st.integers(1, 60))
    out = []
    for i in range(n):
        action = draw(st.sampled_from(["show", "click", "rate", "like"]))
        counters = {}
        if draw(st.booleans()):
            counters["dwell"] = draw(st.floats(0, 1000, allow_nan=False).map(lambda x: round(x, 1)))
        if action == "rate":
            counters["rating"] = float(draw(st.integers(1, 5)))
        attrs = {}
        if draw(st.integers(0, 4)):
            attrs["category"] = draw(st.sampled_from(["a", "b", "c", "d", "e"]))
        out.append(
            {
                "user": draw(st.sampled_from(["1", "2"])),
                "item": draw(st.sampled_from(["i1", "i2", "i3", "i4"])),
                "action": action,
                # distinct times: `last` ties are then ordered by time alone
                "time": NOW - draw(ages) + i * 1e-3,
                "counters": counters,
                "attributes": attrs,
            }
        )
    return out


@st.composite
def features(draw):
    slot = draw(st.sampled_from(sorted(SLOTS)))
    counters = SLOTS[slot]["counters"]
    agg = draw(st.sampled_from(["counters", "ratio", "distinct"]))
    f = {"slot": slot, "agg": agg}
    if draw(st.integers(0, 5)) == 0:
        f["since"] = NOW - draw(st.floats(0, 20 * 86400))
    else:
        w = draw(st.sampled_from(sorted(WINDOWS)))
        f["window"], f["window_s"] = w, WINDOWS[w]
    if agg == "counters" and draw(st.booleans()):
        f["counters"] = draw(st.lists(st.sampled_from(counters), min_size=1, max_size=3, unique=True))
    if agg == "ratio":
        f["numerator"] = draw(st.sampled_from(counters))
        f["denominator"] = draw(st.sampled_from(counters))
        f["alpha"] = draw(st.sampled_from([0.0, 1.0]))
        f["beta"] = draw(st.sampled_from([0.0, 2.0]))
    if agg != "distinct" and draw(st.booleans()):
        f["top_k"] = draw(st.integers(1, 4))
        if agg == "ratio" and draw(st.booleans()):
            f["by"] = "ratio"
    if draw(st.integers(0, 3)) == 0:
        f["values"] = draw(st.lists(st.sampled_from(["a", "b", "i1", "i2", "click", "show", "zz"]), max_size=3))
    return f


def to_feature(f: dict) -> Feature:
    kw = {k: v for k, v in f.items() if k not in ("window_s",)}
    for k in ("counters", "values"):
        if k in kw:
            kw[k] = tuple(kw[k])
    return Feature(**kw)


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def check(store: ProfileStore, evs: list[dict], feats: list[dict], now: float) -> None:
    labels = ["user:1", "user:2", "item:i1", "item:i3"]
    res = store.query(FeatureQuery(entities=labels, features=[to_feature(f) for f in feats], now=now))
    for i, label in enumerate(labels):
        for j, f in enumerate(feats):
            values, data = expected(evs, SLOTS, TIERS, label, f, now)
            got = res.results[i][j]
            assert got.values == values, (label, f, got, values, data)
            assert len(got.data) == len(data), (label, f, got, data)
            for ra, rb in zip(got.data, data, strict=True):
                assert all(same(a, b) for a, b in zip(ra, rb, strict=True)), (label, f, got.data, data)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    evs=events(),
    feats=st.lists(features(), min_size=1, max_size=8),
    later=st.sampled_from([0.0, 30.0, 5000.0, 2 * 86400.0]),
)
def test_every_feature_matches_brute_force(evs, feats, later):
    store = ProfileStore(CONFIG, clock=lambda: NOW, background=False)
    res = store.write(evs)
    assert not res.rejected
    store.merge()
    # At the write clock, and later (slices were compacted at NOW, the query rounds at NOW+later).
    check(store, evs, feats, NOW)
    check(store, evs, feats, NOW + later)
    store.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(evs=events(), feats=st.lists(features(), min_size=1, max_size=6), split=st.integers(0, 60))
def test_batches_merged_at_different_clocks_match_brute_force(evs, feats, split):
    clock = [NOW - 3 * 3600]
    store = ProfileStore(CONFIG, clock=lambda: clock[0], background=False)
    # Events later than the first clock would be "future" there; write them in time order halves.
    evs = sorted(evs, key=lambda e: e["time"])
    first = [e for e in evs[:split] if e["time"] <= clock[0]]
    rest = [e for e in evs if e not in first]
    store.write(first)
    store.merge()
    clock[0] = NOW
    store.write(rest)
    store.merge()
    store.compact(NOW)
    check(store, first + rest, feats, NOW)
    store.close()


def test_windows_round_down_to_the_slices_that_hold_them():
    store = ProfileStore(CONFIG, clock=lambda: NOW, background=False)
    # NOW is 13:33:20 UTC; an event 25h ago sits in an hour slice; 1d window starts at the hour.
    t_in = math.floor((NOW - 86400) / 3600) * 3600 + 1  # just inside the rounded 1d window
    t_out = math.floor((NOW - 86400) / 3600) * 3600 - 1
    store.write(
        [
            {"user": "1", "item": "i1", "action": "click", "time": t_in, "attributes": {"category": "a"}},
            {"user": "1", "item": "i1", "action": "click", "time": t_out, "attributes": {"category": "a"}},
        ]
    )
    f = Feature(slot="cat", window="1d", counters=("click",))
    out = store.query(FeatureQuery(entities=["user:1"], features=[f], now=NOW))
    assert out.results[0][0].scalar() == 1.0
    store.close()


@pytest.mark.parametrize("window", ["5m", "1h", "1d", "7d", "30d"])
def test_empty_profile_answers_identities(window):
    store = ProfileStore(CONFIG, clock=lambda: NOW, background=False)
    feats = [
        Feature(slot="cat", window=window),
        Feature(slot="cat", window=window, agg="distinct"),
        Feature(slot="cat", window=window, agg="ratio", numerator="click", denominator="show", alpha=1, beta=10),
        Feature(slot="cat", window=window, top_k=3),
    ]
    out = store.query(FeatureQuery(entities=["user:nobody"], features=feats, now=NOW)).results[0]
    assert out[0].data[0][:2] == [0.0, 0.0] and math.isnan(out[0].data[0][2])
    assert out[1].scalar() == 0.0
    assert out[2].scalar() == pytest.approx(0.1)
    assert out[3].values == [] and out[3].data == []
    store.close()
