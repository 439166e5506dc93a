"""SQLite backend specifics: a file shared by several real processes, WAL mode, group members by flock, upgrade."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import time

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
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2


def test_a_second_member_of_a_one_partition_group_stands_by_until_the_first_closes(tmp_path):
    with open_log(f"sqlite://{tmp_path}/x.db") as log:
        log.append("actions", [ActionEvent(user="u", item=f"i{n}", action="click", time=1.0) for n in range(5)])
        first = log.consumer("actions", "profiles", ActionEvent)
        second = log.consumer("actions", "profiles", ActionEvent)
        assert first.assignment() == [0] and second.assignment() == []
        assert [e.offset for e in first.poll(2, timeout_s=0)] == [0, 1]
        first.commit()
        assert second.poll(10, timeout_s=0.3) == []  # the partition is the first one's
        first.close()
        got = []
        deadline = time.monotonic() + 5
        while len(got) < 3 and time.monotonic() < deadline:
            got += second.poll(10, timeout_s=0.2)
        assert [e.offset for e in got] == [2, 3, 4]  # from the committed offset, nothing skipped
        second.close()


def test_a_killed_members_partitions_move_to_the_live_one(tmp_path):
    url = f"sqlite://{tmp_path}/x.db"
    holder = textwrap.dedent(
        """
        import sys, time
        from streamrec.log import open_log
        from streamrec.records import ActionEvent
        with open_log(sys.argv[1]) as log, log.consumer("actions", "g", ActionEvent) as c:
            deadline = time.monotonic() + 20
            while len(c.assignment()) < 2 and time.monotonic() < deadline:
                c.poll(1, timeout_s=0.1)
            print(",".join(map(str, c.assignment())), flush=True)
            time.sleep(600)
        """
    )
    with open_log(url) as log:
        log.create_topic("actions", partitions=4)
        mine = log.consumer("actions", "g", ActionEvent)
        proc = subprocess.Popen([sys.executable, "-c", holder, url], stdout=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 20
            while len(mine.assignment()) > 2 and time.monotonic() < deadline:
                mine.poll(1, timeout_s=0.1)  # gives up the partitions the newcomer wants
            theirs = [int(p) for p in proc.stdout.readline().strip().split(",")]
            assert len(theirs) == 2 and sorted(mine.assignment() + theirs) == [0, 1, 2, 3]
            proc.kill()
            proc.wait()
            killed = time.monotonic()
            while mine.assignment() != [0, 1, 2, 3] and time.monotonic() < killed + 5:
                mine.poll(1, timeout_s=0.1)
            assert mine.assignment() == [0, 1, 2, 3]
            assert time.monotonic() - killed < 2 * 0.5 + 1  # one membership tick, not a session timeout
        finally:
            proc.kill()
            mine.close()


def test_a_version_1_file_is_upgraded_in_place(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:  # the layout streamrec 0.1 wrote
        conn.executescript(
            """
            CREATE TABLE topics (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
                                 next_offset INTEGER NOT NULL DEFAULT 0);
            CREATE TABLE commits (topic_id INTEGER NOT NULL, grp TEXT NOT NULL, next_offset INTEGER NOT NULL,
                                  PRIMARY KEY (topic_id, grp));
            CREATE TABLE topic_1 (seq INTEGER PRIMARY KEY, payload BLOB NOT NULL);
            INSERT INTO topics VALUES (1, 'raw', 3);
            INSERT INTO topic_1 VALUES (0, x'61'), (1, x'62'), (2, x'63');
            INSERT INTO commits VALUES (1, 'g', 2);
            PRAGMA user_version = 1;
            """
        )
    with open_log(f"sqlite://{path}") as log:
        assert log.partitions("raw") == 1 and log.end_offsets("raw") == [3]
        assert log.committed("raw", "g") == 2
        with log.consumer("raw", "g", bytes) as consumer:
            assert [(e.offset, e.record) for e in consumer.poll(10, timeout_s=0)] == [(2, b"c")]
        assert log.append("raw", [b"d"]) == [3]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2


def test_relative_and_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open_log("sqlite://rel.db") as log:
        log.append("t", [b"x"])
    assert (tmp_path / "rel.db").exists()
    with open_log(f"sqlite://{tmp_path}/rel.db") as log:
        assert log.end_offset("t") == 1
