"""The log's contract at its edges, on every backend: bad input, raw bytes, poison records, retention."""

from __future__ import annotations

import re

import msgspec
import pytest

from streamrec.errors import InvalidInputError, LogError
from streamrec.log import Envelope, open_log
from streamrec.records import ActionEvent


def click(n: int) -> ActionEvent:
    return ActionEvent(user="u", item=f"i{n}", action="click", time=float(n))


class Delta(msgspec.Struct, frozen=True):
    rows: list[int]


@pytest.mark.parametrize(
    "url",
    ["", "nonsense", "ftp://host/x", "sqlite://", "sqlite:///", "sqlite:///:memory:", "sqlite:///no/such/dir/x.db"],
)
def test_bad_url_raises_log_error_naming_the_url(url):
    with pytest.raises(LogError) as info:
        open_log(url)
    assert repr(url) in str(info.value)


def test_unreachable_redis_raises_log_error_naming_the_url():
    from streamrec.redis_server import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(LogError, match=re.escape(url)):
        open_log(url)


def test_sqlite_file_that_is_not_a_database_is_refused(tmp_path):
    path = tmp_path / "x.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(LogError, match=r"x\.db"):
        open_log(f"sqlite://{path}")


def test_append_of_a_wrong_type_raises_and_appends_nothing_of_the_call(logs):
    log = logs.open()
    log.append("actions", [click(0)])
    for bad in ([click(1), {"user": "u"}], [click(1), Delta(rows=[1])], [b"raw", click(1)], click(1), [3]):
        with pytest.raises(InvalidInputError) as info:
            log.append("actions", bad)
        assert "records" in info.value.field
    with pytest.raises(InvalidInputError, match="records\\[0\\]"):
        log.append("actions", [click(1)], record_type=Delta)
    assert log.end_offset("actions") == 1


@pytest.mark.parametrize("topic", ["", "a b", "x" * 250, "ü", 7])
def test_bad_topic_names_are_refused(logs, topic):
    log = logs.open()
    with pytest.raises(InvalidInputError, match="topic"):
        log.append(topic, [click(0)])
    with pytest.raises(InvalidInputError, match="topic"):
        log.consumer(topic, "g", ActionEvent)


def test_bad_consumer_arguments_are_refused(logs):
    log = logs.open()
    with pytest.raises(InvalidInputError, match="record_type"):
        log.consumer("t", "g", dict)
    with pytest.raises(InvalidInputError, match="start"):
        log.consumer("t", "g", ActionEvent, start="middle")
    with log.consumer("t", "g", ActionEvent) as consumer:
        for kwargs in ({"max_records": 0}, {"timeout_s": -1}, {"timeout_s": float("nan")}):
            with pytest.raises(InvalidInputError):
                consumer.poll(**kwargs)


def test_empty_append_returns_no_offsets_and_writes_nothing(logs):
    log = logs.open()
    assert log.append("actions", []) == []
    assert log.end_offset("actions") == 0


def test_raw_bytes_round_trip_and_other_struct_types(logs):
    log = logs.open()
    blobs = [b"", b"\x00\xff" * 1000, bytearray(b"delta")]
    assert log.append("deltas", blobs) == [0, 1, 2]
    log.append("model", [Delta(rows=[1, 2]), Delta(rows=[])])
    with log.consumer("deltas", "serving", bytes) as consumer:
        assert [e.record for e in consumer.poll(10, timeout_s=0)] == [bytes(b) for b in blobs]
    with log.consumer("model", "serving", Delta) as consumer:
        assert [e.record for e in consumer.poll(10, timeout_s=0)] == [Delta(rows=[1, 2]), Delta(rows=[])]


def test_poison_record_stops_the_consumer_at_its_offset(logs):
    log = logs.open()
    log.append("actions", [click(0), click(1)])
    log.append("actions", [b"not an action"])
    log.append("actions", [click(3)])
    with log.consumer("actions", "g", ActionEvent) as consumer:
        assert [e.offset for e in consumer.poll(10, timeout_s=0)] == [0, 1]  # the good ones first
        consumer.commit()
        for _ in range(2):  # it does not skip the bad record silently
            with pytest.raises(LogError, match="offset 2"):
                consumer.poll(10, timeout_s=0)
    assert log.committed("actions", "g") == 2


def test_start_latest_skips_history_and_is_pinned_before_the_first_commit(logs):
    log = logs.open()
    log.append("actions", [click(0), click(1)])
    consumer = log.consumer("actions", "fresh", ActionEvent, start="latest")
    assert consumer.poll(10, timeout_s=0) == []
    log.append("actions", [click(2)])
    assert [e.offset for e in consumer.poll(10, timeout_s=0)] == [2]
    consumer.close()  # no commit
    with log.consumer("actions", "fresh", ActionEvent, start="latest") as again:
        assert [e.offset for e in again.poll(10, timeout_s=0)] == [2]


def test_trim_drops_old_records_and_never_reuses_offsets(logs):
    log = logs.open()
    log.append("actions", [click(n) for n in range(10)])
    log.trim("actions", 6)
    assert log.append("actions", [click(10)]) == [10]
    with log.consumer("actions", "g", ActionEvent) as consumer:
        assert [e.offset for e in consumer.poll(100, timeout_s=0)] == [6, 7, 8, 9, 10]


def test_trimmed_records_pending_for_a_consumer_are_skipped_not_fatal(logs):
    log = logs.open()
    log.append("actions", [click(n) for n in range(6)])
    with log.consumer("actions", "g", ActionEvent) as consumer:
        assert len(consumer.poll(4, timeout_s=0)) == 4  # delivered, not committed
    log.trim("actions", 2)
    with log.consumer("actions", "g", ActionEvent) as consumer:
        assert [e.offset for e in consumer.poll(100, timeout_s=0)] == [2, 3, 4, 5]
        consumer.commit()
    assert log.committed("actions", "g") == 6


def test_poll_waits_for_records_up_to_the_timeout(logs):
    import threading
    import time

    log = logs.open()
    writer = logs.open(log.url)
    with log.consumer("actions", "g", ActionEvent) as consumer:
        started = time.monotonic()
        assert consumer.poll(10, timeout_s=0.2) == []
        assert 0.15 <= time.monotonic() - started < 2
        timer = threading.Timer(0.1, lambda: writer.append("actions", [click(0)]))
        timer.start()
        got = consumer.poll(10, timeout_s=5)
        timer.join()
        assert [e.record for e in got] == [click(0)]


def test_commit_of_an_envelope_from_elsewhere_is_refused(logs):
    log = logs.open()
    log.append("actions", [click(0)])
    with log.consumer("actions", "g", ActionEvent) as consumer:
        with pytest.raises(InvalidInputError, match="envelope"):
            consumer.commit("everything")
        consumer.poll(10, timeout_s=0)
        with pytest.raises(InvalidInputError, match="envelope"):
            consumer.commit(Envelope(0, click(0), "impressions"))
    assert log.committed("actions", "g") == 0


def test_closed_log_and_consumer_refuse_use(logs):
    log = logs.open()
    consumer = log.consumer("actions", "g", ActionEvent)
    consumer.close()
    consumer.close()  # idempotent
    with pytest.raises(LogError, match="closed"):
        consumer.poll()
    log.close()
    with pytest.raises(LogError, match="closed"):
        log.append("actions", [click(0)])
