"""Redis backend specifics: partitions owned by lease (split, taken over after kill -9, fenced commits
after a lapse), the key layout, groups of the version before partitions, and commits surviving kill -9
of an AOF-backed server."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import msgspec
import pytest

from streamrec.errors import InvalidInputError, LogError, PartitionLostError
from streamrec.log import open_log
from streamrec.log.partitioner import partition_for
from streamrec.records import ActionEvent

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")


def events(start: int, stop: int, users: int = 1) -> list[ActionEvent]:
    return [ActionEvent(user=f"u{n % users}", item=str(n), action="click", time=1.0) for n in range(start, stop)]


def fresh(redis_url: str, **params: object) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"prefix": f"t{uuid.uuid4().hex[:8]}:", **params}.items())
    return f"{redis_url}?{query}"


# A group member in its own process: prints "A <partitions>" when it gains partitions, "P p:o ..." per
# poll and "C p:o ..." (next offsets) after each commit returned; commits every third poll, and after
# 20 polls prints "W" and waits to be killed, with its last two polls not committed.
MEMBER = textwrap.dedent(
    """
    import sys, time
    from streamrec.log import open_log
    from streamrec.records import ActionEvent
    log = open_log(sys.argv[1])
    say = lambda *words: print(*words, flush=True)
    consumer = log.consumer("actions", "g", ActionEvent, name="worker", on_assign=lambda ps: say("A", *ps))
    polls = 0
    while True:
        batch = consumer.poll(max_records=5, timeout_s=0.05)
        if batch:
            say("P", *[f"{e.partition}:{e.offset}" for e in batch])
            polls += 1
            if polls % 3 == 0:
                consumer.commit()
                say("C", *[f"{p}:{o}" for p, o in enumerate(log.committed_offsets("actions", "g"))])
            if polls == 20:
                say("W")
                time.sleep(3600)
            time.sleep(0.01)
    """
)


def lines_of(proc: subprocess.Popen[str]) -> queue.Queue:
    """The worker's output lines, split, read by a thread (so the test keeps polling meanwhile)."""
    out: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:
            out.put(line.split())
        out.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return out


def test_two_members_split_four_partitions_two_and_two(redis_url):
    with open_log(fresh(redis_url, session_s=2, rebalance_s=0.25)) as log:
        log.create_topic("actions", partitions=4)
        a = log.consumer("actions", "g", ActionEvent, name="a")
        assert a.assignment() == [0, 1, 2, 3]  # alone: everything, at once
        b = log.consumer("actions", "g", ActionEvent, name="b")
        deadline = time.monotonic() + 10
        while not (len(a.assignment()) == len(b.assignment()) == 2):
            assert time.monotonic() < deadline, (a.assignment(), b.assignment())
            a.poll(10, timeout_s=0.02)
            b.poll(10, timeout_s=0.02)
        assert a.assignment() == [0, 2] and b.assignment() == [1, 3]  # p % 2, members in joining order
        leases = {p: log.redis.get(f"{log.prefix}:lease:actions:g:{p}").decode() for p in range(4)}
        assert leases == {0: a.member, 1: b.member, 2: a.member, 3: b.member}
        b.close()  # leaves at once: a takes everything on its next tick, not after a session
        started = time.monotonic()
        while a.assignment() != [0, 1, 2, 3]:
            a.poll(10, timeout_s=0.02)
        assert time.monotonic() - started < 1.0
        a.close()
        assert log.redis.zcard(f"{log.prefix}:members:actions:g") == 0


