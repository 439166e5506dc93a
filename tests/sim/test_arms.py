"""The property the demo relies on: under drift, a policy that keeps learning beats the same policy
frozen after the batch stage, which beats popularity only; the oracle bounds them all.

All arms run on copies of one world taken after the same history, so they serve the same users,
arriving at the same times, with the same interests and items (the world's dynamics never depend on
the policy). CTR is the expected CTR (true click probabilities of what was shown, position bias
included), which removes the click-sampling noise; the sampled CTR is checked to agree with it.
"""

from __future__ import annotations

import copy

import pytest
from category_policy import CategoryPolicy

from streamrec.sim import InProcessDriver, OraclePolicy, PopularityPolicy, RandomPolicy, World

HISTORY_HOURS = 2.0
LIVE_MINUTES = 60.0


@pytest.fixture(scope="module")
def arms():
    """Expected CTR (whole run, last third) and sampled CTR of every arm, default world parameters."""
    base = World(seed=0)
    history = base.generate_history(days=HISTORY_HOURS / 24)
    out = {}
    for arm in ("oracle", "online", "frozen", "popularity", "random"):
        world = copy.deepcopy(base)
        if arm == "oracle":
            policy = OraclePolicy(world)
        elif arm == "popularity":
            policy = PopularityPolicy(world)
            policy.record(history.events)
        elif arm == "random":
            policy = RandomPolicy(world, seed=1)
        else:
            policy = CategoryPolicy(world, online=arm == "online")
            policy.train(history.events)
        report = InProcessDriver(world, policy).run(LIVE_MINUTES)
        out[arm] = report
    for arm, report in out.items():
        total, last = report.total(), report.last_fraction(1 / 3)
        print(f"{arm:10s} ctr={total.expected_ctr:.4f} last_third={last.expected_ctr:.4f} sampled={total.ctr:.4f}")
    return out


def test_arms_are_ordered_oracle_online_frozen_popularity_random(arms):
    ctr = {arm: report.total().expected_ctr for arm, report in arms.items()}
    assert ctr["oracle"] > ctr["online"] > ctr["frozen"] > ctr["popularity"] > ctr["random"]
    assert ctr["online"] > 1.1 * ctr["frozen"]


def test_the_frozen_arm_falls_behind_more_as_drift_accumulates(arms):
    def gap(report, part):
        buckets = report.buckets
        third = len(buckets) // 3
        chosen = buckets[:third] if part == "first" else buckets[-third:]
        return sum(b.expected_clicks for b in chosen) / sum(b.impressions for b in chosen)

    first = gap(arms["online"], "first") - gap(arms["frozen"], "first")
    last = gap(arms["online"], "last") - gap(arms["frozen"], "last")
    assert last > first


def test_every_arm_serves_the_same_requests_and_the_oracle_bound_is_shared(arms):
    totals = [report.total() for report in arms.values()]
    assert len({t.requests for t in totals}) == 1
    assert len({round(t.oracle_expected_clicks, 6) for t in totals}) == 1
    oracle = arms["oracle"].total()
    assert oracle.expected_ctr == pytest.approx(oracle.oracle_ctr)


def test_sampled_ctr_agrees_with_expected_ctr(arms):
    for report in arms.values():
        total = report.total()
        # Binomial-ish noise on ~60 000 impressions: a few tenths of a point at most.
        assert total.ctr == pytest.approx(total.expected_ctr, abs=0.005)
