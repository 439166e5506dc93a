"""Negative sampling and its correction: corrected predictions are calibrated on a known CTR."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamrec.errors import InvalidInputError
from streamrec.joiner import JoinConfig, JoinState, correct_logit, correct_probability, keep_negative
from streamrec.records import ActionEvent, Impression

TRUE_CTR = {0: 0.01, 1: 0.03, 2: 0.1, 3: 0.3}
RATE = 0.1


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_corrected_rates_match_the_true_ctr_per_segment(tmp_path):
    """Impressions in four segments with known click probabilities go through the real join with
    r = 0.1; the simplest model (the positive rate per segment on the sampled examples) is off by
    the sampling, and the correction brings it back to the truth within 4 standard errors."""
    rng = np.random.default_rng(0)
    per_segment = 30_000
    config = JoinConfig(window_s=60, allowed_lateness_s=0, negative_rate=RATE, sync=False, map_size_mb=256)
    counts = {s: [0, 0] for s in TRUE_CTR}  # segment -> [positives, kept negatives]
    with JoinState(tmp_path, config) as state:
        n = 0
        for start in range(0, per_segment, 2000):
            imps, acts = [], []
            for k in range(start, start + 2000):
                for segment, ctr in TRUE_CTR.items():
                    t = float(k)
                    imp = Impression(request_id=f"r{k}", user=f"u{k % 97}", item=f"s{segment}", time=t,
                                     sparse={"segment": [segment]})  # fmt: skip
                    imps.append(imp)
                    if rng.random() < ctr:
                        acts.append(
                            ActionEvent(user=imp.user, item=imp.item, action="click", time=t + 5, request_id=f"r{k}")
                        )
                    n += 1
            examples = state.step(imps, acts)
            examples += state.step([], [], drain=start + 2000 >= per_segment)
            for e in examples:
                counts[e.sparse["segment"][0]][0 if e.label == 1.0 else 1] += 1
        stats = state.stats()
    assert stats.positives + stats.negatives_kept + stats.negatives_dropped == n
    for segment, ctr in TRUE_CTR.items():
        pos, neg = counts[segment]
        q = pos / (pos + neg)  # what a model fitted on the sampled examples predicts
        p = correct_probability(q, RATE)
        tolerance = 4 * math.sqrt(1 / pos + 1 / neg)  # standard error of the estimated log-odds
        assert abs(_logit(p) - _logit(ctr)) < tolerance, (segment, ctr, p)
        assert abs(_logit(q) - _logit(ctr)) > tolerance, "uncorrected, the rate is visibly off"
        # The other place to correct (weights 1/r in training) gives the same estimate exactly.
        assert p == pytest.approx(pos / (pos + neg / RATE), rel=1e-12)


@given(q=st.floats(1e-6, 1 - 1e-6), rate=st.floats(1e-3, 1.0))
def test_log_odds_form_equals_the_probability_form(q, rate):
    p = correct_probability(q, rate)
    assert 1 / (1 + math.exp(-correct_logit(_logit(q), rate))) == pytest.approx(p, rel=1e-9, abs=1e-12)
    assert p <= q + 1e-15  # fewer negatives seen means predictions were too high
    assert correct_probability(np.array([q]), rate)[0] == pytest.approx(p, rel=1e-12)


def test_rate_one_changes_nothing_and_edges_are_exact():
    assert correct_probability(0.37, 1.0) == pytest.approx(0.37)
    assert correct_probability(0.0, 0.1) == 0.0 and correct_probability(1.0, 0.1) == 1.0


@pytest.mark.parametrize("rate", [0.0, -0.1, 1.5, float("nan"), True])
def test_bad_rates_are_refused_naming_the_field(rate):
    with pytest.raises(InvalidInputError, match="negative_rate"):
        correct_probability(0.5, rate)
    with pytest.raises(InvalidInputError, match="negative_rate"):
        keep_negative("r", "i", rate)


def test_bad_probability_is_refused():
    with pytest.raises(InvalidInputError, match="q"):
        correct_probability(1.2, 0.1)


def test_sampling_keeps_the_rate_and_is_a_pure_function_of_the_key():
    kept = [keep_negative(f"r{n}", f"i{n % 7}", 0.2) for n in range(50_000)]
    assert abs(sum(kept) / len(kept) - 0.2) < 4 * math.sqrt(0.2 * 0.8 / len(kept))
    assert kept == [keep_negative(f"r{n}", f"i{n % 7}", 0.2) for n in range(50_000)]
    # Nested: what is kept at a lower rate is kept at every higher rate (replays with a raised r agree).
    assert all(keep_negative(f"r{n}", "i", 0.3) for n in range(5000) if keep_negative(f"r{n}", "i", 0.1))
