"""The partition contract, on every backend: creation, routing, offset vectors, group sharing, rebalancing.

Each check is against a reference computed apart from the log: where a record must land is
:func:`~streamrec.log.partitioner.partition_for` applied record by record (the brute-force form of
the batch router), and what must be read back is a dict of what was appended, per partition.
Group changes wait with a deadline rather than a fixed sleep, so the same tests run on the
backends that rebalance at once (SQLite, a member closing on Redis) and on those that take a
session to notice (Kafka).
"""

from __future__ import annotations

import threading
import time

import msgspec
import pytest

from streamrec.errors import InvalidInputError
from streamrec.log import Envelope
from streamrec.log.partitioner import partition_for
from streamrec.records import ActionEvent

SHORT = {"session_s": 2, "rebalance_s": 0.25}  # group sessions for tests where members come and go


class Keyed(msgspec.Struct, frozen=True):
    key: str | None
    n: int


def event(n: int, users: int = 13) -> ActionEvent:
    return ActionEvent(user=f"u{n % users}", item=f"i{n}", action="click", time=float(n))


def reference(records: list[ActionEvent], partitions: int, key=lambda r: r.user) -> dict[int, list[ActionEvent]]:
    """What each partition must hold, in append order: partition_for of each record's key, one by one."""
    out: dict[int, list[ActionEvent]] = {p: [] for p in range(partitions)}
    for record in records:
        out[partition_for(key(record), partitions)].append(record)
    return out


class Reader:
    """A consumer and everything it polled."""

    def __init__(self, consumer) -> None:
        self.consumer = consumer
        self.got: list[Envelope] = []

    def poll(self, max_records: int = 100) -> list[Envelope]:
        batch = self.consumer.poll(max_records=max_records, timeout_s=0.02)
        self.got += batch
        return batch

    def of(self, partition: int) -> list[int]:
        return [e.offset for e in self.got if e.partition == partition]


