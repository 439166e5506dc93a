"""The production event log: Apache Kafka through confluent-kafka (``pip install 'streamrec[kafka]'``).

Why a thin mapping and not more: Kafka already is the log the Monolith paper runs on, with
partitions, consumer groups and rebalancing; streamrec maps its interface onto a producer, one
consumer per streamrec consumer and an admin client, and leaves replication and storage to the
broker. CI runs it against Tansu, a Kafka-protocol broker (see ``docs/log.md`` for where Tansu
differs from Apache Kafka and what this module does about it).

URL: ``kafka://host:port[,host:port...][?prefix=P&replication=N&session_s=S&fetch_wait_ms=W]``

* ``prefix`` is put before every topic and group id (isolated namespaces on one cluster);
* ``replication`` is the replication factor of the topics streamrec creates (default 1);
* ``session_s`` is the group session timeout (default: the client's, 45 s). A member that stops
  heartbeating loses its partitions after it, and a join takes a broker-dependent part of it
  (Tansu: ``session_s / 2`` rounded up to whole seconds). Apache Kafka refuses values below its
  ``group.min.session.timeout.ms`` (6 s by default);
* ``fetch_wait_ms`` is how long a fetch waits at the broker for new records (default 100 ms;
  Kafka's own default, 500 ms, is slow for a real-time loop; Tansu waits it even when records are
  there).

Mapping:

* **Topics** are Kafka topics with their native partitions, created by ``create_topics``
  (``TOPIC_ALREADY_EXISTS``: the count is read back from the metadata). The admin client never
  creates a topic by asking about it (``allow.auto.create.topics=false``).
* **An append** produces each record to the partition :mod:`streamrec.log.base` routed it to, with an
  idempotent producer (``acks=all``), and returns when every record is acknowledged, with the
  offsets of the delivery reports. Kafka has no multi-record atomicity without transactions: if
  the broker fails mid-batch a prefix may be written, and :class:`~streamrec.errors.LogError` says so.
* **Group ids.** A streamrec group is per topic (its members share that topic, its commits are
  that topic's), so consumers of ``group`` on ``topic`` use the Kafka group id
  ``<prefix><group>:<topic>``. Why not ``<group>`` for every topic, as a Kafka application would:
  members of one Kafka group rebalance together, so a consumer of ``actions`` joining group
  ``joiner`` would stop and re-sync the members reading ``impressions``, and one of them idle in
  its process would hold up the others' joins (Apache Kafka waits for every known member; Tansu
  never completed such a join in testing). ``:`` cannot occur in a streamrec name, so ids never
  collide. Kafka tooling sees ``kafka-consumer-groups --group joiner:impressions``.
* **A shared consumer** (the default) subscribes with that id and the ``cooperative-sticky``
  assignor; the client's assign/revoke/lost callbacks drive ``_assigned``/``_revoked``
  (incremental assign/unassign). Its first poll waits until the group gave it its share. A commit
  is synchronous, ``offset + 1`` per partition, only for partitions the client still holds; one
  the broker refuses because the member left the generation (``UNKNOWN_MEMBER_ID``,
  ``ILLEGAL_GENERATION``, fenced) raises :class:`~streamrec.errors.PartitionLostError`, so an
  offset never moves back under a new owner.
* **A consumer of given partitions** (``partitions=[...]``) uses ``assign`` and the Kafka group id
  ``<prefix><group>:<topic>:assigned``. Why not the shared id: Apache Kafka refuses an
  OffsetCommit from a non-member (generation -1) while the group has members
  (``UNKNOWN_MEMBER_ID``; Tansu too), and nothing stops a process reading given partitions of a
  topic while a group shares it. Nobody ever joins an ``:assigned`` id, so its commits are always
  legal.
* **Where a group resumes** on a partition is the larger of the two ids' commits, never below the
  first record kept; every consumer starts there (``assign`` with explicit offsets) and
  :meth:`KafkaLog.committed_offsets` reports it. ``start="latest"`` pins the end offsets seen at
  open by committing them when a partition without commits is first read.
* **Trim** records each cut as a commit of the reserved group ``<prefix>__streamrec:trim`` (the
  first record kept, which consumers and ``committed_offsets`` honour), then asks the broker to
  delete the records (``DeleteRecords``). A broker without it (Tansu drops the connection) keeps
  them on disk, but streamrec never delivers them again.
* **End offsets** are high watermarks read from a fetch response: Kafka's ``ListOffsets(LATEST)``
  is the log end offset by contract, but Tansu answers the first offset of the last batch + 1,
  so it is used only as a lower bound.
* **A poll with timeout 0** returns records that were in the log when it began even if the client
  has not fetched them yet (it waits for them, a few seconds at most), as on the other backends;
  ``timeout_s`` bounds only the wait for records appended later.

confluent-kafka is imported only when a ``kafka://`` URL is opened, so the rest of streamrec does
not need it installed.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import numpy as np

from streamrec.errors import LogError, PartitionLostError
from streamrec.log.base import Consumer, ConsumerOptions, EventLog

__all__ = ["KafkaConsumer", "KafkaLog", "KafkaSettings", "parse_kafka_url"]

T = TypeVar("T")

_LOG = logging.getLogger("streamrec.log.kafka")
_TIMEOUT_S = 30.0  # one admin request, a topic creation, a flush
_CATCH_UP_S = 5.0  # how long a poll waits for records that exist but were not fetched yet
_ASSIGNED = ":assigned"
_TRIM_GROUP = "__streamrec:trim"
_PROBE_GROUP = "__streamrec:probe"


@dataclass(frozen=True)
class KafkaSettings:
    """What a ``kafka://`` URL says (see the module docstring)."""

    servers: str
    prefix: str = ""
    replication: int = 1
    session_s: float | None = None
    fetch_wait_ms: int = 100


