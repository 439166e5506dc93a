"""Kafka backend against a real Kafka-protocol broker: Tansu in CI, ``STREAMREC_KAFKA`` names another.

What the backend-parametrized tests (``test_log_api.py``, ``test_log_model.py``, ...) cannot see:
native partitions as Kafka itself sees them, the places where Tansu differs from Apache Kafka
(``docs/log.md``), the group ids a consumer of given partitions commits under, and real group
membership between processes: a member frozen past its session cannot commit, and a survivor of
``kill -9`` takes over every partition from the committed offsets.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest

from streamrec.errors import InvalidInputError, LogError, PartitionLostError
from streamrec.log import open_log
from streamrec.log.partitioner import partition_for
from streamrec.records import ActionEvent


def click(user: str, n: int) -> ActionEvent:
    return ActionEvent(user=user, item=f"{user}-{n}", action="click", time=float(n))


@pytest.fixture
def kafka(kafka_url):
    """Opens logs on the session's broker, each under a fresh prefix (or the one of a given URL)."""
    opened = []

    def open_(url: str | None = None):
        log = open_log(url or f"{kafka_url}&prefix=k{uuid.uuid4().hex[:12]}-")
        opened.append(log)
        return log

    yield open_
    for log in opened:
        log.close()


def read(consumer, count: int, timeout_s: float = 30.0) -> list:
    got: list = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count and time.monotonic() < deadline:
        got += consumer.poll(max_records=count - len(got), timeout_s=0.2)
    return got


# -- no broker needed --------------------------------------------------------------------------
def test_missing_client_gives_an_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "confluent_kafka", None)  # import fails as if not installed
    with pytest.raises(LogError, match=r"pip install 'streamrec\[kafka\]'"):
        open_log("kafka://127.0.0.1:9092")


@pytest.mark.parametrize(
    "url",
    [
        "kafka://",
        "kafka://127.0.0.1:9092?colour=blue",
        "kafka://127.0.0.1:9092?prefix=a:b",
        "kafka://127.0.0.1:9092?replication=0",
        "kafka://127.0.0.1:9092?session_s=nan",
        "kafka://127.0.0.1:9092?fetch_wait_ms=soon",
    ],
)
def test_bad_kafka_url_raises_log_error_naming_the_url(url):
    from streamrec.log.kafka import parse_kafka_url

    with pytest.raises(LogError) as info:
        parse_kafka_url(url)
    assert repr(url) in str(info.value)


def test_url_options_are_read():
    from streamrec.log.kafka import KafkaSettings, parse_kafka_url

    settings = parse_kafka_url("kafka://a:1,b:2?prefix=x.&replication=3&session_s=6&fetch_wait_ms=20")
    assert settings == KafkaSettings(servers="a:1,b:2", prefix="x.", replication=3, session_s=6.0, fetch_wait_ms=20)
    assert parse_kafka_url("kafka://a:1") == KafkaSettings(servers="a:1")


# -- one process, a real broker --------------------------------------------------------------------
def test_append_consume_commit_resume_on_kafka(kafka):
    log = kafka()
    events = [click("u", n) for n in range(20)]
    assert log.append("actions", events) == list(range(20))
    with log.consumer("actions", "profiles", ActionEvent) as consumer:
        got = read(consumer, 8)
        consumer.commit()
    assert log.committed("actions", "profiles") == 8
    with log.consumer("actions", "profiles", ActionEvent) as consumer:
        rest = read(consumer, 12)
    assert [e.record for e in got + rest] == events
    assert log.end_offset("actions") == 20


