"""The item cache: cached feature answers against uncached ones, within the stated bound.

The reference is the uncached path (``FeaturePlan.fetch`` without a cache: one store query over
the user and every item), computed after every change of the store. A cached row must equal the
uncached row of one of the store's states no older than ``max_age_s`` on the cache's clock.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from conftest import NOW, category_of
from streamrec.errors import InvalidInputError
from streamrec.profiles import ProfileClient
from streamrec.records import ActionEvent
from streamrec.serving import RecommenderConfig, default_plan, serving_profiles_config
from streamrec.serving.features import ItemCache
from streamrec.serving.slots import stamp


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _row(fs, j: int) -> tuple:
    """Everything the ranker and the impression log see of candidate ``j``."""
    return (fs.dense[j].tobytes(), fs.categories[j], tuple(tuple(ids[j]) for ids in fs.sparse.values()))


def _item_part(fs, j: int) -> tuple:
    """What candidate ``j``'s row holds from the item's own profile: the item columns and category."""
    cols = [c for c, d in enumerate(fs.plan.dense) if d.kind == "item"]
    return (fs.dense[j, cols].tobytes(), fs.categories[j])


def _user_part(fs, j: int) -> tuple:
    """The rest of the row: the user's columns, crossings, context, and the sparse ids."""
    cols = [c for c, d in enumerate(fs.plan.dense) if d.kind != "item"]
    return (fs.dense[j, cols].tobytes(), tuple(tuple(ids[j]) for ids in fs.sparse.values()))


def _store() -> ProfileClient:
    return ProfileClient.embedded(serving_profiles_config({"merge_interval": 0}), clock=lambda: NOW)


def _events(rng: random.Random, n: int, items: list[str]) -> list[ActionEvent]:
    out = []
    for _ in range(n):
        item = rng.choice(items)
        action = rng.choice(["show", "show", "click", "like"])
        counters = {"dwell_ms": float(rng.randrange(100, 5000))} if action == "click" else {}
        out.append(
            stamp(
                ActionEvent(
                    user=f"u{rng.randrange(5)}", item=item, action=action, time=NOW - rng.uniform(1, 20_000),
                    attributes={"category": category_of(item)}, counters=counters,
                )
            )
        )  # fmt: skip
    return out


def test_cached_features_equal_uncached_ones_when_the_store_does_not_change(world):
    plan = world.plan
    cache = ItemCache(plan, max_age_s=60.0)
    items = [f"i{j}" for j in range(40)]
    for user in ("u1", "u5", "u9", "u1"):
        cached = plan.fetch(world.client, user, items, NOW, cache)
        plain = plan.fetch(world.client, user, items, NOW)
        assert np.array_equal(cached.dense, plain.dense)
        assert cached.sparse == plain.sparse and cached.categories == plain.categories
    assert cache.stats()["misses"] == len(items)  # filled once, then shared by every request
    assert cache.stats()["hits"] == 3 * len(items)


def test_a_cached_row_is_an_uncached_row_no_older_than_the_bound():
    """Random writes at random times: the item part of every served row equals the uncached one of
    a store state at most ``max_age_s`` old, the user part the uncached one now (never cached), and
    some item parts are older than the newest state (so the cache is exercised)."""
    rng = random.Random(7)
    plan = default_plan()
    client = _store()
    items = [f"i{j}" for j in range(30)]
    client.write(_events(rng, 300, items))
    clock = FakeClock()
    cache = ItemCache(plan, max_age_s=1.0, clock=clock, seed=3)
    history: list[tuple[float, dict[str, tuple]]] = []  # (clock, uncached row per item) of each state
    stale_served = 0
    try:
        for _ in range(60):
            clock.t += rng.uniform(0.0, 0.3)
            if rng.random() < 0.5:
                client.write(_events(rng, rng.randrange(1, 20), items))  # merged on write (merge_interval 0)
            asked = rng.sample(items, 12)
            plain = plan.fetch(client, "u1", asked, NOW)
            history.append((clock.t, {item: _item_part(plain, j) for j, item in enumerate(asked)}))
            cached = plan.fetch(client, "u1", asked, NOW, cache)
            for j, item in enumerate(asked):
                part = _item_part(cached, j)
                states = [rows[item] for t, rows in history if clock.t - t <= 1.0 and item in rows]
                assert part in states, f"item {item} at t={clock.t:.2f}: no uncached answer within 1 s matches"
                assert _user_part(cached, j) == _user_part(plain, j)
                stale_served += part != _item_part(plain, j)
        assert stale_served > 0  # the property above is not vacuous: some answers came from the cache
    finally:
        client.close()


