"""The join state machine against the brute-force references, on generated hostile input."""

from __future__ import annotations

import random
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from joiner_reference import Step, arrival_join, offline_join
from joiner_strategies import LATENESS, WINDOW, bounded_disorder, events, split_steps

from streamrec.errors import ConfigError
from streamrec.joiner import JoinConfig, JoinState
from streamrec.records import ActionEvent, Impression

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _config(rate: float, budget: int = 100_000) -> JoinConfig:
    return JoinConfig(
        window_s=WINDOW,
        allowed_lateness_s=LATENESS,
        negative_rate=rate,
        memory_budget=budget,
        map_size_mb=64,
        sync=False,
    )


def _run(steps: list[Step], config: JoinConfig, *, reopen_every: int = 0):
    """Feed the steps to a fresh JoinState (reopened from disk every ``reopen_every`` steps)."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        state = JoinState(tmp, config)
        try:
            for n, step in enumerate(steps):
                if reopen_every and n and n % reopen_every == 0:
                    state.close()
                    state = JoinState(tmp, config)
                out += state.step(step.impressions, step.actions, caught_up=step.caught_up, drain=step.drain)
            return out, state.stats()
        finally:
            state.close()


def _by_key(examples):
    got = {}
    for e in examples:
        key = (e.request_id, e.item)
        assert key not in got, f"two examples for impression {key}"
        got[key] = (e.label, e.sample_rate, e.time)
    return got


ARBITRARY = {"data": events(), "seed": st.integers(0, 2**32 - 1), "rate": st.sampled_from([1.0, 0.5, 0.1])}
BOUNDED = {"data": events(), "seed": st.integers(0, 2**32 - 1), "budget": st.sampled_from([0, 1, 3])}
MANY = settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(**ARBITRARY)
def test_arbitrary_arrival_matches_the_arrival_reference(data, seed, rate):
    """Shuffled, duplicated, late input cut in random steps with random caught-up flags."""
    _check_arbitrary(data, seed, rate)


@SETTINGS
@given(**BOUNDED)
def test_bounded_disorder_equals_the_offline_join_whatever_the_steps(data, seed, budget):
    """Each topic out of order by at most the lateness: the offline answer, exactly one example
    per distinct impression, with a memory budget so small that impressions spill."""
    _check_bounded(data, seed, budget)


@pytest.mark.slow
@MANY
@given(**ARBITRARY)
def test_arbitrary_arrival_many_more_inputs(data, seed, rate):
    _check_arbitrary(data, seed, rate)


@pytest.mark.slow
@MANY
@given(**BOUNDED)
def test_bounded_disorder_many_more_inputs(data, seed, budget):
    _check_bounded(data, seed, budget)


def _check_arbitrary(data, seed, rate):
    imps, acts = data
    rng = random.Random(seed)
    rng.shuffle(imps)
    rng.shuffle(acts)
    steps = split_steps(imps, acts, rng, truthful=False)
    if rng.random() < 0.7:
        steps.append(Step([], [], drain=True))
    got, stats = _run(steps, _config(rate))
    assert _by_key(got) == arrival_join(steps, window=WINDOW, lateness=LATENESS, rate=rate)
    assert stats.positives + stats.negatives_kept == len(got)


def _check_bounded(data, seed, budget):
    imps, acts = data
    rng = random.Random(seed)
    imps, acts = bounded_disorder(imps, LATENESS, rng), bounded_disorder(acts, LATENESS, rng)
    steps = [*split_steps(imps, acts, rng, truthful=True), Step([], [], drain=True)]
    got, stats = _run(steps, _config(1.0, budget), reopen_every=rng.choice([0, 2]))
    expected = offline_join(imps, acts, window=WINDOW, lateness=LATENESS, rate=1.0)
    got_by_key = _by_key(got)
    assert got_by_key.keys() == expected.keys()
    for key, (label, rate, time) in got_by_key.items():
        assert (label, rate) == (expected[key].label, expected[key].sample_rate)
        assert time in expected[key].times
    distinct = len({(i.request_id, i.item) for i in imps})
    assert stats.positives + stats.negatives_kept == distinct
    assert stats.duplicate_impressions == len(imps) - distinct
    assert stats.late_impressions == 0
    assert stats.pending == 0 and stats.buffered_actions == 0
    if budget == 0 and stats.negatives_kept:
        assert stats.spilled > 0


def _imp(req: str, item: str, t: float) -> Impression:
    return Impression(request_id=req, user="u", item=item, time=t, sparse={"item": [1]}, dense=[0.5])


def _act(req: str | None, item: str, t: float, action: str = "click") -> ActionEvent:
    return ActionEvent(user="u", item=item, action=action, time=t, request_id=req)


def test_spilled_impressions_are_joined_and_counted(tmp_path):
    """Budget 2: eight waiting impressions, six live only in LMDB, all still labelled right."""
    config = _config(1.0, budget=2)
    with JoinState(tmp_path, config) as state:
        imps = [_imp("r", f"i{n}", float(n)) for n in range(8)]
        out = state.step(imps, [])
        assert out == [] and state.stats().spilled == 6 and state.stats().pending == 8
        out = state.step([], [_act("r", "i0", 5.0), _act("r", "i7", 50.0)])  # i0 was spilled first
        assert sorted((e.item, e.label, e.time) for e in out) == [("i0", 1.0, 5.0), ("i7", 1.0, 50.0)]
        out = state.step([], [], drain=True)
        assert sorted(e.item for e in out) == [f"i{n}" for n in range(1, 7)]
        ordered = sorted(out, key=lambda e: e.item)
        assert [(e.label, e.time) for e in ordered] == [(0.0, n + WINDOW) for n in range(1, 7)]
        assert all(e.sparse == {"item": [1]} and e.dense == [0.5] and e.user == "u" for e in out)


def test_counters_name_every_fate(tmp_path):
    config = _config(1.0)
    with JoinState(tmp_path, config) as state:
        state.step(
            [_imp("r1", "a", 0.0), _imp("r1", "a", 0.0), _imp("r1", "b", 0.0)],
            [
                _act("r1", "a", 3.0),
                _act("r1", "a", 4.0),  # a second click: duplicate
                _act("r1", "b", 500.0),  # outside b's window: late
                _act("r1", "a", 1.0, "show"),  # not a label
                _act(None, "a", 1.0),  # no request id
                _act("r9", "z", 2.0),  # buffered; its impression never comes
            ],
        )
        state.step([_imp("r2", "c", 1000.0)], [_act("r2", "c", 1000.0, "dwell")])  # moves the watermark
        s = state.stats()
    assert (s.impressions, s.actions, s.positives, s.negatives_kept) == (4, 7, 1, 1)
    assert (s.duplicate_impressions, s.duplicate_actions, s.ignored_actions, s.late_actions) == (1, 1, 3, 2)
    assert s.pending == 1 and s.buffered_actions == 0 and s.watermark == 1000.0 - LATENESS


def test_late_impression_gets_no_example(tmp_path):
    with JoinState(tmp_path, _config(1.0)) as state:
        state.step([_imp("r1", "a", 1000.0)], [_act("r1", "a", 1000.0, "show")])
        assert state.step([_imp("r0", "a", 0.0)], []) == []
        assert state.stats().late_impressions == 1


def test_negative_sampling_is_deterministic_and_recorded(tmp_path):
    imps = [_imp(f"r{n}", "a", 0.0) for n in range(2000)]
    runs = []
    for name in ("one", "two"):
        with JoinState(tmp_path / name, _config(0.1)) as state:
            runs.append(state.step(imps, [], drain=True))
    assert runs[0] == runs[1]
    assert 150 < len(runs[0]) < 250 and all(e.sample_rate == 0.1 and e.label == 0.0 for e in runs[0])


def test_reopening_with_other_settings_is_refused(tmp_path):
    JoinState(tmp_path, _config(0.1)).close()
    with pytest.raises(ConfigError, match=r"negative_rate=0\.1"):
        JoinState(tmp_path, _config(0.2))


def test_a_failed_step_changes_nothing(tmp_path):
    with JoinState(tmp_path, _config(1.0)) as state:
        state.step([_imp("r1", "a", 0.0)], [])

        def boom(examples):
            raise RuntimeError("crash inside the transaction")

        with pytest.raises(RuntimeError):
            state.step([], [_act("r1", "a", 1.0)], meta=boom)
        assert state.stats().positives == 0 and state.stats().pending == 1
        out = state.step([], [_act("r1", "a", 1.0)])
        assert [(e.item, e.label) for e in out] == [("a", 1.0)]


def test_byte_budget_spills_too(tmp_path):
    config = JoinConfig(window_s=WINDOW, memory_budget=1000, memory_budget_bytes=200, map_size_mb=64, sync=False)
    with JoinState(tmp_path, config) as state:
        state.step([_imp("r", f"i{n}", 0.0) for n in range(10)], [])
        assert state.stats().spilled >= 6  # each impression is ~40 bytes encoded
        out = state.step([], [_act("r", f"i{n}", 1.0) for n in range(10)])
        assert sorted(e.item for e in out) == [f"i{n}" for n in range(10)]


def test_an_idle_step_writes_nothing(tmp_path):
    with JoinState(tmp_path, _config(1.0)) as state:
        state.step([_imp("r", "a", 0.0)], [_act("r", "b", 50.0, "show")])
        txn = state.env.info()["last_txnid"]
        assert state.step([], []) == [] and state.env.info()["last_txnid"] == txn
        # Becoming caught up moves the watermark: that step does write.
        state.step([], [], caught_up=(True, True))
        assert state.env.info()["last_txnid"] == txn + 1


def test_the_map_grows_when_the_state_outgrows_it(tmp_path):
    config = JoinConfig(window_s=WINDOW, map_size_mb=1, sync=False)
    big = [Impression(request_id=f"r{n}", user="u", item="a", time=0.0, dense=[0.5] * 500) for n in range(1000)]
    with JoinState(tmp_path, config) as state:
        state.step(big, [])  # ~4.5 MB of waiting impressions in a 1 MiB map
        assert state.stats().pending == 1000 and state.env.info()["map_size"] > 1 << 20
        out = state.step([], [_act("r999", "a", 1.0)])
        assert [(e.request_id, e.dense[:1]) for e in out] == [("r999", [0.5])]
