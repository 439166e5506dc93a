"""The raw stores of ``bench log`` write every payload, in order: the ``append_vs_raw`` ratio compares equal work."""

from __future__ import annotations

import sqlite3

from streamrec.log.baselines import raw_kafka_append, raw_redis_append, raw_sqlite_append

PAYLOADS = [f"payload-{i}".encode() * (1 + i % 3) for i in range(257)]


def test_raw_sqlite_writes_every_payload_in_order(tmp_path):
    path = tmp_path / "raw.db"
    assert raw_sqlite_append(path, PAYLOADS, batch=50) > 0
    with sqlite3.connect(path) as conn:
        assert [row[0] for row in conn.execute("SELECT payload FROM t ORDER BY seq")] == PAYLOADS
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_raw_redis_writes_every_payload_in_order(redis_url):
    import redis

    client = redis.Redis.from_url(redis_url)
    client.delete("raw-bench")
    try:
        assert raw_redis_append(redis_url, PAYLOADS, batch=50) > 0
        assert [fields[b"d"] for _, fields in client.xrange("raw-bench")] == PAYLOADS
    finally:
        client.delete("raw-bench")
        client.close()


def test_raw_kafka_writes_every_payload_in_order(kafka_bootstrap):
    from confluent_kafka import Consumer, TopicPartition

    assert raw_kafka_append(kafka_bootstrap, PAYLOADS, batch=50) > 0
    consumer = Consumer(
        {"bootstrap.servers": kafka_bootstrap, "group.id": "raw-bench-test", "enable.auto.commit": False}
    )
    try:
        consumer.assign([TopicPartition("raw-bench", 0, 0)])
        got: list[bytes] = []
        for _ in range(200):
            for msg in consumer.consume(num_messages=500, timeout=0.5):
                assert msg.error() is None, msg.error()
                got.append(msg.value())
            if len(got) >= len(PAYLOADS) + 1:
                break
        assert got == [PAYLOADS[0], *PAYLOADS]  # the warm-up record, then the timed ones
    finally:
        consumer.close()
