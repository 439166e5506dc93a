"""The networked event log on Redis Streams: one stream per partition, group members by lease.

Why Redis Streams: the cluster mode needs a log that several machines reach, and a stream already
is an append-only log with dense, ordered ids. Redis's own consumer groups are not used: they share
*records* among members (a pending list per member), while streamrec's contract shares
*partitions* (one reader per partition, order kept, offsets committed as a position). So the
group's state is three small structures beside the streams, read and written by Lua scripts that
Redis runs atomically.

Keys (prefix default ``streamrec:log:``; a topic or group name cannot contain ``:``, so no key of
one topic collides with another's)::

    <prefix>t                      stream of partition 0 of topic t (the key of a one-partition topic
                                   before partitions existed, so that data stays where it is)
    <prefix>t:<p>                  stream of partition p >= 1
    <prefix>:meta:partitions       hash  topic -> partition count (HSETNX: concurrent creators agree)
    <prefix>:off:<t>:<g>           hash  partition -> next offset group g reads (the committed offset)
    <prefix>:members:<t>:<g>       sorted set of live members, scored by expiry (server clock, ms)
    <prefix>:lease:<t>:<g>:<p>     string: the member owning partition p, with a PX time to live

* **Offsets** are dense integers: entries are added with the id ``0-*`` (Redis >= 7.0), so Redis
  numbers them ``0-1, 0-2, ...`` per stream and offset = sequence - 1, never reused (``XTRIM``
  keeps the last id). A stream with no meta entry (written by the version before partitions)
  is a topic of one partition.
* An **append** is one ``MULTI``/``EXEC`` pipeline of ``XADD`` over all the partitions it touches:
  one round trip, applied as a whole.
* A **poll** is one script reading ``XRANGE`` from the position of each owned partition until
  ``max_records``; when nothing is there it waits with one ``XREAD BLOCK`` over all the owned
  streams (exclusive ids), never longer than a membership tick, so leases are renewed while idle.
* **Membership** is :mod:`streamrec.log.membership` over :class:`_RedisLeases`: a heartbeat puts
  the member in the sorted set until ``now + session_s``, a lease is ``SET NX PX``, renewed by a
  compare-and-``PEXPIRE`` and released by a compare-and-``DEL``. A member killed with ``kill -9``
  stops renewing; its partitions move to the live members within ``session_s + rebalance_s``.
* A **commit** is one script that checks every committed partition's lease is still this
  member's and only then raises each offset to ``max(current, new)``: a member whose lease lapsed
  commits nothing (:class:`~streamrec.errors.PartitionLostError`) and no offset moves backwards.
  Consumers of explicit ``partitions=[...]`` hold no lease and commit unfenced.

Groups of the previous version (Redis consumer groups on the stream) are carried over: the first
time a group is opened, or its offsets read, without an entry for partition 0, its position is
taken from the Redis group of that name (its oldest pending entry, else its last delivered + 1).
"""

from __future__ import annotations

import contextlib
import math
import time
import uuid
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np

from streamrec.errors import LogError, PartitionLostError
from streamrec.log.base import Consumer, ConsumerOptions, EventLog
from streamrec.log.membership import Membership

__all__ = ["RedisConsumer", "RedisLog"]

T = TypeVar("T")
_FIELD = b"d"

# -- scripts --------------------------------------------------------------------------------
# Helpers the stream scripts share: where a stream ends and starts, and where a group of the
# previous version (a Redis consumer group) resumes.
_LUA_HELPERS = """
local function seq(id)
  return tonumber(string.match(id, '^0%-(%d+)$'))
end
local function bounds(key)
  if redis.call('EXISTS', key) == 0 then return {'0-0', ''} end
  local info = redis.call('XINFO', 'STREAM', key)
  local last, first = '0-0', ''
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then last = info[i + 1]
    elseif info[i] == 'first-entry' and info[i + 1] then first = info[i + 1][1] end
  end
  return {last, first}
end
local function legacy(key, group)
  if redis.call('EXISTS', key) == 0 then return false end
  for _, info in ipairs(redis.call('XINFO', 'GROUPS', key)) do
    local g = {}
    for i = 1, #info, 2 do g[info[i]] = info[i + 1] end
    if g['name'] == group then
      if g['pending'] > 0 then
        local oldest = redis.call('XPENDING', key, group)[2]
        if oldest and seq(oldest) then return seq(oldest) - 1 end
      end
      return seq(g['last-delivered-id']) or false
    end
  end
  return false
end
"""

