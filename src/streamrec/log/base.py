"""The event log interface: :class:`EventLog`, :class:`Consumer` and :class:`Envelope`.

Every backend (SQLite, Redis Streams, Kafka) implements the same small contract, so a part of the
loop never knows which one it runs on:

* A **topic** has N **partitions**, fixed when it is created (:meth:`EventLog.create_topic`; a
  topic first written without being created has one). Order is total within a partition; offsets
  count per partition from 0.
* ``append(topic, records, key=...)`` routes each record by a key the writer names (a field such
  as ``"user"``, a function, or one key per record) with Kafka's partitioner
  (:mod:`streamrec.log.partitioner`), encodes the whole batch first (so a bad record appends
  nothing) and writes it in one round trip; when it returns, the records are durable.
* ``consumer(topic, group, record_type)`` joins ``group``: the group's live members share the
  topic's partitions, each partition owned by one member at a time, and ownership moves when
  members come and go (a *rebalance*). ``poll`` returns decoded :class:`Envelope` objects of the
  partitions the member owns; ``commit`` moves the committed offset of each partition past what
  was processed. A member that dies before ``commit`` leaves its partitions to another member,
  which re-reads from the committed offsets: delivery is at least once, nothing lost or skipped.
  ``partitions=[...]`` instead reads exactly those partitions, without joining the group's
  sharing (Kafka's ``assign``).

The logic every backend shares lives here, once: argument checks, batch encoding and routing,
decoding with the record type, the bookkeeping of what was delivered and not yet committed (per
partition), what happens to it when partitions are revoked or lost, and the poison-record rule (a
record that does not decode stops the consumer with a :class:`~streamrec.errors.LogError` naming
its partition and offset, instead of being skipped silently). A backend implements ``_append``,
``_fetch``, ``_commit``, its membership (``_maintain`` or its client's own rebalancing, reported
through ``_assigned`` / ``_revoked``), and the metadata calls.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, Self, TypeVar

import msgspec
import numpy as np

from streamrec.errors import InvalidInputError, LogError, PartitionLostError
from streamrec.log.partitioner import key_bytes, partitions_for

__all__ = [
    "Consumer",
    "ConsumerOptions",
    "Envelope",
    "EventLog",
    "Key",
    "Rebalance",
    "Start",
    "check_name",
    "decoder_for",
    "encode_batch",
]

T = TypeVar("T")
Start = Literal["earliest", "latest"]
#: How a writer names the partition key: a field of the records, a function of a record, or one key per record.
Key = str | Callable[[Any], str | bytes | int] | Sequence[str | bytes | int]
#: A callback told which partitions a consumer gained, or is giving up / has lost.
Rebalance = Callable[[list[int]], None]

# Kafka's rule for topic names, applied to every backend so a topic name works on all of them.
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_BYTES = (bytes, bytearray, memoryview)
MAX_PARTITIONS = 4096


def check_name(field: str, value: Any) -> str:
    """Validate a topic, group or consumer name; raise :class:`InvalidInputError` naming ``field``."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise InvalidInputError(field, value, "must be 1-249 characters of A-Z a-z 0-9 . _ -")
    return value


