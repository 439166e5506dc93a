"""The dashboard in headless Chromium (Debian's ``chromium``, driven by Playwright): the real app
under uvicorn, traffic and model updates flowing while the page is open.

Pins down: the page loads and asks for the token; its charts update as requests, clicks and sparse
model updates flow (the data attributes the script sets after each refresh, and coloured pixels on
the canvases); a profile lookup shows the features of a user with events; a try-out shows k items.

Skipped only where ``chromium`` is missing and ``CI`` is unset; in CI it runs (``.ci/run``
installs ``chromium``). Playwright is told where the browser is: no ``playwright install``.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import threading
import time

import httpx
import numpy as np
import pytest

from conftest import NOW
from streamrec.embedding.delta import CollectionDelta, TableDelta
from streamrec.serving import Recommender, RecommenderConfig
from streamrec.serving.api import create_app
from streamrec.serving.live import LiveStats
from streamrec.serving.retrieval import RetrievalConfig
from streamrec.training.serving_model import ServingModel
from streamrec.training.updates import ModelUpdate

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
TOKEN = "browser-token"

pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="Debian's chromium is not installed (apt-get install chromium); CI installs it and runs this test",
)

# pixels of the series colours (not the white background or the grey grid and labels)
COLOURED_PIXELS = """(id) => {
  const c = document.getElementById(id);
  const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) {
    if (Math.max(d[i], d[i + 1], d[i + 2]) - Math.min(d[i], d[i + 1], d[i + 2]) > 60) n++;
  }
  return n;
}"""


@pytest.fixture(scope="module")
def server(world, own_world):
    """The app under uvicorn on a free port, over its own copy of the model (updates are applied to it)."""
    import uvicorn

    model = ServingModel.from_snapshot(f"{world.folder}/deepfm.snapshot")
    cfg = RecommenderConfig(features=own_world.plan, retrieval=RetrievalConfig(quotas={"popular": 30, "fresh": 10}))
    live = LiveStats(click_window_s=1.0)  # impressions finalize fast, so the AUC chart fills within seconds
    rec = Recommender(own_world.client, own_world.log, model, cfg, clock=lambda: NOW, live=live)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(create_app(rec, token=TOKEN), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert uv.started
    yield f"http://127.0.0.1:{port}", rec
    uv.should_exit = True
    thread.join(10)


class Traffic:
    """A thread of recommend requests, clicks on some served items, and sparse model updates."""

    def __init__(self, base: str, model: ServingModel) -> None:
        self.base = base
        self.model = model
        self.stop = threading.Event()
        self.requests = 0
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)

    def _run(self) -> None:
        rng = random.Random(7)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        version = self.model.version
        next_update = 0.0
        with httpx.Client(base_url=self.base, headers=headers, timeout=10) as client:
            while not self.stop.is_set():
                user = f"u{rng.randrange(24)}"
                r = client.get("/v1/recommendations", params={"user_id": user, "k": 5})
                if r.status_code != 200:
                    self.errors.append(r.text)
                    continue
                self.requests += 1
                out = r.json()
                clicked = [x for x in out["items"] if rng.random() < x["score"]]
                if clicked:
                    events = [{"user": user, "item": x["item"], "action": "click", "time": NOW,
                               "request_id": out["request_id"]} for x in clicked]  # fmt: skip
                    if client.post("/v1/events", json={"events": events}).status_code != 200:
                        self.errors.append("events refused")
                if time.monotonic() > next_update:  # a sparse sync: 20 new ids, 5 of the last ones evicted
                    version += 1
                    fresh = np.arange(10_000 + 20 * version, 10_020 + 20 * version, dtype=np.int64)
                    gone = fresh[:5] - 20
                    delta = TableDelta("item", fresh, np.full((20, 4), 0.01, np.float32), gone)
                    payload = CollectionDelta({"item": delta}).to_bytes()
                    created = time.time() - rng.uniform(0.1, 0.5)
                    self.model.apply(ModelUpdate(kind="sparse", version=version, created_at=created, payload=payload))
                    next_update = time.monotonic() + 0.4
                time.sleep(0.02)


def _launch(playwright):
    return playwright.chromium.launch(
        executable_path=CHROMIUM or "/usr/bin/chromium",
        args=["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
    )


def _data(page, selector: str, name: str):
    return page.eval_on_selector(selector, f"e => e.dataset.{name}")


def test_the_dashboard_in_headless_chromium_loads_updates_looks_up_and_tries_out(server):
    from playwright.sync_api import sync_playwright

    base, rec = server
    with sync_playwright() as p:
        browser = _launch(p)
        try:
            # -- without a token: the page loads and asks for it; a wrong one is refused
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            page.goto(base + "/")
            page.wait_for_selector("#token-bar:not([hidden])", timeout=10_000)
            assert page.title() == "streamrec dashboard"
            assert _data(page, "body", "refreshes") == "0"
            page.fill("#token-input", "wrong")
            page.click("#token-form button")
            page.wait_for_function("document.getElementById('token-msg').textContent.includes('refused')")
            page.fill("#token-input", TOKEN)
            page.click("#token-form button")
            page.wait_for_function("Number(document.body.dataset.refreshes) >= 1", timeout=10_000)
            assert page.is_hidden("#token-bar")
            page.close()

            # -- with the token in the address fragment: charts move as traffic flows
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            page.goto(f"{base}/#token={TOKEN}")
            page.wait_for_function("Number(document.body.dataset.refreshes) >= 1", timeout=10_000)
            assert "token" not in page.url  # the fragment is dropped from the address
            idle = {c: page.evaluate(COLOURED_PIXELS, f"chart-{c}") for c in ("qps", "ctr", "auc", "latency", "lag")}
            refreshes = int(_data(page, "body", "refreshes"))
            with Traffic(base, rec.model) as traffic:
                page.wait_for_function(
                    """() => {
                      const d = (id) => document.getElementById(id).dataset;
                      const most = (id) => JSON.parse(d(id).max || "[]");
                      return most("chart-qps")[0] > 0 && most("chart-latency")[1] > 0 && most("chart-ctr")[0] > 0
                        && Number(d("chart-auc").points) > 0 && Number(d("chart-lag").points) > 0
                        && most("chart-table")[1] > 0 && most("chart-table")[2] > 0;
                    }""",
                    timeout=15_000,
                )
            assert not traffic.errors and traffic.requests > 10
            assert int(_data(page, "body", "refreshes")) >= refreshes + 2
            for chart, before in idle.items():
                assert page.evaluate(COLOURED_PIXELS, f"chart-{chart}") > before + 20, chart
            assert page.inner_text("#tile-qps") != "–" and page.inner_text("#tile-auc") != "–"
            assert "model v" in page.inner_text("#model-info")
            offered = page.eval_on_selector_all("#recent-users option", "o => o.map(x => x.value)")
            assert offered and all(u.startswith("u") for u in offered)  # the users of recent requests
            stats = httpx.get(f"{base}/v1/stats", headers={"Authorization": f"Bearer {TOKEN}"}).json()
            assert stats["totals"]["clicks"] > 0 and stats["model"]["evicted"] > 0

            # -- profile explorer: a user with events has non-zero counters by window
            page.fill("#profile-entity", "user:u3")
            page.click("#profile-form button")
            page.wait_for_selector("#profile-out[data-entity='user:u3']", timeout=10_000)
            assert float(_data(page, "#profile-out", "total")) > 0
            windows = page.eval_on_selector_all("table[data-slot='clicked_category'] tr[data-window]",
                                                "rows => rows.map(r => r.dataset.window)")  # fmt: skip
            assert windows == ["5m", "1h", "1d", "7d"]
            if os.environ.get("DASHBOARD_SCREENSHOT"):
                page.screenshot(path=os.environ["DASHBOARD_SCREENSHOT"], full_page=True)
            week = page.inner_text("table[data-slot='clicked_category'] tr[data-window='7d']").split()
            assert any(float(x) > 0 for x in week[1:] if x.replace(".", "", 1).isdigit())
            assert page.locator("table[data-top='clicked_category'] tr").count() > 1  # header + top values

            # -- try-out: k items with score and source
            page.fill("#tryout-user", "u3")
            page.fill("#tryout-k", "7")
            page.click("#tryout-form button")
            page.wait_for_selector("#tryout-out[data-items]", timeout=10_000)
            rows = page.eval_on_selector_all("#tryout-table tr.rec", "rows => rows.map(r => r.innerText.split('\\t'))")
            assert len(rows) == 7
            assert all(0 < float(r[2]) < 1 and r[3] in {"popular", "fresh"} for r in rows)
        finally:
            browser.close()