# KEYS: streams -> {last id, first id or ''} each
_BOUNDS = (
    _LUA_HELPERS
    + """
local out = {}
for i, key in ipairs(KEYS) do out[i] = bounds(key) end
return out
"""
)

# KEYS[1]: offsets hash, KEYS[2..]: streams; ARGV[1]: group -> {last id, first id, committed or ''} each
_COMMITTED = (
    _LUA_HELPERS
    + """
local out = {}
for i = 2, #KEYS do
  local b = bounds(KEYS[i])
  local done = redis.call('HGET', KEYS[1], i - 2)
  if not done and i == 2 then done = legacy(KEYS[2], ARGV[1]) end
  out[i - 1] = {b[1], b[2], done and tostring(done) or ''}
end
return out
"""
)

# KEYS[1]: offsets hash, KEYS[2..]: streams; ARGV[1]: group, ARGV[2]: '1' to pin every end (start="latest")
_OPEN_GROUP = (
    _LUA_HELPERS
    + """
if redis.call('HEXISTS', KEYS[1], 0) == 0 then
  local position = legacy(KEYS[2], ARGV[1])
  if position then redis.call('HSETNX', KEYS[1], 0, position) end
end
if ARGV[2] == '1' then
  for i = 2, #KEYS do redis.call('HSETNX', KEYS[1], i - 2, seq(bounds(KEYS[i])[1])) end
end
return 0
"""
)

# KEYS[1]: meta hash, KEYS[2]: stream of partition 0; ARGV[1]: topic, ARGV[2]: count wanted -> count
_CREATE_TOPIC = """
local n = redis.call('HGET', KEYS[1], ARGV[1])
if n then return tonumber(n) end
n = tonumber(ARGV[2])
if redis.call('EXISTS', KEYS[2]) == 1 then n = 1 end
redis.call('HSET', KEYS[1], ARGV[1], n)
return n
"""

# KEYS[1]: meta hash, KEYS[2]: stream of partition 0; ARGV[1]: topic -> count, 0 if no such topic
_PARTITION_COUNT = """
local n = redis.call('HGET', KEYS[1], ARGV[1])
if n then return tonumber(n) end
return redis.call('EXISTS', KEYS[2])
"""

# KEYS: streams in reading order; ARGV[1]: most records, ARGV[1 + i]: first id to read of KEYS[i]
# -> {index into KEYS, entries} for each stream that had records
_READ = """
local left = tonumber(ARGV[1])
local out = {}
for i, key in ipairs(KEYS) do
  if left <= 0 then break end
  local entries = redis.call('XRANGE', key, ARGV[i + 1], '+', 'COUNT', left)
  if #entries > 0 then
    out[#out + 1] = {i, entries}
    left = left - #entries
  end
end
return out
"""

# KEYS[1]: offsets hash, KEYS[2..]: leases of the committed partitions (fenced commits only)
# ARGV[1]: member ('' unfenced), then partition, next offset, partition, next offset...
# -> the partitions whose lease is not the member's (then nothing was written)
_COMMIT = """
local lost = {}
for i = 2, #KEYS do
  if redis.call('GET', KEYS[i]) ~= ARGV[1] then lost[#lost + 1] = ARGV[2 * i - 2] end
end
if #lost > 0 then return lost end
for i = 2, #ARGV, 2 do
  local current = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '-1')
  if tonumber(ARGV[i + 1]) > current then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
return lost
"""

# KEYS[1]: members sorted set; ARGV[1]: member, ARGV[2]: session ms -> live members
_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local session = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + session, ARGV[1])
if redis.call('PTTL', KEYS[1]) < 2 * session then redis.call('PEXPIRE', KEYS[1], 2 * session) end
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""