def test_kill9_of_a_member_moves_its_partitions_to_the_survivor_which_rereads_from_commits(redis_url):
    session_s, rebalance_s = 2.0, 0.5
    url = fresh(redis_url, session_s=session_s, rebalance_s=rebalance_s)
    log = open_log(url)
    log.create_topic("actions", partitions=4)
    survivor = log.consumer("actions", "g", ActionEvent, name="survivor")
    assert survivor.assignment() == [0, 1, 2, 3]
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", MEMBER, url], stdout=subprocess.PIPE, text=True, env=env)
    worker_lines = lines_of(proc)
    seen: list[list[str]] = []

    def drain() -> None:
        while not worker_lines.empty():
            line = worker_lines.get()
            assert line is not None, "the worker exited"
            seen.append(line)

    got = []
    try:
        while not any(line[0] == "A" for line in seen):  # the worker joins: the survivor hands it half
            assert survivor.poll(max_records=3, timeout_s=0.02) == []
            drain()
        assert seen[0][1:] == ["1", "3"] and survivor.assignment() == [0, 2]
        records = events(0, 600, users=97)
        log.append("actions", records, key="user")
        ends = log.end_offsets("actions")
        while not any(line[0] == "W" for line in seen):
            got += survivor.poll(max_records=3, timeout_s=0.02)  # slowly: the worker is mid-stream when killed
            survivor.commit()
            drain()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        killed = time.monotonic()
    finally:
        proc.kill()
    while (line := worker_lines.get(timeout=10)) is not None:
        seen.append(line)
    committed = log.committed_offsets("actions", "g")  # the dead member commits nothing more
    reported = {int(p): int(o) for p, o in (x.split(":") for x in [line for line in seen if line[0] == "C"][-1][1:])}
    assert all(committed[p] >= reported[p] for p in (1, 3))
    delivered = {(int(p), int(o)) for line in seen if line[0] == "P" for p, o in (x.split(":") for x in line[1:])}
    assert any(o >= committed[p] for p, o in delivered)  # it died with records polled and not committed
    while survivor.assignment() != [0, 1, 2, 3]:
        assert time.monotonic() - killed < 30, survivor.assignment()
        got += survivor.poll(max_records=50, timeout_s=0.02)
    takeover = time.monotonic() - killed
    print(f"takeover after kill -9: {takeover:.2f} s (session_s={session_s}, rebalance_s={rebalance_s})")
    assert takeover <= session_s + rebalance_s + 0.5  # the bound, plus scheduling on a busy machine
    while sum(1 for e in got) < sum(ends) - sum(committed[p] for p in (1, 3)):
        batch = survivor.poll(max_records=500, timeout_s=0.5)
        assert batch, "the survivor stopped before the end"
        got += batch
    survivor.commit()
    for part in (1, 3):  # from the dead member's last commit to the end: nothing skipped, nothing lost
        assert [e.offset for e in got if e.partition == part] == list(range(committed[part], ends[part]))
    for part in (0, 2):
        assert [e.offset for e in got if e.partition == part] == list(range(ends[part]))
    assert all(e.record == records[int(e.record.item)] for e in got)
    assert all(partition_for(e.record.user, 4) == e.partition for e in got)
    assert log.committed_offsets("actions", "g") == ends
    survivor.close()
    log.close()


def test_a_member_whose_lease_lapsed_cannot_commit_and_no_offset_moves_back(redis_url):
    with open_log(fresh(redis_url, session_s=1, rebalance_s=0.2)) as log:
        log.create_topic("actions", partitions=2)
        log.append("actions", events(0, 40, users=7), key="user")
        ends = log.end_offsets("actions")
        calls: list[tuple[str, list[int]]] = []
        slow = log.consumer(
            "actions",
            "g",
            ActionEvent,
            name="slow",
            on_revoke=lambda ps: calls.append(("revoke", ps)),
            on_lost=lambda ps: calls.append(("lost", ps)),
        )
        mine = slow.poll(max_records=100, timeout_s=0)
        assert len(mine) == 40  # everything read, nothing committed; then it stalls longer than its session
        other = log.consumer("actions", "g", ActionEvent, name="other")
        taken = []
        deadline = time.monotonic() + 10
        while other.assignment() != [0, 1] or len(taken) < 40:
            assert time.monotonic() < deadline, other.assignment()
            taken += other.poll(max_records=100, timeout_s=0.05)
        assert sorted((e.partition, e.offset) for e in taken) == sorted((e.partition, e.offset) for e in mine)
        other.commit(taken[0])  # the new owner has committed only the first record it read
        before = log.committed_offsets("actions", "g")
        assert before == [1 if p == taken[0].partition else 0 for p in range(2)]
        with pytest.raises(PartitionLostError) as info:
            slow.commit()  # would move partition 0 to its end and partition 1 past what other committed
        assert info.value.partitions == [0, 1]
        assert log.committed_offsets("actions", "g") == before  # fenced: nothing of it was written
        assert calls == []
        slow.poll(max_records=100, timeout_s=0)  # the next poll finds the leases gone and says so
        assert calls[0] == ("lost", [0, 1])
        assert not any(kind == "revoke" for kind, _ in calls)
        other.commit()
        assert log.committed_offsets("actions", "g") == ends
        slow.close()
        other.close()


def test_a_commit_behind_the_committed_offset_moves_nothing(redis_url):
    with open_log(fresh(redis_url)) as log:
        log.create_topic("actions", partitions=2)
        log.append("actions", events(0, 20), partition=1)
        ahead = log.consumer("actions", "g", ActionEvent, partitions=[1])
        behind = log.consumer("actions", "g", ActionEvent, partitions=[1])  # overlapping readers: the caller's choice
        assert len(ahead.poll(100, timeout_s=0)) == 20 and len(behind.poll(5, timeout_s=0)) == 5
        ahead.commit()
        behind.commit()  # would set 5: the script keeps max(current, new)
        assert log.committed_offsets("actions", "g") == [0, 20]


def test_partitions_are_streams_beside_the_old_key_with_counts_and_commits_in_hashes(redis_url):
    with open_log(fresh(redis_url)) as log:
        log.create_topic("actions", partitions=3)
        log.append("actions", events(0, 30, users=11), key="user")
        p = log.prefix
        assert log.redis.hget(f"{p}:meta:partitions", "actions") == b"3"
        sizes = [log.redis.xlen(f"{p}actions"), log.redis.xlen(f"{p}actions:1"), log.redis.xlen(f"{p}actions:2")]
        assert sizes == log.end_offsets("actions")
        assert log.redis.xrange(f"{p}actions:1", count=1)[0][0] == b"0-1"  # offset = sequence - 1, per stream
        with log.consumer("actions", "g", ActionEvent) as consumer:
            consumer.poll(max_records=100, timeout_s=0)
            consumer.commit()
        assert log.redis.hgetall(f"{p}:off:actions:g") == {b"%d" % n: b"%d" % size for n, size in enumerate(sizes)}
        assert log.redis.xinfo_groups(f"{p}actions") == []  # no Redis consumer group is involved


