"""kill -9 of real processes: an acknowledged append survives, a crashed consumer resumes exactly.

The worker (``log_worker.py``) prints a line only after the call it reports has returned, so the
parent knows what was acknowledged at the moment it sends SIGKILL. The checks are against what a
correct log must hold, computed from those lines, not against the log's own earlier output.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamrec.records import ActionEvent

WORKER = str(Path(__file__).with_name("log_worker.py"))


def start_worker(*args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, WORKER, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def read_until(proc: subprocess.Popen[str], done) -> list[str]:  # type: ignore[no-untyped-def]
    lines: list[str] = []
    while not done(lines):
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"worker exited early: {proc.stderr.read()}")
        lines.append(line.split())
    return lines


def kill9(proc: subprocess.Popen[str]) -> list[str]:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    # Read through proc.stdout itself: ``communicate`` reads the pipe's file descriptor and misses the
    # lines ``readline`` (in read_until) already pulled into proc.stdout's buffer — under load a burst
    # of "P" lines sat there, and the test saw a commit past every offset it had been shown.
    rest = proc.stdout.read()
    proc.stdout.close()
    proc.stderr.close()
    # Unbuffered, print writes each argument on its own: the kill can cut the last line ("C" without
    # its offset). A line without its newline was not reported whole, so it does not count.
    return [line.split() for line in rest.splitlines(keepends=True) if line.endswith("\n")]


def read_all(log, topic: str, group: str) -> list:
    """Everything the group has left to read, up to the end of every partition. The consumer waits for
    its partitions: a killed member's partitions move when its session ends (at once on SQLite, after
    ``session_s`` on Redis and Kafka)."""
    ends = log.end_offsets(topic)
    reached = log.committed_offsets(topic, group)
    with log.consumer(topic, group, ActionEvent) as consumer:
        out = []
        deadline = time.monotonic() + 60
        while reached != ends:
            assert time.monotonic() < deadline, f"owns {consumer.assignment()}, read to {reached} of {ends} in 60 s"
            for envelope in consumer.poll(max_records=500, timeout_s=0.05):
                out.append(envelope)
                reached[envelope.partition] = envelope.offset + 1
        assert consumer.poll(max_records=500, timeout_s=0) == []
        return out


def test_acknowledged_appends_survive_kill9_of_the_appender(logs):
    url = logs.new_url()
    proc = start_worker("append", url, "actions", "w", "5")
    acked = read_until(proc, lambda lines: sum(1 for line in lines if line[0] == "A") >= 40)
    acked += kill9(proc)
    last = max(int(line[2]) for line in acked if line[0] == "A")
    log = logs.open(url)
    envelopes = read_all(log, "actions", "check")
    # Every acknowledged record is there, intact, and nothing half-written follows it.
    assert log.end_offset("actions") >= last + 1
    assert log.end_offset("actions") % 5 == 0  # an append is all or nothing
    assert [e.offset for e in envelopes] == list(range(log.end_offset("actions")))
    assert [e.record.item for e in envelopes] == [f"w-{n}" for n in range(len(envelopes))]


@pytest.mark.parametrize("commit_every", [1, 3])
def test_consumer_killed_before_commit_resumes_from_committed_offset(logs, commit_every):
    url = logs.new_url(session_s=2, rebalance_s=0.25)
    log = logs.open(url)
    total = 400
    for start in range(0, total, 100):
        batch = [ActionEvent(user="u", item=str(n), action="click", time=1.0) for n in range(start, start + 100)]
        log.append("actions", batch)
    proc = start_worker("consume", url, "actions", "profiles", str(commit_every))
    seen = read_until(proc, lambda lines: sum(len(line) - 1 for line in lines if line[0] == "P") >= 150)
    seen += kill9(proc)
    delivered = [int(o) for line in seen if line[0] == "P" for o in line[1:]]
    reported = [int(line[1]) + 1 for line in seen if line[0] == "C"]
    committed = log.committed("actions", "profiles")
    # The commit the worker reported returned; one may also have returned just before the kill.
    assert committed >= (reported[-1] if reported else 0)
    assert committed <= max(delivered) + 1
    resumed = read_all(log, "actions", "profiles")
    assert [e.offset for e in resumed] == list(range(committed, total))  # nothing skipped, in order
    assert set(delivered) | {e.offset for e in resumed} == set(range(total))  # nothing lost
    assert [e.record.item for e in resumed] == [str(o) for o in range(committed, total)]
