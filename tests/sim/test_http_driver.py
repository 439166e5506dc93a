"""The HTTP driver against a real FastAPI app served by uvicorn on a free local port (no mocks).

The app is a stand-in for ``streamrec serve`` that speaks the planned API: it wraps whatever policy
the test puts in ``state["policy"]``, makes its own request ids, checks the bearer token, and
validates posted events with :func:`streamrec.records.parse_many`. Server and driver share one
process, so the test hands the server a policy over the driver's own world (same catalogue, same
clock).
"""

from __future__ import annotations

import itertools
import socket
import threading
import time

import pytest
import uvicorn
from fastapi import FastAPI, Header, HTTPException, Request

from streamrec.records import parse_many
from streamrec.sim import HttpDriver, InProcessDriver, PopularityPolicy, World

TOKEN = "sim-secret"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server():
    app = FastAPI()
    state = {"served": {}, "events": [], "auth": [], "policy": None}
    ids = itertools.count()

    def check(authorization: str | None) -> None:
        state["auth"].append(authorization)
        if authorization != f"Bearer {TOKEN}":
            raise HTTPException(401, "bad token")

    @app.get("/v1/recommendations")
    def recommendations(user_id: str, k: int = 10, authorization: str | None = Header(None)):
        check(authorization)
        request_id = f"srv-{next(ids)}"
        policy = state["policy"]
        slate = policy.recommend(user_id, k, policy.world.now)
        state["served"][request_id] = [s.item for s in slate.items]
        items = [{"item": s.item, "score": s.score, "source": s.source} for s in slate.items]
        return {"request_id": request_id, "items": items}

    @app.post("/v1/events")
    async def events(request: Request, authorization: str | None = Header(None)):
        check(authorization)
        valid, errors = parse_many((await request.json())["events"])
        if errors:
            raise HTTPException(422, [str(e) for _, e in errors])
        state["policy"].record(valid)
        state["events"].extend(valid)
        return {"accepted": len(valid)}

    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}", state
    srv.should_exit = True
    thread.join(timeout=10)


def test_http_driver_runs_traffic_through_the_api_and_joins_on_the_servers_request_ids(server):
    url, state = server
    world = World(seed=11, n_users=100)
    state["policy"] = PopularityPolicy(world)
    with HttpDriver(world, url, token=TOKEN, k=5, step_s=30.0) as driver:
        report = driver.run(minutes=5)
    total = report.total()
    assert total.requests == len(state["served"]) > 10
    assert total.impressions == 5 * total.requests
    assert driver.events_posted == len(state["events"])
    shows = [e for e in state["events"] if e.action == "show"]
    clicks = [e for e in state["events"] if e.action == "click"]
    assert len(shows) == total.impressions and len(clicks) == total.clicks
    # Every event carries the request id the server made, and the item it showed under that id.
    for event in state["events"]:
        assert event.item in state["served"][event.request_id]
    assert all(a == f"Bearer {TOKEN}" for a in state["auth"])


def test_http_driver_matches_the_in_process_driver_on_the_same_policy(server):
    url, state = server
    remote_world = World(seed=11, n_users=100)
    state["policy"] = PopularityPolicy(remote_world)
    over_http = HttpDriver(remote_world, url, token=TOKEN, step_s=30.0)
    http_report = over_http.run(minutes=3)
    over_http.close()
    local_world = World(seed=11, n_users=100)
    local = InProcessDriver(local_world, PopularityPolicy(local_world), step_s=30.0).run(minutes=3)
    # Same world, same policy, same seeds: the same requests and the same clicks.
    assert http_report.total().to_dict() == local.total().to_dict()


def test_http_driver_reports_a_rejected_token(server):
    import httpx

    url, state = server
    state["policy"] = PopularityPolicy(World(seed=11, n_users=100))
    with HttpDriver(World(seed=11, n_users=100), url, token="wrong") as driver, pytest.raises(httpx.HTTPStatusError):
        driver.run(minutes=1)