def test_topics_have_native_partitions_and_keys_go_where_kafka_routes_them(kafka, kafka_bootstrap):
    from confluent_kafka import Consumer, TopicPartition

    log = kafka()
    assert log.create_topic("clicks", partitions=4) == 4
    assert log.create_topic("clicks", partitions=4) == 4  # exists with that count: nothing to do
    with pytest.raises(InvalidInputError, match="already exists with 4 partitions"):
        log.create_topic("clicks", partitions=2)
    events = [click(f"u{n % 9}", n) for n in range(60)]
    offsets = log.append("clicks", events, key="user")
    # Kafka's own view: the topic has 4 partitions and each record sits where murmur2 put it.
    kt = log.kafka_topic("clicks")
    raw = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": "raw", "enable.auto.commit": False})
    try:
        assert len(raw.list_topics(kt, timeout=10).topics[kt].partitions) == 4
        raw.assign([TopicPartition(kt, p, 0) for p in range(4)])
        seen = {}
        deadline = time.monotonic() + 30
        while len(seen) < len(events) and time.monotonic() < deadline:
            message = raw.poll(0.2)
            if message is not None and message.error() is None:
                seen[(message.partition(), message.offset())] = message.value()
    finally:
        raw.close()
    expected = {}
    for event, offset in zip(events, offsets, strict=True):
        expected[(partition_for(event.user, 4), offset)] = event
    assert seen.keys() == expected.keys()
    assert sum(log.end_offsets("clicks")) == 60
    assert log.end_offsets("clicks") == [sum(1 for p, _ in expected if p == q) for q in range(4)]


def test_end_offsets_count_every_record_of_a_batch(kafka):
    # Tansu answers ListOffsets(LATEST) with the first offset of the last batch + 1 (1 after 25
    # records in one batch); the backend reads the end from a fetch response instead.
    log = kafka()
    log.append("actions", [click("u", n) for n in range(25)])
    assert log.end_offsets("actions") == [25]
    log.create_topic("keyed", partitions=4)
    log.append("keyed", [click(f"u{n}", n) for n in range(40)], key="user")
    assert sum(log.end_offsets("keyed")) == 40


def test_a_member_resuming_inside_the_last_batch_reads_the_rest_with_timeout_0(kafka):
    # The end Tansu reports is below the resume point: the poll must still see the records after it.
    log = kafka()
    log.append("actions", [click("u", n) for n in range(10)])  # one batch
    with log.consumer("actions", "g", ActionEvent) as consumer:
        assert len(read(consumer, 4)) == 4
        consumer.commit()
    with log.consumer("actions", "g", ActionEvent) as consumer:
        assert [e.offset for e in consumer.poll(100, timeout_s=0)] == [4, 5, 6, 7, 8, 9]


def test_given_partitions_and_members_of_the_same_group_all_commit(kafka, kafka_bootstrap):
    # The joiner's pattern: group "joiner" subscribes to impressions and reads the same partitions of
    # actions by assignment; and here a member of "joiner" on actions is open at the same time. Apache
    # Kafka refuses a non-member's commit to a group with members, so the assigned reader commits under
    # "joiner:actions:assigned"; the group resumes from the larger of the two ids' commits.
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
    from confluent_kafka.admin import AdminClient

    log = kafka()
    for topic in ("impressions", "actions"):
        log.create_topic(topic, partitions=2)
        log.append(topic, [click(f"u{n}", n) for n in range(12)], key="user")
    with log.consumer("impressions", "joiner", ActionEvent) as member:
        assert len(read(member, 12)) == 12
        with (
            log.consumer("actions", "joiner", ActionEvent, name="idle") as idle,
            log.consumer("actions", "joiner", ActionEvent, partitions=[0, 1]) as given,
        ):
            assert idle.poll(1, timeout_s=0) and idle.assignment() == [0, 1]  # a member of joiner:actions
            assert len(read(given, 12)) == 12
            given.commit()
        member.commit()
    assert log.committed_offsets("impressions", "joiner") == log.end_offsets("impressions")
    assert log.committed_offsets("actions", "joiner") == log.end_offsets("actions")
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    assert log.kafka_group("joiner", "actions", assigned=True) == log.settings.prefix + "joiner:actions:assigned"
    group_id = log.kafka_group("joiner", "actions", assigned=True)
    request = ConsumerGroupTopicPartitions(group_id, [TopicPartition(log.kafka_topic("actions"), p) for p in (0, 1)])
    stored = admin.list_consumer_group_offsets([request])[group_id].result().topic_partitions
    assert [tp.offset for tp in stored] == log.end_offsets("actions")
    log.append("actions", [click("u1", 99)], key="user")
    with log.consumer("actions", "joiner", ActionEvent) as member:  # a member resumes after the assigned commits
        assert [e.record.item for e in read(member, 1)] == ["u1-99"]


