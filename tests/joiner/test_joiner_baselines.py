"""The bench's dict baseline joins exactly as the durable ``JoinState`` does."""

from __future__ import annotations

import pytest

from streamrec.joiner.baselines import dict_join
from streamrec.joiner.bench import _steps, make_events
from streamrec.joiner.config import JoinConfig
from streamrec.joiner.state import JoinState


def _key(e) -> tuple:
    # the baseline leaves a negative's ``item`` unset; its sparse ids (the item's among them) say which it is
    return (e.label, round(e.time, 6), e.sample_rate, tuple(sorted((k, tuple(v)) for k, v in e.sparse.items())))


@pytest.mark.parametrize("batch", [50, 400])
def test_dict_join_emits_the_examples_join_state_emits(tmp_path, batch):
    config = JoinConfig(window_s=5.0, allowed_lateness_s=2.0, negative_rate=0.3, batch_size=batch)
    imps, acts = make_events(2000, ctr=0.2, seed=3)
    steps = _steps(imps, acts, batch)
    want = []
    with JoinState(str(tmp_path / "state"), config) as state:
        for ib, ab in steps:
            want += state.step(ib, ab, caught_up=(False, True))
        want += state.step([], [], drain=True)
    got = dict_join(steps, config)
    assert sum(e.label == 1.0 for e in want) > 0 and sum(e.label == 0.0 for e in want) > 0
    assert sorted(map(_key, got)) == sorted(map(_key, want))
