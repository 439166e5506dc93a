"""The query's fast paths (shared answers of empty windows and of equal numbers, list reads of
whole-window answers) answer exactly what the per-(entity, feature) path answered, on random data
and random features, byte for byte (NaN and -0.0 included)."""

from __future__ import annotations

import math
import random

import msgspec

from streamrec.profiles import Feature, FeatureQuery, ProfileStore
from streamrec.profiles.query import SlotWindows, WindowPlan, _whole, answer
from streamrec.profiles.types import QueryResult

NOW = 1_700_000_000.0
SLOTS = {
    "cat": {"entity": "user", "value": "category", "counters": ["show", "click", "dwell"], "reduce": {"dwell": "max"}},
    "item": {"entity": "user", "value": "item", "counters": ["click", "rating"], "reduce": {"rating": "last"}},
    "ia": {"entity": "item", "value": "action", "counters": ["count", "dwell"], "reduce": {"dwell": "min"}},
    "iu": {"entity": "item", "value": "user", "counters": ["show", "click"], "truncate": 3, "truncate_by": "click"},
}
WINDOWS = ["5m", "1h", "6h", "1d", "7d", "30d"]


def per_entity_query(store: ProfileStore, query: FeatureQuery) -> QueryResult:
    """The loop as it was: every (entity, slot) its own kernel pass, every feature its own answer."""
    now = query.now
    plans = [store._plan(f) for f in query.features]
    keys = [store.label_key(e) for e in query.entities]
    groups: dict[int, list[tuple[int, int]]] = {}
    for j, plan in enumerate(plans):
        groups.setdefault(plan.spec.index, []).append((j, plan.window_start(now)))
    results = []
    for key in keys:
        profile = store._get(key, create=False, count=False)
        row = [None] * len(plans)
        for si, items in groups.items():
            wp = WindowPlan([c for _, c in items], [plans[j].per_value for j, _ in items])
            sw = SlotWindows(profile.slots[si] if profile else None, store.specs[si], wp, now)
            for j, c in items:
                plan, w, snap = plans[j], wp.win[c], wp.snap[c]
                if plan.values is None and plan.top_k == 0 and plan.agg != "distinct":
                    row[j] = _whole(plan, sw.tot[w])  # the NumPy read the list read replaced
                else:
                    row[j] = answer(plan, sw, w, snap)
        results.append(row)
    return QueryResult(
        names=[p.name for p in plans], columns=[p.columns for p in plans], keys=keys, results=results, now=now
    )


def random_events(rng: random.Random, n: int) -> list[dict]:
    out = []
    for _ in range(n):
        action = rng.choice(["show", "click", "rate", "like"])
        dwell = rng.choice([round(rng.uniform(0, 1000), 1), 0.0, -0.0, -3.0, 7.0])  # -0.0 must stay -0.0
        counters = {"dwell": dwell} if rng.random() < 0.5 else {}
        if action == "rate":
            counters["rating"] = float(rng.randint(1, 5))
        attrs = {"category": rng.choice("abcde")} if rng.random() < 0.8 else {}
        out.append(
            {
                "user": f"u{rng.randrange(6)}",
                "item": f"i{rng.randrange(10)}",
                "action": action,
                "time": NOW - rng.choice([rng.uniform(0, 600), rng.uniform(0, 86400), rng.uniform(0, 29 * 86400)]),
                "counters": counters,
                "attributes": attrs,
            }
        )
    return out


def random_feature(rng: random.Random) -> Feature:
    slot = rng.choice(sorted(SLOTS))
    counters = SLOTS[slot]["counters"]
    agg = rng.choice(["counters", "counters", "ratio", "distinct"])
    kw: dict = {"slot": slot, "agg": agg}
    if rng.random() < 0.15:
        kw["since"] = NOW - rng.uniform(0, 20 * 86400)
    else:
        kw["window"] = rng.choice(WINDOWS)
    if agg == "counters" and rng.random() < 0.7:
        kw["counters"] = tuple(rng.sample(counters, rng.randint(1, len(counters))))
    if agg == "ratio":
        kw.update(numerator=rng.choice(counters), denominator=rng.choice(counters), alpha=1.0, beta=rng.choice([0, 5]))
    if agg != "distinct" and rng.random() < 0.3:
        kw["top_k"] = rng.randint(1, 4)
    if rng.random() < 0.15:
        kw["values"] = tuple(rng.sample(["a", "b", "z", "i1", "i2", "u1", "click", "show"], 2))
    return Feature(**kw)


def test_one_query_over_users_and_items_equals_the_per_entity_answers_on_random_data():
    rng = random.Random(5)
    store = ProfileStore({"slots": SLOTS, "merge_interval": 0}, clock=lambda: NOW)
    try:
        for trial in range(90):
            if trial % 15 == 0:
                result = store.write(random_events(rng, 80))
                assert not result.rejected
            features = list({random_feature(rng): None for _ in range(rng.randint(1, 25))})
            entities = [f"user:u{u}" for u in range(8)] + [f"item:i{i}" for i in range(12)]  # some never seen
            entities = rng.sample(entities, rng.choice([1, 2, 20]))  # one entity takes another path
            now = NOW + rng.choice([0.0, 30.0, 3600.0, 2 * 86400.0])
            query = FeatureQuery(features=features, entities=entities, now=now)
            fast, slow = store.query(query), per_entity_query(store, query)
            assert msgspec.msgpack.encode(fast) == msgspec.msgpack.encode(slow), (trial, features)
    finally:
        store.close()


def test_a_feature_of_another_entity_type_answers_as_an_empty_profile():
    store = ProfileStore({"slots": SLOTS, "merge_interval": 0}, clock=lambda: NOW)
    try:
        store.write([{"user": "u1", "item": "i1", "action": "click", "time": NOW - 5, "attributes": {"category": "a"}}])
        features = [
            Feature(slot="cat", window="1d", counters=("click", "dwell")),
            Feature(slot="cat", window="1d", agg="ratio", numerator="click", denominator="show", alpha=1, beta=4),
            Feature(slot="cat", window="1d", agg="distinct"),
            Feature(slot="cat", window="1d", top_k=3),
        ]
        out = store.query(FeatureQuery(features=features, entities=["user:u1", "item:i1", "user:nobody"], now=NOW))
        user, item, nobody = out.results
        assert user[0].data[0][0] == 1.0 and user[1].data == [[0.5]] and user[2].data == [[1.0]]
        assert user[3].values == ["a"]
        assert math.isnan(item[0].data[0][1])  # max of nothing
        assert item[0].data[0][0] == 0.0 and item[1].data == [[0.25]] and item[2].data == [[0.0]]
        assert item[3].values == [] and item[3].data == []
        assert msgspec.msgpack.encode(item) == msgspec.msgpack.encode(nobody)
    finally:
        store.close()
