"""The HTTP API through FastAPI's TestClient (httpx), and once through a real uvicorn server."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from conftest import NOW
from streamrec.serving.api import create_app

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def api(own_world):
    app = create_app(own_world.recommender(), token=TOKEN)
    with TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client


def _event(user="api-u1", item="i3", **extra):
    return {"user": user, "item": item, "action": "click", "time": NOW - 5, "attributes": {"category": "c3"}, **extra}


def test_events_batch_with_a_bad_event_is_422_naming_the_field_and_keeps_the_valid_ones(api, own_world):
    before = own_world.log.end_offset("actions")
    body = {"events": [_event(), _event(time="yesterday"), _event(user=""), _event(item="i4")]}
    r = api.post("/v1/events", json=body)
    assert r.status_code == 422
    out = r.json()
    assert out["accepted"] == 2
    assert [(e["index"], e["field"]) for e in out["rejected"]] == [(1, "time"), (2, "user")]
    assert "yesterday" in str(out["rejected"][0]["value"])
    assert own_world.log.end_offset("actions") == before + 2  # both valid events landed in the log
    own_world.client.flush()
    q = {"entities": ["user:api-u1"], "features": [{"slot": "clicked_item", "window": "1h", "counters": ["click"]}]}
    assert api.post("/v1/features/query", json=q).json()["results"][0]["clicked_item:counters:1h"] == 2.0


def test_a_valid_batch_is_200_with_the_accepted_count(api):
    r = api.post("/v1/events", json={"events": [_event(user="api-u2"), _event(user="api-u2", item="i9")]})
    assert r.status_code == 200 and r.json() == {"accepted": 2, "rejected": []}
    assert api.post("/v1/events", json=[1, 2]).status_code == 422


def test_recommendations_have_items_scores_sources_and_a_request_id(api):
    r = api.get("/v1/recommendations", params={"user_id": "u3", "k": 7, "now": NOW})
    assert r.status_code == 200
    out = r.json()
    assert len(out["request_id"]) == 32 and len(out["items"]) == 7
    assert all(set(x) == {"item", "score", "source"} for x in out["items"])
    scores = [x["score"] for x in out["items"]]
    assert scores == sorted(scores, reverse=True) and all(0 < s < 1 for s in scores)
    assert set(out["timings_ms"]) == {"retrieve", "features", "rank", "log"}
    bad = api.get("/v1/recommendations", params={"user_id": "u3", "k": 0})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][-1] == "k"


def test_features_query_answers_json_and_names_a_bad_field(api):
    q = {"entities": ["user:u3"], "features": [{"slot": "clicked_category", "window": "7d", "top_k": 3}], "now": NOW}
    r = api.post("/v1/features/query", json=q)
    assert r.status_code == 200
    table = r.json()["results"][0]["clicked_category:counters:7d"]
    assert 1 <= len(table) <= 3
    bad = api.post("/v1/features/query", json={"entities": ["user:u3"], "features": [{"slot": 5}]})
    assert bad.status_code == 422 and "features" in bad.json()["detail"][0]["field"]
    unknown = api.post("/v1/features/query", json={"entities": ["user:u3"], "features": [{"slot": "nope"}]})
    assert unknown.status_code == 422 and "nope" in unknown.text


def test_token_protects_every_route_but_healthz(own_world):
    with TestClient(create_app(own_world.recommender(), token=TOKEN)) as client:
        for method, path in [("GET", "/metrics"), ("GET", "/docs"), ("GET", "/openapi.json"),
                             ("GET", "/v1/recommendations?user_id=u1"), ("POST", "/v1/events")]:  # fmt: skip
            assert client.request(method, path).status_code == 401, path
            wrong = client.request(method, path, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401, path
        assert client.get("/healthz").json()["status"] == "ok"


def test_metrics_parse_as_prometheus_text_with_routes_and_stages(api):
    api.get("/v1/recommendations", params={"user_id": "u4", "k": 3})
    r = api.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    routes = {s.labels.get("route") for s in families["streamrec_http_requests"].samples}
    assert "/v1/recommendations" in routes
    stages = {s.labels.get("stage") for s in families["streamrec_recommend_stage_seconds"].samples}
    assert {"retrieve", "features", "rank", "log"} <= stages


def test_openapi_docs_are_served(api):
    assert "swagger" in api.get("/docs").text.lower()
    paths = api.get("/openapi.json").json()["paths"]
    assert {"/v1/events", "/v1/recommendations", "/v1/features/query", "/healthz", "/metrics"} <= set(paths)


def test_a_real_uvicorn_server_on_a_free_local_port(own_world):
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(own_world.recommender(), token=TOKEN), host="127.0.0.1", port=port, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {TOKEN}"}
        assert httpx.get(f"{base}/healthz").status_code == 200
        assert httpx.get(f"{base}/v1/recommendations", params={"user_id": "u1"}).status_code == 401
        r = httpx.get(f"{base}/v1/recommendations", params={"user_id": "u1", "k": 4}, headers=headers)
        assert r.status_code == 200 and len(r.json()["items"]) == 4
        r = httpx.post(f"{base}/v1/events", json={"events": [_event(user="uv-1")]}, headers=headers)
        assert r.json() == {"accepted": 1, "rejected": []}
    finally:
        server.should_exit = True
        thread.join(10)


@contextlib.contextmanager
def _serve(tmp_path, *args: str):
    """``streamrec serve`` in a subprocess on a free port; yields (base url, headers), then its output."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "streamrec", "serve", "--port", str(port), "--token", TOKEN,
           "--log", f"sqlite:///{tmp_path}/log.db", "--profiles", str(tmp_path / "profiles"), *args]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {TOKEN}"}, output
    finally:
        proc.terminate()
        output.append(proc.communicate(timeout=20)[0])