def test_entries_expire_within_the_bound_and_a_new_answer_is_served():
    plan = default_plan()
    client = _store()
    rng = random.Random(1)
    client.write(_events(rng, 100, ["i1", "i2"]))
    clock = FakeClock()
    cache = ItemCache(plan, max_age_s=1.0, clock=clock)
    try:
        before = plan.fetch(client, "u1", ["i1", "i2"], NOW)
        assert _row(plan.fetch(client, "u1", ["i1", "i2"], NOW, cache), 0) == _row(before, 0)
        client.write(_events(rng, 50, ["i1"]))
        after = plan.fetch(client, "u1", ["i1", "i2"], NOW)
        assert _item_part(after, 0) != _item_part(before, 0)
        clock.t = 0.4  # under every entry's life (at least max_age_s / 2): the old answer
        assert _item_part(plan.fetch(client, "u1", ["i1", "i2"], NOW, cache), 0) == _item_part(before, 0)
        clock.t = 1.0001  # past every entry's life: the store's answer now
        assert _row(plan.fetch(client, "u1", ["i1", "i2"], NOW, cache), 0) == _row(after, 0)
    finally:
        client.close()


def test_the_request_clock_bounds_the_answer_too():
    """An answer for ``now0`` serves ``now`` only within ``now0 <= now <= now0 + life``."""
    plan = default_plan()
    client = _store()
    client.write(_events(random.Random(2), 200, ["i1", "i2", "i3"]))
    cache = ItemCache(plan, max_age_s=1.0, clock=FakeClock())
    try:
        plan.fetch(client, "u1", ["i1", "i2", "i3"], NOW, cache)
        for now in (NOW + 3600.0, NOW - 3600.0):  # an hour later, an hour earlier: windows moved
            got = plan.fetch(client, "u1", ["i1", "i2", "i3"], now, cache)
            plain = plan.fetch(client, "u1", ["i1", "i2", "i3"], now)
            assert np.array_equal(got.dense, plain.dense)
        assert cache.stats()["misses"] == 9 and cache.stats()["hits"] == 0
    finally:
        client.close()


def test_a_full_cache_starts_over_and_stays_exact(world):
    cache = ItemCache(world.plan, max_age_s=60.0, capacity=8)
    for lo in range(0, 30, 5):
        items = [f"i{j}" for j in range(lo, lo + 5)]
        got = world.plan.fetch(world.client, "u3", items, NOW, cache)
        assert np.array_equal(got.dense, world.plan.fetch(world.client, "u3", items, NOW).dense)
        assert len(cache) <= 8
    assert cache.stats()["resets"] >= 1


@pytest.mark.parametrize("bad", [0, -1.0, float("inf"), True, "1s"])
def test_a_bad_bound_is_refused_naming_the_field(bad):
    with pytest.raises(InvalidInputError, match="max_age_s"):
        ItemCache(default_plan(), max_age_s=bad)


def test_item_cache_ms_is_validated_and_zero_turns_the_cache_off(world):
    with pytest.raises(ValueError, match="item_cache_ms"):
        RecommenderConfig(item_cache_ms=-5.0)
    assert world.recommender(item_cache_ms=0).item_cache is None
    rec = world.recommender(item_cache_ms=250)
    assert rec.item_cache is not None and rec.item_cache.max_age_s == 0.25
    out = rec.recommend("u2", 5, NOW)
    plain = world.recommender(item_cache_ms=0).recommend("u2", 5, NOW)
    assert [(i, round(s, 6)) for i, s, _ in out.items] == [(i, round(s, 6)) for i, s, _ in plain.items]
