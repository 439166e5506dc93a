"""The embedded event log: one SQLite file in WAL mode, shared by any number of processes.

Why SQLite: it is in the standard library, a committed transaction survives ``kill -9`` (and, with
``synchronous=FULL``, power loss), and WAL mode lets readers run while one writer appends, across
processes. The embedded mode of streamrec needs no server at all.

Layout (``PRAGMA user_version = 2``; a version-1 file is upgraded in place on open)::

    topics     (id INTEGER PRIMARY KEY, name TEXT UNIQUE, next_offset INTEGER, partitions INTEGER)
    parts      (topic_id, part, next_offset)            PRIMARY KEY (topic_id, part)
    offsets    (topic_id, grp, part, next_offset)       PRIMARY KEY (topic_id, grp, part)
    topic_<id>      (seq INTEGER PRIMARY KEY, payload BLOB)   partition 0
    topic_<id>_<p>  (seq INTEGER PRIMARY KEY, payload BLOB)   partition p >= 1

A table per partition, keyed by the offset itself (SQLite's rowid), keeps the records in one
B-tree with no secondary index: appends and range reads cost what a bare table costs (measured by
``streamrec bench log``; a shared table keyed by ``(topic, seq)`` was 3x slower to append). Table
names come from the topic's integer id, never from its name. Partition 0 keeps the version-1
table name, so a one-partition topic is stored exactly as before.

An append is one ``BEGIN IMMEDIATE`` transaction over every partition it touches: it reads each
partition's ``next_offset``, inserts its records with consecutive offsets and bumps it, so
offsets are dense per partition, never reused (even after :meth:`SqliteLog.trim`), and appends
from several processes are serialised by SQLite's write lock. A poll is one indexed range query
``seq >= position LIMIT n`` per owned partition; waiting for new records is a short sleep loop (the
file has no notification channel). A commit is one upsert per partition that only moves forward.

Group membership uses ``flock`` (see :mod:`streamrec.log.membership` for the protocol): a member
holds an exclusive lock on ``<file>.groups/<topic,group>/m-<id>.lock`` for its life, and one on
``p-<n>.lock`` for each partition it owns. The kernel drops them when the member closes or its
process dies (``kill -9`` included), so ownership of a dead member's partitions moves on the next
membership tick of a live one, and a lock cannot lapse while its holder lives.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from streamrec.errors import LogError
from streamrec.log.base import Consumer, ConsumerOptions, EventLog
from streamrec.log.membership import Membership

__all__ = ["SqliteConsumer", "SqliteLog"]

T = TypeVar("T")

_FORMAT = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS topics (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, next_offset INTEGER NOT NULL DEFAULT 0,
    partitions INTEGER NOT NULL DEFAULT 1);
CREATE TABLE IF NOT EXISTS parts (
    topic_id INTEGER NOT NULL, part INTEGER NOT NULL, next_offset INTEGER NOT NULL, PRIMARY KEY (topic_id, part));
CREATE TABLE IF NOT EXISTS offsets (
    topic_id INTEGER NOT NULL, grp TEXT NOT NULL, part INTEGER NOT NULL, next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic_id, grp, part));
"""
# Version 1 had one partition per topic: its end offset in topics.next_offset, its commits in `commits`.
_UPGRADE_FROM_1 = """
ALTER TABLE topics ADD COLUMN partitions INTEGER NOT NULL DEFAULT 1;
INSERT OR IGNORE INTO parts(topic_id, part, next_offset) SELECT id, 0, next_offset FROM topics;
INSERT OR IGNORE INTO offsets(topic_id, grp, part, next_offset) SELECT topic_id, grp, 0, next_offset FROM commits;
DROP TABLE commits;
"""


def _table(topic_id: int, partition: int) -> str:
    return f"topic_{int(topic_id)}" if partition == 0 else f"topic_{int(topic_id)}_{int(partition)}"


