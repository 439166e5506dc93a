"""``streamrec bench log``: what batching buys, and what the log costs over its raw store.

Two baselines per backend, run side by side in the same process on the same records:

* **per record** — the same log, one ``append`` call per record (one SQLite transaction, one Redis
  round trip each): what a caller gets without batching. ``append_vs_per_record`` is the speed-up
  that batched appends give.
* **raw store** — the store used directly by a careful engineer, without the log: one
  ``executemany`` transaction into a bare SQLite table with the same durability settings, one
  pipelined ``XADD`` transaction on Redis, with the payloads already encoded.
  ``append_vs_raw`` is the log's overhead (encoding, type checks, offsets); ~1 means none.

Consuming is measured as ``poll(1000)`` + ``commit()`` until the topic is drained.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from streamrec.log.open import open_log
from streamrec.records import ActionEvent


def _events(n: int) -> list[ActionEvent]:
    return [
        ActionEvent(
            user=f"user{n * 7919 % 100_000}",
            item=f"item{n * 104_729 % 10_000}",
            action=("show", "click", "like")[n % 3],
            time=1_700_000_000.0 + n,
            counters={"dwell_ms": float(n % 5000)},
            attributes={"category": f"c{n % 40}"},
            request_id=f"r{n // 10}",
        )
        for n in range(n)
    ]


def _rate(count: int, fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return count / max(time.perf_counter() - started, 1e-9)


def _measure_log(url: str, events: list[ActionEvent], per_record: int, batch: int) -> dict[str, float]:
    with open_log(url) as log:

        def batched() -> None:
            for start in range(0, len(events), batch):
                log.append("bench", events[start : start + batch])

        def one_by_one() -> None:
            for event in events[:per_record]:
                log.append("bench_single", [event])

        def consume() -> None:
            with log.consumer("bench", "bench", ActionEvent) as consumer:
                while consumer.poll(max_records=1000, timeout_s=0):
                    consumer.commit()

        return {
            "append_per_s": _rate(len(events), batched),
            "append_per_record_per_s": _rate(per_record, one_by_one),
            "consume_per_s": _rate(len(events), consume),
        }


def _raw_sqlite(path: Path, payloads: list[bytes], batch: int) -> float:
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
        return _rate(len(payloads), write)
    finally:
        conn.close()


def _raw_redis(url: str, payloads: list[bytes], batch: int) -> float:
    import redis

    client = redis.Redis.from_url(url)

    def write() -> None:
        for start in range(0, len(payloads), batch):
            pipe = client.pipeline(transaction=True)
            for payload in payloads[start : start + batch]:
                pipe.xadd("raw-bench", {b"d": payload})
            pipe.execute()

    try:
        return _rate(len(payloads), write)
    finally:
        client.close()


def run_benchmark(as_json: bool = False, quick: bool = False) -> dict[str, Any]:
    """Run the log benchmark on SQLite and (if ``redis-server`` is installed) Redis; print and return it."""
    n, per_record, batch = (2_000, 200, 500) if quick else (50_000, 2_000, 1_000)
    events = _events(n)
    payloads = [msgspec.msgpack.encode(e) for e in events]
    result: dict[str, Any] = {"records": n, "batch": batch, "per_record_sample": per_record, "backends": {}}
    folder = Path(tempfile.mkdtemp(prefix="streamrec-bench-log-"))
    try:
        sqlite_numbers = _measure_log(f"sqlite://{folder}/log.db", events, per_record, batch)
        sqlite_numbers["raw_append_per_s"] = _raw_sqlite(folder / "raw.db", payloads, batch)
        result["backends"]["sqlite"] = sqlite_numbers
        if shutil.which("redis-server"):
            from streamrec.redis_server import RedisServer

            with RedisServer() as server:
                redis_numbers = _measure_log(server.url, events, per_record, batch)
                redis_numbers["raw_append_per_s"] = _raw_redis(server.url, payloads, batch)
            result["backends"]["redis"] = redis_numbers
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    result["ratios"] = {
        f"{name}_{ratio}": round(numbers["append_per_s"] / numbers[base], 3)
        for name, numbers in result["backends"].items()
        for ratio, base in (("append_vs_per_record", "append_per_record_per_s"), ("append_vs_raw", "raw_append_per_s"))
    }
    if as_json:
        print(json.dumps(result))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"event log: {n} ActionEvents, appends of {batch}")
        for column in ("backend", "append/s", "per-record append/s", "raw store/s", "consume+commit/s"):
            table.add_column(column, justify="right")
        for name, numbers in result["backends"].items():
            table.add_row(
                name,
                f"{numbers['append_per_s']:,.0f}",
                f"{numbers['append_per_record_per_s']:,.0f}",
                f"{numbers['raw_append_per_s']:,.0f}",
                f"{numbers['consume_per_s']:,.0f}",
            )
        console = Console()
        console.print(table)
        for key, value in result["ratios"].items():
            console.print(f"{key}: {value}")
    return result
