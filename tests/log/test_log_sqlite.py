"""SQLite backend specifics: a file shared by several real processes, WAL mode, one consumer per group."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap

import pytest

from streamrec.errors import LogError
from streamrec.log import open_log
from streamrec.records import ActionEvent

APPENDER = textwrap.dedent(
    """
    import sys
    from streamrec.log import open_log
    from streamrec.records import ActionEvent
    url, tag = sys.argv[1], sys.argv[2]
    with open_log(url) as log:
        for b in range(40):
            log.append("actions", [ActionEvent(user=tag, item=f"{tag}-{b * 5 + i}", action="click", time=1.0)
                                   for i in range(5)])
    """
)


def test_two_processes_append_to_one_file_at_once(tmp_path):
    url = f"sqlite://{tmp_path}/shared.db"
    open_log(url).close()
    procs = [subprocess.Popen([sys.executable, "-c", APPENDER, url, tag]) for tag in ("a", "b")]
    with open_log(url) as log:
        for n in range(40):  # and this process too, at the same time
            log.append("actions", [ActionEvent(user="c", item=f"c-{n}", action="click", time=1.0)])
        assert [p.wait(timeout=60) for p in procs] == [0, 0]
        with log.consumer("actions", "check", ActionEvent) as consumer:
            got = consumer.poll(max_records=10_000, timeout_s=0)
    assert [e.offset for e in got] == list(range(440))  # dense, no offset given twice
    for tag, count in (("a", 200), ("b", 200), ("c", 40)):
        mine = [e.record.item for e in got if e.record.user == tag]
        assert mine == [f"{tag}-{n}" for n in range(count)]  # each writer's order is kept
    batches = [got[i].record.user for i in range(0, 440)]
    for i, env in enumerate(got):  # an append of 5 is contiguous: never interleaved with another
        if env.record.user != "c" and int(env.record.item.split("-")[1]) % 5 == 0:
            assert batches[i : i + 5] == [env.record.user] * 5


def test_a_consumer_in_another_process_sees_appends(tmp_path):
    url = f"sqlite://{tmp_path}/shared.db"
    reader = textwrap.dedent(
        """
        import sys
        from streamrec.log import open_log
        from streamrec.records import ActionEvent
        with open_log(sys.argv[1]) as log, log.consumer("actions", "remote", ActionEvent) as c:
            got = []
            while len(got) < 30:
                got += c.poll(max_records=100, timeout_s=10)
            c.commit()
            print(",".join(e.record.item for e in got))
        """
    )
    with open_log(url) as log:
        proc = subprocess.Popen([sys.executable, "-c", reader, url], stdout=subprocess.PIPE, text=True)
        for n in range(0, 30, 3):
            log.append("actions", [ActionEvent(user="u", item=str(n + i), action="click", time=1.0) for i in range(3)])
        out, _ = proc.communicate(timeout=60)
        assert out.strip().split(",") == [str(n) for n in range(30)]
        assert log.committed("actions", "remote") == 30


def test_the_file_is_in_wal_mode_with_full_sync(tmp_path):
    path = tmp_path / "x.db"
    open_log(f"sqlite://{path}").close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1


def test_one_open_consumer_per_group_until_it_closes(tmp_path):
    with open_log(f"sqlite://{tmp_path}/x.db") as log:
        first = log.consumer("actions", "profiles", ActionEvent)
        with pytest.raises(LogError, match="profiles"):
            log.consumer("actions", "profiles", ActionEvent)
        log.consumer("actions", "joiner", ActionEvent).close()  # other groups are free
        log.consumer("impressions", "profiles", ActionEvent).close()  # and other topics
        first.close()
        log.consumer("actions", "profiles", ActionEvent).close()


def test_relative_and_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open_log("sqlite://rel.db") as log:
        log.append("t", [b"x"])
    assert (tmp_path / "rel.db").exists()
    with open_log(f"sqlite://{tmp_path}/rel.db") as log:
        assert log.end_offset("t") == 1
