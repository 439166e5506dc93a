"""The benches' timing harness against closed forms and a second, plain-Python implementation."""

import math
import random
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamrec.benchutil import (
    median,
    paired_rate_ratio,
    paired_speedup,
    paired_time_ratio,
    percentiles,
    race,
    rate,
    rate_ratio,
    speedup,
    time_ratio,
    timed,
)
from streamrec.errors import InvalidInputError


def _rank_percentile(xs, q):
    """Type-7 percentile by hand: the value at rank q/100*(n-1) of the sorted values, interpolated."""
    s = sorted(xs)
    pos = q / 100 * (len(s) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@pytest.mark.parametrize("n", [1, 2, 5, 101, 1000])
def test_percentiles_of_an_arithmetic_sequence_are_the_closed_form(n):
    # a, a + d, ..., a + (n-1) d in any order: the p-th percentile is a + d * p/100 * (n-1).
    a, d = 3.0, 0.25
    xs = [a + d * i for i in range(n)]
    random.Random(n).shuffle(xs)
    qs = (0, 10, 50, 90, 99, 99.9, 100)
    got = percentiles(xs, qs)
    for q in qs:
        assert got[f"p{q:g}"] == pytest.approx(a + d * q / 100 * (n - 1), rel=1e-12, abs=1e-12)
    assert median(xs) == pytest.approx(a + d * (n - 1) / 2)


@given(
    st.lists(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), min_size=1, max_size=60),
    st.floats(min_value=0, max_value=100),
)
def test_percentiles_match_a_plain_python_rank_interpolation(xs, q):
    assert percentiles(xs, (q,))[f"p{q:g}"] == pytest.approx(_rank_percentile(xs, q), rel=1e-9, abs=1e-6)


def test_ratios_read_the_same_way_from_times_and_from_rates():
    # 1000 items: ours in 0.5 s, the baseline in 2 s -> 4x faster, from either side.
    assert speedup(0.5, 2.0) == 4.0
    assert rate_ratio(rate(1000, 0.5), rate(1000, 2.0)) == 4.0
    assert rate(10, 0.0) == 10 / 1e-9  # a zero duration is not a division by zero
    assert paired_speedup([1.0, 2.0, 4.0, 1.0], [3.0, 2.0, 2.0, 4.0]) == pytest.approx((1.0 + 3.0) / 2)
    # a latency ratio reads the other way: ours takes a quarter of the baseline's time
    assert time_ratio(0.5, 2.0) == 0.25 == 1 / speedup(0.5, 2.0)


@given(
    st.lists(
        st.tuples(st.floats(min_value=1e-6, max_value=1e3), st.floats(min_value=1e-6, max_value=1e3)),
        min_size=1,
        max_size=30,
    )
)
def test_paired_ratios_are_the_median_of_the_per_repetition_ratios(pairs):
    ours, base = [a for a, _ in pairs], [b for _, b in pairs]
    assert paired_speedup(ours, base) == pytest.approx(statistics.median([b / a for a, b in pairs]), rel=1e-12)
    assert paired_time_ratio(ours, base) == pytest.approx(statistics.median([a / b for a, b in pairs]), rel=1e-12)
    # the same items counted on both sides: rates paired give the speedup of their times
    rates, base_rates = [rate(100, a) for a in ours], [rate(100, b) for b in base]
    assert paired_rate_ratio(rates, base_rates) == pytest.approx(paired_speedup(ours, base), rel=1e-9)


def test_race_alternates_in_a_rotating_order_after_one_warm_up_each():
    calls = []
    contenders = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    times = race(contenders, reps=3, collect=False)
    assert calls == list("abc") + list("abc") + list("bca") + list("cab")
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}
    assert all(t >= 0 for v in times.values() for t in v)


def test_race_syncs_before_the_clock_starts_and_before_it_stops():
    # A stand-in for a GPU stream: work is queued by the contender and done by the sync. The slow
    # contender's queued work must land in its own time, never in the next contender's.
    import time

    queued: list[float] = []

    def sync() -> None:
        while queued:
            time.sleep(queued.pop())

    contenders = {"slow": lambda: queued.append(0.02), "fast": lambda: queued.append(0.0)}
    times = race(contenders, reps=4, collect=False, sync=sync)
    assert min(times["slow"]) >= 0.02
    assert max(times["fast"]) < 0.02


def test_timed_returns_the_result_and_a_duration():
    out, s = timed(lambda: sum(range(1000)))
    assert out == 499500 and s >= 0


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: median([]), "median"),
        (lambda: percentiles([1.0], (101,)), "percentiles"),
        (lambda: race({"a": lambda: None}, reps=0), "reps"),
        (lambda: paired_speedup([1.0], [1.0, 2.0]), "baseline_seconds"),
        (lambda: paired_time_ratio([1.0], []), "baseline_seconds"),
        (lambda: paired_rate_ratio([1.0, 2.0], [1.0]), "baseline_rates"),
    ],
)
def test_bad_input_names_the_field(call, field):
    with pytest.raises(InvalidInputError, match=field):
        call()
