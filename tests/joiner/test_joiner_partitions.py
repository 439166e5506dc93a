"""The joiner over partitioned topics: lanes per partition, several joiners of one group, kill -9 of one.

The reference is the offline join of the raw topics (``joiner_reference.offline_join``): whatever the
number of partitions and processes, and whoever dies, each impression yields exactly one example.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
from joiner_data import RATE, check_examples, traffic
from test_joiner_log import CONFIG, _examples

from streamrec.errors import InvalidInputError
from streamrec.joiner import Joiner
from streamrec.log import open_log
from streamrec.log.partitioner import partition_for
from streamrec.records import Example


def _partitioned(log, partitions: int) -> None:
    for topic in ("impressions", "actions", "examples"):
        log.create_topic(topic, partitions=partitions)


def _fill_keyed(log, imps, acts, chunk: int = 500) -> None:
    for start in range(0, max(len(imps), len(acts)), chunk):
        if imps[start : start + chunk]:
            log.append("impressions", imps[start : start + chunk], key="user")
        if acts[start : start + chunk]:
            log.append("actions", acts[start : start + chunk], key="user")


def test_one_joiner_over_four_partitions_matches_the_offline_join(tmp_path):
    imps, acts = traffic(400, seed=5)
    with open_log(f"sqlite://{tmp_path}/log.db") as log:
        _partitioned(log, 4)
        _fill_keyed(log, imps, acts)
        with Joiner(log, tmp_path / "state", CONFIG) as joiner:
            assert joiner.assignment() == [0, 1, 2, 3]
            stats = joiner.run(once=True, drain=True)
        examples = _examples(log)
        assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["p0", "p1", "p2", "p3"]
        # examples are keyed by request id: every example sits in its request's partition
        for partition in range(4):
            with log.consumer("examples", "where", Example, partitions=[partition]) as reader:
                for envelope in reader.poll(10_000, timeout_s=0):
                    assert partition_for(envelope.record.request_id, 4) == partition
    check_examples(examples, imps, acts)
    assert stats.examples == len(examples) and stats.impressions == len(imps) and stats.actions == len(acts)


def Example_type():
    from streamrec.records import Example

    return Example


def test_two_joiners_of_one_group_split_the_partitions_and_join_exactly_once(tmp_path):
    imps, acts = traffic(400, seed=6)
    with open_log(f"sqlite://{tmp_path}/log.db") as log:
        _partitioned(log, 4)
        first = Joiner(log, tmp_path / "state", CONFIG)
        second = Joiner(log, tmp_path / "state", CONFIG)
        try:
            deadline = time.monotonic() + 10
            while (len(first.assignment()), len(second.assignment())) != (2, 2):  # the first gives two up
                assert time.monotonic() < deadline, (first.assignment(), second.assignment())
                first.step()
                second.step()
                time.sleep(0.05)
            assert sorted(first.assignment() + second.assignment()) == [0, 1, 2, 3]
            half = len(imps) // 2, len(acts) // 2
            _fill_keyed(log, imps[: half[0]], acts[: half[1]])
            for _ in range(5):
                first.step()
                second.step()
            _fill_keyed(log, imps[half[0] :], acts[half[1] :])
            for joiner in (first, second):
                while not joiner.step()[1]:
                    pass
                joiner.step(drain=True)
        finally:
            first.close()
            second.close()
        check_examples(_examples(log), imps, acts)


def test_input_topics_with_different_partition_counts_are_refused(tmp_path):
    with open_log(f"sqlite://{tmp_path}/log.db") as log:
        log.create_topic("impressions", partitions=4)
        log.create_topic("actions", partitions=2)
        with pytest.raises(InvalidInputError, match="same partition count") as info:
            Joiner(log, tmp_path / "state", CONFIG)
        assert info.value.field == "partitions"


def test_a_missing_input_topic_is_created_with_the_others_count(tmp_path):
    with open_log(f"sqlite://{tmp_path}/log.db") as log:
        log.create_topic("impressions", partitions=3)
        with Joiner(log, tmp_path / "state", CONFIG):
            assert log.partitions("actions") == 3


def _command(url: str, state: str) -> list[str]:
    return [sys.executable, "-m", "streamrec.joiner", "--log", url, "--state-dir", state, "--window", "1m",
            "--lateness", "5s", "--negative-rate", str(RATE), "--batch-size", "40",
            "--memory-budget", "30"]  # fmt: skip


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_kill_9_of_one_of_two_joiners_the_survivor_takes_over_exactly_once(backend, tmp_path, request):
    if backend == "sqlite":
        url = f"sqlite://{tmp_path}/log.db"
    else:  # short leases, so the dead joiner's partitions move within seconds
        prefix = f"jp-{uuid.uuid4().hex[:8]}:"
        url = f"{request.getfixturevalue('redis_url')}?prefix={prefix}&session_s=2&rebalance_s=0.25"
    imps, acts = traffic(2400, seed=8)
    third = len(imps) // 3, len(acts) // 3
    with open_log(url) as log:
        _partitioned(log, 4)
        _fill_keyed(log, imps[: third[0]], acts[: third[1]])
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    state = str(tmp_path / "state")
    procs = [subprocess.Popen(_command(url, state), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for _ in range(2)]  # fmt: skip
    try:
        with open_log(url) as log:
            deadline = time.monotonic() + 60
            while log.end_offset("examples") == 0:  # both are joining: mid-stream
                assert time.monotonic() < deadline, "no examples in 60 s"
                assert all(p.poll() is None for p in procs)
                time.sleep(0.05)
            _fill_keyed(log, imps[third[0] : 2 * third[0]], acts[third[1] : 2 * third[1]])
            procs[0].send_signal(signal.SIGKILL)
            procs[0].wait()
            _fill_keyed(log, imps[2 * third[0] :], acts[2 * third[1] :])
            deadline = time.monotonic() + 90
            # The survivor alone must read everything: it took the dead one's partitions.
            while any(log.committed(t, "joiner") < log.end_offset(t) for t in ("impressions", "actions")):
                assert time.monotonic() < deadline, "the survivor did not take over the dead joiner's partitions"
                assert procs[1].poll() is None, procs[1].stderr.read().decode()
                time.sleep(0.1)
        procs[1].send_signal(signal.SIGTERM)
        assert procs[1].wait(timeout=30) == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    final = subprocess.run([*_command(url, state), "--once", "--drain", "--json"], env=env, capture_output=True,
                           text=True, timeout=120)  # fmt: skip
    assert final.returncode == 0, final.stderr
    with open_log(url) as log:
        check_examples(_examples(log), imps, acts)
