"""The world's dynamics: reproducible by seed, interests drift and shift, items are born and age,
clicks fall with position. Checked against the closed-form model or statistically, never against
recorded output."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from streamrec.errors import InvalidInputError
from streamrec.sim import InProcessDriver, PopularityPolicy, RandomPolicy, World, WorldConfig


def _run_events(seed: int, minutes: float = 5.0):
    world = World(seed=seed, n_users=200)
    events = []
    InProcessDriver(world, RandomPolicy(world, seed=seed)).run(minutes, on_events=events.extend)
    return events


def test_same_seed_gives_identical_events_and_another_seed_does_not():
    first, again, other = _run_events(5), _run_events(5), _run_events(6)
    assert len(first) > 1000
    assert first == again
    assert first != other


def test_arrivals_and_dynamics_do_not_depend_on_the_policy():
    """Arms compared on the same simulated users: what is recommended never changes who arrives when."""
    seen = []
    for make in (RandomPolicy, PopularityPolicy):
        world = World(seed=9, n_users=200)
        requests = []
        driver = InProcessDriver(world, make(world))
        driver.run(10, on_events=lambda evs, r=requests: r.extend((e.user, e.time) for e in evs if e.action == "show"))
        seen.append((sorted(set(requests)), world.interests("u7"), world.n_items_total))
    assert seen[0][0] == seen[1][0]
    np.testing.assert_array_equal(seen[0][1], seen[1][1])
    assert seen[0][2] == seen[1][2]


def test_slow_drift_moves_interest_vectors_by_the_ornstein_uhlenbeck_amount():
    world = World(seed=1, n_users=2000, shift_rate_per_day=0.0, shift_every_s=0.0)
    before = world._g.copy()
    fav = world._fav.copy()
    world.advance(3600.0)
    a = np.exp(-3600.0 / world.config.drift_tau_s)
    # Closed form: g' - a g ~ N(0, 1 - a^2) componentwise, and no favourite changes without shifts.
    residual = world._g - a * before
    assert residual.var() == pytest.approx(1 - a * a, rel=0.05)
    assert np.array_equal(world._fav, fav)
    assert not np.allclose(world.interests("u3"), World(seed=1, n_users=2000).interests("u3"))


def test_a_sudden_shift_changes_the_favourite_topic_and_the_oracle_top_items():
    world = World(seed=2, n_users=100, shift_rate_per_day=0.0, shift_every_s=0.0)
    user = "u10"
    topic = world.favourite_topic(user)
    before = set(world.oracle_slate(user, 10))
    world.shift_users(users=[user])
    assert world.favourite_topic(user) != topic
    after = set(world.oracle_slate(user, 10))
    assert len(before & after) <= 2
    assert world.shifts == [(world.now, 1)]


def test_scheduled_shifts_move_the_configured_fraction_of_users():
    world = World(seed=3, n_users=1000, shift_rate_per_day=0.0, shift_every_s=600.0, shift_fraction=0.2)
    fav = world._fav.copy()
    world.advance(599.0)
    assert np.array_equal(world._fav, fav)
    world.advance(2.0)
    assert (world._fav != fav).sum() == 200
    assert world.shifts == [(world.config.start_time + 600.0, 200)]


def test_random_shifts_happen_at_the_configured_rate():
    world = World(seed=4, n_users=5000, shift_rate_per_day=24.0, shift_every_s=0.0)
    for _ in range(60):
        world.advance(60.0)
    moved = sum(n for _, n in world.shifts)
    assert moved == pytest.approx(5000 * 1.0, rel=0.1)  # 24 per day = one jump per user per hour


def test_items_are_born_retire_and_the_live_pool_stays_near_its_size():
    world = World(seed=5, n_users=10, n_items=300, item_lifetime_s=3600.0)
    first = set(world.live_items())
    assert len(first) == 300
    for _ in range(4 * 60):
        world.advance(60.0)  # four lifetimes: everything alive at the start has retired
    live = world.live_items()
    assert not first & set(live)
    assert 250 < len(live) < 350
    assert world.n_items_total == pytest.approx(300 + 4 * 300, rel=0.1)
    newest = world.fresh_items(1)[0]
    assert world.item_birth(newest) > world.now - 600
    assert set(world.item_attributes(newest)) == {"category", "author"}


def test_aging_lowers_the_click_probability_of_the_same_user_and_item():
    world = World(seed=6, n_users=20)
    item = world.fresh_items(1)[0]
    p = [world.click_probability("u1", [item], time=world.now + h * 3600.0)[0] for h in range(4)]
    assert all(a > b for a, b in itertools.pairwise(p))
    logit = np.log(np.array(p) / (1 - np.array(p)))
    np.testing.assert_allclose(np.diff(logit), -3600.0 / world.config.age_scale_s)


def test_click_rate_falls_with_position_for_identical_items():
    world = World(seed=7, n_users=500, position_bias=0.8)
    item = world.item_index(world.fresh_items(1)[0])
    n = 20000
    users = np.arange(n) % 500
    slates = np.full((n, 10), item)
    feedback = world.respond_many(users, slates, np.full(n, world.now), [f"r{i}" for i in range(n)], impressions=False)
    clicks = np.zeros(10)
    for e in feedback.events:
        if e.action == "click":
            clicks[int(e.counters["position"])] += 1
    rate = clicks / n
    # Same item, same users at every position: the ratio to position 0 is the examination curve.
    expected = world.examination_probability(10)
    p_mean = rate[0]
    assert rate[0] > rate[4] > rate[9]
    np.testing.assert_allclose(rate / p_mean, expected, atol=0.08)


def test_events_carry_the_request_id_attributes_and_counters():
    world = World(seed=8, n_users=50)
    slate = world.oracle_slate("u1", 5)
    events = world.respond("u1", slate, request_id="req-1")
    impressions = [e for e in events if e.action == "show"]
    assert [e.item for e in impressions] == slate
    assert [e.counters["position"] for e in impressions] == [0, 1, 2, 3, 4]
    assert all(e.request_id == "req-1" and e.attributes == world.item_attributes(e.item) for e in events)
    for click in (e for e in events if e.action == "click"):
        assert click.counters["dwell_ms"] > 0 and click.time > impressions[0].time
    assert [e.time for e in events] == sorted(e.time for e in events)
    assert all(e.action in ("click", "like") for e in world.respond("u1", slate, "req-2", impressions=False))


def test_oracle_expected_clicks_matches_the_closed_form():
    world = World(seed=9, n_users=30)
    slate = world.oracle_slate("u4", 10)
    expected = world.click_probability("u4", slate) @ world.examination_probability(10)
    got = world.oracle_expected_clicks(np.array([4]), np.array([world.now]), 10)[0]
    assert got == pytest.approx(expected)
    # And no other slate of the live items does better.
    p = world.click_probability("u4", world.live_items())
    assert np.sort(p)[::-1][:10] == pytest.approx(world.click_probability("u4", slate))


@pytest.mark.parametrize(
    ("field", "value"),
    [("n_users", 0), ("position_bias", -0.5), ("shift_fraction", 1.5), ("bias", float("nan")), ("n_topics", 1)],
)
def test_bad_parameters_raise_an_error_naming_the_field(field, value):
    with pytest.raises(InvalidInputError, match=field):
        WorldConfig(**{field: value})


def test_unknown_ids_and_overrides_are_named():
    world = World(seed=0, n_users=10)
    with pytest.raises(InvalidInputError, match="user"):
        world.interests("u10")
    with pytest.raises(InvalidInputError, match="item"):
        world.respond("u1", ["x1"], "r")
    with pytest.raises(InvalidInputError, match="n_user"):
        World(n_user=5)
    with pytest.raises(InvalidInputError, match="dt"):
        world.advance(0.0)


def test_arrivals_follow_each_users_zipf_like_rate():
    world = World(seed=10, n_users=500, activity_zipf=1.0)
    rates = world.activity_rates()
    assert rates.mean() == pytest.approx(1 / world.config.mean_request_interval_s)
    ranked = np.sort(rates)[::-1]
    np.testing.assert_allclose(ranked[:5] / ranked[0], 1 / np.arange(1, 6))  # rate of rank r ~ 1/r
    counts = np.zeros(500)
    hours = 20
    for _ in range(hours * 6):
        users, times = world.arrivals(600.0)
        assert np.all(np.diff(times) >= 0) and np.all((times >= world.now) & (times < world.now + 600))
        np.add.at(counts, users, 1)
        world.advance(600.0)
    expected = rates * hours * 3600
    assert counts.sum() == pytest.approx(expected.sum(), rel=0.03)
    busiest = np.argsort(-rates)[:10]
    np.testing.assert_allclose(counts[busiest], expected[busiest], rtol=0.1)


def test_topic_trends_drift_for_everyone_and_move_click_probabilities():
    world = World(seed=12, n_users=50, shift_rate_per_day=0.0, shift_every_s=0.0, drift_tau_s=1e12)
    item = world.fresh_items(1)[0]
    topic = int(world.item_attributes(item)["category"][1:])
    before_trend = world.topic_trends()[topic]
    before = world.click_probability("u1", [item])[0]
    for _ in range(12):
        world.advance(300.0)  # one trend correlation time
    after_trend = world.topic_trends()[topic]
    after = world.click_probability("u1", [item], time=world.now)[0]
    # Only the trend moved this item's logit besides its age (drift is frozen, no shifts).
    logit = np.log([before / (1 - before), after / (1 - after)])
    expected = (after_trend - before_trend) - 3600.0 / world.config.age_scale_s
    assert logit[1] - logit[0] == pytest.approx(expected, abs=0.05)
    assert after_trend != before_trend
    assert np.allclose(World(seed=12, trend_strength=0.0, n_users=5).topic_trends(), 0.0)