def _recommend_when_ready(base: str, headers: dict, **params) -> list:
    items: list = []
    deadline = time.monotonic() + 10  # the store merges writes into its read table every second
    while not items and time.monotonic() < deadline:
        r = httpx.get(f"{base}/v1/recommendations", params=params, headers=headers)
        assert r.status_code == 200, r.text
        items = r.json()["items"]
        time.sleep(0.1)
    return items


def test_streamrec_serve_command_binds_localhost_and_answers(tmp_path):
    with _serve(tmp_path) as (base, headers, output):
        r = httpx.post(f"{base}/v1/events", json={"events": [_event(time=time.time())]}, headers=headers)
        assert r.json() == {"accepted": 1, "rejected": []}
        items = _recommend_when_ready(base, headers, user_id="x")
        assert [(x["item"], x["source"]) for x in items] == [("i3", "popular")]  # no model: ranked by CTR
    assert f"streamrec serve: {base}" in output[0]


def test_streamrec_serve_with_a_snapshot_and_a_config_file(tmp_path, world):
    config = tmp_path / "streamrec.toml"
    config.write_text("[serving]\ncategory_cap = 1\nsample_rate = 0.5\n")
    snapshot = f"{world.folder}/deepfm.snapshot"
    with _serve(tmp_path, "--snapshot", snapshot, "--config", str(config)) as (base, headers, _):
        assert httpx.get(f"{base}/healthz").json()["model_version"] == 0
        events = [_event(item=f"i{n}", time=time.time()) for n in (3, 9, 15)]  # all three in category c3
        assert httpx.post(f"{base}/v1/events", json={"events": events}, headers=headers).json()["accepted"] == 3
        items = _recommend_when_ready(base, headers, user_id="x", k=3)
        assert len(items) == 1 and 0 < items[0]["score"] < 1  # the cap of 1 per category, a model's score


def test_an_event_the_profile_store_refuses_is_rejected_by_field_and_not_logged(api, own_world):
    before = own_world.log.end_offset("actions")
    body = {"events": [_event(user="api-u3"), _event(user="api-u3", counters={"mood": 1.0})]}
    r = api.post("/v1/events", json=body)
    assert r.status_code == 422
    assert r.json()["accepted"] == 1
    assert [(e["index"], e["field"]) for e in r.json()["rejected"]] == [(1, "counters.mood")]
    assert own_world.log.end_offset("actions") == before + 1