def test_a_trim_holds_for_every_reader_of_the_broker(kafka):
    # Tansu has no DeleteRecords: the cut is kept at the broker (a commit of a reserved group), so a
    # log opened elsewhere never delivers what was trimmed either.
    log = kafka()
    log.append("actions", [click("u", n) for n in range(10)])
    log.trim("actions", 6)
    elsewhere = kafka(log.url)
    assert elsewhere.committed("actions", "fresh") == 6
    with elsewhere.consumer("actions", "fresh", ActionEvent) as consumer:
        assert [e.offset for e in consumer.poll(100, timeout_s=0)] == [6, 7, 8, 9]
    log.trim("actions", 3)  # never brings records back
    assert elsewhere.committed("actions", "other") == 6


# -- group members in separate processes ---------------------------------------------------------
MEMBER = """
import sys, time
from streamrec.log import open_log
from streamrec.records import ActionEvent

url, topic, group, name, pause = sys.argv[1:6]
say = lambda *a: print(*a, flush=True)
log = open_log(url)
consumer = log.consumer(topic, group, ActionEvent, name=name, on_assign=lambda p: say("J", *p),
                        on_revoke=lambda p: say("R", *p), on_lost=lambda p: say("L", *p))
say("O")
while True:
    batch = consumer.poll(max_records=5, timeout_s=0.05)
    if not batch:
        continue
    say("P", *[f"{e.partition}:{e.offset}:{e.record.item}" for e in batch])
    time.sleep(float(pause))
    try:
        consumer.commit()
        say("C", *[f"{e.partition}:{e.offset}" for e in batch])
    except Exception as exc:
        say("E", type(exc).__name__)
"""