# KEYS: leases; ARGV[1]: member, ARGV[2]: ms, ARGV[2 + i]: partition of KEYS[i] -> partitions held now
_ACQUIRE = """
local held = {}
for i, key in ipairs(KEYS) do
  if redis.call('SET', key, ARGV[1], 'NX', 'PX', ARGV[2]) then
    held[#held + 1] = ARGV[i + 2]
  elseif redis.call('GET', key) == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
    held[#held + 1] = ARGV[i + 2]
  end
end
return held
"""

# KEYS: leases; ARGV[1]: member, ARGV[2]: ms, ARGV[2 + i]: partition of KEYS[i] -> partitions still held
_RENEW = """
local held = {}
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
    held[#held + 1] = ARGV[i + 2]
  end
end
return held
"""

# KEYS: leases; ARGV[1]: member
_RELEASE = """
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then redis.call('DEL', key) end
end
return 0
"""


_SCRIPTS = {
    "bounds": _BOUNDS,
    "committed": _COMMITTED,
    "open_group": _OPEN_GROUP,
    "create_topic": _CREATE_TOPIC,
    "partition_count": _PARTITION_COUNT,
    "read": _READ,
    "commit": _COMMIT,
    "heartbeat": _HEARTBEAT,
    "acquire": _ACQUIRE,
    "renew": _RENEW,
    "release": _RELEASE,
}


def _offset(entry_id: bytes | str) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    if ms != "0" or not seq.isdigit():
        raise LogError(f"stream entry id {text!r} was not written by streamrec (expected 0-<n>)")
    return int(seq) - 1


def _entry_id(offset: int) -> str:
    return f"0-{offset + 1}"


def _seconds(url: str, query: dict[str, str], name: str, default: float) -> float:
    text = query.pop(name, None)
    try:
        value = default if text is None else float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise LogError(f"event log {url!r}: {name} must be a positive number of seconds (got {text!r})")
    return value


