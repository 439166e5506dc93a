"""The event log interface: :class:`EventLog`, :class:`Consumer` and :class:`Envelope`.

Every backend (SQLite, Redis Streams, Kafka) implements the same small contract, so a part of the
loop never knows which one it runs on:

* ``append(topic, records)`` encodes the whole batch first (so a bad record appends nothing) and
  writes it in one round trip; when it returns, the records are durable and have their offsets.
* ``consumer(topic, group, record_type)`` reads from the group's committed offset; ``poll`` returns
  decoded :class:`Envelope` objects; ``commit`` moves the committed offset past what was processed.
  A consumer that dies before ``commit`` makes the next one re-read from the committed offset:
  delivery is at least once, with nothing lost and nothing skipped.

The logic every backend shares lives here, once: argument checks, batch encoding, decoding with the
record type, the bookkeeping of what was delivered and not yet committed, and the poison-record
rule (a record that does not decode stops the consumer with a :class:`~streamrec.errors.LogError`
naming its offset, instead of being skipped silently). A backend only implements ``_append``,
``_fetch`` and ``_commit`` and the few metadata calls.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any, Generic, Literal, Self, TypeVar

import msgspec

from streamrec.errors import InvalidInputError, LogError

__all__ = ["Consumer", "Envelope", "EventLog", "Start", "check_name", "decoder_for", "encode_batch"]

T = TypeVar("T")
Start = Literal["earliest", "latest"]

# Kafka's rule for topic names, applied to every backend so a topic name works on all of them.
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_BYTES = (bytes, bytearray, memoryview)


def check_name(field: str, value: Any) -> str:
    """Validate a topic, group or consumer name; raise :class:`InvalidInputError` naming ``field``."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise InvalidInputError(field, value, "must be 1-249 characters of A-Z a-z 0-9 . _ -")
    return value


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


class Envelope(msgspec.Struct, Generic[T], frozen=True):
    """One record read from the log, with where it sits.

    Parameters
    ----------
    offset
        Position of the record in its topic: increases with every append, never reused.
    record
        The decoded record (an instance of the consumer's ``record_type``, or ``bytes``).
    topic
        The topic it was read from.
    """

    offset: int
    record: T
    topic: str


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
    """Reads a topic as a member of a consumer group, from the group's committed offset.

    Obtain one with :meth:`EventLog.consumer`. Use as a context manager, or call :meth:`close`.

    Parameters
    ----------
    topic
        The topic to read.
    group
        The consumer group: groups read the same topic independently, each with its own committed
        offset.
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
    ...     [(e.offset, e.record.item) for e in batch], log.committed("actions", "profiles")
    [0]
    ([(0, 'i1')], 1)
    """

    def __init__(self, topic: str, group: str, record_type: type[T]) -> None:
        self.topic = check_name("topic", topic)
        self.group = check_name("group", group)
        self.record_type = record_type
        self._decode = decoder_for(record_type)
        self._fetched: list[tuple[int, bytes]] = []  # read from the backend, not yet handed out
        self._uncommitted: list[int] = []  # offsets handed out by poll(), not yet committed

    # -- what a backend implements ----------------------------------------------------------
    @abstractmethod
    def _fetch(self, max_records: int, timeout_s: float) -> list[tuple[int, bytes]]:
        """Up to ``max_records`` next ``(offset, payload)`` pairs, waiting at most ``timeout_s``."""

    @abstractmethod
    def _commit(self, upto: int, offsets: list[int]) -> None:
        """Make everything delivered up to and including ``upto`` committed (``offsets`` lists it)."""

    # -- the public contract ---------------------------------------------------------------
    def poll(self, max_records: int = 1000, timeout_s: float = 1.0) -> list[Envelope[T]]:
        """Return up to ``max_records`` next records, waiting up to ``timeout_s`` for the first one.

        Returns an empty list when nothing arrived in time. Records come in offset order (see
        ``docs/log.md`` for the exceptions of a Redis group with several consumers).

        Raises
        ------
        LogError
            A record does not decode as ``record_type`` (the message names its offset; the
            records before it are returned by this call, the next call raises again), or the
            backend failed.
        """
        self._check_open()
        if isinstance(max_records, bool) or not isinstance(max_records, int) or max_records < 1:
            raise InvalidInputError("max_records", max_records, "must be a positive integer")
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or not timeout_s >= 0:
            raise InvalidInputError("timeout_s", timeout_s, "must be a number >= 0")
        if not self._fetched:
            self._fetched = self._fetch(max_records, float(timeout_s))
        batch = self._fetched[:max_records]
        envelopes: list[Envelope[T]] = []
        for offset, payload in batch:
            try:
                record = self._decode(payload)
            except (msgspec.DecodeError, InvalidInputError) as exc:
                if envelopes:
                    break  # hand out the good records before it; the next poll raises
                raise LogError(
                    f"topic {self.topic!r} offset {offset}: record does not decode as "
                    f"{self.record_type.__name__}: {exc}"
                ) from None
            envelopes.append(Envelope(offset, record, self.topic))
        del self._fetched[: len(envelopes)]
        self._uncommitted.extend(e.offset for e in envelopes)
        return envelopes

    def commit(self, envelope: Envelope[Any] | None = None) -> None:
        """Commit what :meth:`poll` returned: everything so far, or up to and including ``envelope``.

        When this returns the commit is durable: a consumer of the same group opened later (after
        a crash too) starts after it.
        """
        self._check_open()
        if envelope is not None and (not isinstance(envelope, Envelope) or envelope.topic != self.topic):
            raise InvalidInputError("envelope", envelope, f"must be an Envelope polled from topic {self.topic!r}")
        if not self._uncommitted:
            return
        upto = max(self._uncommitted) if envelope is None else envelope.offset
        done = [offset for offset in self._uncommitted if offset <= upto]
        if not done:
            return
        self._commit(upto, done)
        self._uncommitted = [offset for offset in self._uncommitted if offset > upto]

    def _describe(self) -> str:
        return f"consumer of topic {self.topic!r} group {self.group!r}"