def parse_kafka_url(url: str) -> KafkaSettings:
    """Read a ``kafka://host:port[,host:port][?prefix=&replication=&session_s=&fetch_wait_ms=]`` URL.

    >>> parse_kafka_url("kafka://127.0.0.1:9092?prefix=t1-&session_s=2")
    KafkaSettings(servers='127.0.0.1:9092', prefix='t1-', replication=1, session_s=2.0, fetch_wait_ms=100)
    """
    parts = urlsplit(url)
    if parts.scheme.lower() != "kafka" or not parts.netloc:
        raise LogError(f"event log {url!r}: no broker given (expected kafka://host:port)")
    query = {key: values[-1] for key, values in parse_qs(parts.query, keep_blank_values=True).items()}
    unknown = sorted(set(query) - {"prefix", "replication", "session_s", "fetch_wait_ms"})
    if unknown:
        known = "prefix, replication, session_s, fetch_wait_ms"
        raise LogError(f"event log {url!r}: unknown option(s) {unknown} (known: {known})")

    def number(name: str, kind: type, low: float) -> Any:
        try:
            value = kind(query[name])
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or value < low:
            raise LogError(f"event log {url!r}: {name}={query[name]!r} must be a number >= {low}")
        return value

    prefix = query.get("prefix", "")
    if prefix and not all(c.isascii() and (c.isalnum() or c in "._-") for c in prefix):
        raise LogError(f"event log {url!r}: prefix={prefix!r} must be characters of A-Z a-z 0-9 . _ -")
    return KafkaSettings(
        servers=parts.netloc,
        prefix=prefix,
        replication=number("replication", int, 1) if "replication" in query else 1,
        session_s=number("session_s", float, 0.1) if "session_s" in query else None,
        fetch_wait_ms=number("fetch_wait_ms", int, 1) if "fetch_wait_ms" in query else 100,
    )


def _import_kafka(url: str) -> Any:
    try:
        import confluent_kafka
        import confluent_kafka.admin
    except ImportError:
        raise LogError(
            f"event log {url!r} needs confluent-kafka, which is not installed: pip install 'streamrec[kafka]'"
        ) from None
    return confluent_kafka


def _error_code(exc: BaseException) -> int | None:
    """The Kafka error code inside a ``KafkaException`` (None for anything else)."""
    args = getattr(exc, "args", ())
    return args[0].code() if args and hasattr(args[0], "code") else None


