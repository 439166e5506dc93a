"""``ProfileStore.query_numbers`` (the item cache's fill) against ``ProfileStore.query``, cell by cell."""

from __future__ import annotations

import random

import numpy as np
import pytest

from conftest import NOW, category_of
from streamrec.errors import InvalidInputError
from streamrec.profiles import Feature, FeatureQuery, ProfileStore
from streamrec.records import ActionEvent
from streamrec.serving import default_plan, serving_profiles_config
from streamrec.serving.slots import stamp


def _store(seed: int) -> ProfileStore:
    rng = random.Random(seed)
    store = ProfileStore(serving_profiles_config({"merge_interval": 0}), clock=lambda: NOW, background=False)
    events = []
    for _ in range(400):
        item = f"i{rng.randrange(25)}"
        action = rng.choice(["show", "show", "click", "like"])
        counters = {"dwell_ms": float(rng.randrange(0, 9000))} if action == "click" else {}
        events.append(
            stamp(
                ActionEvent(
                    user=f"u{rng.randrange(6)}", item=item, action=action, time=NOW - rng.uniform(0, 40 * 86400),
                    attributes={"category": category_of(item)}, counters=counters,
                )
            )
        )  # fmt: skip
    store.write(events)
    store.merge()
    return store


def _features() -> list[Feature]:
    """Every one-number feature of the plan over seven windows, plus ratios that divide by zero."""
    plan = default_plan(("5m", "1h", "6h", "1d", "3d", "7d", "30d"))
    feats = [d.profile_feature() for d in plan.dense if d.kind in ("item", "user")]
    feats += [
        Feature(slot="item_ctr", window="1h", agg="ratio", numerator="click", denominator="show", name="r0"),
        Feature(slot="item_ctr", window="2d", agg="ratio", numerator="like", denominator="click", alpha=1.0, name="r1"),
        Feature(slot="item_ctr", window="90d", counters=("dwell_ms",), name="max_dwell_90d"),
    ]
    return feats


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_cell_is_the_answer_query_gives_bit_for_bit(seed):
    store = _store(seed)
    feats = _features()
    entities = [f"item:i{j}" for j in range(30)] + [f"user:u{j}" for j in range(8)]  # unseen ones too
    for now in (NOW, NOW - 3 * 86400.0, NOW + 7200.5):
        got = store.query_numbers(feats, entities, now)
        want = store.query(FeatureQuery(features=feats, entities=entities, now=now))
        expected = np.array([[res.data[0][0] for res in row] for row in want.results], dtype=np.float64)
        assert got.shape == expected.shape
        assert got.tobytes() == expected.tobytes()  # NaN, -0.0 and infinities included
    store.close()


def test_features_that_are_not_one_number_are_refused_naming_them():
    store = _store(0)
    with pytest.raises(InvalidInputError, match="top"):
        store.query_numbers([Feature(slot="item_ctr", window="1d", top_k=3, name="top")], ["item:i1"], NOW)
    with pytest.raises(InvalidInputError, match="now"):
        store.query_numbers(_features()[:1], ["item:i1"], float("nan"))
    store.close()
