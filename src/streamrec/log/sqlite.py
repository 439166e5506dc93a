"""The embedded event log: one SQLite file in WAL mode, shared by any number of processes.

Why SQLite: it is in the standard library, a committed transaction survives ``kill -9`` (and, with
``synchronous=FULL``, power loss), and WAL mode lets readers run while one writer appends, across
processes. The embedded mode of streamrec needs no server at all.

Layout (``PRAGMA user_version = 1``)::

    topics     (id INTEGER PRIMARY KEY, name TEXT UNIQUE, next_offset INTEGER)
    commits    (topic_id, grp, next_offset)             PRIMARY KEY (topic_id, grp)
    topic_<id> (seq INTEGER PRIMARY KEY, payload BLOB)  one table per topic

A table per topic, keyed by the offset itself (SQLite's rowid), keeps the records in one B-tree
with no secondary index: appends and range reads cost what a bare table costs (measured by
``streamrec bench log``; a shared table keyed by ``(topic, seq)`` was 3x slower to append). The
table name comes from the topic's integer id, never from its name.

An append is one ``BEGIN IMMEDIATE`` transaction: it reads the topic's ``next_offset``, inserts
the batch with consecutive offsets and bumps ``next_offset``, so offsets are dense, never reused
(even after :meth:`SqliteLog.trim`), and two processes appending at once are serialised by SQLite's
write lock. A poll is one indexed range query ``seq >= position LIMIT n``; waiting for new records
is a short sleep loop (the file has no notification channel). A commit is one upsert that only
moves a group's offset forward.

One consumer per group at a time: SQLite has no way to split a topic between readers, and two
readers of one group would both apply the same records. Each consumer holds an exclusive
``flock`` on ``<file>.groups/<hash>.lock``; the kernel releases it when the consumer closes or its
process dies (``kill -9`` included), so a crashed consumer never blocks its successor.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import TypeVar

from streamrec.errors import LogError
from streamrec.log.base import Consumer, EventLog, Start

__all__ = ["SqliteConsumer", "SqliteLog"]

T = TypeVar("T")

_FORMAT = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS topics (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, next_offset INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS commits (
    topic_id INTEGER NOT NULL, grp TEXT NOT NULL, next_offset INTEGER NOT NULL, PRIMARY KEY (topic_id, grp));
"""


class SqliteLog(EventLog):
    """The event log in one SQLite file (``sqlite:///path/to/file.db``); see ``docs/log.md``.

    Parameters
    ----------
    url
        The URL, for messages.
    path
        The database file; created if missing (its directory must exist).
    """

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
            if version not in (0, _FORMAT):
                self._conn.execute("ROLLBACK")
                raise LogError(f"event log {url!r}: unknown file format version {version} (expected {_FORMAT})")
            for statement in _SCHEMA.strip().split(";"):
                if statement.strip():
                    self._conn.execute(statement)
            self._conn.execute(f"PRAGMA user_version={_FORMAT}")
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise LogError(f"event log {url!r}: cannot open {str(self.path)!r}: {exc}") from None

    # -- helpers --------------------------------------------------------------------------
    def _topic_id(self, topic: str) -> int:
        """The topic's row id, creating the row (call inside a write transaction or autocommit)."""
        found = self._topic_ids.get(topic)
        if found is None:
            self._conn.execute("INSERT OR IGNORE INTO topics(name) VALUES (?)", (topic,))
            found = self._conn.execute("SELECT id FROM topics WHERE name = ?", (topic,)).fetchone()[0]
            self._conn.execute(
                f"CREATE TABLE IF NOT EXISTS topic_{int(found)} (seq INTEGER PRIMARY KEY, payload BLOB NOT NULL)"
            )
            self._topic_ids[topic] = found
        return found

    def _run(self, what: str, fn):  # type: ignore[no-untyped-def]
        with self._lock:
            self._check_open()
            try:
                return fn()
            except sqlite3.Error as exc:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise LogError(f"event log {self.url!r}: {what} failed: {exc}") from None

    # -- EventLog -------------------------------------------------------------------------
    def _append(self, topic: str, payloads: list[bytes]) -> list[int]:
        def write() -> list[int]:
            self._conn.execute("BEGIN IMMEDIATE")
            topic_id = self._topic_id(topic)
            first = self._conn.execute("SELECT next_offset FROM topics WHERE id = ?", (topic_id,)).fetchone()[0]
            rows = zip(range(first, first + len(payloads)), payloads, strict=True)
            self._conn.executemany(f"INSERT INTO topic_{topic_id}(seq, payload) VALUES (?, ?)", rows)
            self._conn.execute("UPDATE topics SET next_offset = ? WHERE id = ?", (first + len(payloads), topic_id))
            self._conn.execute("COMMIT")
            return list(range(first, first + len(payloads)))

        return self._run(f"append to {topic!r}", write)

    def _consumer(self, topic: str, group: str, record_type: type[T], name: str, start: Start) -> Consumer[T]:
        return SqliteConsumer(self, topic, group, record_type, start)

    def end_offset(self, topic: str) -> int:
        def read() -> int:
            row = self._conn.execute("SELECT next_offset FROM topics WHERE name = ?", (topic,)).fetchone()
            return 0 if row is None else row[0]

        return self._run("end_offset", read)

    def committed(self, topic: str, group: str) -> int:
        def read() -> int:
            found = self._conn.execute("SELECT id, next_offset FROM topics WHERE name = ?", (topic,)).fetchone()
            if found is None:
                return 0
            topic_id, end = found
            row = self._conn.execute(
                "SELECT next_offset FROM commits WHERE topic_id = ? AND grp = ?", (topic_id, group)
            ).fetchone()
            first = self._conn.execute(f"SELECT min(seq) FROM topic_{int(topic_id)}").fetchone()[0]
            return max(0 if row is None else row[0], end if first is None else first)

        return self._run("committed", read)

    def trim(self, topic: str, before: int) -> None:
        def delete() -> None:
            row = self._conn.execute("SELECT id FROM topics WHERE name = ?", (topic,)).fetchone()
            if row is not None:
                self._conn.execute(f"DELETE FROM topic_{int(row[0])} WHERE seq < ?", (int(before),))

        self._run(f"trim {topic!r}", delete)

    def _close(self) -> None:
        with self._lock:
            self._conn.close()