def until(condition, *readers: Reader, timeout_s: float = 60.0, what: str = "") -> None:
    """Poll every reader (keeping what it reads) until ``condition()`` holds."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}; " + ", ".join(
            f"{r.consumer.assignment()} read {len(r.got)}" for r in readers
        )
        for reader in readers:
            reader.poll()


def read_partitions(log, topic: str, partitions: list[int], counts: dict[int, int]) -> dict[int, list[Envelope]]:
    """Everything in ``partitions`` (``counts[p]`` records each), read by a consumer of exactly those partitions."""
    with log.consumer(topic, "check", ActionEvent, partitions=partitions) as consumer:
        reader = Reader(consumer)
        until(lambda: all(len(reader.of(p)) >= counts[p] for p in partitions), reader, what="read back")
        assert consumer.poll(max_records=1000, timeout_s=0) == []
    return {p: [e for e in reader.got if e.partition == p] for p in partitions}


# -- topics and routing ----------------------------------------------------------------------
def test_create_topic_is_idempotent_and_refuses_another_count(logs):
    url = logs.new_url()
    log = logs.open(url)
    assert log.create_topic("clicks", partitions=4) == 4
    assert log.create_topic("clicks", partitions=4) == 4
    with pytest.raises(InvalidInputError) as info:
        log.create_topic("clicks", partitions=2)
    assert info.value.field == "partitions" and "4" in str(info.value)
    for bad in (0, 4097, 1.5, True, "4"):
        with pytest.raises(InvalidInputError, match="partitions"):
            log.create_topic("other", partitions=bad)
    assert log.partitions("other") == 0
    assert logs.open(url).partitions("clicks") == 4  # stored with the topic, seen by another handle
    assert log.end_offsets("clicks") == [0, 0, 0, 0]
    log.append("actions", [event(0)])  # a topic first written without being created has one partition
    assert log.partitions("actions") == 1
    assert log.create_topic("actions") == 1
    with pytest.raises(InvalidInputError, match="partitions"):
        log.create_topic("actions", partitions=3)


@pytest.mark.parametrize("how", ["field", "function", "list"])
def test_append_routes_like_partition_for_and_keeps_order_per_partition(logs, how):
    log = logs.open()
    log.create_topic("actions", partitions=4)
    records = [event(n) for n in range(120)]
    key = {"field": "user", "function": lambda r: r.user, "list": [r.user for r in records[:40]]}[how]
    offsets = log.append("actions", records[:40], key=key)
    for start in (40, 80):  # more batches keep counting where the last one stopped
        offsets += log.append("actions", records[start : start + 40], key="user")
    expected = reference(records, 4)
    position = {p: 0 for p in range(4)}
    for record, offset in zip(records, offsets, strict=True):
        part = partition_for(record.user, 4)
        assert offset == position[part]  # dense per partition, in append order
        position[part] += 1
    assert log.end_offsets("actions") == [len(expected[p]) for p in range(4)]
    got = read_partitions(log, "actions", [0, 1, 2, 3], {p: len(expected[p]) for p in range(4)})
    for part in range(4):
        assert [e.record for e in got[part]] == expected[part]
        assert [e.offset for e in got[part]] == list(range(len(expected[part])))
        assert all(e.partition == part and e.topic == "actions" for e in got[part])


def test_integer_and_bytes_keys_route_like_partition_for(logs):
    log = logs.open()
    log.create_topic("actions", partitions=5)
    keys = [7, b"\x00\xffk", "ü-user", 10**12, "x"]
    records = [event(n) for n in range(len(keys))]
    log.append("actions", records, key=keys)
    ends = log.end_offsets("actions")
    want = [0] * 5
    for k in keys:
        want[partition_for(k, 5)] += 1
    assert ends == want


def test_missing_or_empty_keys_are_refused_naming_the_record_and_nothing_is_appended(logs):
    log = logs.open()
    log.create_topic("keyed", partitions=3)
    good = [Keyed(key=f"k{n}", n=n) for n in range(5)]
    log.append("keyed", good, key="key")
    before = log.end_offsets("keyed")
    with pytest.raises(InvalidInputError) as info:
        log.append("keyed", good)  # no key on a topic of several partitions
    assert info.value.field == "key"
    cases = [
        ([*good[:2], Keyed(key=None, n=9)], "key", "records[2].key"),
        ([*good[:1], Keyed(key="", n=9), *good[1:]], "key", "records[1].key"),
        (good, lambda r: "" if r.n == 3 else r.key, "records[3] key"),
        (good[:3], ["a", "b", None], "records[2] key"),
        (good[:3], ["a", "b"], "key"),  # not one key per record
        (good[:3], "no_such_field", "key"),
    ]
    for records, key, field in cases:
        with pytest.raises(InvalidInputError) as info:
            log.append("keyed", records, key=key)
        assert info.value.field == field
    assert log.end_offsets("keyed") == before


def test_a_partition_out_of_range_is_refused_and_an_explicit_one_takes_every_record(logs):
    log = logs.open()
    log.create_topic("actions", partitions=4)
    for bad in (4, -1, True, 1.0, "2"):
        with pytest.raises(InvalidInputError) as info:
            log.append("actions", [event(0), event(1)], partition=bad)
        assert info.value.field == "partition"
    assert log.end_offsets("actions") == [0, 0, 0, 0]
    assert log.append("actions", [event(n) for n in range(3)], partition=2) == [0, 1, 2]
    assert log.append("actions", [event(3)], partition=2, key="user") == [3]  # partition= wins over key
    assert log.end_offsets("actions") == [0, 0, 4, 0]
    with pytest.raises(InvalidInputError, match="partitions"):
        log.consumer("actions", "g", ActionEvent, partitions=[4])


# -- offsets ---------------------------------------------------------------------------------
def test_end_and_committed_offsets_are_vectors_whose_sums_are_the_scalars(logs):
    log = logs.open()
    assert log.end_offsets("nothing") == [] and log.end_offset("nothing") == 0
    assert log.committed_offsets("nothing", "g") == [] and log.committed("nothing", "g") == 0
    log.create_topic("actions", partitions=3)
    records = [event(n) for n in range(60)]
    log.append("actions", records, key="user")
    ends = [len(v) for v in reference(records, 3).values()]
    assert log.end_offsets("actions") == ends
    assert log.end_offset("actions") == 60
    assert [log.end_offset("actions", p) for p in range(3)] == ends
    assert log.committed_offsets("actions", "g") == [0, 0, 0]
    with log.consumer("actions", "g", ActionEvent, partitions=[0, 2]) as consumer:
        reader = Reader(consumer)
        until(lambda: len(reader.got) == ends[0] + ends[2], reader, what="read partitions 0 and 2")
        first_of_2 = next(e for e in reader.got if e.partition == 2)
        consumer.commit(first_of_2)
        consumer.commit(next(e for e in reversed(reader.got) if e.partition == 0))
    done = log.committed_offsets("actions", "g")
    assert done[0] == ends[0] and done[1] == 0 and done[2] >= first_of_2.offset + 1
    assert log.committed("actions", "g") == sum(done)
    assert [log.committed("actions", "g", p) for p in range(3)] == done
    assert log.committed_offsets("actions", "other") == [0, 0, 0]


def test_commit_of_an_envelope_commits_the_delivery_order_prefix_of_each_partition(logs):
    log = logs.open()
    log.create_topic("actions", partitions=3)
    log.append("actions", [event(n) for n in range(90)], key="user")
    with log.consumer("actions", "g", ActionEvent, partitions=[0, 1, 2]) as consumer:
        reader = Reader(consumer)
        until(lambda: len(reader.got) == 90, reader, what="read everything")
        for k in (10, 45, 70):
            consumer.commit(reader.got[k])
            want = [0, 0, 0]
            for e in reader.got[: k + 1]:  # everything delivered up to and including envelope k
                want[e.partition] = max(want[e.partition], e.offset + 1)
            assert log.committed_offsets("actions", "g") == want, k
        consumer.commit(reader.got[5])  # committed already: nothing moves back
        assert log.committed_offsets("actions", "g") == want
        consumer.commit()
    assert log.committed_offsets("actions", "g") == log.end_offsets("actions")


# -- group members sharing partitions ----------------------------------------------------------
def split(a: Reader, b: Reader, partitions: int) -> bool:
    mine, theirs = set(a.consumer.assignment()), set(b.consumer.assignment())
    return bool(mine) and bool(theirs) and not (mine & theirs) and (mine | theirs) == set(range(partitions))


def test_two_members_split_the_partitions_and_together_read_everything_once(logs):
    log = logs.open(logs.new_url(**SHORT))
    log.create_topic("actions", partitions=4)
    a = Reader(log.consumer("actions", "g", ActionEvent, name="a"))
    b = Reader(log.consumer("actions", "g", ActionEvent, name="b"))
    until(lambda: split(a, b, 4), a, b, what="the group splits the partitions")
    assert len(a.consumer.assignment()) == len(b.consumer.assignment()) == 2
    records = [event(n, users=50) for n in range(400)]
    log.append("actions", records, key="user")
    until(lambda: len(a.got) + len(b.got) >= 400, a, b, what="everything read")
    for reader in (a, b):
        reader.poll()
        assert {e.partition for e in reader.got} <= set(reader.consumer.assignment())
    together = [(e.partition, e.offset) for e in a.got + b.got]
    assert len(together) == len(set(together)) == 400  # exactly once, before any commit
    expected = reference(records, 4)
    by_partition = {p: sorted((e for e in a.got + b.got if e.partition == p), key=lambda e: e.offset) for p in range(4)}
    assert {p: [e.record for e in v] for p, v in by_partition.items()} == expected
    a.consumer.close()
    b.consumer.close()


def test_a_member_closing_hands_its_partitions_over_and_they_resume_from_the_commits(logs):
    log = logs.open(logs.new_url(**SHORT))
    log.create_topic("actions", partitions=4)
    a = Reader(log.consumer("actions", "g", ActionEvent, name="a"))
    b = Reader(log.consumer("actions", "g", ActionEvent, name="b"))
    until(lambda: split(a, b, 4), a, b, what="the group splits the partitions")
    mine = a.consumer.assignment()
    records = [event(n, users=50) for n in range(400)]
    log.append("actions", records, key="user")
    expected = reference(records, 4)
    size = {p: len(expected[p]) for p in range(4)}
    until(lambda: all(len(a.of(p)) == size[p] for p in mine), a, what="a reads its partitions")
    a.consumer.commit(a.got[len(a.got) // 2])  # then the rest stays uncommitted
    committed = log.committed_offsets("actions", "g")
    assert any(0 < committed[p] < size[p] for p in mine)
    a.consumer.close()
    until(lambda: b.consumer.assignment() == [0, 1, 2, 3], b, what="b takes a's partitions")
    until(lambda: all(len(b.of(p)) >= size[p] - committed[p] for p in mine), b, what="b reads them")
    for part in mine:  # uncommitted re-read, nothing skipped, nothing before the commit again
        assert b.of(part) == list(range(committed[part], size[part]))
        assert [e.record for e in b.got if e.partition == part] == expected[part][committed[part] :]
    b.consumer.close()


def test_rebalance_callbacks_name_the_partitions_and_a_commit_inside_on_revoke_counts(logs):
    log = logs.open(logs.new_url(**SHORT))
    log.create_topic("actions", partitions=4)
    log.append("actions", [event(n, users=50) for n in range(200)], key="user")
    calls: list[tuple[str, str, list[int]]] = []
    holder: dict[str, Reader] = {}

    def revoke(partitions: list[int]) -> None:
        calls.append(("a", "revoke", partitions))
        holder["a"].consumer.commit()  # what a finished of them is not read again

    a = Reader(
        log.consumer(
            "actions",
            "g",
            ActionEvent,
            name="a",
            on_assign=lambda ps: calls.append(("a", "assign", ps)),
            on_revoke=revoke,
            on_lost=lambda ps: calls.append(("a", "lost", ps)),
        )
    )
    holder["a"] = a
    until(lambda: a.consumer.assignment() == [0, 1, 2, 3], a, what="a owns everything")
    until(lambda: len(a.got) == 200, a, what="a reads everything")
    assert sorted(p for who, kind, ps in calls if kind == "assign" for p in ps) == [0, 1, 2, 3]
    b = Reader(
        log.consumer(
            "actions",
            "g",
            ActionEvent,
            name="b",
            on_assign=lambda ps: calls.append(("b", "assign", ps)),
            on_revoke=lambda ps: calls.append(("b", "revoke", ps)),
        )
    )
    until(lambda: split(a, b, 4), a, b, what="the group splits the partitions")
    given = sorted(p for who, kind, ps in calls if who == "a" and kind == "revoke" for p in ps)
    assert given == b.consumer.assignment()
    assert sorted(p for who, kind, ps in calls if who == "b" and kind == "assign" for p in ps) == given
    assert not any(kind == "lost" for _, kind, _ in calls)  # an orderly handover is a revoke
    committed = log.committed_offsets("actions", "g")
    ends = log.end_offsets("actions")
    assert all(committed[p] == ends[p] for p in given)  # the commit inside on_revoke landed
    for _ in range(10):
        b.poll()
    assert b.got == []  # so b has nothing of them to read again
    a.consumer.close()
    b.consumer.close()


def test_consumers_of_explicit_partitions_read_only_those_and_share_nothing(logs):
    log = logs.open()
    log.create_topic("actions", partitions=4)
    records = [event(n, users=50) for n in range(200)]
    log.append("actions", records, key="user")
    expected = reference(records, 4)
    odd = Reader(log.consumer("actions", "g", ActionEvent, partitions=[3, 1]))
    also = Reader(log.consumer("actions", "g", ActionEvent, partitions=[1]))  # nothing stops an overlap
    assert odd.consumer.assignment() == [1, 3] and also.consumer.assignment() == [1]
    want = len(expected[1]) + len(expected[3])
    until(lambda: len(odd.got) == want and len(also.got) == len(expected[1]), odd, also, what="read 1 and 3")
    assert {e.partition for e in odd.got} == {1, 3}
    assert [e.record for e in odd.got if e.partition == 3] == expected[3]
    assert [e.record for e in also.got] == expected[1]
    odd.consumer.commit()
    assert log.committed_offsets("actions", "g") == [0, len(expected[1]), 0, len(expected[3])]
    odd.consumer.close()
    also.consumer.close()


def test_poll_wakes_for_a_record_appended_to_any_owned_partition(logs):
    log = logs.open()
    writer = logs.open(log.url)
    log.create_topic("actions", partitions=4)
    with log.consumer("actions", "g", ActionEvent, partitions=[0, 1, 2, 3]) as consumer:
        assert consumer.poll(10, timeout_s=0.2) == []
        timer = threading.Timer(0.2, lambda: writer.append("actions", [event(1)], partition=3))
        started = time.monotonic()
        timer.start()
        got = []
        while not got and time.monotonic() - started < 20:
            got = consumer.poll(10, timeout_s=5)
        timer.join()
        assert [(e.partition, e.offset, e.record) for e in got] == [(3, 0, event(1))]
        assert time.monotonic() - started < 5


# -- retention and the one-partition default ---------------------------------------------------
def test_trim_cuts_each_partition_at_its_own_offset(logs):
    log = logs.open()
    log.create_topic("actions", partitions=3)
    records = [event(n) for n in range(90)]
    log.append("actions", records, key="user")
    ends = log.end_offsets("actions")
    with pytest.raises(InvalidInputError, match="before"):
        log.trim("actions", 5)  # one offset is ambiguous on several partitions
    with pytest.raises(InvalidInputError, match="before"):
        log.trim("actions", {3: 1})
    log.trim("actions", {0: 4, 2: 7})
    log.trim("actions", [0, 2, 0])  # a list: one offset per partition; 0 keeps everything
    kept = [4, 2, 7]
    assert log.end_offsets("actions") == ends  # offsets are never reused
    assert log.committed_offsets("actions", "new") == kept  # nothing below the first record kept
    expected = reference(records, 3)
    got = read_partitions(log, "actions", [0, 1, 2], {p: ends[p] - kept[p] for p in range(3)})
    for part in range(3):
        assert [e.offset for e in got[part]] == list(range(kept[part], ends[part]))
        assert [e.record for e in got[part]] == expected[part][kept[part] :]
    assert log.append("actions", [event(0)], partition=0) == [ends[0]]


def test_a_topic_of_one_partition_behaves_as_before_partitions(logs):
    log = logs.open()
    assert log.append("actions", [event(n) for n in range(5)]) == [0, 1, 2, 3, 4]
    assert log.append("actions", [event(5)], key="user") == [5]  # a key is ignored on one partition
    assert log.append("actions", [event(6)], partition=0) == [6]
    assert log.partitions("actions") == 1
    assert log.end_offsets("actions") == [7] and log.end_offset("actions") == 7
    with log.consumer("actions", "g", ActionEvent) as consumer:
        reader = Reader(consumer)
        until(lambda: len(reader.got) == 7, reader, what="read everything")
        assert [(e.partition, e.offset) for e in reader.got] == [(0, n) for n in range(7)]
        assert [e.record for e in reader.got] == [event(n) for n in range(7)]
        assert consumer.assignment() == [0]
        consumer.commit(reader.got[2])
    assert log.committed_offsets("actions", "g") == [3] and log.committed("actions", "g") == 3
    log.trim("actions", 2)
    assert log.committed_offsets("actions", "new") == [2]
