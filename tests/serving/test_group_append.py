"""Impressions of concurrent requests share log transactions: each record once, each caller durable."""

from __future__ import annotations

import threading

import pytest

from streamrec.log import open_log
from streamrec.records import Impression
from streamrec.serving.recommender import GroupAppender


def _impression(thread: int, call: int, position: int) -> Impression:
    return Impression(
        request_id=f"t{thread}-c{call}", user=f"u{thread}", item=f"i{position}", time=1.0,
        sparse={"item": [position]}, dense=[float(call)], position=position, score=0.5,
    )  # fmt: skip


def _read_all(log, topic: str) -> list[Impression]:
    out: list[Impression] = []
    with log.consumer(topic, "reader", Impression) as consumer:
        while len(out) < log.end_offset(topic):
            out += [e.record for e in consumer.poll(10_000, 0.2)]
    return out


def test_concurrent_appends_store_every_record_once_in_fewer_transactions(tmp_path):
    log = open_log(f"sqlite:///{tmp_path}/log.db")
    appender = GroupAppender(log, "impressions")
    threads, calls = 8, 40
    visible_at_return: list[bool] = []

    def run(t: int) -> None:
        for c in range(calls):
            appender.append([_impression(t, c, p) for p in range(3)])
            # durable and visible when append returns: the log's end covers this call's records
            visible_at_return.append(log.end_offset("impressions") >= 3)

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    got = _read_all(log, "impressions")
    keys = sorted((r.request_id, r.position) for r in got)
    assert keys == sorted((f"t{t}-c{c}", p) for t in range(threads) for c in range(calls) for p in range(3))
    assert all(visible_at_return)
    assert appender.appends < threads * calls  # transactions were shared
    log.close()


def test_one_caller_at_a_time_appends_as_before(tmp_path):
    log = open_log(f"sqlite:///{tmp_path}/log.db")
    appender = GroupAppender(log, "impressions")
    for c in range(5):
        appender.append([_impression(0, c, 0)])
        assert log.end_offset("impressions") == c + 1
    assert appender.appends == 5
    log.close()


def test_a_failed_append_raises_in_its_caller_and_stores_nothing(tmp_path):
    log = open_log(f"sqlite:///{tmp_path}/log.db")
    appender = GroupAppender(log, "impressions")
    with pytest.raises(Exception) as failed:
        appender.append([_impression(0, 0, 0), "not an impression"])
    assert not isinstance(failed.value, AssertionError)
    assert log.end_offset("impressions") == 0
    appender.append([_impression(0, 1, 0)])  # the appender goes on after a failure
    assert log.end_offset("impressions") == 1
    log.close()


def test_a_caller_that_waits_late_still_gets_its_batch_error(tmp_path):
    """The error stays with the batch: a waiter that arrives after many later appends (its batch
    appended, and failed, by another caller) is told, never answered as if durable."""
    log = open_log(f"sqlite:///{tmp_path}/log.db")
    appender = GroupAppender(log, "impressions")
    late = appender.submit([_impression(0, 0, 0), "not an impression"])
    errors = []
    for c in range(70):  # the first append takes `late`'s records along and fails; many more follow
        try:
            appender.append([_impression(2, c, 0)] if c % 2 else ["bad"])
        except Exception as exc:  # the failures are the point
            errors.append(exc)
    assert len(errors) == 35
    with pytest.raises(type(errors[0])) as failed:
        appender.wait(late)
    assert failed.value is errors[0]
    assert log.end_offset("impressions") == 35  # the good batches only
    log.close()
