"""Joiner → online trainer → serving model, over the SQLite log and over Redis Streams.

Impressions and clicks go in; the joiner writes examples (negatives kept at rate 0.5); the online
trainer trains on every one of them (counted against the joiner's own counters); a serving
replica that followed ``model-updates`` ends scoring exactly as the trainer, and its corrected
probabilities follow the closed form of the sampling correction.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_online_support import BACKENDS, N_DENSE, SLOTS, log_url_for, write_snapshot

from streamrec.batch import ExampleBatch
from streamrec.joiner import Joiner
from streamrec.log import open_log
from streamrec.records import ActionEvent, Example, Impression
from streamrec.training.online import OnlineConfig, OnlineTrainer
from streamrec.training.serving_model import ServingModel
from streamrec.training.snapshot import read_meta


def _traffic(n: int, seed: int = 0) -> tuple[list[Impression], list[ActionEvent]]:
    rng = np.random.default_rng(seed)
    impressions, actions = [], []
    for i in range(n):
        user, item = int(rng.integers(40)), int(rng.integers(60))
        t = 1_000.0 + i
        impressions.append(
            Impression(
                request_id=f"r{i}", user=f"u{user}", item=f"i{item}", time=t,
                sparse={"user": [user], "item": [item], "tag": [item % 7]},
                dense=[float(rng.normal()), float(user % 2)],
            )
        )  # fmt: skip
        if (user + item) % 3 == 0:
            click = ActionEvent(user=f"u{user}", item=f"i{item}", action="click", time=t + 5, request_id=f"r{i}")
            actions.append(click)
    return impressions, actions


@pytest.mark.parametrize("backend", BACKENDS)
def test_joiner_to_trainer_to_serving_model(tmp_path, request, backend):
    url = log_url_for(backend, tmp_path, request)
    snap = tmp_path / "model.snap"
    seen0 = write_snapshot(snap)
    impressions, actions = _traffic(600)
    with open_log(url) as log:
        log.append("impressions", impressions)
        log.append("actions", actions)
        serving = ServingModel.from_snapshot(snap)
        serving.follow(log)
        with Joiner(log, tmp_path / "join-state", {"window": "1m", "negative_rate": 0.5, "sync": False}) as joiner:
            joined = joiner.run(once=True, drain=True)
        n_examples = log.end_offset("examples")
        assert joined.positives == len(actions) and n_examples == joined.positives + joined.negatives_kept
        assert 0 < joined.negatives_kept < len(impressions) - len(actions)  # sampling really dropped some

        config = OnlineConfig(batch_size=64, sparse_sync_interval=0.2, dense_sync_interval=0.5, snapshot_interval=1.0)
        with OnlineTrainer.from_snapshot(snap, log, config) as online:
            stats = online.run(until_drained=True)
            assert stats.examples == n_examples
            assert read_meta(snap)["examples_seen"] == seen0 + n_examples
            assert serving.wait_for(online.version)
            with log.consumer("examples", group="probe", record_type=Example) as consumer:
                records = [e.record for e in consumer.poll(1000, 1.0)]
            probe = ExampleBatch.from_examples(records, list(SLOTS), N_DENSE)
            assert np.array_equal(serving.predict_logits(probe), online.trainer.predict_logits(probe))
        serving.stop()
        q = serving.predict(probe)
        assert np.allclose(serving.predict(probe, sample_rate=0.5), q / (q + (1 - q) / 0.5), rtol=1e-9, atol=0)
        assert {r.sample_rate for r in records} == {0.5, 1.0}
