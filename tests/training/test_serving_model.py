"""The serving model: exact agreement with the training model after each sync (over SQLite and
redis), predictions while updates apply (every answer must be one a whole model version gives),
replicas that start from the update log alone, convergence after a trainer restart, and the
negative-sampling correction against its closed form.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from test_online_support import BACKENDS, MODEL, N_DENSE, SLOTS, log_url_for, make_examples, write_snapshot

from streamrec.batch import ExampleBatch
from streamrec.errors import InvalidInputError
from streamrec.log import open_log
from streamrec.models.ranking import build_head
from streamrec.training.online import OnlineConfig, OnlineTrainer
from streamrec.training.serving_model import ServingModel
from streamrec.training.updates import ModelUpdate, decode_dense, encode_dense

SLOW_SCHEDULE = {"sparse_sync_interval": 1e6, "dense_sync_interval": 1e6, "snapshot_interval": 1e6}


@pytest.fixture(params=BACKENDS)
def log_url(request, tmp_path):
    return log_url_for(request.param, tmp_path, request)


def _probe(seed: int = 7) -> ExampleBatch:
    return ExampleBatch.from_examples(make_examples(300, seed=seed), list(SLOTS), N_DENSE)


def _drain(online: OnlineTrainer) -> None:
    while online.step():
        pass


def test_after_each_sync_serving_scores_exactly_as_the_training_model(tmp_path, log_url):
    snap = tmp_path / "model.snap"
    write_snapshot(snap)
    probe = _probe()
    with open_log(log_url) as log:
        online = OnlineTrainer.from_snapshot(snap, log, OnlineConfig(batch_size=32, **SLOW_SCHEDULE))
        replicas = [ServingModel.from_snapshot(snap) for _ in range(2)]  # any number can follow
        for replica in replicas:
            replica.follow(log)
        assert np.array_equal(replicas[0].predict_logits(probe), online.trainer.predict_logits(probe))
        for round_ in range(3):
            log.append("examples", make_examples(200, start_time=2_000.0 + 1_000 * round_, seed=round_))
            _drain(online)
            assert not np.array_equal(replicas[0].predict_logits(probe), online.trainer.predict_logits(probe))
            online.sync()
            expected = online.trainer.predict_logits(probe)
            for replica in replicas:
                assert replica.wait_for(online.version)
                assert np.array_equal(replica.predict_logits(probe), expected)
                assert replica.examples_seen == online.trainer.examples_seen
        for replica in replicas:
            replica.stop()
            kinds = [a.kind for a in replica.applied]
            assert kinds.count("full") == 1 and kinds.count("sparse") == 3 and kinds.count("dense") == 3
            assert all(a.lag_s >= 0 and a.staleness_s >= a.lag_s for a in replica.applied)
        online.close()


def test_predictions_while_dense_updates_apply_are_each_from_one_whole_version(tmp_path):
    """Reference: the logits every published head gives, computed by a separate model per head."""
    snap = tmp_path / "model.snap"
    write_snapshot(snap)
    probe = _probe()
    serving = ServingModel.from_snapshot(snap)
    base = serving._model.head.state_dict()
    rng = torch.Generator().manual_seed(0)
    states = [base] + [{k: v + 0.05 * torch.randn(v.shape, generator=rng) for k, v in base.items()} for _ in range(30)]
    embedded = serving._model.embeddings(probe.sparse)
    expected = []
    for state in states:
        head = build_head(MODEL, list(SLOTS), 8)
        head.load_state_dict(state)
        head.eval()
        with torch.no_grad():
            expected.append(head(embedded, probe.dense).numpy())
    seen, errors, done = [], [], threading.Event()

    def reader() -> None:
        try:
            while not done.is_set():
                seen.append(serving.predict_logits(probe))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads:
        thread.start()
    for version, state in enumerate(states[1:], start=1):
        serving.apply(ModelUpdate(kind="dense", version=version, created_at=0.0, payload=encode_dense(state)))
    done.set()
    for thread in threads:
        thread.join()
    assert not errors and len(seen) > 0
    for logits in seen:
        assert any(np.array_equal(logits, e) for e in expected)
    assert np.array_equal(serving.predict_logits(probe), expected[-1])


def test_predict_runs_while_sparse_updates_apply_and_ends_exact(tmp_path, log_url):
    snap = tmp_path / "model.snap"
    write_snapshot(snap)
    probe = _probe()
    with open_log(log_url) as log:
        serving = ServingModel.from_snapshot(snap)
        serving.follow(log, poll_timeout_s=0.01)
        online = OnlineTrainer.from_snapshot(snap, log, OnlineConfig(batch_size=16, **SLOW_SCHEDULE))
        results, errors, done = [], [], threading.Event()

        def reader() -> None:
            try:
                while not done.is_set():
                    results.append(serving.predict(probe))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=reader) for _ in range(2)]
        for thread in threads:
            thread.start()
        for round_ in range(10):
            log.append("examples", make_examples(64, start_time=3_000.0 + 100 * round_, seed=10 + round_))
            _drain(online)
            online.sync()
        assert serving.wait_for(online.version)
        done.set()
        for thread in threads:
            thread.join()
        serving.stop()
        online.close()
        assert not errors and len(results) > 0
        assert all(r.shape == (len(probe),) and np.isfinite(r).all() for r in results)
        assert len(serving.applied) == 21  # the full update, then ten sparse + dense pairs
        assert np.array_equal(serving.predict_logits(probe), online.trainer.predict_logits(probe))


def test_a_replica_built_from_the_update_log_alone_matches_and_restarts_converge(tmp_path, log_url):
    snap = tmp_path / "model.snap"
    write_snapshot(snap)
    probe = _probe()
    with open_log(log_url) as log:
        online = OnlineTrainer.from_snapshot(snap, log, OnlineConfig(batch_size=32, **SLOW_SCHEDULE))
        log.append("examples", make_examples(150, start_time=2_000.0))
        _drain(online)
        online.snapshot()
        follower = ServingModel.from_snapshot(snap)
        follower.follow(log)
        # Work after the snapshot reaches the replicas, then the trainer dies without a snapshot.
        log.append("examples", make_examples(150, start_time=3_000.0, seed=1))
        _drain(online)
        online.sync()
        assert follower.wait_for(online.version)
        online.consumer.close()

        restarted = OnlineTrainer.from_snapshot(snap, log, OnlineConfig(batch_size=32, **SLOW_SCHEDULE))
        restarted.step()  # publishes the full update of the restored model, then replays
        _drain(restarted)
        restarted.sync()
        expected = restarted.trainer.predict_logits(probe)
        fresh = ServingModel.from_update_log(log, MODEL)
        assert np.array_equal(fresh.predict_logits(probe), expected)
        assert fresh.tables.pooling["tag"] == "mean"
        deadline_ok = False
        for _ in range(100):  # versions repeat after a restart: wait on the replica's position instead
            if follower.start_offset >= log.end_offset("model-updates"):
                deadline_ok = True
                break
            threading.Event().wait(0.05)
        assert deadline_ok
        assert np.array_equal(follower.predict_logits(probe), expected)
        follower.stop()
        restarted.close()


def test_predict_corrects_for_negative_sampling_in_closed_form(tmp_path):
    snap = tmp_path / "model.snap"
    write_snapshot(snap)
    serving = ServingModel.from_snapshot(snap)
    probe = _probe()
    q = serving.predict(probe)
    for r in (1.0, 0.5, 0.05):
        assert np.allclose(serving.predict(probe, sample_rate=r), q / (q + (1 - q) / r), rtol=1e-9, atol=0)
    with pytest.raises(InvalidInputError, match="sample_rate"):
        serving.predict(probe, sample_rate=0.0)


def test_bad_updates_raise_and_change_nothing(tmp_path):
    snap = tmp_path / "model.snap"
    write_snapshot(snap)
    serving = ServingModel.from_snapshot(snap)
    probe = _probe()
    before = serving.predict_logits(probe)
    state = decode_dense(encode_dense(serving._model.head.state_dict()))
    state.pop(next(iter(state)))
    with pytest.raises(InvalidInputError, match=r"payload\.dense"):
        serving.apply(ModelUpdate(kind="dense", version=1, created_at=0.0, payload=encode_dense(state)))
    with pytest.raises(InvalidInputError, match="delta"):
        serving.apply(ModelUpdate(kind="sparse", version=1, created_at=0.0, payload=b"\x01garbage"))
    with pytest.raises(InvalidInputError, match="version"):
        ModelUpdate(kind="sparse", version=0, created_at=0.0, payload=b"")
    assert np.array_equal(serving.predict_logits(probe), before) and serving.version == 0