class EventLog(_Closable, ABC):
    """An append-only log of typed records, split into named topics and read by consumer groups.

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
    >>> log.end_offset("actions")
    3
    >>> log.close()
    """

    def __init__(self, url: str) -> None:
        self.url = url

    # -- what a backend implements ----------------------------------------------------------
    @abstractmethod
    def _append(self, topic: str, payloads: list[bytes]) -> list[int]: ...

    @abstractmethod
    def _consumer(self, topic: str, group: str, record_type: type[T], name: str, start: Start) -> Consumer[T]: ...

    @abstractmethod
    def end_offset(self, topic: str) -> int:
        """The offset the next appended record will get (0 for a topic never written)."""

    @abstractmethod
    def committed(self, topic: str, group: str) -> int:
        """The offset ``group`` resumes from on ``topic``: its committed offset, or the first record kept.

        0 for a group that never committed on an untrimmed topic; never below the first record
        still kept after :meth:`trim` (trimmed records cannot be resumed from).
        """

    @abstractmethod
    def trim(self, topic: str, before: int) -> None:
        """Delete the records of ``topic`` with offsets below ``before`` (retention is explicit)."""

    # -- the public contract ---------------------------------------------------------------
    def append(self, topic: str, records: Iterable[Any], *, record_type: type | None = None) -> list[int]:
        """Append a batch of records to ``topic`` in one transaction; return their offsets.

        When it returns, the records are durable (see ``docs/log.md`` for what that means per
        backend) and visible to every consumer.

        Parameters
        ----------
        topic
            Topic name (1-249 of ``A-Z a-z 0-9 . _ -``); created on first use.
        records
            Instances of one ``msgspec.Struct`` type, or ``bytes`` payloads.
        record_type
            If given, every record must be of exactly this type.

        Raises
        ------
        InvalidInputError
            A record of the wrong type (the field names its index); nothing of the call is appended.
        LogError
            The backend failed; nothing of the call is appended (Kafka: see ``docs/log.md``).
        """
        self._check_open()
        check_name("topic", topic)
        payloads = encode_batch(records, record_type)
        if not payloads:
            return []
        return self._append(topic, payloads)

    def consumer(
        self,
        topic: str,
        group: str,
        record_type: type[T],
        *,
        name: str | None = None,
        start: Start = "earliest",
    ) -> Consumer[T]:
        """Open a consumer of ``topic`` in ``group``, decoding records as ``record_type``.

        Parameters
        ----------
        topic, group
            What to read and as which group; the group resumes from its committed offset.
        record_type
            A ``msgspec.Struct`` type, or ``bytes`` for the raw payloads.
        name
            The consumer's name inside its group (Redis: a restarted consumer with the same name
            first re-reads its own pending records). Default ``"main"``.
        start
            Where a group that never committed starts: ``"earliest"`` (the first record kept) or
            ``"latest"`` (records appended after the consumer opened).
        """
        self._check_open()
        check_name("topic", topic)
        check_name("group", group)
        check_name("name", "main" if name is None else name)
        if start not in ("earliest", "latest"):
            raise InvalidInputError("start", start, "must be 'earliest' or 'latest'")
        decoder_for(record_type)  # fail early on a bad type
        return self._consumer(topic, group, record_type, "main" if name is None else name, start)

    def _describe(self) -> str:
        return f"event log {self.url!r}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"
