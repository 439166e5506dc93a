"""Redis backend specifics: several consumers in one group, taking over a dead consumer's records,
and acknowledged appends surviving kill -9 of an AOF-backed server."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid

import pytest

from streamrec.log import open_log
from streamrec.records import ActionEvent

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")


def events(start: int, stop: int) -> list[ActionEvent]:
    return [ActionEvent(user="u", item=str(n), action="click", time=1.0) for n in range(start, stop)]


def fresh(redis_url: str, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"prefix": f"t{uuid.uuid4().hex[:8]}:", **params}.items())
    return f"{redis_url}?{query}"


def test_consumers_of_one_group_split_the_records(redis_url):
    with open_log(fresh(redis_url)) as log:
        log.append("actions", events(0, 100))
        a = log.consumer("actions", "g", ActionEvent, name="a")
        b = log.consumer("actions", "g", ActionEvent, name="b")
        got_a = a.poll(30, timeout_s=0)
        got_b = b.poll(1000, timeout_s=0)
        got_a += a.poll(1000, timeout_s=0)
        a.commit()
        b.commit()
        offsets_a, offsets_b = {e.offset for e in got_a}, {e.offset for e in got_b}
        assert offsets_a.isdisjoint(offsets_b)
        assert offsets_a | offsets_b == set(range(100))
        assert log.committed("actions", "g") == 100


def test_a_live_consumer_takes_over_records_a_dead_one_left_pending(redis_url):
    with open_log(fresh(redis_url, claim_idle_s="0.2")) as log:
        log.append("actions", events(0, 10))
        dead = log.consumer("actions", "g", ActionEvent, name="dead")
        assert len(dead.poll(6, timeout_s=0)) == 6  # then it dies: no commit, never comes back
        live = log.consumer("actions", "g", ActionEvent, name="live")
        first = live.poll(100, timeout_s=0)
        assert [e.offset for e in first] == [6, 7, 8, 9]  # the dead one's records are not idle yet
        live.commit()
        time.sleep(0.3)
        taken = live.poll(100, timeout_s=0)
        assert sorted(e.offset for e in taken) == [0, 1, 2, 3, 4, 5]
        live.commit()
        assert log.committed("actions", "g") == 10
        time.sleep(0.3)
        assert live.poll(100, timeout_s=0) == []  # its own uncommitted records are not re-claimed


def restart(server) -> None:
    """Start redis-server again on the same port and data directory (the AOF is replayed)."""
    server._proc = subprocess.Popen(
        [server.binary, "--port", str(server.port), "--bind", "127.0.0.1", "--dir", str(server._dir),
         "--save", "", "--appendonly", "yes", "--appendfsync", "always"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def test_acknowledged_appends_survive_kill9_of_an_aof_server():
    from streamrec.redis_server import RedisServer

    with RedisServer(appendonly=True) as server:
        log = open_log(server.url)
        acked = []
        for n in range(0, 200, 20):
            acked += log.append("actions", events(n, n + 20))
        with log.consumer("actions", "g", ActionEvent) as consumer:
            consumer.poll(50, timeout_s=0)
            consumer.commit()
        log.close()
        server.kill()
        restart(server)
        deadline = time.monotonic() + 10
        while True:
            try:
                log = open_log(server.url)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        with log:
            assert log.end_offset("actions") == 200
            assert log.committed("actions", "g") == 50
            with log.consumer("actions", "g", ActionEvent) as consumer:
                got = consumer.poll(1000, timeout_s=0)
            assert [e.offset for e in got] == list(range(50, 200))
            assert [e.record for e in got] == events(50, 200)
        assert acked == list(range(200))