def check_partition_count(value: Any) -> int:
    """Validate a topic's partition count (1..4096)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 1 <= value <= MAX_PARTITIONS:
        raise InvalidInputError("partitions", value, f"must be an integer from 1 to {MAX_PARTITIONS}")
    return int(value)


def encode_batch(records: Iterable[Any], record_type: type | None = None) -> list[bytes]:
    """Encode a batch of records as msgpack payloads, all or nothing.

    Every record must be an instance of the same ``msgspec.Struct`` type (``record_type`` if given,
    else the type of the first record), or every record must be ``bytes``-like (stored as is). The
    whole batch is checked before anything is returned, so a bad record appends nothing.
    """
    if isinstance(records, (*_BYTES, msgspec.Struct, str, dict)):
        raise InvalidInputError("records", records, "must be a list of records, not a single record")
    try:
        batch = list(records)
    except TypeError:
        raise InvalidInputError("records", records, "must be an iterable of records") from None
    if not batch:
        return []
    expected = record_type if record_type is not None else type(batch[0])
    if expected in _BYTES or expected is bytes:
        for index, record in enumerate(batch):
            if not isinstance(record, _BYTES):
                raise InvalidInputError(f"records[{index}]", record, f"expected bytes, got {type(record).__name__}")
        return [bytes(record) for record in batch]
    if not (isinstance(expected, type) and issubclass(expected, msgspec.Struct)):
        reason = "a record must be a msgspec.Struct (see streamrec.records) or bytes"
        raise InvalidInputError("records[0]", batch[0], reason)
    for index, record in enumerate(batch):
        if type(record) is not expected:
            raise InvalidInputError(
                f"records[{index}]", record, f"expected {expected.__name__}, got {type(record).__name__}"
            )
    encode = msgspec.msgpack.Encoder().encode
    return [encode(record) for record in batch]


def decoder_for(record_type: type[T]) -> Callable[[bytes], T]:
    """A function that turns one payload into a ``record_type`` (identity for ``bytes``)."""
    if record_type is bytes:
        return bytes  # type: ignore[return-value]
    if not (isinstance(record_type, type) and issubclass(record_type, msgspec.Struct)):
        raise InvalidInputError("record_type", record_type, "must be a msgspec.Struct type or bytes")
    return msgspec.msgpack.Decoder(record_type).decode


def route(records: list[Any], key: Key | None, partitions: int, topic: str) -> np.ndarray | None:
    """The partition of each record of a batch, or ``None`` when the topic has one partition.

    ``key`` names a field of the records (``"user"``), is a function of a record, or is one key per
    record. A missing key on a topic of several partitions, or a record whose key is empty or
    ``None``, raises :class:`InvalidInputError` naming the record, and nothing is appended.
    """
    if partitions == 1:
        return None
    if key is None:
        reason = f"topic {topic!r} has {partitions} partitions: name a partition key (a field, a function or a list)"
        raise InvalidInputError("key", None, reason)
    if isinstance(key, str):
        field = key
        try:
            keys = [getattr(record, field) for record in records]
        except AttributeError:
            raise InvalidInputError("key", key, "records have no such field") from None
        label = f".{field}"
    elif callable(key):
        keys = [key(record) for record in records]
        label = " key"
    elif isinstance(key, Sequence) and not isinstance(key, (str, bytes)):
        keys = list(key)
        if len(keys) != len(records):
            raise InvalidInputError("key", f"<{len(keys)} keys>", f"must give one key per record ({len(records)})")
        label = " key"
    else:
        raise InvalidInputError("key", key, "must be a field name, a function of a record, or one key per record")
    encoded: list[bytes] = []
    for index, value in enumerate(keys):
        try:
            data = key_bytes(value)
        except TypeError as exc:
            raise InvalidInputError(f"records[{index}]{label}", value, str(exc)) from None
        if not data:
            raise InvalidInputError(f"records[{index}]{label}", value, "a partition key must not be empty")
        encoded.append(data)
    return partitions_for(encoded, partitions)


class Envelope(msgspec.Struct, Generic[T], frozen=True):
    """One record read from the log, with where it sits.

    Parameters
    ----------
    offset
        Position of the record in its partition: increases with every append, never reused.
    record
        The decoded record (an instance of the consumer's ``record_type``, or ``bytes``).
    topic
        The topic it was read from.
    partition
        The partition of the topic it was read from (0 for a topic of one partition).
    """

    offset: int
    record: T
    topic: str
    partition: int = 0


class _Closable:
    """``close()`` once (then ``_close()``, the backend's hook), a context manager, ``_check_open()``."""

    _closed = False

    def _close(self) -> None:
        """Release backend resources."""

    def _describe(self) -> str:
        return type(self).__name__

    def close(self) -> None:
        """Release the connection (idempotent). Consumer: what was polled and not committed will be
        delivered again to the group. Log: its open consumers must not be used afterwards."""
        if not self._closed:
            self._closed = True
            self._close()

    def _check_open(self) -> None:
        if self._closed:
            raise LogError(f"{self._describe()} is closed")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Consumer(_Closable, ABC, Generic[T]):
    """Reads a topic as a member of a consumer group, from the group's committed offsets.

    Obtain one with :meth:`EventLog.consumer`. Use as a context manager, or call :meth:`close`.

    The partitions a member owns are :meth:`assignment`; they change inside :meth:`poll` when
    members join or leave. Before a partition is given up the ``on_revoke`` callback runs (it may
    :meth:`commit` what it finished); a partition taken away without that chance (the member was
    too slow to renew its ownership) goes to ``on_lost``, and committing it raises
    :class:`~streamrec.errors.PartitionLostError`. Either way, what was polled from it and not
    committed is forgotten here: the next owner reads it again.

    Parameters
    ----------
    topic
        The topic to read.
    group
        The consumer group: groups read the same topic independently, each with its own committed
        offsets.
    record_type
        The ``msgspec.Struct`` type the payloads decode to, or ``bytes`` for raw payloads.

    Examples
    --------
    >>> import tempfile
    >>> from streamrec.log import open_log
    >>> from streamrec.records import ActionEvent
    >>> path = tempfile.mkdtemp() + "/log.db"
    >>> with open_log(f"sqlite://{path}") as log:
    ...     log.append("actions", [ActionEvent(user="u1", item="i1", action="click", time=1.0)])
    ...     with log.consumer("actions", group="profiles", record_type=ActionEvent) as consumer:
    ...         batch = consumer.poll(max_records=100, timeout_s=0)
    ...         consumer.commit()
    ...     [(e.partition, e.offset, e.record.item) for e in batch], log.committed("actions", "profiles")
    [0]
    ([(0, 0, 'i1')], 1)
    """

    def __init__(
        self,
        topic: str,
        group: str,
        record_type: type[T],
        *,
        on_assign: Rebalance | None = None,
        on_revoke: Rebalance | None = None,
        on_lost: Rebalance | None = None,
    ) -> None:
        self.topic = check_name("topic", topic)
        self.group = check_name("group", group)
        self.record_type = record_type
        self._decode = decoder_for(record_type)
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        self._on_lost = on_lost if on_lost is not None else on_revoke
        self._owned: set[int] = set()  # partitions this member reads now
        self._fetched: list[tuple[int, int, bytes]] = []  # read from the backend, not yet handed out
        self._uncommitted: list[tuple[int, int]] = []  # (partition, offset) handed out, in delivery order
        self._in_callback = False

    # -- what a backend implements ----------------------------------------------------------
    @abstractmethod
    def _fetch(self, max_records: int, timeout_s: float) -> list[tuple[int, int, bytes]]:
        """Up to ``max_records`` next ``(partition, offset, payload)`` of owned partitions, waiting at most
        ``timeout_s``; within a partition in offset order."""

    @abstractmethod
    def _commit(self, upto: dict[int, int]) -> None:
        """Durably commit, for each partition, everything up to and including offset ``upto[p]``.

        Raise :class:`~streamrec.errors.PartitionLostError` (committing none of them) when this
        member no longer owns one of the partitions."""

    def _maintain(self) -> None:
        """Group membership, called at the start of every poll: renew, rebalance (through
        :meth:`_assigned` / :meth:`_revoked`). Backends whose client rebalances by itself leave it."""

    def _release(self, partitions: list[int]) -> None:
        """Give up ownership of ``partitions`` after ``on_revoke`` ran (backend hook)."""

    # -- called by backends when ownership changes ----------------------------------------------
    def _assigned(self, partitions: Iterable[int]) -> None:
        """The member now owns ``partitions`` too (reading from their committed offsets)."""
        gained = sorted(set(partitions) - self._owned)
        if not gained:
            return
        self._owned.update(gained)
        self._callback(self._on_assign, gained)

    def _revoked(self, partitions: Iterable[int], *, lost: bool = False) -> None:
        """The member gives up ``partitions`` (``lost``: they were already taken away).

        Runs ``on_revoke`` (or ``on_lost``) first, while an orderly revoke can still commit, then
        forgets what was read from them and not committed, then releases them."""
        gone = sorted(set(partitions) & self._owned)
        if not gone:
            return
        if lost:
            self._owned.difference_update(gone)
            self._forget(gone)
            self._release(gone)
            self._callback(self._on_lost, gone)
        else:
            try:
                self._callback(self._on_revoke, gone)
            finally:  # a callback that raises must not keep the partitions (their leases) from the others
                self._owned.difference_update(gone)
                self._forget(gone)
                self._release(gone)

    def _forget(self, partitions: list[int]) -> None:
        dropped = set(partitions)
        self._fetched = [f for f in self._fetched if f[0] not in dropped]
        self._uncommitted = [u for u in self._uncommitted if u[0] not in dropped]

    def _callback(self, fn: Rebalance | None, partitions: list[int]) -> None:
        if fn is None:
            return
        self._in_callback = True
        try:
            fn(list(partitions))
        finally:
            self._in_callback = False

    # -- the public contract ---------------------------------------------------------------
    def assignment(self) -> list[int]:
        """The partitions this consumer reads now (sorted)."""
        return sorted(self._owned)

    def poll(self, max_records: int = 1000, timeout_s: float = 1.0) -> list[Envelope[T]]:
        """Return up to ``max_records`` next records, waiting up to ``timeout_s`` for the first one.

        Returns an empty list when nothing arrived in time (also while the member owns no
        partition). Within a partition, records come in offset order. Rebalancing (and its
        callbacks) happens here.

        Raises
        ------
        LogError
            A record does not decode as ``record_type`` (the message names its partition and
            offset; the records before it are returned by this call, the next call raises again),
            or the backend failed.
        """
        self._check_open()
        if isinstance(max_records, bool) or not isinstance(max_records, int) or max_records < 1:
            raise InvalidInputError("max_records", max_records, "must be a positive integer")
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or not timeout_s >= 0:
            raise InvalidInputError("timeout_s", timeout_s, "must be a number >= 0")
        if self._in_callback:
            raise LogError(f"{self._describe()}: poll() called from a rebalance callback")
        self._maintain()
        if not self._fetched:
            fetched = self._fetch(max_records, float(timeout_s))
            self._fetched = [f for f in fetched if f[0] in self._owned]  # a rebalance may have run inside
        batch = self._fetched[:max_records]
        envelopes: list[Envelope[T]] = []
        for partition, offset, payload in batch:
            try:
                record = self._decode(payload)
            except (msgspec.DecodeError, InvalidInputError) as exc:
                if envelopes:
                    break  # hand out the good records before it; the next poll raises
                raise LogError(
                    f"topic {self.topic!r} partition {partition} offset {offset}: record does not decode as "
                    f"{self.record_type.__name__}: {exc}"
                ) from None
            envelopes.append(Envelope(offset, record, self.topic, partition))
        del self._fetched[: len(envelopes)]
        self._uncommitted.extend((e.partition, e.offset) for e in envelopes)
        return envelopes

    def commit(self, envelope: Envelope[Any] | None = None) -> None:
        """Commit what :meth:`poll` returned: everything so far, or everything delivered up to and
        including ``envelope`` (in delivery order, over all partitions).

        When this returns the commit is durable: a consumer of the same group opened later (after
        a crash too) starts after it. Never moves a partition's committed offset backwards.

        Raises
        ------
        PartitionLostError
            A partition of what is committed is no longer this member's (its ownership lapsed and
            another member may be reading it): nothing of the call is committed.
        """
        self._check_open()
        if envelope is not None and (not isinstance(envelope, Envelope) or envelope.topic != self.topic):
            raise InvalidInputError("envelope", envelope, f"must be an Envelope polled from topic {self.topic!r}")
        if not self._uncommitted:
            return
        if envelope is None:
            count = len(self._uncommitted)
        else:
            try:
                count = self._uncommitted.index((envelope.partition, envelope.offset)) + 1
            except ValueError:
                if envelope.partition not in self._owned:
                    raise PartitionLostError(self.topic, self.group, [envelope.partition]) from None
                return  # committed already
        upto: dict[int, int] = {}
        for partition, offset in self._uncommitted[:count]:
            if offset > upto.get(partition, -1):
                upto[partition] = offset
        self._commit(upto)
        self._uncommitted = self._uncommitted[count:]

    def _describe(self) -> str:
        return f"consumer of topic {self.topic!r} group {self.group!r}"


class EventLog(_Closable, ABC):
    """An append-only log of typed records, split into named topics of partitions, read by consumer groups.

    Open one with :func:`streamrec.log.open_log`; the URL picks the backend. Use as a context
    manager, or call :meth:`close`.

    Parameters
    ----------
    url
        The URL it was opened with (``sqlite:///path``, ``redis://host:port/db``, ``kafka://host:port``).

    Examples
    --------
    >>> import tempfile
    >>> from streamrec.log import open_log
    >>> from streamrec.records import ActionEvent
    >>> log = open_log(f"sqlite://{tempfile.mkdtemp()}/log.db")
    >>> events = [ActionEvent(user="u1", item=f"i{n}", action="click", time=float(n)) for n in range(3)]
    >>> log.append("actions", events)
    [0, 1, 2]
    >>> log.create_topic("clicks", partitions=4)
    4
    >>> log.append("clicks", events + [ActionEvent(user="u2", item="i0", action="click", time=3.0)], key="user")
    [0, 1, 2, 0]
    >>> log.end_offsets("clicks"), log.end_offset("clicks")
    ([3, 0, 1, 0], 4)
    >>> log.close()
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._partition_counts: dict[str, int] = {}  # fixed at creation, so cached once known

    # -- what a backend implements ----------------------------------------------------------
    @abstractmethod
    def _append(self, topic: str, payloads: list[bytes], partitions: np.ndarray | None) -> list[int]:
        """Append ``payloads`` (``partitions[i]`` is the partition of payload ``i``; ``None``: all in
        partition 0) atomically where the backend can; return each payload's offset in its partition."""

    @abstractmethod
    def _create_topic(self, topic: str, partitions: int) -> int:
        """Create ``topic`` with ``partitions`` partitions unless it exists; return its partition count."""

    @abstractmethod
    def _partition_count(self, topic: str) -> int:
        """The topic's partition count, or 0 if it does not exist (yet)."""

    @abstractmethod
    def _consumer(self, topic: str, group: str, record_type: type[T], options: ConsumerOptions) -> Consumer[T]: ...

    @abstractmethod
    def end_offsets(self, topic: str) -> list[int]:
        """For each partition, the offset the next appended record will get (``[]`` for a topic never created)."""

    @abstractmethod
    def committed_offsets(self, topic: str, group: str) -> list[int]:
        """For each partition, the offset ``group`` resumes from: its committed offset, or the first record kept.

        0 for a group that never committed on an untrimmed partition; never below the first record
        still kept after :meth:`trim`.
        """

    @abstractmethod
    def _trim(self, topic: str, before: dict[int, int]) -> None: ...

    # -- the public contract ---------------------------------------------------------------
    def create_topic(self, topic: str, partitions: int = 1) -> int:
        """Create ``topic`` with ``partitions`` partitions (fixed for its life); return the count.

        Creating a topic that exists with the same count does nothing. A topic appended to before
        it was created has one partition.

        Raises
        ------
        InvalidInputError
            ``partitions`` is not 1..4096, or the topic exists with another count (nothing changes).
        """
        self._check_open()
        check_name("topic", topic)
        wanted = check_partition_count(partitions)
        actual = self._create_topic(topic, wanted)
        self._partition_counts[topic] = actual
        if actual != wanted:
            raise InvalidInputError("partitions", wanted, f"topic {topic!r} already exists with {actual} partitions")
        return actual

    def partitions(self, topic: str) -> int:
        """The number of partitions of ``topic`` (0 if it does not exist yet)."""
        self._check_open()
        check_name("topic", topic)
        known = self._partition_counts.get(topic)
        if known is None:
            known = self._partition_count(topic)
            if known:
                self._partition_counts[topic] = known
        return known

    def append(
        self,
        topic: str,
        records: Iterable[Any],
        *,
        record_type: type | None = None,
        key: Key | None = None,
        partition: int | None = None,
    ) -> list[int]:
        """Append a batch of records to ``topic`` in one transaction; return their offsets.

        When it returns, the records are durable (see ``docs/log.md`` for what that means per
        backend) and visible to every consumer. Each offset counts within its record's partition.

        Parameters
        ----------
        topic
            Topic name (1-249 of ``A-Z a-z 0-9 . _ -``); created with one partition on first use
            unless :meth:`create_topic` made it first.
        records
            Instances of one ``msgspec.Struct`` type, or ``bytes`` payloads.
        record_type
            If given, every record must be of exactly this type.
        key
            The partition key: a field name (``"user"``), a function of a record, or one key per
            record (str, bytes or int). Required when the topic has several partitions (ignored
            with one); records with equal keys go to the same partition.
        partition
            Append every record to this partition instead of routing by key.

        Raises
        ------
        InvalidInputError
            A record of the wrong type or with an empty key, no key for a topic of several
            partitions, a partition out of range (the field names it); nothing of the call is appended.
        LogError
            The backend failed; nothing of the call is appended (Kafka: see ``docs/log.md``).
        """
        self._check_open()
        check_name("topic", topic)
        if isinstance(records, Iterable) and not isinstance(records, (*_BYTES, msgspec.Struct, str, dict, list)):
            records = list(records)
        payloads = encode_batch(records, record_type)
        if not payloads:
            return []
        count = self.partitions(topic)
        if count == 0:
            count = self._partition_counts[topic] = self._create_topic(topic, 1)
        if partition is not None:
            if isinstance(partition, bool) or not isinstance(partition, int | np.integer) or not 0 <= partition < count:
                raise InvalidInputError("partition", partition, f"topic {topic!r} has {count} partition(s)")
            routed = None if count == 1 else np.full(len(payloads), int(partition), dtype=np.int64)
        else:
            routed = route(list(records), key, count, topic)  # type: ignore[arg-type]
        return self._append(topic, payloads, routed)

    def consumer(
        self,
        topic: str,
        group: str,
        record_type: type[T],
        *,
        name: str | None = None,
        start: Start = "earliest",
        partitions: Sequence[int] | None = None,
        on_assign: Rebalance | None = None,
        on_revoke: Rebalance | None = None,
        on_lost: Rebalance | None = None,
    ) -> Consumer[T]:
        """Open a consumer of ``topic`` in ``group``, decoding records as ``record_type``.

        Parameters
        ----------
        topic, group
            What to read and as which group; each partition resumes from the group's committed offset.
        record_type
            A ``msgspec.Struct`` type, or ``bytes`` for the raw payloads.
        name
            The member's name inside its group, for messages and status (default ``"main"``; a
            unique suffix tells live members apart).
        start
            Where a group that never committed starts: ``"earliest"`` (the first record kept) or
            ``"latest"`` (records appended after the consumer opened).
        partitions
            Read exactly these partitions, without sharing them with the group's other members
            (nothing stops two such consumers reading the same partition: the caller decides).
            Default: share the topic's partitions with the group's live members.
        on_assign, on_revoke, on_lost
            Called inside :meth:`Consumer.poll` with the partitions gained, about to be given up
            (commit what is finished there), or already taken away (default: ``on_revoke``).
        """
        self._check_open()
        check_name("topic", topic)
        check_name("group", group)
        check_name("name", "main" if name is None else name)
        if start not in ("earliest", "latest"):
            raise InvalidInputError("start", start, "must be 'earliest' or 'latest'")
        explicit: list[int] | None = None
        if partitions is not None:
            if isinstance(partitions, (str, bytes)) or not isinstance(partitions, Iterable):
                raise InvalidInputError("partitions", partitions, "must be a list of partition numbers")
            explicit = []
            for value in partitions:
                if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
                    raise InvalidInputError("partitions", partitions, "must be non-negative integers")
                explicit.append(int(value))
            count = self.partitions(topic)
            if count and max(explicit, default=0) >= count:
                raise InvalidInputError("partitions", partitions, f"topic {topic!r} has {count} partition(s)")
            explicit = sorted(set(explicit))
        decoder_for(record_type)  # fail early on a bad type
        options = ConsumerOptions(
            name="main" if name is None else name,
            start=start,
            partitions=explicit,
            on_assign=on_assign,
            on_revoke=on_revoke,
            on_lost=on_lost,
        )
        return self._consumer(topic, group, record_type, options)

    def end_offset(self, topic: str, partition: int | None = None) -> int:
        """The end offset of one partition, or with ``partition=None`` the sum over all partitions
        (the number of records ever appended; a topic of one partition: its end offset)."""
        ends = self.end_offsets(topic)
        return sum(ends) if partition is None else (ends[partition] if partition < len(ends) else 0)

    def committed(self, topic: str, group: str, partition: int | None = None) -> int:
        """The committed offset of one partition, or with ``partition=None`` the sum over all partitions
        (so ``end_offset(topic) - committed(topic, group)`` is the group's lag)."""
        done = self.committed_offsets(topic, group)
        return sum(done) if partition is None else (done[partition] if partition < len(done) else 0)

    def trim(self, topic: str, before: int | Sequence[int] | Mapping[int, int]) -> None:
        """Delete the records with offsets below ``before`` (retention is explicit): one offset for a
        topic of one partition, else one per partition (a list, or a partition -> offset mapping)."""
        self._check_open()
        check_name("topic", topic)
        count = self.partitions(topic)
        if isinstance(before, Mapping):
            cut = {int(p): int(o) for p, o in before.items()}
        elif isinstance(before, int | np.integer) and not isinstance(before, bool):
            if count > 1:
                raise InvalidInputError(
                    "before", before, f"topic {topic!r} has {count} partitions: give one offset each"
                )
            cut = {0: int(before)}
        else:
            cut = {p: int(o) for p, o in enumerate(before)}
        if any(p < 0 or (count and p >= count) for p in cut):
            raise InvalidInputError("before", before, f"topic {topic!r} has {count} partition(s)")
        if count:
            self._trim(topic, cut)

    def _describe(self) -> str:
        return f"event log {self.url!r}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


@dataclass(frozen=True)
class ConsumerOptions:
    """What :meth:`EventLog.consumer` hands a backend besides topic, group and record type."""

    name: str = "main"
    start: Start = "earliest"
    partitions: list[int] | None = None  # explicit assignment, or None: shared with the group
    on_assign: Rebalance | None = None
    on_revoke: Rebalance | None = None
    on_lost: Rebalance | None = None

    def callbacks(self) -> dict[str, Rebalance | None]:
        """The callbacks as keyword arguments of :class:`Consumer`."""
        return {"on_assign": self.on_assign, "on_revoke": self.on_revoke, "on_lost": self.on_lost}
