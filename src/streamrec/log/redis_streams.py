"""The networked event log: one Redis Stream per topic, consumer groups for readers.

Why Redis Streams: the cluster mode needs a log that several machines reach, and Redis Streams
already is one (append-only, consumer groups, per-entry acknowledgement, a pending list that
survives a consumer's death). streamrec adds nothing on top but the mapping to its interface.

Mapping:

* Topic ``t`` is the stream key ``<prefix>t`` (prefix default ``streamrec:log:``), one field ``d``
  per entry holding the msgpack payload.
* Offsets are dense integers: entries are added with the explicit id ``0-*`` (Redis >= 7.0), so
  Redis numbers them ``0-1, 0-2, ...`` and offset = sequence - 1. The same offsets as the other
  backends, and ``XTRIM MINID`` trims by offset.
* An append is one ``MULTI``/``EXEC`` pipeline of ``XADD``: one round trip, all or nothing.
* A group is a Redis consumer group; a consumer is a named member of it. ``poll`` reads, in
  order: the consumer's own pending entries (delivered before a crash, never acknowledged), then
  entries other consumers left pending for longer than ``claim_idle_s`` (``XAUTOCLAIM``), then new
  ones (``XREADGROUP >``, blocking up to the timeout). ``commit`` is one ``XACK`` of the ids.
"""

from __future__ import annotations

import time
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from streamrec.errors import LogError
from streamrec.log.base import Consumer, EventLog, Start

__all__ = ["RedisConsumer", "RedisLog"]

T = TypeVar("T")
_FIELD = b"d"


def _offset(entry_id: bytes | str) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    if ms != "0":
        raise LogError(f"stream entry id {text!r} was not written by streamrec (expected 0-<n>)")
    return int(seq) - 1


def _entry_id(offset: int) -> str:
    return f"0-{offset + 1}"


class RedisLog(EventLog):
    """The event log on Redis Streams (``redis://host:port/db``); see ``docs/log.md``.

    URL query parameters read here (the rest go to redis-py): ``prefix`` (key prefix, default
    ``streamrec:log:``) and ``claim_idle_s`` (default 60; how long another consumer's entry stays
    pending before a live consumer of the group takes it over; ``none`` never).
    """

    def __init__(self, url: str) -> None:
        super().__init__(url)
        import redis

        self._redis_errors = (redis.RedisError, OSError)
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        self.prefix = query.pop("prefix", "streamrec:log:")
        claim = query.pop("claim_idle_s", "60")
        try:
            self.claim_idle_s = None if claim.lower() == "none" else float(claim)
        except ValueError:
            raise LogError(f"event log {url!r}: claim_idle_s must be a number or 'none' (got {claim!r})") from None
        client_url = urlunsplit(parts._replace(query=urlencode(query)))
        try:
            self.redis = redis.Redis.from_url(client_url, socket_connect_timeout=5.0)
            version = self.redis.info("server")["redis_version"]
        except (redis.RedisError, OSError, ValueError) as exc:
            raise LogError(f"event log {url!r}: cannot connect: {exc}") from None
        if tuple(int(p) for p in version.split(".")[:2]) < (7, 0):
            raise LogError(f"event log {url!r}: needs Redis >= 7.0 for 0-* stream ids (server is {version})")

    def key(self, topic: str) -> str:
        """The stream key of ``topic``."""
        return self.prefix + topic

    def call(self, what: str, fn, *args: Any, **kwargs: Any) -> Any:  # type: ignore[no-untyped-def]
        """Run one client call, turning Redis and socket errors into :class:`LogError`."""
        self._check_open()
        try:
            return fn(*args, **kwargs)
        except self._redis_errors as exc:
            raise LogError(f"event log {self.url!r}: {what} failed: {exc}") from None

    def _append(self, topic: str, payloads: list[bytes]) -> list[int]:
        def write() -> list[Any]:
            pipe = self.redis.pipeline(transaction=True)
            key = self.key(topic)
            for payload in payloads:
                pipe.xadd(key, {_FIELD: payload}, id="0-*")
            return pipe.execute()

        return [_offset(entry_id) for entry_id in self.call(f"append to {topic!r}", write)]

    def _consumer(self, topic: str, group: str, record_type: type[T], name: str, start: Start) -> Consumer[T]:
        return RedisConsumer(self, topic, group, record_type, name, start)

    def _stream_info(self, what: str, fn, key: str) -> Any:  # type: ignore[no-untyped-def]
        """``fn(key)`` (an XINFO call), or None when the stream does not exist yet."""
        self._check_open()
        try:
            return fn(key)
        except self._redis_errors as exc:
            if "no such key" in str(exc).lower():
                return None
            raise LogError(f"event log {self.url!r}: {what} failed: {exc}") from None

    def end_offset(self, topic: str) -> int:
        info = self._stream_info("end_offset", self.redis.xinfo_stream, self.key(topic))
        return 0 if info is None else _offset(info["last-generated-id"]) + 1

    def committed(self, topic: str, group: str) -> int:
        key = self.key(topic)
        stream = self._stream_info("committed", self.redis.xinfo_stream, key)
        if stream is None:
            return 0
        # Records trimmed away cannot be resumed from: the answer is never below the first one kept.
        first = stream["first-entry"]
        position = _offset(first[0]) if first else _offset(stream["last-generated-id"]) + 1
        for info in self._stream_info("committed", self.redis.xinfo_groups, key) or []:
            if info["name"].decode() != group:
                continue
            if info["pending"]:  # the oldest entry not acknowledged is where a restart resumes
                oldest = self.call("committed", self.redis.xpending, key, group)["min"]
                if oldest is not None:  # None: acknowledged between XINFO and XPENDING
                    return max(position, _offset(oldest))
            last = info["last-delivered-id"]
            return max(position, 0 if last in (b"0-0", "0-0") else _offset(last) + 1)
        return position

    def trim(self, topic: str, before: int) -> None:
        if before > 0:
            self.call(f"trim {topic!r}", self.redis.xtrim, self.key(topic), minid=_entry_id(before), approximate=False)

    def _close(self) -> None:
        self.redis.close()


