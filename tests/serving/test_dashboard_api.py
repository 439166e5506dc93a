"""The dashboard's routes through FastAPI's TestClient: the open page, the guarded data routes, and
``/v1/stats`` counting what went through the API (checked against a direct count)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from conftest import NOW
from streamrec.serving import Recommender, RecommenderConfig
from streamrec.serving.api import create_app
from streamrec.serving.live import SERIES, LiveStats
from streamrec.serving.retrieval import RetrievalConfig

TOKEN = "dash-token"


class Clock:
    def __init__(self) -> None:
        self.t = 5_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def setup(own_world):
    clock = Clock()
    cfg = RecommenderConfig(features=own_world.plan, retrieval=RetrievalConfig(quotas={"popular": 30, "fresh": 10}))
    live = LiveStats(click_window_s=3.0, clock=clock)
    rec = Recommender(own_world.client, own_world.log, own_world.model, cfg, clock=lambda: NOW, live=live)
    with TestClient(create_app(rec, token=TOKEN), headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client, clock, rec


def test_the_page_and_script_are_open_but_the_data_routes_need_the_token(setup):
    _, _, rec = setup
    with TestClient(create_app(rec, token=TOKEN)) as anonymous:
        page = anonymous.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        for chart in ("ctr", "auc", "qps", "latency", "lag", "table"):
            assert f'id="chart-{chart}"' in page.text
        assert '<script src="dashboard.js">' in page.text and "http" not in page.text.split("<body")[1]  # no CDN
        script = anonymous.get("/dashboard.js")
        assert script.status_code == 200 and "javascript" in script.headers["content-type"]
        assert "Authorization" in script.text
        for path in ("/v1/stats", "/v1/dashboard/config"):
            assert anonymous.get(path).status_code == 401, path
            assert anonymous.get(path, headers={"Authorization": "Bearer nope"}).status_code == 401, path


def test_stats_count_requests_impressions_and_clicks_made_through_the_api(setup):
    client, clock, _ = setup
    clock.t += 10  # a fresh bucket
    served = []
    for user in ("u1", "u2", "u3", "u4"):
        out = client.get("/v1/recommendations", params={"user_id": user, "k": 5}).json()
        served.append(out)
    clicks = [
        {"user": "u1", "item": served[0]["items"][0]["item"], "action": "click", "time": NOW,
         "request_id": served[0]["request_id"], "attributes": {"category": "c1"}},
        {"user": "u2", "item": served[1]["items"][2]["item"], "action": "like", "time": NOW,
         "request_id": served[1]["request_id"], "attributes": {"category": "c1"}},
        {"user": "u3", "item": served[2]["items"][1]["item"], "action": "show", "time": NOW,
         "request_id": served[2]["request_id"]},  # not a positive action
        {"user": "u4", "item": "not-served", "action": "click", "time": NOW, "request_id": served[3]["request_id"]},
    ]  # fmt: skip
    assert client.post("/v1/events", json={"events": clicks}).json()["accepted"] == 4
    clock.t += 4  # past the click window: 20 impressions finalized
    stats = client.get("/v1/stats", params={"seconds": 5}).json()
    series = stats["series"]
    assert set(series) == {"t", *SERIES}
    assert sum(series["requests"]) == 4 and sum(series["impressions"]) == 20
    assert sum(series["clicks"]) == 2 and sum(series["events"]) == 4
    ctr = [c for c in series["ctr"] if c is not None]
    assert ctr == [pytest.approx(2 / 20)]
    assert stats["auc"]["n"] >= 20 and stats["auc"]["value"] is not None
    assert all(p is None or p > 0 for p in series["p50_ms"]) and any(p is not None for p in series["p99_ms"])
    model = stats["model"]
    assert model["rows"] == {slot: t["ids"] for slot, t in setup[2].model.tables.stats().items()}
    assert model["version"] == setup[2].model.version
    assert stats["recent_users"][:4] == ["u4", "u3", "u2", "u1"]  # offered by the page, newest first


def test_stats_reject_a_bad_seconds_parameter_naming_it(setup):
    client, _, _ = setup
    bad = client.get("/v1/stats", params={"seconds": 0})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][-1] == "seconds"
    assert client.get("/v1/stats", params={"seconds": 10_000}).status_code == 422


def test_dashboard_config_gives_the_plan_windows_and_slots_by_entity(setup):
    client, _, rec = setup
    cfg = client.get("/v1/dashboard/config").json()
    windows = {d.window for d in rec.plan.dense if d.kind != "context"}
    assert set(cfg["windows"]) == windows and cfg["windows"][0] == "5m" and cfg["windows"][-1] == "7d"
    user_slots = {s["slot"] for s in cfg["entities"]["user"]}
    assert {"clicked_item", "clicked_category"} <= user_slots
    assert {"item_ctr", "item_users"} <= {s["slot"] for s in cfg["entities"]["item"]}
    assert cfg["token_required"] is True and cfg["max_k"] == rec.config.max_k and cfg["model"] is True


def test_openapi_documents_the_stats_routes_but_not_the_page(setup):
    client, _, _ = setup
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/stats", "/v1/dashboard/config"} <= set(paths)
    assert "/" not in paths and "/dashboard.js" not in paths
    assert "seconds" in str(paths["/v1/stats"]["get"]["parameters"])
