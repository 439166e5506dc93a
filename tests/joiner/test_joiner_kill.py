"""``kill -9`` of a real ``streamrec joiner`` process, again and again: no example lost or repeated."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid

import pytest
from joiner_data import RATE, check_examples, traffic

from streamrec.log import open_log
from streamrec.records import Example


def _command(url: str, state: str) -> list[str]:
    return [sys.executable, "-m", "streamrec.joiner", "--log", url, "--state-dir", state, "--window", "1m",
            "--lateness", "5s", "--negative-rate", str(RATE), "--batch-size", "40", "--memory-budget", "30",
            "--once", "--drain", "--json"]  # fmt: skip


def _examples(log) -> list[Example]:
    out = []
    with log.consumer("examples", group=f"check-{uuid.uuid4().hex[:8]}", record_type=Example) as consumer:
        while batch := consumer.poll(max_records=10_000, timeout_s=0):
            out += [e.record for e in batch]
    return out


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_kill_9_at_random_moments_then_finish(backend, tmp_path, request):
    if backend == "sqlite":
        url = f"sqlite://{tmp_path}/log.db"
    else:
        url = f"{request.getfixturevalue('redis_url')}?prefix=joinerkill-{uuid.uuid4().hex[:8]}:"
    imps, acts = traffic(2000, seed=7)
    with open_log(url) as log:
        log.append("impressions", imps)
        log.append("actions", acts)
    rng = random.Random(11)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    kills = 0
    progress = [0]
    for _ in range(4):
        proc = subprocess.Popen(_command(url, str(tmp_path / "state")), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 60
        # Kill only once this process has appended examples: mid-stream. (Progress is read from the
        # examples topic's end, not from committed offsets, which race with the joiner's acks.)
        with open_log(url) as log:
            while log.end_offset("examples") <= progress[-1] and proc.poll() is None:
                assert time.monotonic() < deadline, "the joiner made no progress in 60 s"
                time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.05))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        with open_log(url) as log:
            progress.append(log.end_offset("examples"))
    final = subprocess.run(_command(url, str(tmp_path / "state")), env=env, capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stderr
    assert kills >= 2, "the joiner finished before it could be killed; the input is too small"
    with open_log(url) as log:
        check_examples(_examples(log), imps, acts)