class RedisConsumer(Consumer[T]):
    """A named member of a Redis consumer group reading one topic."""

    def __init__(self, log: RedisLog, topic: str, group: str, record_type: type[T], name: str, start: Start) -> None:
        super().__init__(topic, group, record_type)
        self._log = log
        self.name = name
        self._key = log.key(topic)
        self._history: str | None = "0"  # cursor into our own pending entries; None once read
        self._last_claim = float("-inf")
        self._claim_cursor = "0-0"  # XAUTOCLAIM scans the pending list in pages; resume where it stopped
        try:
            log.redis.xgroup_create(self._key, group, id="0" if start == "earliest" else "$", mkstream=True)
        except log._redis_errors as exc:
            if "BUSYGROUP" not in str(exc):
                raise LogError(f"event log {log.url!r}: cannot create group {group!r} on {topic!r}: {exc}") from None

    def _read(self, stream_id: str, count: int, block_ms: int | None) -> list[tuple[bytes, Any]]:
        reply = self._log.call(
            "poll",
            self._log.redis.xreadgroup,
            self.group,
            self.name,
            {self._key: stream_id},
            count=count,
            block=block_ms,
        )
        if not reply:
            return []
        if isinstance(reply, dict):  # RESP3
            return next(iter(reply.values()))[0]
        return reply[0][1]

    def _keep(self, entries: list[tuple[bytes, Any]], out: list[tuple[int, bytes]]) -> None:
        gone = []
        for entry_id, fields in entries:
            if not fields:  # trimmed while pending: nothing left to deliver
                gone.append(entry_id)
            else:
                out.append((_offset(entry_id), fields[_FIELD]))
        if gone:
            self._log.call("ack trimmed entries", self._log.redis.xack, self._key, self.group, *gone)

    def _fetch(self, max_records: int, timeout_s: float) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        while self._history is not None and len(out) < max_records:
            entries = self._read(self._history, max_records - len(out), None)
            if not entries:
                self._history = None
                break
            self._history = entries[-1][0].decode()
            self._keep(entries, out)
        claim = self._log.claim_idle_s
        if claim is not None and len(out) < max_records and time.monotonic() - self._last_claim >= claim / 2:
            self._last_claim = time.monotonic()
            reply = self._log.call(
                "claim",
                self._log.redis.xautoclaim,
                self._key,
                self.group,
                self.name,
                int(claim * 1000),
                start_id=self._claim_cursor,
                count=max_records - len(out),
            )
            cursor = reply[0]
            self._claim_cursor = cursor.decode() if isinstance(cursor, bytes) else cursor
            mine = set(self._uncommitted)  # ours already, idle only because processing is slow
            mine.update(offset for offset, _ in out)
            self._keep([e for e in reply[1] if _offset(e[0]) not in mine], out)
        if len(out) < max_records:
            block = None if out or timeout_s <= 0 else max(1, int(timeout_s * 1000))
            self._keep(self._read(">", max_records - len(out), block), out)
        return out

    def _commit(self, upto: int, offsets: list[int]) -> None:
        ids = [_entry_id(offset) for offset in offsets]
        for start in range(0, len(ids), 10_000):
            self._log.call("commit", self._log.redis.xack, self._key, self.group, *ids[start : start + 10_000])