class SqliteLog(EventLog):
    """The event log in one SQLite file (``sqlite:///path/to/file.db``); see ``docs/log.md``.

    Parameters
    ----------
    url
        The URL, for messages.
    path
        The database file; created if missing (its directory must exist).
    """

    #: How often a group member checks who is live (seconds); a dead member's partitions move this fast.
    rebalance_s = 0.5

    def __init__(self, url: str, path: str | os.PathLike[str]) -> None:
        super().__init__(url)
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise LogError(f"event log {url!r}: directory {str(self.path.parent)!r} does not exist")
        self._lock = threading.RLock()  # one connection, shared by this log's consumers
        self._topic_ids: dict[str, int] = {}
        try:
            self._conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None, check_same_thread=False)
            mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise LogError(f"event log {url!r}: cannot switch the file to WAL mode (got {mode!r})")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("BEGIN IMMEDIATE")
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, 1, _FORMAT):
                self._conn.execute("ROLLBACK")
                raise LogError(f"event log {url!r}: unknown file format version {version} (expected {_FORMAT})")
            for statement in _SCHEMA.strip().split(";"):
                if statement.strip():
                    self._conn.execute(statement)
            if version == 1:
                for statement in _UPGRADE_FROM_1.strip().split(";"):
                    if statement.strip():
                        self._conn.execute(statement)
            self._conn.execute(f"PRAGMA user_version={_FORMAT}")
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise LogError(f"event log {url!r}: cannot open {str(self.path)!r}: {exc}") from None

    # -- helpers --------------------------------------------------------------------------
    def _topic(self, topic: str) -> tuple[int, int] | None:
        """``(topic id, partition count)`` of an existing topic, else None."""
        found = self._topic_ids.get(topic)
        if found is not None:
            return found, self._partition_counts[topic]
        row = self._conn.execute("SELECT id, partitions FROM topics WHERE name = ?", (topic,)).fetchone()
        if row is None:
            return None
        self._topic_ids[topic] = row[0]
        self._partition_counts[topic] = row[1]
        return row[0], row[1]

    def _run(self, what: str, fn):  # type: ignore[no-untyped-def]
        with self._lock:
            self._check_open()
            try:
                return fn()
            except sqlite3.Error as exc:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise LogError(f"event log {self.url!r}: {what} failed: {exc}") from None

    def _ends(self, topic_id: int) -> list[int]:
        rows = self._conn.execute("SELECT part, next_offset FROM parts WHERE topic_id = ? ORDER BY part", (topic_id,))
        return [row[1] for row in rows]

    def _first_kept(self, topic_id: int, partition: int, end: int) -> int:
        first = self._conn.execute(f"SELECT min(seq) FROM {_table(topic_id, partition)}").fetchone()[0]
        return end if first is None else first

    # -- EventLog -------------------------------------------------------------------------
    def _create_topic(self, topic: str, partitions: int) -> int:
        def create() -> int:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.execute("INSERT OR IGNORE INTO topics(name, partitions) VALUES (?, ?)", (topic, partitions))
            topic_id, count = self._conn.execute(
                "SELECT id, partitions FROM topics WHERE name = ?", (topic,)
            ).fetchone()
            for part in range(count):
                table = _table(topic_id, part)
                self._conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (seq INTEGER PRIMARY KEY, payload BLOB)")
                self._conn.execute(
                    "INSERT OR IGNORE INTO parts(topic_id, part, next_offset) VALUES (?, ?, 0)", (topic_id, part)
                )
            self._conn.execute("COMMIT")
            self._topic_ids[topic] = topic_id
            self._partition_counts[topic] = count
            return count

        return self._run(f"create topic {topic!r}", create)

    def _partition_count(self, topic: str) -> int:
        found = self._run("partitions", lambda: self._topic(topic))
        return 0 if found is None else found[1]

    def _append(self, topic: str, payloads: list[bytes], partitions: np.ndarray | None) -> list[int]:
        def write() -> list[int]:
            self._conn.execute("BEGIN IMMEDIATE")
            topic_id = self._topic(topic)[0]  # type: ignore[index]
            if partitions is None:
                groups = {0: np.arange(len(payloads))}
            else:
                order = np.argsort(partitions, kind="stable")
                cuts = np.flatnonzero(np.diff(partitions[order])) + 1
                groups = {int(partitions[idx[0]]): idx for idx in np.split(order, cuts)}
            offsets = np.empty(len(payloads), dtype=np.int64)
            for part, idx in groups.items():
                first = self._conn.execute(
                    "SELECT next_offset FROM parts WHERE topic_id = ? AND part = ?", (topic_id, part)
                ).fetchone()[0]
                offsets[idx] = np.arange(first, first + len(idx))
                rows = zip(range(first, first + len(idx)), (payloads[i] for i in idx.tolist()), strict=True)
                self._conn.executemany(f"INSERT INTO {_table(topic_id, part)}(seq, payload) VALUES (?, ?)", rows)
                self._conn.execute(
                    "UPDATE parts SET next_offset = ? WHERE topic_id = ? AND part = ?",
                    (first + len(idx), topic_id, part),
                )
            self._conn.execute("COMMIT")
            return offsets.tolist()

        return self._run(f"append to {topic!r}", write)

    def _consumer(self, topic: str, group: str, record_type: type[T], options: ConsumerOptions) -> Consumer[T]:
        return SqliteConsumer(self, topic, group, record_type, options)

    def end_offsets(self, topic: str) -> list[int]:
        def read() -> list[int]:
            found = self._topic(topic)
            return [] if found is None else self._ends(found[0])

        return self._run("end_offsets", read)

    def committed_offsets(self, topic: str, group: str) -> list[int]:
        def read() -> list[int]:
            found = self._topic(topic)
            if found is None:
                return []
            topic_id = found[0]
            done = dict(
                self._conn.execute(
                    "SELECT part, next_offset FROM offsets WHERE topic_id = ? AND grp = ?", (topic_id, group)
                ).fetchall()
            )
            ends = self._ends(topic_id)
            return [max(done.get(p, 0), self._first_kept(topic_id, p, end)) for p, end in enumerate(ends)]

        return self._run("committed", read)

    def _trim(self, topic: str, before: dict[int, int]) -> None:
        def delete() -> None:
            found = self._topic(topic)
            if found is not None:
                for part, cut in before.items():
                    self._conn.execute(f"DELETE FROM {_table(found[0], part)} WHERE seq < ?", (int(cut),))

        self._run(f"trim {topic!r}", delete)

    def _close(self) -> None:
        with self._lock:
            self._conn.close()