class RedisLog(EventLog):
    """The event log on Redis Streams (``redis://host:port/db``); see ``docs/log.md``.

    URL query parameters read here (the rest go to redis-py): ``prefix`` (key prefix, default
    ``streamrec:log:``), ``session_s`` (default 10: how long a group member's heartbeat and
    partition leases last without renewal, so a dead member's partitions move within
    ``session_s + rebalance_s``) and ``rebalance_s`` (default 1: how often a member renews and
    looks for members come and gone; below ``session_s``). ``claim_idle_s`` of the version before
    partitions is accepted and ignored.
    """

    def __init__(self, url: str) -> None:
        super().__init__(url)
        import redis

        self._redis_errors = (redis.RedisError, OSError)
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        self.prefix = query.pop("prefix", "streamrec:log:")
        self.session_s = _seconds(url, query, "session_s", 10.0)
        self.rebalance_s = _seconds(url, query, "rebalance_s", 1.0)
        if self.rebalance_s >= self.session_s:
            raise LogError(
                f"event log {url!r}: rebalance_s ({self.rebalance_s}) must be below session_s ({self.session_s}), "
                "or members lose their leases between renewals"
            )
        query.pop("claim_idle_s", None)  # gone with partitions: a dead member's partitions move by lease
        client_url = urlunsplit(parts._replace(query=urlencode(query)))
        try:
            self.redis = redis.Redis.from_url(client_url, socket_connect_timeout=5.0)
            version = self.redis.info("server")["redis_version"]
        except (redis.RedisError, OSError, ValueError) as exc:
            raise LogError(f"event log {url!r}: cannot connect: {exc}") from None
        if tuple(int(p) for p in version.split(".")[:2]) < (7, 0):
            raise LogError(f"event log {url!r}: needs Redis >= 7.0 for 0-* stream ids (server is {version})")
        self._scripts = {name: self.redis.register_script(lua) for name, lua in _SCRIPTS.items()}
        self._meta = f"{self.prefix}:meta:partitions"
        self._streams: dict[str, list[str]] = {}

    # -- keys -----------------------------------------------------------------------------
    def stream(self, topic: str, partition: int = 0) -> str:
        """The stream key of one partition of ``topic``."""
        return self.prefix + topic if partition == 0 else f"{self.prefix}{topic}:{partition}"

    def streams(self, topic: str) -> list[str]:
        """The stream keys of every partition of ``topic`` (``[]`` while it does not exist)."""
        known = self._streams.get(topic)
        if known is None:
            known = [self.stream(topic, p) for p in range(self.partitions(topic))]
            if known:
                self._streams[topic] = known
        return known

    def offsets_key(self, topic: str, group: str) -> str:
        """The hash of ``group``'s committed offsets on ``topic`` (partition -> next offset)."""
        return f"{self.prefix}:off:{topic}:{group}"

    def call(self, what: str, fn, *args: Any, **kwargs: Any) -> Any:  # type: ignore[no-untyped-def]
        """Run one client call, turning Redis and socket errors into :class:`LogError`."""
        self._check_open()
        try:
            return fn(*args, **kwargs)
        except self._redis_errors as exc:
            raise LogError(f"event log {self.url!r}: {what} failed: {exc}") from None

    def script(self, name: str, keys: list[str], args: list[Any] | tuple[Any, ...] = (), what: str = "") -> Any:
        """Run one of this module's Lua scripts (atomic on the server); errors become :class:`LogError`."""
        return self.call(what or name.replace("_", " "), self._scripts[name], keys=keys, args=list(args))

    # -- EventLog -------------------------------------------------------------------------
    def _create_topic(self, topic: str, partitions: int) -> int:
        keys = [self._meta, self.stream(topic)]
        return int(self.script("create_topic", keys, [topic, partitions], f"create topic {topic!r}"))

    def _partition_count(self, topic: str) -> int:
        return int(self.script("partition_count", [self._meta, self.stream(topic)], [topic]))

    def _append(self, topic: str, payloads: list[bytes], partitions: np.ndarray | None) -> list[int]:
        streams = self.streams(topic)
        keys = [streams[0]] * len(payloads) if partitions is None else [streams[p] for p in partitions.tolist()]

        def write() -> list[Any]:
            pipe = self.redis.pipeline(transaction=True)
            for key, payload in zip(keys, payloads, strict=True):
                pipe.xadd(key, {_FIELD: payload}, id="0-*")
            return pipe.execute()

        return [_offset(entry_id) for entry_id in self.call(f"append to {topic!r}", write)]

    def _consumer(self, topic: str, group: str, record_type: type[T], options: ConsumerOptions) -> Consumer[T]:
        return RedisConsumer(self, topic, group, record_type, options)

    def end_offsets(self, topic: str) -> list[int]:
        self._check_open()
        streams = self.streams(topic)
        if not streams:
            return []
        return [_offset(last) + 1 for last, _ in self.script("bounds", streams, what="end_offsets")]

    def committed_offsets(self, topic: str, group: str) -> list[int]:
        self._check_open()
        streams = self.streams(topic)
        if not streams:
            return []
        keys = [self.offsets_key(topic, group), *streams]
        out = []
        for last, first, done in self.script("committed", keys, [group]):
            kept = _offset(first) if first else _offset(last) + 1  # nothing below it can be resumed from
            out.append(max(int(done) if done else 0, kept))
        return out

    def _trim(self, topic: str, before: dict[int, int]) -> None:
        streams = self.streams(topic)

        def trim() -> None:
            pipe = self.redis.pipeline(transaction=False)
            for part, cut in before.items():
                if cut > 0:
                    pipe.xtrim(streams[part], minid=_entry_id(cut), approximate=False)
            pipe.execute()

        self.call(f"trim {topic!r}", trim)

    def _close(self) -> None:
        self.redis.close()