class Member:
    """A consumer process of a group; every line it prints arrives here with the time it arrived."""

    def __init__(self, folder, url: str, topic: str, group: str, name: str, pause_s: float) -> None:
        script = folder / "kafka_member.py"
        script.write_text(MEMBER)
        env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
        self.proc = subprocess.Popen(
            [sys.executable, str(script), url, topic, group, name, str(pause_s)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[tuple[float, list[str]]] = queue.Queue()
        self.seen: list[tuple[float, list[str]]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put((time.monotonic(), line.split()))

    def drain(self) -> None:
        while True:
            try:
                self.seen.append(self.lines.get_nowait())
            except queue.Empty:
                return

    def wait_for(self, done, timeout_s: float = 60.0) -> float:
        """Wait until ``done(lines so far)``; return the arrival time of the line that made it true."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None and self.lines.empty():
                raise AssertionError(f"member exited: {self.proc.stderr.read()}")
            try:
                self.seen.append(self.lines.get(timeout=max(0.0, min(0.1, deadline - time.monotonic()))))
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise AssertionError(f"timed out; lines: {[line for _, line in self.seen][-5:]}") from None
                continue
            if done([line for _, line in self.seen]):
                return self.seen[-1][0]

    def owned(self) -> set[int]:
        parts: set[int] = set()
        for _, line in self.seen:
            if line[0] == "J":
                parts |= {int(p) for p in line[1:]}
            elif line[0] in ("R", "L"):
                parts -= {int(p) for p in line[1:]}
        return parts

    def records(self, kind: str = "P") -> list[tuple[int, int, str]]:
        out = []
        for _, line in self.seen:
            if line[0] == kind:
                for field in line[1:]:
                    p, o, *item = field.split(":")
                    out.append((int(p), int(o), item[0] if item else ""))
        return out

    def stop(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.communicate(timeout=30)
        self.drain()


def test_two_members_split_the_partitions_and_a_survivor_of_kill9_resumes_from_the_commits(kafka, tmp_path):
    log = kafka()
    log.create_topic("actions", partitions=4)
    appended: dict[tuple[int, int], str] = {}

    def append(first: int) -> None:
        events = [click(f"u{n % 37}", n) for n in range(first, first + 200)]
        for event, offset in zip(events, log.append("actions", events, key="user"), strict=True):
            appended[(partition_for(event.user, 4), offset)] = event.item

    def opened(lines) -> bool:
        return any(line[0] == "O" for line in lines)

    def commits(member: Member) -> set[tuple[int, int]]:
        return {(p, o) for p, o, _ in member.records("C")}

    append(0)
    a = Member(tmp_path, log.url, "actions", "ingest", "a", pause_s=0.02)
    b = None
    try:
        opened_at = a.wait_for(opened)
        joined = a.wait_for(lambda lines: any(line[0] == "J" for line in lines)) - opened_at
        b = Member(tmp_path, log.url, "actions", "ingest", "b", pause_s=0.02)
        opened_at = b.wait_for(opened)
        # cooperative-sticky: b gets half; a gives up exactly that half and keeps reading the other
        split = b.wait_for(lambda _: len(b.owned()) == 2) - opened_at
        a.wait_for(lambda _: len(a.owned()) == 2)
        assert a.owned() | b.owned() == {0, 1, 2, 3}
        a_half = a.owned()
        append(200)
        before = len(a.records("C"))
        a.wait_for(lambda _: len(a.records("C")) >= before + 15)  # a commits on its half
        killed = time.monotonic()
        a.stop()
        append(400)
        took_over = b.wait_for(lambda _: b.owned() == {0, 1, 2, 3}) - killed
        b.wait_for(lambda _: commits(a) | commits(b) >= set(appended))
    finally:
        a.stop()
        if b is not None:
            b.stop()
    print(
        f"\nkafka group: a member joined in {joined:.2f} s, a second one got its half in {split:.2f} s, "
        f"the survivor of kill -9 had every partition {took_over:.2f} s after it"
    )
    delivered = a.records() + b.records()
    # Nothing lost, and every record is the one appended there.
    assert {(p, o) for p, o, _ in delivered} == set(appended)
    assert all(appended[(p, o)] == item for p, o, item in delivered)
    # b resumed each of a's partitions at its committed offset: at or past a's last reported commit,
    # never past what a had polled (a commit may have returned just before the kill).
    for p in a_half:
        a_committed = max((o + 1 for q, o, _ in a.records("C") if q == p), default=0)
        a_polled = max((o + 1 for q, o, _ in a.records() if q == p), default=0)
        first_after_kill = min(o for q, o, _ in b.records() if q == p)
        assert a_committed <= first_after_kill <= a_polled, (p, a_committed, first_after_kill, a_polled)
    assert log.committed_offsets("actions", "ingest") == log.end_offsets("actions")


def test_a_member_frozen_past_its_session_cannot_commit(kafka, tmp_path):
    # SIGSTOP a member between poll and commit: the group gives its partitions to another member;
    # woken up, its commit is refused (PartitionLostError), so the new owner's offsets stand.
    log = kafka()
    log.create_topic("actions", partitions=2)
    log.append("actions", [click(f"u{n}", n) for n in range(40)], key="user")
    a = Member(tmp_path, log.url, "actions", "g", "a", pause_s=2.0)  # a pause between poll and commit
    b = None
    try:
        a.wait_for(lambda lines: any(line[0] == "P" for line in lines))
        a.proc.send_signal(signal.SIGSTOP)  # in that pause
        frozen = a.records()
        b = Member(tmp_path, log.url, "actions", "g", "b", pause_s=0.0)
        b.wait_for(lambda _: b.owned() == {0, 1})
        b.wait_for(lambda _: {(p, o) for p, o, _ in b.records("C")} >= {(p, o) for p, o, _ in frozen})
        a.proc.send_signal(signal.SIGCONT)
        a.wait_for(lambda lines: lines[-1][0] in ("C", "E"))
        assert a.seen[-1][1] == ["E", PartitionLostError.__name__]
        b.wait_for(lambda _: len(b.records("C")) >= 40)
    finally:
        a.stop()
        if b is not None:
            b.stop()
    assert log.committed_offsets("actions", "g") == log.end_offsets("actions")
