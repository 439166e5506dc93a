"""``streamrec train online --ranks 2``: two ranks share the partitions of ``examples``, publish their
shards' deltas, snapshot as shards, and survive ``kill -9`` of one rank by a restart of the job.

The reference is counting, as in ``test_online.py``: every example appended must be trained on
exactly once relative to the snapshot the job restarted from (count and sum of offsets, per
partition), and a serving replica that applied every update must equal the model in the snapshot.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from test_online_support import N_DENSE, SLOTS, make_examples, write_snapshot

from streamrec.batch import ExampleBatch
from streamrec.log import open_log
from streamrec.training.serving_model import ServingModel
from streamrec.training.shards import load_shard, read_manifest

PARTITIONS = 4


def _command(url: str, snap: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "streamrec", "train", "online", "--log", url, "--snapshot", str(snap),
            "--ranks", "2", "--threads", "1", "--batch-size", "64", "--sparse-sync-interval", "200ms",
            "--dense-sync-interval", "200ms", "--snapshot-interval", "1s", *extra]  # fmt: skip


def _fill(log, n: int, start: int = 0) -> tuple[int, int]:
    """Append ``n`` examples over 4 partitions; returns the count and the sum of their offsets."""
    examples = make_examples(n, start_time=1_000.0 + start, seed=start)
    offsets = log.append("examples", examples, key=list(range(start, start + n)))
    return len(offsets), sum(offsets)


def _expected(log) -> tuple[int, int]:
    ends = log.end_offsets("examples")
    return sum(ends), sum(e * (e - 1) // 2 for e in ends)


def test_two_ranks_train_every_example_once_and_a_replica_ends_equal_to_the_snapshot(tmp_path):
    snap = tmp_path / "model.snap"
    seen0 = write_snapshot(snap)
    url = f"sqlite://{tmp_path}/log.db"
    with open_log(url) as log:
        log.create_topic("examples", partitions=PARTITIONS)
        _fill(log, 600)
        count, offsets_sum = _expected(log)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*_command(url, snap), "--until-drained", "--json"], env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    shards = tmp_path / "model.snap.shards"
    manifest = read_manifest(shards)
    online = manifest["extra"]["online"]
    assert summary["snapshot"] == str(shards) and manifest["world"] == 2
    assert online["trained_offsets"] == {"count": count, "sum": offsets_sum}  # each example once
    assert manifest["examples_seen"] == seen0 + count
    with open_log(url) as log:
        assert log.committed("examples", "trainer") == count
        replica = ServingModel.from_snapshot(snap)  # the batch model, then every update in order
        replica.follow(log)
        try:
            deadline = time.monotonic() + 30
            while replica.version < online["version"]:
                assert time.monotonic() < deadline, (replica.version, online["version"])
                time.sleep(0.05)
        finally:
            replica.stop()
    trainer, _ = load_shard(shards, 0, 1)
    final = trainer.model.embeddings.tables
    for slot, table in final.tables.items():
        ids, _ = table.index.items()
        np.testing.assert_array_equal(replica.tables[slot].lookup(ids), table.lookup(ids), err_msg=slot)
        assert len(replica.tables[slot]) == len(table)
    probe = ExampleBatch.from_examples(make_examples(200, seed=5), list(SLOTS), N_DENSE)
    np.testing.assert_array_equal(replica.predict_logits(probe), trainer.predict_logits(probe))  # dense too


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def test_kill_9_of_one_rank_stops_the_job_and_a_restart_loses_no_example(tmp_path):
    snap = tmp_path / "model.snap"
    seen0 = write_snapshot(snap)
    url = f"sqlite://{tmp_path}/log.db"
    with open_log(url) as log:
        log.create_topic("examples", partitions=PARTITIONS)
        _fill(log, 3000)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    job = subprocess.Popen(_command(url, snap, "--max-seconds", "300"), env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        shards = tmp_path / "model.snap.shards"
        deadline = time.monotonic() + 120
        while not (shards / "manifest.json").exists():  # mid-stream: a snapshot exists, work remains
            assert job.poll() is None, job.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "no snapshot in 120 s"
            time.sleep(0.1)
        with open_log(url) as log:
            _fill(log, 600, start=3000)  # still arriving
        ranks = _children(job.pid)
        assert len(ranks) == 2
        os.kill(ranks[1], signal.SIGKILL)
        code = job.wait(timeout=120)
        assert code != 0  # the job stops and says so; nothing hangs on the dead rank
        assert "exited with code" in job.stderr.read()
    finally:
        if job.poll() is None:
            job.kill()
    at_kill = read_manifest(shards)["extra"]["online"]["trained_offsets"]["count"]
    with open_log(url) as log:
        count, offsets_sum = _expected(log)
    assert 0 < at_kill < count, "the kill must land mid-stream"
    again = subprocess.run([*_command(url, snap), "--until-drained"], env=env, capture_output=True, text=True,
                           timeout=300)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    manifest = read_manifest(shards)
    assert manifest["extra"]["online"]["trained_offsets"] == {"count": count, "sum": offsets_sum}
    assert manifest["examples_seen"] == seen0 + count
