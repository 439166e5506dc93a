"""``open_log(url)``: the one place a URL becomes an event log backend.

The scheme picks the backend so that configuration, not code, decides between the embedded log
(``sqlite:///path``), the networked one (``redis://host:port/db``) and production Kafka
(``kafka://host:port``). Backends are imported only when chosen, so the SQLite default needs
neither a Redis client connection nor confluent-kafka.
"""

from __future__ import annotations

from pathlib import Path

from streamrec.errors import LogError
from streamrec.log.base import EventLog

__all__ = ["open_log"]

_USAGE = "expected sqlite:///path/to/file.db, redis://host:port/db or kafka://host:port"


def _sqlite_path(url: str, rest: str) -> Path:
    # sqlite:///abs/path.db -> /abs/path.db ; sqlite://rel/path.db -> rel/path.db
    path = rest.split("?", 1)[0]
    if not path or path in ("/", ":memory:", "/:memory:"):
        raise LogError(f"bad event log URL {url!r}: needs a file path (an in-memory database cannot be shared)")
    return Path(path)


def open_log(url: str) -> EventLog:
    """Open the event log at ``url``; the scheme picks the backend.

    Parameters
    ----------
    url
        ``sqlite:///path/to/file.db`` (embedded; the file is created if missing),
        ``redis://host:port/db`` (Redis >= 7.0; ``?prefix=`` sets the key prefix), or
        ``kafka://host:port[,host:port]`` (needs ``pip install 'streamrec[kafka]'``; ``?prefix=``,
        ``replication=``, ``session_s=``, ``fetch_wait_ms=``: see :mod:`streamrec.log.kafka`).

    Raises
    ------
    LogError
        The URL is malformed, its scheme is unknown, or the backend cannot be reached; the message
        names the URL.
    """
    if not isinstance(url, str):
        raise LogError(f"bad event log URL {url!r}: must be a string; {_USAGE}")
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise LogError(f"bad event log URL {url!r}: no scheme; {_USAGE}")
    if scheme == "sqlite":
        from streamrec.log.sqlite import SqliteLog

        return SqliteLog(url, _sqlite_path(url, rest))
    if scheme in ("redis", "rediss", "unix"):
        from streamrec.log.redis_streams import RedisLog

        return RedisLog(url)
    if scheme == "kafka":
        from streamrec.log.kafka import KafkaLog

        return KafkaLog(url)
    raise LogError(f"bad event log URL {url!r}: unknown scheme {scheme!r}; {_USAGE}")