class _FlockLeases:
    """:class:`~streamrec.log.membership.LeaseStore` on ``flock``: locks the kernel drops when a process dies.

    ``session_s`` means nothing here: a lock lasts exactly as long as its holder.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._held: dict[int, Any] = {}  # partition -> open locked file
        self._me: Any = None

    def join(self, member: str) -> None:
        # Lock a private name first, then rename: a member file is never seen unlocked while its owner lives.
        temp = self.folder / f"join-{member}"
        handle = open(temp, "a+b")  # noqa: SIM115 - held for the member's life
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        os.replace(temp, self.folder / f"m-{member}.lock")
        self._me = handle

    def heartbeat(self, member: str, session_s: float) -> list[str]:
        live = []
        for path in self.folder.glob("m-*.lock"):
            name = path.name[2:-5]
            if name == member:
                live.append(name)
                continue
            try:
                handle = open(path, "rb")  # noqa: SIM115
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                live.append(name)  # its holder lives
            else:
                path.unlink(missing_ok=True)  # a member that died without leaving
            finally:
                handle.close()
        return sorted(live)

    def acquire(self, partitions: list[int], member: str, session_s: float) -> list[int]:
        got = []
        for part in partitions:
            if part in self._held:
                got.append(part)
                continue
            handle = open(self.folder / f"p-{part}.lock", "a+b")  # noqa: SIM115 - held while owned
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            self._held[part] = handle
            got.append(part)
        return got

    def renew(self, partitions: list[int], member: str, session_s: float) -> list[int]:
        return [p for p in partitions if p in self._held]

    def release(self, partitions: list[int], member: str) -> None:
        for part in partitions:
            handle = self._held.pop(part, None)
            if handle is not None:
                handle.close()

    def leave(self, member: str) -> None:
        self.release(list(self._held), member)
        if self._me is not None:
            (self.folder / f"m-{member}.lock").unlink(missing_ok=True)
            self._me.close()
            self._me = None


class SqliteConsumer(Consumer[T]):
    """A consumer of a :class:`SqliteLog` topic: a member of its group, or a reader of given partitions."""

    def __init__(self, log: SqliteLog, topic: str, group: str, record_type: type[T], options: ConsumerOptions) -> None:
        super().__init__(topic, group, record_type, **options.callbacks())
        self._log = log
        self._start = options.start
        self._positions: dict[int, int] = {}  # next offset to read, per owned partition
        self._topic_id: int | None = None
        self._rotate = 0
        self._membership: Membership | None = None
        self._pin_latest()
        if options.partitions is not None:
            self._assigned(options.partitions)
            return
        key = hashlib.sha1(f"{topic}\0{group}".encode()).hexdigest()[:20]
        leases = _FlockLeases(log.path.with_name(log.path.name + ".groups") / key)
        self.member = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}-{options.name}"
        leases.join(self.member)
        self._membership = Membership(
            self, leases, lambda: log.partitions(topic), self.member, session_s=0.0, interval_s=log.rebalance_s
        )
        try:
            self._membership.maintain(force=True)
        except BaseException:
            self._membership.close()
            raise

    def _pin_latest(self) -> None:
        """``start="latest"``: a group's first open pins every partition's end as its committed offset."""
        if self._start != "latest":
            return
        log = self._log

        def pin() -> None:
            found = log._topic(self.topic)
            if found is None:
                return
            log._conn.execute("BEGIN IMMEDIATE")
            for part, end in enumerate(log._ends(found[0])):
                log._conn.execute(
                    "INSERT OR IGNORE INTO offsets(topic_id, grp, part, next_offset) VALUES (?, ?, ?, ?)",
                    (found[0], self.group, part, end),
                )
            log._conn.execute("COMMIT")

        log._run("open consumer", pin)

    def _assigned(self, partitions: Any) -> None:
        log = self._log

        def positions() -> dict[int, int]:
            found = log._topic(self.topic)
            if found is None:
                return dict.fromkeys(partitions, 0)  # nothing can have been committed on a missing topic
            self._topic_id = found[0]
            done = dict(
                log._conn.execute(
                    "SELECT part, next_offset FROM offsets WHERE topic_id = ? AND grp = ?", (found[0], self.group)
                ).fetchall()
            )
            return {p: done.get(p, 0) for p in partitions}

        for part, position in log._run("read committed offsets", positions).items():
            self._positions.setdefault(part, position)
        super()._assigned(partitions)

    def _release(self, partitions: list[int]) -> None:
        for part in partitions:
            self._positions.pop(part, None)
        if self._membership is not None:
            self._membership.store.release(partitions, self.member)

    def _maintain(self) -> None:
        if self._membership is not None:
            self._log._run("group membership", lambda: None)  # closed log -> LogError, not a stray lock
            self._membership.maintain()

    def _fetch(self, max_records: int, timeout_s: float) -> list[tuple[int, int, bytes]]:
        deadline = time.monotonic() + timeout_s
        pause = 0.002
        while True:
            out = self._log._run("poll", lambda: self._read(max_records))
            if out:
                return out
            left = deadline - time.monotonic()
            if self._membership is not None and left > 0:
                self._membership.maintain()  # while waiting: a topic created, a member gone
            if left <= 0:
                return []
            time.sleep(min(pause, left))
            pause = min(pause * 2, 0.05)

    def _read(self, max_records: int) -> list[tuple[int, int, bytes]]:
        if self._topic_id is None:
            found = self._log._topic(self.topic)
            if found is None:
                return []
            self._topic_id = found[0]
        parts = sorted(self._positions)
        if not parts:
            return []
        self._rotate = (self._rotate + 1) % len(parts)
        out: list[tuple[int, int, bytes]] = []
        for part in parts[self._rotate :] + parts[: self._rotate]:  # no partition waits behind a busy one
            left = max_records - len(out)
            if left <= 0:
                break
            rows = self._log._conn.execute(
                f"SELECT seq, payload FROM {_table(self._topic_id, part)} WHERE seq >= ? ORDER BY seq LIMIT ?",
                (self._positions[part], left),
            ).fetchall()
            if rows:
                self._positions[part] = rows[-1][0] + 1
                out.extend((part, seq, payload) for seq, payload in rows)
        return out

    def _commit(self, upto: dict[int, int]) -> None:
        def write() -> None:
            found = self._log._topic(self.topic)
            assert found is not None
            self._log._conn.execute("BEGIN IMMEDIATE")
            self._log._conn.executemany(
                "INSERT INTO offsets(topic_id, grp, part, next_offset) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(topic_id, grp, part) DO UPDATE SET next_offset = max(next_offset, excluded.next_offset)",
                [(found[0], self.group, part, last + 1) for part, last in upto.items()],
            )
            self._log._conn.execute("COMMIT")

        self._log._run("commit", write)

    def _close(self) -> None:
        if self._membership is not None:
            self._membership.close()