def test_a_topic_and_its_groups_from_before_partitions_are_read_where_they_stopped(redis_url):
    with open_log(fresh(redis_url)) as log:
        stream = log.prefix + "actions"  # written by the previous version: a stream, Redis consumer groups
        encode = msgspec.msgpack.encode
        for record in events(0, 10):
            log.redis.xadd(stream, {b"d": encode(record)}, id="0-*")
        log.redis.xgroup_create(stream, "pending", id="0")
        delivered = log.redis.xreadgroup("pending", "c", {stream: ">"}, count=6)[0][1]
        log.redis.xack(stream, "pending", *[entry_id for entry_id, _ in delivered[:4]])  # 4 and 5 pending
        log.redis.xgroup_create(stream, "acked", id="0")
        delivered = log.redis.xreadgroup("acked", "c", {stream: ">"}, count=3)[0][1]
        log.redis.xack(stream, "acked", *[entry_id for entry_id, _ in delivered])
        log.redis.xgroup_create(stream, "untouched", id="0")
        assert log.partitions("actions") == 1
        assert log.end_offsets("actions") == [10]
        assert log.committed_offsets("actions", "pending") == [4]
        assert log.committed_offsets("actions", "acked") == [3]
        assert log.committed_offsets("actions", "untouched") == [0]
        with log.consumer("actions", "pending", ActionEvent) as consumer:
            assert [e.offset for e in consumer.poll(100, timeout_s=0)] == list(range(4, 10))
        with pytest.raises(InvalidInputError, match="1 partitions"):
            log.create_topic("actions", partitions=4)
        assert log.create_topic("actions") == 1
        assert log.append("actions", events(10, 11)) == [10]


def test_url_parameters_are_checked_and_the_old_claim_parameter_is_ignored(redis_url):
    with open_log(fresh(redis_url, claim_idle_s="0.2", session_s=3, rebalance_s=0.5)) as log:
        assert (log.session_s, log.rebalance_s) == (3.0, 0.5)
    with open_log(fresh(redis_url)) as log:
        assert (log.session_s, log.rebalance_s) == (10.0, 1.0)
    bad = [
        ({"session_s": "0"}, "session_s"),
        ({"rebalance_s": "x"}, "rebalance_s"),
        ({"session_s": "nan"}, "session_s"),
        ({"session_s": 2, "rebalance_s": 2}, "rebalance_s"),  # leases would lapse between renewals
    ]
    for params, name in bad:
        with pytest.raises(LogError, match=name):
            open_log(fresh(redis_url, **params))


def test_concurrent_creators_agree_on_the_count(redis_url):
    url = fresh(redis_url)
    with open_log(url) as one, open_log(url) as two:
        assert one.create_topic("actions", partitions=4) == 4
        with pytest.raises(InvalidInputError, match="4 partitions"):
            two.create_topic("actions", partitions=2)
        assert two.partitions("actions") == 4


def restart(server) -> None:
    """Start redis-server again on the same port and data directory (the AOF is replayed)."""
    server._proc = subprocess.Popen(
        [server.binary, "--port", str(server.port), "--bind", "127.0.0.1", "--dir", str(server._dir),
         "--save", "", "--appendonly", "yes", "--appendfsync", "always"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def test_acknowledged_appends_and_commits_survive_kill9_of_an_aof_server():
    from streamrec.redis_server import RedisServer

    with RedisServer(appendonly=True) as server:
        log = open_log(server.url)
        log.create_topic("actions", partitions=3)
        acked = []
        records = events(0, 200, users=17)
        for n in range(0, 200, 20):
            acked += log.append("actions", records[n : n + 20], key="user")
        ends = log.end_offsets("actions")
        with log.consumer("actions", "g", ActionEvent) as consumer:
            consumer.poll(50, timeout_s=0)
            consumer.commit()
        committed = log.committed_offsets("actions", "g")
        assert sum(committed) == 50
        log.close()
        server.kill()
        restart(server)
        deadline = time.monotonic() + 10
        while True:
            try:
                log = open_log(server.url)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        with log:
            assert log.partitions("actions") == 3
            assert log.end_offsets("actions") == ends
            assert log.committed_offsets("actions", "g") == committed
            with log.consumer("actions", "g", ActionEvent) as consumer:
                got = consumer.poll(1000, timeout_s=0)
            for part in range(3):
                assert [e.offset for e in got if e.partition == part] == list(range(committed[part], ends[part]))
            assert sorted(int(e.record.item) for e in got) == sorted(
                n for n in range(200) if acked[n] >= committed[partition_for(records[n].user, 3)]
            )
