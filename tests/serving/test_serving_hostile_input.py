"""Hostile input on the HTTP API (issue 13, items 2 and 3): 422/413 naming the field, nothing stored.

Every request here is one a fuzzer found answering 500, or one that cost the server without bound.
The stores are real (embedded profile store, SQLite log); "nothing stored" is read from them: the
log's end offsets, the profile store's WAL sequence and counters, and a profile answer.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from conftest import NOW
from streamrec.errors import ConfigError, LogError
from streamrec.log import open_log
from streamrec.profiles import ProfileClient
from streamrec.serving import Recommender, RecommenderConfig, serving_profiles_config
from streamrec.serving.api import create_app
from streamrec.serving.limits import MAX_EPOCH_S, ServingLimits

SURROGATE = "\ud800"


@pytest.fixture(scope="module")
def api(own_world):
    with TestClient(create_app(own_world.recommender()), raise_server_exceptions=False) as client:
        yield client


def _event(user="hx-u1", item="i3", **extra):
    return {"user": user, "item": item, "action": "click", "time": NOW - 5, "attributes": {"category": "c3"}, **extra}


def _post(client, path, body) -> httpx.Response:
    """POST ``body`` as JSON text the way a hostile client can write it: lone surrogates as ``\\ud800``
    escapes, NaN and Infinity as bare words (Python's json reads both back)."""
    text = body if isinstance(body, str) else json.dumps(body, allow_nan=True)
    return client.post(path, content=text.encode(), headers={"content-type": "application/json"})


def _stored(world) -> tuple:
    """What a request may change: the log's topics, the profile store's WAL and counters."""
    stats = world.client.stats()["local"]
    return (
        world.log.end_offset("actions"),
        world.log.end_offset("impressions"),
        stats["wal_seq"],
        stats["accepted"],
        stats["rejected"],
        stats["too_old"],
    )


def _field(response: httpx.Response) -> tuple[str, object]:
    detail = response.json()["detail"][0]
    return detail["field"], detail.get("value")


# -- item 2: 500 instead of 422 ---------------------------------------------------------------------


@pytest.mark.parametrize("now", ["nan", "inf", "-inf", "1e20", "-1", str(MAX_EPOCH_S * 2)])
def test_a_non_finite_or_out_of_range_now_is_422_naming_now(api, own_world, now):
    before = _stored(own_world)
    r = api.get("/v1/recommendations", params={"user_id": "u3", "now": now})
    assert r.status_code == 422, r.text
    field, value = _field(r)
    assert field == "now" and str(value) in (now, repr(float(now)))
    assert _stored(own_world) == before


def test_a_nan_event_time_is_422_naming_time_and_stores_nothing(api, own_world):
    before = _stored(own_world)
    r = _post(api, "/v1/events", '{"events": [{"user": "u1", "item": "i1", "action": "click", "time": NaN}]}')
    assert r.status_code == 422, r.text
    assert r.json()["accepted"] == 0
    field, value = _field(r)
    assert field == "time" and value == "nan"
    assert _stored(own_world) == before


@pytest.mark.parametrize(
    "change,field",
    [
        ({"window": 1e300}, "features[0].window"),
        ({"window": "99999999999999999999d"}, "features[0].window"),
        ({"since": 2**70}, "features[0].since"),
        ({"since": -1e300}, "features[0].since"),
        ({"alpha": 1e309}, "features[0].alpha"),
    ],
)
def test_a_huge_window_or_since_is_422_naming_the_feature_field(api, own_world, change, field):
    before = _stored(own_world)
    q = {"entities": ["user:u3"], "features": [{"slot": "clicked_item", **change}]}
    r = _post(api, "/v1/features/query", q)
    assert r.status_code == 422, r.text
    assert _field(r)[0] == field
    assert _stored(own_world) == before


@pytest.mark.parametrize("now", ["NaN", "Infinity", "1e20", str(2**70)])
def test_a_bad_query_now_is_422_naming_now(api, now):
    r = _post(
        api, "/v1/features/query", f'{{"entities": ["user:u3"], "now": {now}, "features": [{{"slot": "item_ctr"}}]}}'
    )
    assert r.status_code == 422, r.text
    assert _field(r)[0] == "now"


EVENT_SURROGATES = {
    "user": _event(user=f"u{SURROGATE}"),
    "item": _event(item=SURROGATE),
    "action": _event(action=f"cl{SURROGATE}ck"),
    "request_id": _event(request_id=SURROGATE),
    "attributes['category']": _event(attributes={"category": SURROGATE}),
    "attributes": _event(attributes={SURROGATE: "x"}),
    "counters": _event(counters={SURROGATE: 1.0}),
}


@pytest.mark.parametrize("field", list(EVENT_SURROGATES))
def test_a_lone_surrogate_in_any_event_string_is_422_naming_it_and_reaches_neither_store(api, own_world, field):
    before = _stored(own_world)
    r = _post(api, "/v1/events", {"events": [EVENT_SURROGATES[field]]})
    assert r.status_code == 422, r.text
    assert r.json()["accepted"] == 0
    got, value = _field(r)
    assert got == field and "\\ud800" in str(value)
    assert _stored(own_world) == before


QUERY_SURROGATES = {
    "entities[0]": {"entities": [f"user:{SURROGATE}"], "features": [{"slot": "clicked_item"}]},
    "features[0].slot": {"entities": ["user:u3"], "features": [{"slot": SURROGATE}]},
    "features[0].name": {"entities": ["user:u3"], "features": [{"slot": "clicked_item", "name": SURROGATE}]},
    "features[0].counters[0]": {
        "entities": ["user:u3"],
        "features": [{"slot": "clicked_item", "counters": [SURROGATE]}],
    },
    "features[0].values[0]": {"entities": ["user:u3"], "features": [{"slot": "clicked_item", "values": [SURROGATE]}]},
    "features[0].by": {"entities": ["user:u3"], "features": [{"slot": "clicked_item", "top_k": 2, "by": SURROGATE}]},
    "features[0]": {"entities": ["user:u3"], "features": [{"slot": "clicked_item", SURROGATE: 1}]},
}


@pytest.mark.parametrize("field", list(QUERY_SURROGATES))
def test_a_lone_surrogate_anywhere_in_a_feature_query_is_422_naming_it(api, field):
    r = _post(api, "/v1/features/query", QUERY_SURROGATES[field])
    assert r.status_code == 422, r.text
    got, value = _field(r)
    assert got == field and "\\ud800" in str(value)


def test_a_batch_with_a_surrogate_request_id_stores_the_valid_events_in_both_and_the_bad_one_in_neither(api, own_world):
    """The issue's worst case: profiles counted the batch, the log refused it, retries counted again."""
    q = {"entities": ["user:hx-both"], "features": [{"slot": "clicked_item", "window": "1h", "counters": ["click"]}]}
    body = {"events": [_event(user="hx-both"), _event(user="hx-both", request_id=SURROGATE)]}
    actions = own_world.log.end_offset("actions")
    for attempt in range(1, 4):  # a client retrying the 422 three times
        r = _post(api, "/v1/events", body)
        assert r.status_code == 422 and r.json()["accepted"] == 1
        assert [(e["index"], e["field"]) for e in r.json()["rejected"]] == [(1, "request_id")]
        assert own_world.log.end_offset("actions") == actions + attempt  # the valid event, once per attempt
        own_world.client.flush()
        clicks = api.post("/v1/features/query", json=q).json()["results"][0]["clicked_item:counters:1h"]
        assert clicks == attempt  # the profiles counted exactly what the log holds


@pytest.fixture
def stack(tmp_path):
    """A recommender on stores of its own, for tests that break one of them."""
    client = ProfileClient.embedded(serving_profiles_config(), str(tmp_path / "profiles"), clock=lambda: NOW)
    log = open_log(f"sqlite:///{tmp_path}/log.db")
    rec = Recommender(client, log, None, RecommenderConfig(), clock=lambda: NOW)
    yield rec, client, log
    log.close()
    client.close()


def test_when_the_log_fails_nothing_reaches_the_profiles(stack):
    rec, client, log = stack
    wal_seq = client.stats()["local"]["wal_seq"]
    log.close()  # every append now fails
    with TestClient(create_app(rec), raise_server_exceptions=False) as api:
        r = api.post("/v1/events", json={"events": [_event()]})
    assert r.status_code == 503, r.text
    assert "nothing" in r.json()["detail"]
    assert client.stats()["local"]["wal_seq"] == wal_seq  # the log is written first: profiles untouched
    with pytest.raises(LogError):
        rec.record([_event()])
    assert client.stats()["local"]["wal_seq"] == wal_seq


class _FailingWrites:
    """The real profile client, whose writes fail while ``failing`` is set (a disk that fills up and
    is freed again cannot be staged portably; everything else is the real store)."""

    def __init__(self, client: ProfileClient) -> None:
        self._client = client
        self.failing = False

    def write(self, events):
        if self.failing:
            raise OSError(28, "No space left on device")
        return self._client.write(events)

    def __getattr__(self, name):
        return getattr(self._client, name)


def test_a_profile_write_failing_after_the_log_append_is_caught_up_once_and_never_resent(stack):
    rec, client, log = stack
    flaky = _FailingWrites(client)
    rec = Recommender(flaky, log, None, RecommenderConfig(), clock=lambda: NOW)
    q = {"entities": ["user:hx-flaky"], "features": [{"slot": "clicked_item", "window": "1h", "counters": ["click"]}]}
    with TestClient(create_app(rec), raise_server_exceptions=False) as api:
        flaky.failing = True
        r = api.post("/v1/events", json={"events": [_event(user="hx-flaky"), _event(user="hx-flaky", item="i4")]})
        assert r.status_code == 503, r.text
        out = r.json()
        assert out["logged"] == 2 and out["resend"] is False and "in the log" in out["detail"]
        assert log.end_offset("actions") == 2
        assert api.get("/healthz").json()["profiles_pending"] == 2
        # While the profiles are behind, a new batch is refused whole: nothing of it is stored.
        r = api.post("/v1/events", json={"events": [_event(user="hx-flaky", item="i5")]})
        assert r.status_code == 503 and r.json()["logged"] == 0 and r.json()["resend"] is True
        assert log.end_offset("actions") == 2
        flaky.failing = False
        r = api.post("/v1/events", json={"events": [_event(user="hx-flaky", item="i5")]})
        assert r.status_code == 200, r.text
        assert log.end_offset("actions") == 3
        client.flush()
        clicks = api.post("/v1/features/query", json=q).json()["results"][0]["clicked_item:counters:1h"]
        assert clicks == 3  # the two logged while the store failed, once, and the new one
        assert api.get("/healthz").json()["profiles_pending"] == 0


# -- item 3: limits ---------------------------------------------------------------------------------


def test_limits_are_a_validated_config_section():
    cfg = RecommenderConfig.from_dict({"limits": {"max_events": 5, "max_body_bytes": 2048}})
    assert cfg.limits.max_events == 5 and cfg.limits.max_body_bytes == 2048
    assert RecommenderConfig().limits == ServingLimits()
    with pytest.raises(ConfigError, match=r"serving\.limits\.max_entities"):
        RecommenderConfig.from_dict({"limits": {"max_entities": 0}})
    with pytest.raises(ConfigError, match=r"serving\.limits\.max_bytes"):
        RecommenderConfig.from_dict({"limits": {"max_bytes": 10}})


LIMITS = ServingLimits(
    max_body_bytes=4096, max_events=3, max_entities=5, max_features=4, max_query_cells=12, max_response_bytes=3000
)


@pytest.fixture(scope="module")
def limited(own_world):
    rec = own_world.recommender(limits=LIMITS)
    with TestClient(create_app(rec), raise_server_exceptions=False) as client:
        yield client


def test_a_body_over_the_limit_is_413_naming_the_limit_and_stores_nothing(limited, own_world):
    before = _stored(own_world)
    events = [_event(user=f"hx-big{i}") for i in range(80)]  # ~9 KB
    r = limited.post("/v1/events", json={"events": events})
    assert r.status_code == 413, r.text
    assert "max_body_bytes" in r.json()["detail"] and "4096" in r.json()["detail"]
    assert _stored(own_world) == before


def test_a_streamed_body_without_a_length_is_counted_and_cut_at_the_limit(limited, own_world):
    before = _stored(own_world)
    chunk = b" " * 1024

    def body():
        yield b'{"events": ['
        for _ in range(100):  # 100 KB of whitespace: valid JSON, far over the limit
            yield chunk
        yield b"]}"

    r = limited.post("/v1/events", content=body(), headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text
    assert "max_body_bytes" in r.json()["detail"]
    assert _stored(own_world) == before


def test_more_events_than_the_limit_is_422_naming_it(limited, own_world):
    before = _stored(own_world)
    r = limited.post("/v1/events", json={"events": [_event(user=f"hx-n{i}") for i in range(4)]})
    assert r.status_code == 422, r.text
    assert _field(r)[0] == "events" and "max_events" in r.text and "= 3" in r.text
    assert _stored(own_world) == before


@pytest.mark.parametrize(
    "entities,features,limit",
    [(6, 1, "max_entities"), (1, 5, "max_features"), (4, 4, "max_query_cells")],
)
def test_a_feature_query_over_a_count_limit_is_422_naming_the_limit(limited, entities, features, limit):
    q = {
        "entities": [f"user:u{i}" for i in range(entities)],
        "features": [{"slot": "clicked_item", "window": f"{j + 1}h"} for j in range(features)],
    }
    r = limited.post("/v1/features/query", json=q)
    assert r.status_code == 422, r.text
    assert limit in r.text


def test_an_answer_over_the_response_limit_is_422_naming_the_limit(limited):
    features = [{"slot": "item_users", "window": f"{d}d", "top_k": 1000} for d in (7, 6, 5, 4)]
    q = {"entities": [f"item:i{i}" for i in range(3)], "features": features}  # ~20 KB of users per item
    r = limited.post("/v1/features/query", json=q)
    assert r.status_code == 422, r.text
    assert "max_response_bytes" in r.text and "3000" in r.text


def test_the_issue_query_is_refused_by_the_default_limits(api):
    """4,000 entities x 1,000 features: 0.1 MB asking for a 336 MB answer."""
    features = [{"slot": "clicked_item", "window": f"{j + 1}m"} for j in range(1000)]
    q = {"entities": [f"user:u{i}" for i in range(4000)], "features": features}
    t0 = time.perf_counter()
    r = api.post("/v1/features/query", json=q)
    assert r.status_code == 422 and "max_entities" in r.text
    assert time.perf_counter() - t0 < 5.0


def test_a_real_server_answers_413_to_a_huge_content_length_without_reading_the_body(own_world):
    """The client announces 100 MB and sends nothing: the 413 must come back at once."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(own_world.recommender()), port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 104857600\r\n\r\n"
            )
            answer = b""
            while b"max_body_bytes" not in answer and (chunk := sock.recv(65536)):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 413"), answer
        assert b"serving.limits.max_body_bytes = 1048576" in answer
    finally:
        server.should_exit = True
        thread.join(10)


def test_the_limits_module_examples_run():
    import doctest

    import streamrec.serving.limits as module

    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