class _RedisLeases:
    """:class:`~streamrec.log.membership.LeaseStore` on Redis: a sorted set of live members, a key per lease.

    Every call is one script, so each check-and-set is atomic; times are the server's (``TIME``,
    ``PX``), so members on machines with skewed clocks agree.
    """

    def __init__(self, log: RedisLog, topic: str, group: str) -> None:
        self.log = log
        self.members = f"{log.prefix}:members:{topic}:{group}"
        self._lease = f"{log.prefix}:lease:{topic}:{group}:"

    def lease(self, partition: int) -> str:
        return f"{self._lease}{partition}"

    def _run(self, script: str, partitions: list[int], member: str, *args: Any) -> Any:
        return self.log.script(script, [self.lease(p) for p in partitions], [member, *args], f"{script} leases")

    def heartbeat(self, member: str, session_s: float) -> list[str]:
        live = self.log.script("heartbeat", [self.members], [member, _ms(session_s)])
        return sorted(m.decode() for m in live)

    def acquire(self, partitions: list[int], member: str, session_s: float) -> list[int]:
        held = self._run("acquire", partitions, member, _ms(session_s), *partitions)
        return [int(p) for p in held]

    def renew(self, partitions: list[int], member: str, session_s: float) -> list[int]:
        held = self._run("renew", partitions, member, _ms(session_s), *partitions)
        return [int(p) for p in held]

    def release(self, partitions: list[int], member: str) -> None:
        if partitions:
            self._run("release", partitions, member)

    def leave(self, member: str) -> None:
        self.log.call("leave group", self.log.redis.zrem, self.members, member)


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class RedisConsumer(Consumer[T]):
    """A consumer of a :class:`RedisLog` topic: a member of its group, or a reader of given partitions.

    A group member owns partitions by lease (see the module's docstring); a member beyond the
    partition count owns none and stands by, taking a partition over when its owner closes (on its
    next tick) or dies (within ``session_s + rebalance_s``). A member that does not poll for longer
    than ``session_s`` loses its partitions: ``commit`` raises
    :class:`~streamrec.errors.PartitionLostError` and the next ``poll`` calls ``on_lost``. A reader
    of ``partitions=[...]`` holds no lease and its commits are not fenced.
    """

    def __init__(self, log: RedisLog, topic: str, group: str, record_type: type[T], options: ConsumerOptions) -> None:
        super().__init__(topic, group, record_type, **options.callbacks())
        self._log = log
        self._offsets = log.offsets_key(topic, group)
        self._positions: dict[int, int] = {}  # next offset to read, per owned partition
        self._rotate = 0
        self._force = False  # a commit found a lease gone: renew on the next poll
        self._membership: Membership | None = None
        self._leases: _RedisLeases | None = None
        self.member: str | None = None  # the member id, unique in the group (None: explicit partitions)
        self._open_group(options.start == "latest")
        if options.partitions is not None:
            self._assigned(options.partitions)
            return
        self.member = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}-{options.name}"
        self._leases = _RedisLeases(log, topic, group)
        self._membership = Membership(
            self, self._leases, lambda: log.partitions(topic), self.member, log.session_s, log.rebalance_s
        )
        try:
            self._membership.maintain(force=True)
        except BaseException:
            self._close()
            raise

    def _open_group(self, latest: bool) -> None:
        """Carry over a group of the previous version; ``start="latest"``: pin every partition's end."""
        streams = self._log.streams(self.topic)
        if streams:
            keys = [self._offsets, *streams]
            self._log.script("open_group", keys, [self.group, "1" if latest else "0"], "open consumer")

    def _assigned(self, partitions: Any) -> None:
        parts = sorted(set(partitions) - set(self._positions))
        if parts:
            done = self._log.call("read committed offsets", self._log.redis.hmget, self._offsets, parts)
            for part, position in zip(parts, done, strict=True):
                self._positions[part] = int(position) if position is not None else 0
        super()._assigned(partitions)

    def _release(self, partitions: list[int]) -> None:
        for part in partitions:
            self._positions.pop(part, None)
        if self._leases is not None and self.member is not None:
            self._leases.release(partitions, self.member)

    def _maintain(self) -> None:
        if self._membership is not None:
            force, self._force = self._force, False
            self._membership.maintain(force=force)

    # -- reading --------------------------------------------------------------------------
    def _order(self) -> list[int]:
        """The owned partitions, starting one further each call: no partition waits behind a busy one."""
        parts = sorted(self._positions)
        if not parts:
            return []
        self._rotate = (self._rotate + 1) % len(parts)
        return parts[self._rotate :] + parts[: self._rotate]

    def _fetch(self, max_records: int, timeout_s: float) -> list[tuple[int, int, bytes]]:
        deadline = time.monotonic() + timeout_s
        pause = 0.002
        while True:
            out = self._read(max_records)
            left = deadline - time.monotonic()
            if out or left <= 0:
                return out
            if self._positions and self._log.streams(self.topic):  # block at most one membership tick
                out = self._wait(max_records, min(left, self._log.rebalance_s))
                if out:
                    return out
            else:
                time.sleep(min(pause, left))  # no partition yet: the topic is missing or another member owns it
                pause = min(pause * 2, 0.05)
            if self._membership is not None:
                self._membership.maintain()  # renew; take partitions a member left (then read them at once)

    def _read(self, max_records: int) -> list[tuple[int, int, bytes]]:
        """One script: ``XRANGE`` from each owned partition's position until ``max_records``."""
        parts = self._order()
        streams = self._log.streams(self.topic)
        if not parts or not streams:
            return []
        keys = [streams[p] for p in parts]
        args = [max_records, *(_entry_id(self._positions[p]) for p in parts)]
        reply = self._log.script("read", keys, args, "poll")
        out: list[tuple[int, int, bytes]] = []
        for index, entries in reply:
            part = parts[int(index) - 1]
            for entry_id, fields in entries:
                out.append((part, _offset(entry_id), self._payload(entry_id, fields)))
            self._positions[part] = out[-1][1] + 1
        return out

    def _wait(self, max_records: int, wait_s: float) -> list[tuple[int, int, bytes]]:
        """One ``XREAD BLOCK`` over every owned partition's stream, after its position."""
        parts = self._order()
        streams = self._log.streams(self.topic)
        after = {streams[p]: f"0-{self._positions[p]}" for p in parts}  # the id of the last record read
        reply = self._log.call("poll", self._log.redis.xread, after, count=max_records, block=_ms(wait_s))
        if not reply:
            return []
        by_key = {streams[p].encode(): p for p in parts}
        # RESP2: [[key, entries], ...]; RESP3: {key: [entries]}
        pairs = [(k, v[0]) for k, v in reply.items()] if isinstance(reply, dict) else reply
        out: list[tuple[int, int, bytes]] = []
        for key, entries in pairs:
            part = by_key[key if isinstance(key, bytes) else key.encode()]
            for entry_id, fields in entries[: max_records - len(out)]:
                out.append((part, _offset(entry_id), self._payload(entry_id, fields)))
                self._positions[part] = out[-1][1] + 1
        return out

    def _payload(self, entry_id: bytes, fields: dict[bytes, bytes] | list[bytes]) -> bytes:
        """An entry's payload; ``fields`` as redis-py parses them (a dict) or as a script returns them (a list)."""
        if isinstance(fields, list):
            fields = dict(zip(fields[::2], fields[1::2], strict=True))
        try:
            return fields[_FIELD]
        except KeyError:
            raise LogError(
                f"topic {self.topic!r}: stream entry {entry_id!r} has no field 'd' (not written by streamrec)"
            ) from None

    # -- committing -----------------------------------------------------------------------
    def _commit(self, upto: dict[int, int]) -> None:
        parts = sorted(upto)
        keys = [self._offsets]
        if self._leases is not None:
            keys += [self._leases.lease(p) for p in parts]
        args: list[Any] = [self.member or ""]
        for part in parts:
            args += [part, upto[part] + 1]
        lost = self._log.script("commit", keys, args)
        if lost:
            self._force = True  # the next poll renews, finds them gone and calls on_lost
            raise PartitionLostError(self.topic, self.group, sorted(int(p) for p in lost))

    def _close(self) -> None:
        if self._membership is not None:
            with contextlib.suppress(LogError):  # the server or the log is gone: the leases lapse within session_s
                self._membership.close()
