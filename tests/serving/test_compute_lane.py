"""The API's compute lane: recommendations run ``compute_threads`` at a time, and the wait for the
log's append happens outside the lane (the lane computes the next request meanwhile), while every
answer still leaves only once its impressions are durable."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import pytest

from conftest import NOW
from streamrec.errors import ConfigError
from streamrec.records import Impression
from streamrec.serving.api import create_app


@contextmanager
def _server(app) -> Iterator[str]:
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


class _Watch:
    """Intervals of calls to a wrapped function, and the most that ran at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.intervals: list[tuple[float, float]] = []

    def wrap(self, fn, pause: float = 0.0):  # type: ignore[no-untyped-def]
        def wrapped(*args, **kwargs):  # type: ignore[no-untyped-def]
            with self.lock:
                self.running += 1
                self.most = max(self.most, self.running)
            start = time.monotonic()
            try:
                if pause:
                    time.sleep(pause)
                return fn(*args, **kwargs)
            finally:
                with self.lock:
                    self.running -= 1
                    self.intervals.append((start, time.monotonic()))

        return wrapped


def _get_many(base: str, users: list[str], callers: int) -> list[httpx.Response]:
    def get(user: str) -> httpx.Response:
        return httpx.get(f"{base}/v1/recommendations", params={"user_id": user, "k": 3, "now": NOW}, timeout=60)

    with ThreadPoolExecutor(callers) as pool:
        return list(pool.map(get, users))


@pytest.mark.parametrize("threads", [1, 3])
def test_concurrent_requests_run_at_most_compute_threads_at_once(own_world, threads):
    rec = own_world.recommender()
    watch = _Watch()
    rec.begin = watch.wrap(rec.begin, pause=0.02)  # long enough for the callers to pile up
    with _server(create_app(rec, compute_threads=threads)) as base:
        answers = _get_many(base, [f"u{i % 7}" for i in range(18)], callers=8)
    assert [r.status_code for r in answers] == [200] * 18
    assert all(len(r.json()["items"]) == 3 for r in answers)
    assert len(watch.intervals) == 18
    assert watch.most <= threads
    if threads == 1:
        assert watch.most == 1


def test_an_answer_leaves_once_its_impressions_are_durable_and_the_lane_moves_on_meanwhile(own_world):
    rec = own_world.recommender()
    log = own_world.log
    begins, appends = _Watch(), _Watch()
    rec.begin = begins.wrap(rec.begin)
    appender = rec._impressions
    appender.log = type("SlowLog", (), {})()  # the real log, each append 60 ms slower (a slow disk)
    appender.log.append = appends.wrap(log.append, pause=0.06)
    topic = rec.config.impressions_topic
    seen_durable: list[bool] = []

    def get(user: str) -> None:
        r = httpx.get(f"{base}/v1/recommendations", params={"user_id": user, "k": 3, "now": NOW}, timeout=60)
        assert r.status_code == 200, r.text
        request_id = r.json()["request_id"]
        with log.consumer(topic, f"check-{request_id}", Impression) as consumer:  # read from the start
            got: list[Impression] = []
            while len(got) < log.end_offset(topic):
                got += [e.record for e in consumer.poll(100_000, 0.2)]
        seen_durable.append(sum(i.request_id == request_id for i in got) == 3)

    with _server(create_app(rec, compute_threads=1)) as base, ThreadPoolExecutor(6) as pool:
        list(pool.map(get, [f"u{i % 7}" for i in range(12)]))
    assert seen_durable == [True] * 12
    # Requests shared appends (each append is slow: they piled up behind it) ...
    assert len(appends.intervals) < 12
    # ... and the lane computed while an append was running (it did not wait for the disk).
    assert any(a0 < b0 < a1 for b0, _ in begins.intervals for a0, a1 in appends.intervals)
    assert begins.most == 1


def test_a_failed_append_answers_503_resend(own_world):
    rec = own_world.recommender()
    appender = rec._impressions

    class BrokenLog:
        def append(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            from streamrec.errors import LogError

            raise LogError("disk full (a test)")

    appender.log = BrokenLog()
    with _server(create_app(rec)) as base:
        r = httpx.get(f"{base}/v1/recommendations", params={"user_id": "u1", "k": 3, "now": NOW}, timeout=60)
        assert r.status_code == 503 and r.json()["resend"] is True
        assert "disk full" in r.json()["detail"]
        appender.log = own_world.log  # the lane goes on after a failure
        r = httpx.get(f"{base}/v1/recommendations", params={"user_id": "u1", "k": 3, "now": NOW}, timeout=60)
        assert r.status_code == 200


@pytest.mark.parametrize("bad", [0, -1, 65, 1.5, True, "2"])
def test_compute_threads_out_of_range_is_refused_naming_it(own_world, bad):
    with pytest.raises(ConfigError, match="compute_threads"):
        create_app(own_world.recommender(), compute_threads=bad)


def test_requests_from_several_event_loops_each_get_a_lane(own_world):
    """A TestClient used without ``with`` runs each request in an event loop of its own: the lane
    (a limiter bound to one loop) is one per loop, so none of them waits forever on another's."""
    from fastapi.testclient import TestClient

    client = TestClient(create_app(own_world.recommender()))
    with ThreadPoolExecutor(6) as pool:
        futures = [
            pool.submit(client.get, "/v1/recommendations", params={"user_id": f"u{i}", "k": 2, "now": NOW})
            for i in range(6)
        ]
        codes = [f.result(timeout=60).status_code for f in futures]
    assert codes == [200] * 6


def test_impressions_of_an_unfinished_request_are_appended_by_flush(own_world):
    rec = own_world.recommender()
    log, topic = own_world.log, rec.config.impressions_topic
    before = log.end_offset(topic)
    pending = rec.begin("u2", 3, NOW)  # computed, impressions queued, never finished
    assert log.end_offset(topic) == before
    rec.flush()
    assert log.end_offset(topic) == before + 3
    served = rec.metrics.served.collect()[0].samples
    answer = pending.finish()  # already durable: returns at once; metrics counted once
    assert pending.finish() is answer
    after = rec.metrics.served.collect()[0].samples
    counted = sum(s.value for s in after if s.name.endswith("_total")) - sum(
        s.value for s in served if s.name.endswith("_total")
    )
    assert counted == 3


def test_scores_the_model_returns_as_nan_answer_null_and_are_counted(own_world):
    import numpy as np
    from fastapi.testclient import TestClient

    rec = own_world.recommender()
    real = rec.score
    rec.score = lambda features: np.where(np.arange(len(features)) % 2 == 0, np.nan, real(features))
    with TestClient(create_app(rec)) as client:
        r = client.get("/v1/recommendations", params={"user_id": "u4", "k": 50, "now": NOW})
    assert r.status_code == 200
    scores = [x["score"] for x in r.json()["items"]]
    assert None in scores and any(s is not None for s in scores)
    candidates = r.json()["candidates"]
    assert rec.metrics.nonfinite_scores._value.get() == (candidates + 1) // 2