class SqliteConsumer(Consumer[T]):
    """A consumer of a :class:`SqliteLog` topic; the only open one of its group (file lock)."""

    def __init__(self, log: SqliteLog, topic: str, group: str, record_type: type[T], start: Start) -> None:
        super().__init__(topic, group, record_type)
        self._log = log
        self._lock_file = self._take_group_lock()
        try:
            self._topic_id, self._position = log._run("open consumer", lambda: self._open_position(start))
        except BaseException:
            self._lock_file.close()
            raise

    def _take_group_lock(self):  # type: ignore[no-untyped-def]
        folder = self._log.path.with_name(self._log.path.name + ".groups")
        folder.mkdir(exist_ok=True)
        key = hashlib.sha1(f"{self.topic}\0{self.group}".encode()).hexdigest()[:20]
        handle = open(folder / f"{key}.lock", "a+b")  # noqa: SIM115 - held for the consumer's life
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise LogError(
                f"event log {self._log.url!r}: group {self.group!r} already has an open consumer of "
                f"topic {self.topic!r} (SQLite allows one per group; use another group or the redis backend)"
            ) from None
        return handle

    def _open_position(self, start: Start) -> tuple[int, int]:
        conn = self._log._conn
        conn.execute("BEGIN IMMEDIATE")
        topic_id = self._log._topic_id(self.topic)
        row = conn.execute("SELECT next_offset FROM commits WHERE topic_id = ? AND grp = ?", (topic_id, self.group))
        found = row.fetchone()
        if found is not None:
            position = found[0]
        elif start == "latest":
            # Pin the start now, so a crash before the first commit does not move it.
            position = conn.execute("SELECT next_offset FROM topics WHERE id = ?", (topic_id,)).fetchone()[0]
            conn.execute(
                "INSERT INTO commits(topic_id, grp, next_offset) VALUES (?, ?, ?)", (topic_id, self.group, position)
            )
        else:
            position = 0
        conn.execute("COMMIT")
        return topic_id, position

    def _fetch(self, max_records: int, timeout_s: float) -> list[tuple[int, bytes]]:
        deadline = time.monotonic() + timeout_s
        pause = 0.002
        while True:
            rows = self._log._run(
                "poll",
                lambda: self._log._conn.execute(
                    f"SELECT seq, payload FROM topic_{self._topic_id} WHERE seq >= ? ORDER BY seq LIMIT ?",
                    (self._position, max_records),
                ).fetchall(),
            )
            if rows:
                self._position = rows[-1][0] + 1
                return rows
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            time.sleep(min(pause, left))
            pause = min(pause * 2, 0.05)

    def _commit(self, upto: int, offsets: list[int]) -> None:
        self._log._run(
            "commit",
            lambda: self._log._conn.execute(
                "INSERT INTO commits(topic_id, grp, next_offset) VALUES (?, ?, ?) "
                "ON CONFLICT(topic_id, grp) DO UPDATE SET next_offset = max(next_offset, excluded.next_offset)",
                (self._topic_id, self.group, upto + 1),
            ),
        )

    def _close(self) -> None:
        self._lock_file.close()
