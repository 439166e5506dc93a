"""The raw stores that ``streamrec bench log`` measures the log's appends against.

Each function is the store used directly by a careful engineer who needs no log: the payloads are
already encoded (the log's encoding, type checks, key routing and offset bookkeeping are what the
comparison prices), the table, stream or topic exists before the clock starts, and it appends in the
same batches, with the same durability, as the log's backend does:

* :func:`raw_sqlite_append` — a bare ``(seq, payload)`` table in WAL mode with ``synchronous=FULL``,
  one ``BEGIN IMMEDIATE`` + ``executemany`` + ``COMMIT`` per batch: how an application writes an
  append-only table by hand, and what the SQLite log does under its topics, offsets and keys.
* :func:`raw_redis_append` — one transactional pipeline of ``XADD`` per batch on one stream: the
  Redis Streams producer loop of redis-py's documentation, one round trip per batch as the log's.
* :func:`raw_kafka_append` — a confluent-kafka (librdkafka) ``Producer`` with the log's settings
  (``acks=all``, idempotence, ``linger.ms=5``), produced to one partition and flushed per batch:
  a plain Kafka producer with the delivery guarantee the log gives.

``append_vs_raw`` near 1 means the log adds nothing over these. Each returns records per second
(:func:`streamrec.benchutil.rate` over :func:`~streamrec.benchutil.seconds` of the writes), as the
log's side is measured.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from streamrec.benchutil import rate, seconds

__all__ = ["raw_kafka_append", "raw_redis_append", "raw_sqlite_append"]


def raw_sqlite_append(path: Path, payloads: list[bytes], batch: int) -> float:
    """Payloads per second appended to a bare table at ``path``: one ``executemany`` transaction per ``batch``.

    The log's SQLite durability (WAL, ``synchronous=FULL``); the table is created before the clock starts.
    """
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY, payload BLOB NOT NULL)")

    def write() -> None:
        for start in range(0, len(payloads), batch):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT INTO t(payload) VALUES (?)", [(p,) for p in payloads[start : start + batch]])
            conn.execute("COMMIT")

    try:
        return rate(len(payloads), seconds(write))
    finally:
        conn.close()


def raw_redis_append(url: str, payloads: list[bytes], batch: int) -> float:
    """Payloads per second ``XADD``-ed to the stream ``raw-bench`` at ``url``, one ``MULTI`` pipeline per ``batch``."""
    import redis

    client = redis.Redis.from_url(url)

    def write() -> None:
        for start in range(0, len(payloads), batch):
            pipe = client.pipeline(transaction=True)
            for payload in payloads[start : start + batch]:
                pipe.xadd("raw-bench", {b"d": payload})
            pipe.execute()

    try:
        return rate(len(payloads), seconds(write))
    finally:
        client.close()


def raw_kafka_append(bootstrap: str, payloads: list[bytes], batch: int) -> float:
    """Payloads per second produced to partition 0 of a new topic ``raw-bench``, flushed per ``batch``.

    The topic is created, and one payload produced and flushed (so ``raw-bench`` holds
    ``len(payloads) + 1`` records), before the clock starts.
    """
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until its futures are done
    for future in admin.create_topics([NewTopic("raw-bench", 1, 1)]).values():
        future.result(30)
    # The log's producer settings (streamrec.log.kafka), connected and warm before the clock starts.
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 5})
    failed: list[Any] = []

    def report(err: Any, _msg: Any) -> None:
        if err is not None:
            failed.append(err)

    producer.produce("raw-bench", payloads[0], partition=0, on_delivery=report)
    producer.flush(30)

    def write() -> None:
        for start in range(0, len(payloads), batch):
            for payload in payloads[start : start + batch]:
                producer.produce("raw-bench", payload, partition=0, on_delivery=report)
            producer.flush(30)

    per_s = rate(len(payloads), seconds(write))
    if failed:
        raise RuntimeError(f"raw Kafka produce failed: {failed[0]}")
    return per_s
