"""The online stage: snapshot-then-commit, replay after a crash (kill -9 of a real process), expiry,
schedules and config errors. Counting is the reference: every example appended to the log must
be trained on exactly once relative to the snapshot the trainer restarted from, checked by
``examples_seen`` and by the count and sum of the offsets the snapshot says were trained on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from test_online_support import BACKENDS, log_url_for, make_examples, write_snapshot

from streamrec.config import parse_duration
from streamrec.errors import ConfigError
from streamrec.log import open_log
from streamrec.training.online import OnlineConfig, OnlineTrainer
from streamrec.training.serving_model import ServingModel
from streamrec.training.snapshot import read_meta

FAST = {"sparse_sync_interval": 0.2, "dense_sync_interval": 0.2, "snapshot_interval": 0.3, "expiry_interval": 0.2}


@pytest.fixture(params=BACKENDS)
def log_url(request, tmp_path):
    return log_url_for(request.param, tmp_path, request)


def _expect_every_offset_once(meta: dict, first_examples_seen: int, total: int) -> None:
    online = meta["extra"]["online"]
    assert meta["examples_seen"] == first_examples_seen + total
    assert online["examples_offset"] == total
    assert online["trained_offsets"] == {"count": total, "sum": total * (total - 1) // 2}


def test_drained_run_snapshots_then_commits_every_example(tmp_path, log_url):
    snap = tmp_path / "model.snap"
    seen0 = write_snapshot(snap)
    with open_log(log_url) as log:
        log.append("examples", make_examples(300))
        online = OnlineTrainer.from_snapshot(snap, log, OnlineConfig(batch_size=64, **FAST))
        stats = online.run(until_drained=True)
        online.close()
        assert stats.examples == 300 and stats.snapshots >= 1
        assert log.committed("examples", "trainer") == 300
        meta = read_meta(snap)
        _expect_every_offset_once(meta, seen0, 300)
        assert meta["extra"]["stage"] == "batch"  # the batch stage's extra is kept
        assert meta["extra"]["online"]["updates_offset"] == log.end_offset("model-updates")


def test_crash_between_snapshot_and_commit_skips_what_the_snapshot_holds(tmp_path):
    """The committed offset may lag the snapshot; the restarted trainer must not train twice."""
    snap = tmp_path / "model.snap"
    seen0 = write_snapshot(snap)
    url = f"sqlite://{tmp_path}/log.db"
    with open_log(url) as log:
        log.append("examples", make_examples(200))
        no_schedule = OnlineConfig(batch_size=50, sparse_sync_interval=1e6, snapshot_interval=1e6)
        online = OnlineTrainer.from_snapshot(snap, log, no_schedule)
        for _ in range(3):
            online.step()
        online.consumer.commit = lambda *a: None  # the process "dies" right after the snapshot
        online.snapshot()
        online.close()
        assert log.committed("examples", "trainer") == 0
        assert read_meta(snap)["extra"]["online"]["examples_offset"] == 150
        log.append("examples", make_examples(40, start_time=5_000.0, seed=1))
        again = OnlineTrainer.from_snapshot(snap, log, OnlineConfig(batch_size=50, **FAST))
        stats = again.run(until_drained=True)
        again.close()
        assert stats.replayed_skipped == 150 and stats.examples == 90
        _expect_every_offset_once(read_meta(snap), seen0, 240)


_WORKER = textwrap.dedent(
    """
    import sys, time
    from streamrec.training.online import OnlineConfig, OnlineTrainer
    snap, url = sys.argv[1], sys.argv[2]
    config = OnlineConfig(batch_size=16, sparse_sync_interval=0.1, dense_sync_interval=0.2,
                          snapshot_interval=0.25, expiry_interval=0.2)
    online = OnlineTrainer.from_snapshot(snap, url, config)
    print("ready", flush=True)
    while True:
        online.step()
        time.sleep(0.01)  # a slow trainer, so the kill lands in the middle of the stream
    """
)


@pytest.mark.parametrize("backend", BACKENDS)
def test_kill_9_then_restart_trains_every_example_exactly_once(tmp_path, request, backend):
    url = log_url_for(backend, tmp_path, request)
    snap = tmp_path / "model.snap"
    seen0 = write_snapshot(snap)
    total_first = 3_000
    with open_log(url) as log:
        log.append("examples", make_examples(total_first))
        proc = subprocess.Popen([sys.executable, "-c", _WORKER, str(snap), url], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "ready"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # wait for two online snapshots, then kill mid-stream
                online = read_meta(snap)["extra"].get("online")
                if online and online["examples_offset"] > 300:
                    break
                time.sleep(0.05)
            time.sleep(0.15)
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        assert proc.returncode == -signal.SIGKILL
        at_kill = read_meta(snap)["extra"]["online"]
        assert 0 < at_kill["examples_offset"] < total_first, "the kill must land in the middle of the stream"
        assert log.committed("examples", "trainer") <= at_kill["examples_offset"]
        updates_before = log.end_offset("model-updates")

        log.append("examples", make_examples(500, start_time=10_000.0, seed=3))
        online = OnlineTrainer.from_snapshot(snap, log, OnlineConfig(batch_size=128, **FAST))
        stats = online.run(until_drained=True)
        online.close()
        assert stats.full_syncs == 1  # replicas are reset to the restored model first
        _expect_every_offset_once(read_meta(snap), seen0, total_first + 500)
        assert log.committed("examples", "trainer") == total_first + 500
        assert log.end_offset("model-updates") > updates_before


def test_expired_rows_are_evicted_on_schedule_and_leave_the_serving_model(tmp_path, log_url):
    snap = tmp_path / "model.snap"
    write_snapshot(snap, batch_examples=0)
    early = make_examples(200, start_time=1_000.0, users=30, items=30)
    # Much later event time (beyond the 1000 s TTL), with other users and items only.
    late = [
        type(e)(sparse={"user": [100 + e.sparse["user"][0]], "item": [100 + e.sparse["item"][0]], "tag": []},
                dense=e.dense, label=e.label, time=e.time + 5_000.0)
        for e in make_examples(200, start_time=1_000.0, seed=5, users=30, items=30)
    ]  # fmt: skip
    with open_log(log_url) as log:
        serving = ServingModel.from_snapshot(snap)
        serving.follow(log)
        online = OnlineTrainer.from_snapshot(snap, log, OnlineConfig(batch_size=50, **FAST))
        log.append("examples", early)
        online.run(until_drained=True)
        assert serving.wait_for(online.version)
        early_users = np.array(sorted({e.sparse["user"][0] for e in early}), dtype=np.int64)
        assert (online.tables["user"].rows_of(early_users) >= 0).all()
        assert (serving.tables["user"].lookup(early_users) != 0).any(axis=1).all()

        log.append("examples", late)
        online.run(until_drained=True)
        time.sleep(FAST["expiry_interval"])
        online.expire()
        online.sync()
        assert serving.wait_for(online.version)
        serving.stop()
        online.close()
        assert online.stats.evicted >= len(early_users)
        # Reference: an id expired iff its last event time is more than the TTL before the newest.
        assert (online.tables["user"].rows_of(early_users) == -1).all()
        assert len(serving.tables["user"]) == len(online.tables["user"]) == 30
        assert not serving.tables["user"].lookup(early_users).any()


def test_sync_schedules_run_on_wall_clock_intervals(tmp_path):
    snap = tmp_path / "model.snap"
    write_snapshot(snap, batch_examples=0)
    config = OnlineConfig(sparse_sync_interval=0.1, dense_sync_interval=0.35, snapshot_interval=100.0)
    with open_log(f"sqlite://{tmp_path}/log.db") as log:
        log.append("examples", make_examples(50))
        online = OnlineTrainer.from_snapshot(snap, log, config)
        started = time.monotonic()
        stats = online.run(max_seconds=1.2)
        elapsed = time.monotonic() - started
        online.close()
    assert stats.snapshots == 1  # the final one only
    # each schedule fires about elapsed / interval times, plus the final sync in the snapshot
    assert 0.5 * elapsed / 0.1 <= stats.sparse_syncs <= elapsed / 0.1 + 2
    assert 1 <= stats.dense_syncs <= elapsed / 0.35 + 2
    assert stats.sparse_syncs > stats.dense_syncs


def test_bad_schedule_values_raise_config_errors_naming_the_key():
    assert parse_duration("10s", "x", positive=True) == 10.0 and parse_duration("5m", "x", positive=True) == 300.0
    with pytest.raises(ConfigError, match="sparse_sync_interval"):
        parse_duration("soon", "sparse_sync_interval", positive=True)
    with pytest.raises(ConfigError, match="snapshot_interval"):
        parse_duration("-3s", "snapshot_interval", positive=True)
    with pytest.raises(ConfigError, match=r"online\.expiry_interval"):
        OnlineConfig(expiry_interval="soon")
    assert OnlineConfig(snapshot_interval="1w").snapshot_interval == 7 * 86400.0  # as a TTL reads it
    with pytest.raises(ConfigError, match=r"online\.dense_sync_interval"):
        OnlineConfig(dense_sync_interval=0)
    with pytest.raises(ConfigError, match=r"online\.batch_size"):
        OnlineConfig(batch_size=0)


def test_records_that_do_not_fit_the_model_are_rejected_and_counted(tmp_path):
    snap = tmp_path / "model.snap"
    seen0 = write_snapshot(snap, batch_examples=0)
    good = make_examples(20)
    bad = [type(e)(sparse=e.sparse, dense=[1.0], label=e.label, time=e.time) for e in make_examples(5, seed=2)]
    with open_log(f"sqlite://{tmp_path}/log.db") as log:
        log.append("examples", good[:10] + bad + good[10:])
        online = OnlineTrainer.from_snapshot(snap, log, OnlineConfig(**FAST))
        stats = online.run(until_drained=True)
        online.close()
    assert (stats.examples, stats.rejected) == (20, 5)
    assert read_meta(snap)["examples_seen"] == seen0 + 20


def test_cli_train_online_drains_and_prints_a_json_summary(tmp_path):
    from typer.testing import CliRunner

    from streamrec.cli import app

    snap = tmp_path / "model.snap"
    seen0 = write_snapshot(snap)
    url = f"sqlite://{tmp_path}/log.db"
    with open_log(url) as log:
        log.append("examples", make_examples(120))
    args = ["train", "online", "--log", url, "--snapshot", str(snap), "--sparse-sync-interval", "200ms"]
    result = CliRunner().invoke(app, [*args, "--until-drained", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["examples"] == 120 and summary["examples_offset"] == 120
    assert summary["schedule_s"]["sparse_sync_interval"] == 0.2
    _expect_every_offset_once(read_meta(snap), seen0, 120)
    bad = CliRunner().invoke(app, [*args[:-1], "soon"])
    assert bad.exit_code != 0 and "--sparse-sync-interval" in str(bad.exception)


def test_sigterm_stops_the_cli_with_a_final_snapshot_and_commit(tmp_path):
    snap = tmp_path / "model.snap"
    write_snapshot(snap)
    url = f"sqlite://{tmp_path}/log.db"
    with open_log(url) as log:
        log.append("examples", make_examples(200))
        cmd = [sys.executable, "-m", "streamrec", "train", "online", "--log", url, "--snapshot", str(snap)]
        proc = subprocess.Popen([*cmd, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while log.end_offset("model-updates") == 0 and time.monotonic() < deadline:
            time.sleep(0.1)  # the full update on start: the loop (and its signal handlers) is running
        log.append("examples", make_examples(10, start_time=9_000.0))
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        summary = json.loads(out.strip().splitlines()[-1])
        assert summary["snapshots"] == 1  # the intervals are minutes: only the final snapshot ran
        assert (
            log.committed("examples", "trainer")
            == summary["examples_offset"]
            == read_meta(snap)["extra"]["online"]["examples_offset"]
        )
        assert summary["examples_offset"] >= 200
        assert summary["full_syncs"] == 1 and summary["sparse_syncs"] >= 1