class KafkaLog(EventLog):
    """The event log on Kafka (``kafka://host:port[,host:port...][?options]``); see ``docs/log.md``.

    Parameters
    ----------
    url
        ``kafka://`` followed by the bootstrap servers, and options (see :func:`parse_kafka_url`).
    """

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.settings = parse_kafka_url(url)
        self.servers = self.settings.servers
        self._kafka = _import_kafka(url)
        base = {"bootstrap.servers": self.servers, "logger": _LOG}
        self._probe: Any = None  # a consumer that reads high watermarks (see _ends)
        self._probe_lock = threading.Lock()
        self._probed: set[str] = set()  # topics the probe has metadata of
        self._cuts: dict[str, dict[int, int]] = {}  # topic -> partition -> first record kept, as trimmed here
        self.trims = 0  # bumped by every trim through this log; its consumers then skip what it cut
        try:  # fail at open, not at the first append, when no broker answers
            self._producer = self._kafka.Producer({**base, "enable.idempotence": True, "acks": "all", "linger.ms": 5})
            self._admin = self._kafka.admin.AdminClient({**base, "allow.auto.create.topics": False})
            self._admin.list_topics(timeout=10)
        except self._kafka.KafkaException as exc:
            raise LogError(f"event log {url!r}: cannot reach a broker: {exc}") from None
        self._delete_records = True  # until a broker shows it has no DeleteRecords

    # -- names --------------------------------------------------------------------------------
    def kafka_topic(self, topic: str) -> str:
        """The Kafka topic behind streamrec topic ``topic``."""
        return self.settings.prefix + topic

    def kafka_group(self, group: str, topic: str, *, assigned: bool = False) -> str:
        """The Kafka group id of the shared consumers of ``group`` on ``topic`` (``assigned``: of its
        consumers of given partitions)."""
        return f"{self.settings.prefix}{group}:{topic}{_ASSIGNED if assigned else ''}"

    def consumer_settings(self, group_id: str, name: str) -> dict[str, Any]:
        """librdkafka settings of a consumer in Kafka group ``group_id``."""
        settings: dict[str, Any] = {
            "bootstrap.servers": self.servers,
            "logger": _LOG,
            "group.id": group_id,
            "client.id": name,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",  # only when a start offset was deleted under it: the first kept
            "enable.partition.eof": False,
            "partition.assignment.strategy": "cooperative-sticky",
            "fetch.wait.max.ms": self.settings.fetch_wait_ms,
        }
        if self.settings.session_s is not None:
            session_ms = max(int(self.settings.session_s * 1000), 1)
            settings["session.timeout.ms"] = session_ms
            settings["heartbeat.interval.ms"] = max(session_ms // 4, 1)
        return settings

    @property
    def join_timeout_s(self) -> float:
        """How long a consumer waits to be given its share of a group before it gives up."""
        return max(60.0, 4 * (self.settings.session_s or 45.0))

    # -- admin helpers ------------------------------------------------------------------------
    def _fail(self, what: str, exc: BaseException) -> LogError:
        return LogError(f"event log {self.url!r}: {what} failed: {exc}")

    def _list_offsets(self, kt: str, parts: Iterable[int], spec: str) -> dict[int, int]:
        """``ListOffsets`` (``spec`` ``"earliest"`` or ``"latest"``) of partitions of Kafka topic ``kt``."""
        admin = self._kafka.admin
        offset_spec = admin.OffsetSpec.earliest() if spec == "earliest" else admin.OffsetSpec.latest()
        wanted = {self._kafka.TopicPartition(kt, p): offset_spec for p in parts}
        if not wanted:
            return {}
        try:
            futures = self._admin.list_offsets(wanted, request_timeout=_TIMEOUT_S)
            return {tp.partition: max(f.result(timeout=_TIMEOUT_S).offset, 0) for tp, f in futures.items()}
        except self._kafka.KafkaException as exc:
            raise self._fail(f"list {spec} offsets of {kt!r}", exc) from None

    def _group_offsets_async(self, group_id: str, kt: str, parts: list[int]) -> Any:
        request = self._kafka.ConsumerGroupTopicPartitions(group_id, [self._kafka.TopicPartition(kt, p) for p in parts])
        return self._admin.list_consumer_group_offsets([request], request_timeout=_TIMEOUT_S)[group_id]

    @staticmethod
    def _offsets_of(future: Any) -> dict[int, int]:
        result = future.result(timeout=_TIMEOUT_S)
        return {tp.partition: tp.offset for tp in result.topic_partitions if tp.error is None and tp.offset >= 0}

    def resume_points(self, topic: str, group: str, parts: list[int]) -> dict[int, tuple[int | None, int]]:
        """For each partition: ``(committed, first kept)`` of ``group`` (committed: the larger of the
        shared and the ``:assigned`` ids' commits, None if neither committed; first kept: the larger
        of the log start and the trim mark)."""
        kt = self.kafka_topic(topic)
        try:
            shared = self._group_offsets_async(self.kafka_group(group, topic), kt, parts)
            assigned = self._group_offsets_async(self.kafka_group(group, topic, assigned=True), kt, parts)
            marks = self._group_offsets_async(self.settings.prefix + _TRIM_GROUP, kt, parts)
            earliest = self._list_offsets(kt, parts, "earliest")
            done_shared, done_assigned, cut = (self._offsets_of(f) for f in (shared, assigned, marks))
        except self._kafka.KafkaException as exc:
            raise self._fail(f"read the committed offsets of group {group!r} on {topic!r}", exc) from None
        points: dict[int, tuple[int | None, int]] = {}
        for p in parts:
            done = max(done_shared.get(p, -1), done_assigned.get(p, -1))
            first = max(earliest.get(p, 0), cut.get(p, 0), self._cuts.get(topic, {}).get(p, 0))
            points[p] = (done if done >= 0 else None, first)
        return points

    def _ends(self, kt: str, parts: list[int]) -> dict[int, int]:
        """The log end offset of each partition: the high watermark of a fetch response.

        ``ListOffsets(LATEST)`` must return it (Kafka's contract) but on Tansu returns the first
        offset of the last batch + 1, so it serves as a lower bound: a probe consumer fetches from
        the record before it, and the high watermark of a fetch answer at or past it is the end.
        """
        low, high = self._list_offsets(kt, parts, "earliest"), self._list_offsets(kt, parts, "latest")
        probe = {p: max(high[p] - 1, low[p]) for p in parts if high[p] > low[p]}
        if probe:
            for p, seen in self._probe_high_watermarks(kt, probe, high).items():
                high[p] = max(high[p], seen)
        return high

    def _probe_high_watermarks(self, kt: str, offsets: dict[int, int], latest: dict[int, int]) -> dict[int, int]:
        kafka = self._kafka
        with self._probe_lock:
            if self._probe is None:
                self._probe = kafka.Consumer(self.consumer_settings(self.settings.prefix + _PROBE_GROUP, "probe"))
            probe = self._probe
            if kt not in self._probed:  # a topic new to the client waits ~1 s for its metadata otherwise
                probe.list_topics(kt, timeout=_TIMEOUT_S)
                self._probed.add(kt)
            probe.assign([kafka.TopicPartition(kt, p, o) for p, o in offsets.items()])
            try:
                # A fetch answer at or past Kafka's LATEST carries the end: an answer older than the
                # last append is below it on Tansu too (LATEST is past that append's first offset).
                ends: dict[int, int] = {}
                deadline = time.monotonic() + _CATCH_UP_S
                while len(ends) < len(offsets) and time.monotonic() < deadline:
                    probe.poll(0.005)  # the client fetches in its own threads; this only paces the loop
                    for p in offsets:
                        hw = probe.get_watermark_offsets(kafka.TopicPartition(kt, p), cached=True)[1]
                        if hw >= latest[p]:
                            ends[p] = hw
                return ends
            except kafka.KafkaException as exc:
                raise self._fail(f"read the end offsets of {kt!r}", exc) from None
            finally:
                probe.unassign()

    # -- EventLog -----------------------------------------------------------------------------
    def _create_topic(self, topic: str, partitions: int) -> int:
        kafka = self._kafka
        kt = self.kafka_topic(topic)
        new = kafka.admin.NewTopic(kt, num_partitions=partitions, replication_factor=self.settings.replication)
        try:
            futures = self._admin.create_topics([new], operation_timeout=_TIMEOUT_S, request_timeout=_TIMEOUT_S)
            futures[kt].result(timeout=2 * _TIMEOUT_S)
        except kafka.KafkaException as exc:
            if _error_code(exc) != kafka.KafkaError.TOPIC_ALREADY_EXISTS:
                raise self._fail(f"create topic {topic!r}", exc) from None
        deadline = time.monotonic() + _TIMEOUT_S
        while not (count := self._partition_count(topic)):  # created: wait until the metadata shows it
            if time.monotonic() > deadline:
                raise LogError(f"event log {self.url!r}: topic {topic!r} was created but never appeared")
            time.sleep(0.05)
        return count

    def _partition_count(self, topic: str) -> int:
        kt = self.kafka_topic(topic)
        try:
            found = self._admin.list_topics(kt, timeout=_TIMEOUT_S).topics.get(kt)
        except self._kafka.KafkaException as exc:
            raise self._fail(f"read the metadata of {topic!r}", exc) from None
        if found is None or (found.error is not None and not found.partitions):
            return 0
        return len(found.partitions)

    def _append(self, topic: str, payloads: list[bytes], partitions: np.ndarray | None) -> list[int]:
        kt = self.kafka_topic(topic)
        targets = [0] * len(payloads) if partitions is None else partitions.tolist()
        offsets: list[int | None] = [None] * len(payloads)
        errors: list[str] = []

        def delivered(index: int):  # type: ignore[no-untyped-def]
            def report(err: Any, msg: Any) -> None:
                if err is not None:
                    errors.append(str(err))
                else:
                    offsets[index] = msg.offset()

            return report

        self._check_open()
        try:
            for index, (payload, part) in enumerate(zip(payloads, targets, strict=True)):
                while True:
                    try:
                        self._producer.produce(kt, payload, partition=part, on_delivery=delivered(index))
                        break
                    except BufferError:  # local queue full: let deliveries drain
                        self._producer.poll(0.1)
            left = self._producer.flush(2 * _TIMEOUT_S)
        except self._kafka.KafkaException as exc:
            raise self._fail(f"append to {topic!r}", exc) from None
        if left or errors or any(offset is None for offset in offsets):
            reason = errors[0] if errors else f"{left} records not acknowledged within {2 * _TIMEOUT_S:g} s"
            raise LogError(f"event log {self.url!r}: append to {topic!r} failed (a prefix may be written): {reason}")
        return offsets  # type: ignore[return-value]

    def _consumer(self, topic: str, group: str, record_type: type[T], options: ConsumerOptions) -> Consumer[T]:
        return KafkaConsumer(self, topic, group, record_type, options)

    def end_offsets(self, topic: str) -> list[int]:
        self._check_open()
        count = self.partitions(topic)
        if not count:
            return []
        ends = self._ends(self.kafka_topic(topic), list(range(count)))
        return [ends[p] for p in range(count)]

    def committed_offsets(self, topic: str, group: str) -> list[int]:
        self._check_open()
        count = self.partitions(topic)
        if not count:
            return []
        points = self.resume_points(topic, group, list(range(count)))
        return [first if done is None else max(done, first) for done, first in (points[p] for p in range(count))]

    def _trim(self, topic: str, before: dict[int, int]) -> None:
        kafka = self._kafka
        kt = self.kafka_topic(topic)
        parts = sorted(before)
        ends = self._ends(kt, parts)
        marks_id = self.settings.prefix + _TRIM_GROUP
        try:
            marks = self._offsets_of(self._group_offsets_async(marks_id, kt, parts))
        except kafka.KafkaException as exc:
            raise self._fail(f"trim {topic!r}", exc) from None
        cut = {p: min(max(before[p], 0), ends[p]) for p in parts}
        cut = {p: o for p, o in cut.items() if o > marks.get(p, 0)}  # a trim never brings records back
        if not cut:
            return
        marked = [kafka.TopicPartition(kt, p, o) for p, o in cut.items()]
        try:
            request = kafka.ConsumerGroupTopicPartitions(marks_id, marked)
            self._admin.alter_consumer_group_offsets([request], request_timeout=_TIMEOUT_S)[marks_id].result(
                timeout=_TIMEOUT_S
            )
        except kafka.KafkaException as exc:
            raise self._fail(f"trim {topic!r}", exc) from None
        kept = self._cuts.setdefault(topic, {})
        for p, o in cut.items():
            kept[p] = max(kept.get(p, 0), o)
        self.trims += 1
        if self._delete_records:
            self._delete(topic, marked)

    def _delete(self, topic: str, marked: list[Any]) -> None:
        """Delete trimmed records on the broker (the trim mark already hides them from streamrec)."""
        kafka = self._kafka
        # A client of its own: a broker that cannot delete drops the connection, which must not be the
        # one the other admin requests of this log are queued on.
        admin = kafka.admin.AdminClient({"bootstrap.servers": self.servers, "logger": _LOG})
        try:
            for future in admin.delete_records(marked, request_timeout=_TIMEOUT_S).values():
                future.result(timeout=_TIMEOUT_S)
        except kafka.KafkaException as exc:
            if _error_code(exc) != kafka.KafkaError._TRANSPORT:
                raise self._fail(f"trim {topic!r} (DeleteRecords)", exc) from None
            # The broker dropped the connection instead of answering: Tansu's storage has no
            # DeleteRecords. The records stay on its disk, hidden by the trim mark; stop asking.
            self._delete_records = False
            _LOG.warning("event log %r: the broker has no DeleteRecords; trimmed records stay on disk", self.url)

    def _close(self) -> None:
        with self._probe_lock:
            if self._probe is not None:
                self._probe.close()
        self._producer.flush(_TIMEOUT_S)


# Broker answers to a commit that mean "this member is no longer in the group's generation".
_FENCED = ("UNKNOWN_MEMBER_ID", "ILLEGAL_GENERATION", "FENCED_INSTANCE_ID", "STALE_MEMBER_EPOCH", "_ASSIGNMENT_LOST")
# Errors a consumer's client reports while it recovers by itself (reconnects, rejoins, waits for a
# subscribed topic to exist, restarts a partition trimmed under it at the first record kept).
_NOTICES = (
    "_TRANSPORT",
    "_ALL_BROKERS_DOWN",
    "_MAX_POLL_EXCEEDED",
    "_AUTO_OFFSET_RESET",
    "UNKNOWN_TOPIC_OR_PART",
    "_PARTITION_EOF",
)


class KafkaConsumer(Consumer[T]):
    """A member of a Kafka consumer group (``subscribe``), or a reader of given partitions (``assign``)."""

    def __init__(self, log: KafkaLog, topic: str, group: str, record_type: type[T], options: ConsumerOptions) -> None:
        super().__init__(topic, group, record_type, **options.callbacks())
        kafka = log._kafka
        self._log = log
        self._kafka = kafka
        self._kt = log.kafka_topic(topic)
        self._start = options.start
        self._explicit = options.partitions
        self._next: dict[int, int] = {}  # next offset to hand out, per partition the client reads
        self._buffer: list[Any] = []  # messages polled while waiting for a rebalance
        self._joined = False  # the group gave this member its first share
        self._pending: list[int] = []  # given partitions waiting for their topic to exist
        self._closing = False
        self._trims_seen = log.trims
        self._fenced = {getattr(kafka.KafkaError, name) for name in _FENCED if hasattr(kafka.KafkaError, name)}
        self._notices = {getattr(kafka.KafkaError, name) for name in _NOTICES if hasattr(kafka.KafkaError, name)}
        count = log.partitions(topic)
        # start="latest": the end offsets now, committed when a partition without commits is first read
        self._pins = log._ends(self._kt, list(range(count))) if options.start == "latest" and count else {}
        group_id = log.kafka_group(group, topic, assigned=options.partitions is not None)
        try:
            self._client = kafka.Consumer(log.consumer_settings(group_id, options.name))
            if options.partitions is None:
                self._client.subscribe(
                    [self._kt],
                    on_assign=self._client_assigned,
                    on_revoke=self._client_revoked,
                    on_lost=self._client_lost,
                )
        except kafka.KafkaException as exc:
            raise LogError(f"event log {log.url!r}: cannot open a consumer of {topic!r}: {exc}") from None
        if options.partitions is not None:
            self._pending = list(options.partitions)
            self._assign_given()
            self._assigned(options.partitions)

    # -- where to start -----------------------------------------------------------------------
    def _starts(self, parts: list[int]) -> dict[int, int]:
        """Start offsets of newly read partitions: where the group resumes (pinning ``latest`` ones)."""
        points = self._log.resume_points(self.topic, self.group, parts)
        starts, pins = {}, {}
        for p, (done, first) in points.items():
            if done is not None:
                starts[p] = max(done, first)
            elif self._start == "latest":
                starts[p] = pins[p] = max(self._pins.get(p, 0), first)
            else:
                starts[p] = first
        if pins:
            offsets = [self._kafka.TopicPartition(self._kt, p, o) for p, o in pins.items()]
            self._commit_offsets(offsets, list(pins))
        return starts

    def _assign_given(self) -> None:
        """``partitions=[...]``: assign them once the topic exists."""
        if not self._pending or not self._log.partitions(self.topic):
            return
        starts = self._starts(self._pending)
        self._client.assign([self._kafka.TopicPartition(self._kt, p, o) for p, o in starts.items()])
        self._next.update(starts)
        self._pending = []

    # -- rebalance callbacks (librdkafka runs them inside poll/consume) -------------------------------
    # Every streamrec member names only cooperative-sticky, so the group's protocol is cooperative:
    # partitions are added and taken away incrementally, the others keep being read meanwhile.
    def _client_assigned(self, client: Any, tps: list[Any]) -> None:
        parts = [tp.partition for tp in tps]
        if self._closing or not parts:
            client.incremental_assign(tps)
            self._joined = True
            return
        starts = self._starts(parts)
        client.incremental_assign([self._kafka.TopicPartition(self._kt, p, starts[p]) for p in parts])
        self._next.update(starts)
        self._joined = True
        self._assigned(parts)

    def _client_revoked(self, client: Any, tps: list[Any], lost: bool = False) -> None:
        parts = [tp.partition for tp in tps]
        try:
            if not self._closing:
                self._revoked(parts, lost=lost)
        finally:
            client.incremental_unassign(tps)
            for p in parts:
                self._next.pop(p, None)

    def _client_lost(self, client: Any, tps: list[Any]) -> None:
        self._client_revoked(client, tps, lost=True)

    # -- Consumer -------------------------------------------------------------------------------
    def _maintain(self) -> None:
        self._apply_trims()
        if self._explicit is not None:
            self._assign_given()
        elif not self._joined and self._log.partitions(self.topic):
            self._join()

    def _join(self) -> None:
        """Wait until the group gives this member its first share (the client joins once it sees the topic)."""
        self._client.list_topics(self._kt, timeout=_TIMEOUT_S)  # show it the topic now, not at its next refresh
        deadline = time.monotonic() + self._log.join_timeout_s
        while not self._joined:
            if time.monotonic() > deadline:
                raise LogError(
                    f"{self._describe()}: not given a share of group {self.group!r} within "
                    f"{self._log.join_timeout_s:g} s"
                )
            self._buffer.extend(self._client.consume(num_messages=1000, timeout=0.05))

    def _apply_trims(self) -> None:
        """Skip to the first record kept on partitions this log trimmed since the last poll."""
        if self._trims_seen == self._log.trims:
            return
        self._trims_seen = self._log.trims
        for p, cut in self._log._cuts.get(self.topic, {}).items():
            if self._next.get(p, cut) < cut:
                self._next[p] = cut
                # Not fetching yet: what it fetches below the cut is dropped in _take.
                with contextlib.suppress(self._kafka.KafkaException):
                    self._client.seek(self._kafka.TopicPartition(self._kt, p, cut))

    def _take(self, max_records: int, wait_s: float) -> list[tuple[int, int, bytes]]:
        """Up to ``max_records`` records the client has, waiting up to ``wait_s`` for the first one."""
        messages, self._buffer = self._buffer[:max_records], self._buffer[max_records:]
        try:
            if not messages and wait_s > 0:
                first = self._client.poll(wait_s)
                if first is not None:
                    messages.append(first)
            if len(messages) < max_records and (messages or wait_s <= 0):
                messages.extend(self._client.consume(num_messages=max_records - len(messages), timeout=0))
        except self._kafka.KafkaException as exc:
            raise LogError(f"event log {self._log.url!r}: poll of {self.topic!r} failed: {exc}") from None
        cuts = self._log._cuts.get(self.topic, {})
        out = []
        for message in messages:
            error = message.error()
            if error is not None:
                if error.fatal() or not (error.code() in self._notices or error.retriable()):
                    raise LogError(f"event log {self._log.url!r}: poll of {self.topic!r} failed: {error}")
                _LOG.info("%s: %s", self._describe(), error)  # the client recovers by itself
                continue
            part, offset = message.partition(), message.offset()
            if part not in self._next:
                continue  # fetched before a revoke
            self._next[part] = max(self._next[part], offset + 1)
            if offset < cuts.get(part, 0):
                continue  # trimmed here after it was fetched
            value = message.value()
            out.append((part, offset, b"" if value is None else value))
        return out

    def _high_watermark(self, part: int) -> int:
        """The high watermark of the client's last fetch answer for ``part`` (-1001 before the first)."""
        return self._client.get_watermark_offsets(self._kafka.TopicPartition(self._kt, part), cached=True)[1]

    def _unread(self) -> dict[int, int]:
        """Partitions with records in the log now that the client has not handed out yet.

        Each maps to a lower bound of its end: any high watermark the client saw, and
        ``ListOffsets(LATEST)``, exact on Kafka, on Tansu the last batch's first offset + 1 (one
        request, only when no fetch answer shows unread records already). A partition stays listed
        while the records below the bound are not handed out, or while the client has no fetch answer
        at or past the bound (the end may lie beyond it) -- :meth:`_still_unread` decides again.
        """
        parts = [p for p in self._next if p in self._owned]
        if not parts:
            return {}
        seen = {p: self._high_watermark(p) for p in parts}
        behind = {p: hw for p, hw in seen.items() if self._next[p] < hw}
        if behind:
            return behind
        latest = self._log._list_offsets(self._kt, parts, "latest")
        return self._still_unread({p: max(latest[p], seen[p]) for p in parts if latest[p] > 0})

    def _still_unread(self, bounds: dict[int, int]) -> dict[int, int]:
        left = {}
        for p, bound in bounds.items():
            if p not in self._next or p not in self._owned:
                continue
            hw = self._high_watermark(p)
            if self._next[p] < bound:
                left[p] = bound  # records below the bound exist and are not handed out yet
            elif hw < bound:
                left[p] = bound  # no fetch answer at or past the bound yet: the end may lie beyond it
            elif self._next[p] < hw:
                left[p] = hw  # an answer at or past the bound is the end (an older one would be below it)
        return left

    def _fetch(self, max_records: int, timeout_s: float) -> list[tuple[int, int, bytes]]:
        out = self._take(max_records, 0.0)
        if out:
            return out
        started = time.monotonic()
        want = self._unread()
        next_check = started + 0.5
        while True:
            now = time.monotonic()
            until = started + (max(timeout_s, _CATCH_UP_S) if want else timeout_s)
            if now >= until:
                return []
            out = self._take(max_records, min(until - now, 0.1))
            if out:
                return out
            if want:
                want = self._still_unread(want)
            if now > next_check and (self._pending or not self._joined):
                next_check = now + 0.5
                self._maintain()  # the topic may have appeared
                if out := self._take(max_records, 0.0):
                    return out
                want = self._unread()

    def _commit_offsets(self, offsets: list[Any], parts: list[int]) -> None:
        kafka = self._kafka
        deadline = time.monotonic() + max(self._log.settings.session_s or 10.0, 1.0)
        while True:
            try:
                result = self._client.commit(offsets=offsets, asynchronous=False)
                failed = [tp.error for tp in result or [] if tp.error is not None]
                if not failed:
                    return
                error = failed[0]
            except kafka.KafkaException as exc:
                error = exc.args[0]
            code = error.code()
            if code in self._fenced:
                raise PartitionLostError(self.topic, self.group, parts)
            if code == kafka.KafkaError.REBALANCE_IN_PROGRESS and time.monotonic() < deadline:
                time.sleep(0.05)  # the client finishes the rebalance in its own thread; same partitions
                continue
            raise LogError(f"event log {self._log.url!r}: commit of {self.topic!r} failed: {error}")

    def _commit(self, upto: dict[int, int]) -> None:
        held = {tp.partition for tp in self._client.assignment()}
        gone = sorted(set(upto) - held)
        if gone:
            raise PartitionLostError(self.topic, self.group, gone)
        offsets = [self._kafka.TopicPartition(self._kt, p, last + 1) for p, last in upto.items()]
        self._commit_offsets(offsets, sorted(upto))

    def _close(self) -> None:
        self._closing = True  # the client revokes everything on close: no callbacks, as on every backend
        if self._explicit is None and not self._joined:
            # Its JoinGroup may be under way: leaving in the middle of it leaves Tansu's group with a
            # leader that never assigns, and nobody joins it again (see docs/log.md). Let it finish.
            with contextlib.suppress(LogError):
                if self._log.partitions(self.topic):
                    self._join()
        try:
            self._client.close()
        except self._kafka.KafkaException as exc:
            raise LogError(f"{self._describe()}: close failed: {exc}") from None
