"""The feature set's user x candidate columns and sparse ids, built with NumPy, against a per-item
recomputation from the store's raw answers (what the plan did item by item before)."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from conftest import NOW
from streamrec.profiles.types import FeatureQuery
from streamrec.serving.features import _codes, _match, stable_id

names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=4)


@settings(max_examples=300, deadline=None)
@example(pairs=[("a\x00", 5.0)], extra=[], keys=["a", "a\x00"])  # NumPy strings drop trailing NULs
@example(pairs=[("a", 5.0)], extra=[], keys=["a\x00", "a"])
@example(pairs=[("\x00", 7.0)], extra=[], keys=["", "\x00"])  # "" is "no category"
@example(pairs=[("x", 1.0), ("x", 2.0)], extra=[], keys=["x"])  # the last of repeated names
@given(
    pairs=st.lists(st.tuples(names, st.floats(-1e6, 1e6)), max_size=12),
    extra=st.lists(st.floats(-1e6, 1e6), max_size=3),
    keys=st.lists(names, max_size=20),
)
def test_match_is_a_dict_lookup_with_the_last_of_repeated_names(pairs, extra, keys):
    given_names = [n for n, _ in pairs]
    numbers = [x for _, x in pairs] + extra  # more numbers than names: zip stops at the shorter
    reference = dict(zip(given_names, numbers, strict=False))
    got = _match(given_names, numbers, _codes(keys))
    assert got.tolist() == [reference.get(k, 0.0) for k in keys]
    fewer = _match(given_names, numbers[: len(given_names) // 2], _codes(keys))  # fewer numbers than names
    shorter = dict(zip(given_names, numbers[: len(given_names) // 2], strict=False))
    assert fewer.tolist() == [shorter.get(k, 0.0) for k in keys]


def test_columns_and_ids_equal_a_per_item_recomputation(world):
    plan = world.plan
    rec = world.recommender()
    matched = 0
    for user in ("u1", "u3", "u8", "nobody-at-all"):
        items = rec.retriever.retrieve(user, NOW).items or ["i1", "i2"]
        items = [*items, "never-seen-item"]
        fs = plan.fetch(world.client, user, items, NOW)
        result = world.client.query(
            FeatureQuery(features=plan._split_features()[0], entities=[f"user:{user}"], now=NOW)
        )
        user_row = dict(zip(result.names, result.results[0], strict=True))
        for c, d in enumerate(plan.dense):
            if d.kind != "user_item":
                continue
            answer = user_row[d.name]
            table = dict(zip(answer.values or (), (row[0] for row in answer.data), strict=False))
            keys = items if d.match == "item" else fs.categories
            want = [table.get(k, 0.0) for k in keys]
            if d.transform == "log1p":
                want = [math.log1p(max(w, 0.0)) if math.isfinite(w) else 0.0 for w in want]
            assert np.allclose(fs.dense[:, c], np.asarray(want, dtype=np.float32), rtol=1e-6), d.name
            matched += int(np.count_nonzero(fs.dense[:, c]))
        for s in plan.sparse:
            bags = fs.sparse[s.name]
            if s.kind == "user":
                assert bags == [[stable_id(s.name, user)]] * len(items)
            elif s.kind == "item":
                assert bags == [[stable_id(s.name, i)] for i in items]
            elif s.kind == "category":
                assert bags == [[stable_id(s.name, c)] if c else [] for c in fs.categories]
            else:
                top = user_row[f"_top:{s.name}"].values or []
                assert bags == [[stable_id(s.name, v) for v in top]] * len(items)
        sparse = fs.sparse
        for i in (0, len(items) - 1, -1):
            assert fs.sparse_of(i) == {slot: bags[i] for slot, bags in sparse.items()}
        batch = fs.batch()
        for slot, bags in sparse.items():
            assert batch.sparse[slot].values.tolist() == [x for bag in bags for x in bag]
            assert batch.sparse[slot].lengths().tolist() == [len(b) for b in bags]
            batch.sparse[slot].values.zero_()  # a model that writes into its input ...
        assert fs.sparse == sparse  # ... leaves what the impressions log untouched
    assert matched > 20  # the users' crossings did match candidates: the columns were not all zero
