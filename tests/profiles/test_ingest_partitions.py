"""Two real ``streamrec profiles ingest`` processes of one group over a 4-partition ``actions`` topic.

The processes write to real profile nodes (in this test process, as in ``test_ingest_nodes.py``),
and the profile counters are checked against a brute-force count of the appended events: exactly
once without crashes; after ``kill -9`` of one process mid-stream, the survivor takes its
partitions and every event is counted at least once (a batch written and not yet committed when
the process died is counted twice: at most one batch).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streamrec.cli import app
from streamrec.errors import InvalidInputError
from streamrec.log import open_log
from streamrec.profiles import Feature, FeatureQuery, ProfileStore
from streamrec.profiles.client import ProfileClient
from streamrec.profiles.service import ProfileNodeServer
from streamrec.records import ActionEvent

NOW = 1_700_000_000.0
PARTITIONS = 4
USERS, ITEMS = 40, 30
BATCH = 50
#: Events per user and per item (the default config's count slots of each entity).
COUNT = {
    "user": Feature(slot="actions", window="1d", counters=("count",)),
    "item": Feature(slot="item_engagement", window="1d", counters=("count",)),
}


def _events(n: int, first: int = 0) -> list[ActionEvent]:
    return [
        ActionEvent(user=f"u{i % USERS}", item=f"m{i * 7 % ITEMS}", action="click", time=NOW - 1 - i % 997)
        for i in range(first, first + n)
    ]


@pytest.fixture()
def nodes(tmp_path):
    servers = [
        ProfileNodeServer(ProfileStore(None, path=tmp_path / f"node-{n}", clock=lambda: NOW), own_store=True).start()
        for n in ("a", "b")
    ]
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture(params=["sqlite", "redis"])
def log_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/log.db"
    # A short session: a killed member's leases lapse in 2 s (default 10), so the survivor takes over well
    # before its --idle-exit.
    return f"{request.getfixturevalue('redis_url')}?prefix=ingest{uuid.uuid4().hex[:10]}:&session_s=2&rebalance_s=0.5"


class Ingest:
    """One ``streamrec profiles ingest --profiles ...`` process; its JSON stats once it exits."""

    def __init__(self, log_url: str, nodes: list[ProfileNodeServer], folder: Path, name: str, idle_exit: float) -> None:
        self.ready = folder / f"{name}.ready"
        self.out = folder / f"{name}.out"
        self.err = folder / f"{name}.err"
        args = [
            sys.executable, "-m", "streamrec", "profiles", "ingest", "--log", log_url,
            "--profiles", ",".join(n.address for n in nodes), "--batch", str(BATCH),
            "--idle-exit", str(idle_exit), "--ready-file", str(self.ready), "--json",
        ]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(args, stdout=out, stderr=err, env=env)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready.exists():
            assert self.proc.poll() is None, self.err.read_text()
            assert time.monotonic() < deadline, "ingest did not open its consumer"
            time.sleep(0.05)

    def stats(self, timeout: float = 60.0) -> dict:
        assert self.proc.wait(timeout) == 0, self.err.read_text()
        return json.loads(self.out.read_text().strip().splitlines()[-1])

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def _counts(nodes: list[ProfileNodeServer], prefix: str, ids: int) -> dict[str, float]:
    client = ProfileClient([n.address for n in nodes])
    try:
        client.flush()
        entities = [f"{prefix}:{'u' if prefix == 'user' else 'm'}{i}" for i in range(ids)]
        res = client.query(FeatureQuery(entities=entities, features=[COUNT[prefix]], now=NOW))
        return {e: r[0].scalar() for e, r in zip(entities, res.results, strict=True)}
    finally:
        client.close()


def _reference(events: list[ActionEvent]) -> tuple[dict[str, int], dict[str, int]]:
    """Brute force: how many events each user and each item has."""
    users = Counter(f"user:{e.user}" for e in events)
    items = Counter(f"item:{e.item}" for e in events)
    return (
        {f"user:u{i}": users[f"user:u{i}"] for i in range(USERS)},
        {f"item:m{i}": items[f"item:m{i}"] for i in range(ITEMS)},
    )


def _start_two(log_url: str, nodes, folder: Path, idle_exit: float) -> list[Ingest]:
    with open_log(log_url) as log:
        log.create_topic("actions", partitions=PARTITIONS)
    ingests = [Ingest(log_url, nodes, folder, name, idle_exit) for name in ("a", "b")]
    for ingest in ingests:
        ingest.wait_ready()
    time.sleep(2.0)  # both members live: the group settles (each owns two partitions) before data flows
    return ingests


def test_two_ingest_processes_share_four_partitions_and_count_every_event_exactly_once(tmp_path, nodes, log_url):
    ingests = _start_two(log_url, nodes, tmp_path, idle_exit=4.0)
    events = _events(2000)
    with open_log(log_url) as log:
        for start in range(0, len(events), 200):
            log.append("actions", events[start : start + 200], key="user")
        stats = [ingest.stats() for ingest in ingests]
        ends, committed = log.end_offsets("actions"), log.committed_offsets("actions", "profiles")
    assert committed == ends and sum(ends) == len(events)
    # Each process read its own partitions, together all four, each event once.
    read = [set(s["by_partition"]) for s in stats]
    assert all(read) and not read[0] & read[1] and read[0] | read[1] == {str(p) for p in range(PARTITIONS)}
    for s in stats:  # a partition is read whole by its one owner (the first to go idle hands its partitions over)
        assert all(count == ends[int(p)] for p, count in s["by_partition"].items())
        assert set(s["by_partition"]) <= {str(p) for p in s["partitions_owned"]}
    assert sum(s["polled"] for s in stats) == sum(s["accepted"] for s in stats) == len(events)
    users, items = _reference(events)
    assert _counts(nodes, "user", USERS) == users
    assert _counts(nodes, "item", ITEMS) == items


def test_kill_9_of_one_ingest_moves_its_partitions_to_the_survivor_and_loses_no_event(tmp_path, nodes, log_url):
    ingests = _start_two(log_url, nodes, tmp_path, idle_exit=6.0)
    victim, survivor = ingests
    events = _events(4000)
    with open_log(log_url) as log:
        for number, start in enumerate(range(0, len(events), 100)):
            log.append("actions", events[start : start + 100], key="user")
            if number == 15:  # mid-stream, once the group has been writing and committing
                deadline = time.monotonic() + 30
                while log.committed("actions", "profiles") == 0:
                    assert time.monotonic() < deadline, "nothing committed"
                    time.sleep(0.01)
                victim.kill()
            time.sleep(0.03)
        stats = survivor.stats(timeout=120)
        ends, committed = log.end_offsets("actions"), log.committed_offsets("actions", "profiles")
    assert committed == ends
    assert stats["partitions"] == list(range(PARTITIONS))  # it took over the victim's partitions
    assert stats["partitions_owned"] == list(range(PARTITIONS))
    users, items = _reference(events)
    got_users, got_items = _counts(nodes, "user", USERS), _counts(nodes, "item", ITEMS)
    assert all(got_users[k] >= v for k, v in users.items())  # every event present: at least once
    assert all(got_items[k] >= v for k, v in items.items())
    # At most the victim's batch in flight (written, not committed) is counted twice.
    assert len(events) <= sum(got_users.values()) <= len(events) + BATCH


def test_a_second_ingest_on_one_local_store_is_refused_naming_the_store(tmp_path):
    url = f"sqlite://{tmp_path}/log.db"
    store = tmp_path / "store"
    ready = tmp_path / "first.ready"
    args = [sys.executable, "-m", "streamrec", "profiles", "ingest", "--log", url, "--store", str(store),
            "--idle-exit", "60", "--ready-file", str(ready)]  # fmt: skip
    first = subprocess.Popen(args, stderr=subprocess.DEVNULL, env={**os.environ, "NUMBA_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        result = CliRunner().invoke(
            app, ["profiles", "ingest", "--log", url, "--store", str(store), "--idle-exit", "0.1"]
        )
        assert isinstance(result.exception, InvalidInputError)
        assert result.exception.field == "--store"
        assert f"pid {first.pid}" in str(result.exception) and "--profiles" in str(result.exception)
    finally:
        first.terminate()  # SIGTERM: the ingest stops after its batch and releases the store
        assert first.wait(30) == 0
    result = CliRunner().invoke(app, ["profiles", "ingest", "--log", url, "--store", str(store), "--idle-exit", "0.1"])
    assert result.exit_code == 0, result.output
