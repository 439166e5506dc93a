"""Replicated profile nodes: placement of R copies, quorum writes, fail-over reads, catch-up.

Three layers, cheapest first:

* placement on the ring (pure functions, checked against a brute-force walk of the circle);
* a cluster of in-process gRPC nodes (real servers and channels, one process): quorum writes,
  write ids applied once, fail-over reads, hints delivered when a node is back;
* a cluster of real ``streamrec profiles serve`` processes under a real ingest from a SQLite log
  and concurrent queries, one node killed with SIGKILL mid-stream and restarted: nothing
  acknowledged is lost (profile counters equal a brute-force count of the appended events), the
  queries go on, and the restarted node ends with the same answers as its peer replica.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from pathlib import Path

import msgspec
import pytest

from streamrec.log import open_log
from streamrec.profiles import Feature, FeatureQuery, ProfileStore
from streamrec.profiles.client import ProfileClient, WriteQuorumError
from streamrec.profiles.ingest import ingest
from streamrec.profiles.proto import profiles_pb2
from streamrec.profiles.ring import HashRing
from streamrec.profiles.service import ProfileNodeServer
from streamrec.records import ActionEvent

NOW = 1_700_000_000.0


def _keys(n: int) -> list[bytes]:
    return [hashlib.blake2b(f"user\x00{i}".encode(), key=b"k", digest_size=16).digest() for i in range(n)]


KEYS = _keys(20_000)


# ------------------------------------------------------------------------------------ placement


@pytest.mark.parametrize(("n", "r"), [(1, 1), (3, 1), (3, 2), (3, 3), (5, 3), (2, 4)])
def test_replicas_are_the_first_r_distinct_nodes_clockwise(n, r):
    names = [f"n{i}" for i in range(n)]
    ring = HashRing(names, vnodes=16)
    points = sorted(
        (int.from_bytes(hashlib.blake2b(f"{name}#{i}".encode(), digest_size=8).digest(), "big"), name)
        for name in names
        for i in range(16)
    )
    want_r = min(r, n)
    got = ring.replica_indices(KEYS[:400], r)
    assert got.shape == (400, want_r)
    for key, row in zip(KEYS[:400], got.tolist(), strict=True):
        pos = int.from_bytes(key[:8], "big")
        start = next((j for j, (p, _) in enumerate(points) if p >= pos), 0)
        walk: list[str] = []
        for j in range(len(points)):
            name = points[(start + j) % len(points)][1]
            if name not in walk:
                walk.append(name)
        assert [names[i] for i in row] == walk[:want_r]  # distinct, owner first, then clockwise
        assert ring.replicas(key, r) == walk[:want_r]


def test_each_node_holds_about_r_over_n_of_the_keys():
    ring = HashRing([f"n{i}" for i in range(4)])
    held = Counter(i for row in ring.replica_indices(KEYS, 2).tolist() for i in row)
    for count in held.values():
        assert abs(count / len(KEYS) - 0.5) < 0.06


@pytest.mark.parametrize(("n", "r"), [(2, 2), (3, 2), (4, 3), (5, 2)])
def test_adding_a_node_changes_about_r_over_n_plus_one_of_the_sets_by_one_node(n, r):
    ring = HashRing([f"n{i}" for i in range(n)])
    grown = ring.with_node("new")
    before, after = ring.replica_indices(KEYS, r).tolist(), grown.replica_indices(KEYS, r).tolist()
    changed = 0
    for old, new in zip(before, after, strict=True):
        old_names = {ring.nodes[i] for i in old}
        new_names = {grown.nodes[i] for i in new}
        if old_names != new_names:
            changed += 1
            assert "new" in new_names
            assert len(new_names - old_names) == 1 and len(old_names - new_names) == (1 if n >= r else 0)
    assert abs(changed / len(KEYS) - min(r, n + 1) / (n + 1)) < 0.06


def test_removing_a_node_changes_only_the_sets_that_held_it():
    ring = HashRing(["a", "b", "c", "d", "e"])
    shrunk = ring.without_node("c")
    for old, new in zip(ring.replica_indices(KEYS, 3).tolist(), shrunk.replica_indices(KEYS, 3).tolist(), strict=True):
        old_names = [ring.nodes[i] for i in old]
        new_names = [shrunk.nodes[i] for i in new]
        if "c" in old_names:
            assert set(old_names) - {"c"} <= set(new_names) and len(set(new_names) - set(old_names)) == 1
        else:
            assert new_names == old_names


def test_bad_replica_counts_are_rejected_naming_the_field():
    from streamrec.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="replicas"):
        HashRing(["a"]).replica_indices(KEYS[:3], 0)
    with pytest.raises(InvalidInputError, match="replicas"):
        ProfileClient({"a": ProfileStore(background=False)}, replicas=0)


# ------------------------------------------------------------------- in-process gRPC nodes

FEATURES = [
    Feature(slot="actions", window="30d", counters=("count",)),
    Feature(slot="clicked_category", window="30d", counters=("show", "click")),
    Feature(slot="item_engagement", window="30d", counters=("count",)),
]


def make_events(n: int, seed: int = 0, users: int = 40, items: int = 25) -> list[dict]:
    rng = random.Random(seed)
    return [
        {
            "user": f"u{rng.randrange(users)}",
            "item": f"m{rng.randrange(items)}",
            "action": rng.choice(["show", "show", "click"]),
            "time": NOW - rng.uniform(0, 86400),
            "attributes": {"category": f"c{rng.randrange(5)}"},
        }
        for _ in range(n)
    ]


def labels(users: int = 40, items: int = 25) -> list[str]:
    return [f"user:u{u}" for u in range(users)] + [f"item:m{i}" for i in range(items)]


def reference_answers(events: list[dict], entities: list[str]) -> bytes:
    ref = ProfileStore(clock=lambda: NOW, background=False)
    ref.write(events)
    ref.merge()
    out = msgspec.msgpack.encode(ref.query(FeatureQuery(features=FEATURES, entities=entities, now=NOW)).results)
    ref.close()
    return out


def answers(client: ProfileClient, entities: list[str]) -> bytes:
    return msgspec.msgpack.encode(client.query(FeatureQuery(features=FEATURES, entities=entities, now=NOW)).results)


class Nodes:
    """In-process gRPC nodes over stores on disk; a node can be stopped and started again on its port."""

    def __init__(self, root: Path, n: int) -> None:
        self.root = root
        self.servers: list[ProfileNodeServer | None] = [None] * n
        self.ports = [0] * n
        for i in range(n):
            self.start(i)
        self.addresses = [f"127.0.0.1:{p}" for p in self.ports]

    def start(self, i: int) -> None:
        store = ProfileStore(None, path=self.root / f"node-{i}", clock=lambda: NOW, background=False)
        server = ProfileNodeServer(store, port=self.ports[i], own_store=True).start()
        self.ports[i] = server.port
        self.servers[i] = server

    def stop(self, i: int) -> None:
        server = self.servers[i]
        assert server is not None
        server.stop(grace=0)
        self.servers[i] = None

    def close(self) -> None:
        for i, server in enumerate(self.servers):
            if server is not None:
                self.stop(i)


@pytest.fixture()
def three(tmp_path):
    nodes = Nodes(tmp_path, 3)
    yield nodes
    nodes.close()


def test_a_replicated_write_lands_on_every_replica_and_each_answers_like_one_store(three):
    events = make_events(400)
    client = ProfileClient(three.addresses, replicas=2)
    assert client.quorum_size == 2
    res = client.write(events)
    assert (res.accepted, res.rejected, res.too_old) == (400, [], 0)  # each event counted once
    client.flush()
    assert answers(client, labels()) == reference_answers(events, labels())
    held = client.keys()
    for name, keys in held.items():
        assert keys and all(name in client.replica_nodes(k) for k in keys)  # no stray copy
    for label in labels():
        key = client.key(label)
        assert {n for n, ks in held.items() if key in ks} == set(client.replica_nodes(key))
    # Each replica on its own answers for its keys what the reference does.
    for address in three.addresses:
        alone = ProfileClient([address])
        mine = [x for x in labels() if address in client.replica_nodes(x)]
        assert answers(alone, mine) == reference_answers(events, mine)
        alone.close()
    client.close()


def test_a_resent_write_id_is_applied_once(three):
    events = make_events(50, seed=3)
    client = ProfileClient(three.addresses[:1])
    req = profiles_pb2.WriteRequest(events=msgspec.msgpack.encode(events), write_id=b"w" * 16)
    stub = client._nodes[three.addresses[0]].stub
    first = stub.Write(req)
    again = stub.Write(req)  # a retry after a lost reply
    assert (first.accepted, again.accepted) == (50, 50)
    client.flush()
    assert answers(client, labels()) == reference_answers(events, labels())
    client.close()


def test_a_write_short_of_its_quorum_raises_and_resumes_without_counting_twice(three):
    events = make_events(300, seed=1)
    client = ProfileClient(three.addresses, replicas=2, timeout=5)
    three.stop(1)
    with pytest.raises(WriteQuorumError, match="write quorum 2 of 2") as info:
        client.write(events)
    w = info.value.write
    assert w.missing == [three.addresses[1]] and not w.has_quorum
    three.start(1)
    client.resume(w)  # only node 1 gets its part again; nodes 0 and 2 have theirs
    assert w.complete and w.has_quorum and w.result.accepted == 300
    client.flush()
    assert answers(client, labels()) == reference_answers(events, labels())
    client.close()


def test_reads_fail_over_to_a_live_replica(three):
    events = make_events(300, seed=2)
    client = ProfileClient(three.addresses, replicas=2, timeout=5)
    client.write(events)
    client.flush()
    want = reference_answers(events, labels())
    three.stop(0)
    for _ in range(3):  # the first read finds node 0 down; the next ones try it last
        assert answers(client, labels()) == want
    sql = f"SELECT sum(count) AS n FROM actions WHERE entity = 'user:u1' AND window = '30d' AND now = {NOW}"
    assert client.sql(sql).rows == [[float(sum(e["user"] == "u1" for e in events))]]
    client.close()


def test_with_three_replicas_a_dead_node_costs_no_write_and_its_hints_catch_it_up(three):
    events = make_events(300, seed=4)
    more = make_events(200, seed=5)
    client = ProfileClient(three.addresses, replicas=3, timeout=5)
    assert client.quorum_size == 2
    client.write(events)
    three.stop(2)
    res = client.write(more)  # quorum 2 of 3: acknowledged without node 2
    assert res.accepted == 200
    assert [w.missing for w in client.hints] == [[three.addresses[2]]]
    three.start(2)
    client._suspect.clear()  # do not wait out the back-off of the failed node
    assert client.deliver_hints() == 0
    client.flush()
    want = reference_answers(events + more, labels())
    for address in three.addresses:  # every replica has everything, once
        alone = ProfileClient([address])
        assert answers(alone, labels()) == want
        alone.close()
    client.close()


def test_ingest_with_three_replicas_keeps_missed_parts_as_hints_in_the_log(tmp_path, three):
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log = open_log(url)
    events = [ActionEvent(**e) for e in make_events(300, seed=6)]
    client = ProfileClient(three.addresses, replicas=3, timeout=5)
    three.stop(1)
    log.append("actions", events)
    stats = ingest(client, url, batch=100, idle_exit_s=0.3)
    assert (stats.accepted, stats.quorum_waits) == (300, 0)  # W = 2 of 3: no wait
    assert stats.hints_written == 3 and stats.hints_delivered == 0
    assert log.end_offset("actions.hints") == 3
    three.start(1)
    client._suspect.clear()
    stats = ingest(client, url, batch=100, idle_exit_s=1.0)
    assert (stats.polled, stats.hints_delivered) == (0, 3)
    assert log.committed("actions.hints", "profiles") == 3
    client.flush()
    want = reference_answers([msgspec.to_builtins(e) for e in events], labels())
    for address in three.addresses:
        alone = ProfileClient([address])
        assert answers(alone, labels()) == want
        alone.close()
    client.close()
    log.close()


def test_resizing_a_replicated_cluster_keeps_every_answer_and_r_copies(three, tmp_path):
    events = make_events(400, seed=7)
    client = ProfileClient(three.addresses[:2], replicas=2)
    client.write(events)
    client.flush()
    report = client.add_node(three.addresses[2])
    assert report["total"] == len(labels())
    client.flush()
    want = reference_answers(events, labels())
    assert answers(client, labels()) == want
    held = client.keys()
    for label in labels():
        key = client.key(label)
        assert {n for n, ks in held.items() if key in ks} == set(client.replica_nodes(key))
    for address in three.addresses:
        alone = ProfileClient([address])
        mine = [x for x in labels() if address in client.replica_nodes(x)]
        assert answers(alone, mine) == reference_answers(events, mine)
        alone.close()
    client.remove_node(three.addresses[0])
    assert answers(client, labels()) == want
    client.close()
