"""Fuzzing every HTTP route of ``streamrec serve`` (issue 13): no 5xx, and nothing stored by a refusal.

Hypothesis writes requests the way a hostile client can: near-valid events and feature queries
with one field swapped for NaN, Infinity, 1e300, 2**70, a lone surrogate (``"\\ud800"``, sent as
the JSON escape Python reads back), a wrong type or a deep nest; raw bodies that are not JSON or
not UTF-8; query strings with non-numbers and non-finite numbers; wrong methods and unknown paths.
The app is the real one (``create_app``) over a real embedded profile store and a SQLite log.

After every request the stores are read back (never the app's own word for it):

* the log's ``actions`` grew by exactly the ``accepted`` count the answer reports (0 for a
  refusal), ``impressions`` by exactly the items a 200 recommendation returned;
* the profile store took exactly the accepted events (its ``accepted + too_old`` counters), never
  saw a refused one (its ``rejected`` counter never moves: refusals happen before it), and when
  nothing was accepted its WAL sequence and its answers for the fuzzed entities are unchanged.

The default run sends a few hundred requests; ``-m slow`` sends thousands. Counts by status code
are printed at the end of the module (``-s``).
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import NOW
from streamrec.serving.api import create_app

STATUS: Counter = Counter()
USERS = ["fz-u0", "fz-u1", "u3"]
ITEMS = ["fz-i0", "i3", "i7"]
PROBE = {
    "entities": [*(f"user:{u}" for u in USERS), *(f"item:{i}" for i in ITEMS), "catalog:all"],
    "features": [
        {"slot": "clicked_item", "window": "30d"},
        {"slot": "clicked_category", "window": "30d", "top_k": 5},
        {"slot": "item_ctr", "window": "30d"},
        {"slot": "catalog_items", "window": "30d", "top_k": 5},
    ],
    "now": NOW,
}


@pytest.fixture(scope="module")
def app(own_world):
    rec = own_world.recommender()
    with TestClient(create_app(rec), raise_server_exceptions=False) as client:
        yield client, own_world
    if STATUS:
        print(f"\nfuzzed HTTP requests by status: {dict(sorted(STATUS.items()))} (total {sum(STATUS.values())})")


# -- values -------------------------------------------------------------------------------------------

TEXT = st.lists(
    st.sampled_from(["a", "u1", "i3", "click", "show", "\ud800", "\udfff", "é", "\x00", " ", ":", "user:", "7d"]),
    max_size=5,
).map("".join)
NUMBER = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e300, -1e300, 1e20, 2.0**62, 253402300800.0, 0.0, -0.0, -1.0, NOW, NOW + 86400 * 2]),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.sampled_from([2**63, 2**70, -(2**63) - 1]),
)
SCALAR = st.one_of(st.none(), st.booleans(), NUMBER, TEXT)
JSON = st.recursive(
    SCALAR,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)),
    max_leaves=8,
)


def _near(valid: dict, fields: dict) -> st.SearchStrategy:
    """``valid`` with some fields swapped for drawn values, some dropped, maybe one unknown added."""

    @st.composite
    def build(draw):
        out = dict(valid)
        for name in draw(st.lists(st.sampled_from(sorted(fields)), max_size=3, unique=True)):
            out[name] = draw(st.one_of(fields[name], JSON))
        for name in draw(st.lists(st.sampled_from(sorted(valid)), max_size=1)):
            out.pop(name, None)
        if draw(st.integers(0, 9)) == 0:
            out[draw(TEXT)] = draw(JSON)
        return out

    return build()


TIME = st.one_of(st.floats(NOW - 6 * 3600, NOW), NUMBER)
EVENT = _near(
    {"user": "fz-u0", "item": "fz-i0", "action": "click", "time": NOW - 60, "attributes": {"category": "c3"}},
    {
        "user": st.one_of(st.sampled_from(USERS), TEXT),
        "item": st.one_of(st.sampled_from(ITEMS), TEXT),
        "action": st.one_of(st.sampled_from(["click", "show", "like", "share", "Click", "nope"]), TEXT),
        "time": TIME,
        "request_id": st.one_of(st.none(), TEXT),
        "attributes": st.dictionaries(st.one_of(st.just("category"), TEXT), st.one_of(TEXT, JSON), max_size=2),
        "counters": st.dictionaries(
            st.one_of(st.sampled_from(["dwell_ms", "click", "mood"]), TEXT), NUMBER, max_size=2
        ),
    },
)
PLAIN_EVENT = st.fixed_dictionaries(  # fields of the right kinds: mostly accepted, sometimes not by the store
    {
        "user": st.sampled_from(USERS),
        "item": st.sampled_from(ITEMS),
        "action": st.sampled_from(["click", "show", "like", "purchase"]),
        "time": st.one_of(st.floats(NOW - 40 * 86400, NOW + 2 * 86400), st.just(0.0)),
    },
    optional={
        "attributes": st.fixed_dictionaries({"category": st.sampled_from(["c1", "c3"])}),
        "counters": st.dictionaries(st.sampled_from(["dwell_ms", "mood"]), st.floats(0, 1e6), max_size=1),
        "request_id": st.sampled_from(["r1", "r2"]),
    },
)
FEATURE = _near(
    {"slot": "clicked_item", "window": "1d"},
    {
        "slot": st.one_of(st.sampled_from(["clicked_item", "item_ctr", "clicked_category", "catalog_items"]), TEXT),
        "window": st.one_of(st.sampled_from(["5m", "7d", "0s", "1e300", "99999999999999999999d"]), NUMBER, TEXT),
        "since": NUMBER,
        "agg": st.one_of(st.sampled_from(["counters", "ratio", "distinct"]), TEXT),
        "counters": st.lists(st.one_of(st.sampled_from(["click", "show", "dwell_ms"]), TEXT), max_size=2),
        "numerator": st.sampled_from(["click", "show", "x"]),
        "denominator": st.sampled_from(["click", "show", "x"]),
        "alpha": NUMBER,
        "beta": NUMBER,
        "top_k": st.one_of(st.integers(-2, 50), NUMBER),
        "by": st.one_of(st.sampled_from(["click", "ratio"]), TEXT),
        "values": st.lists(TEXT, max_size=2),
        "name": TEXT,
    },
)
PLAIN_FEATURE = st.fixed_dictionaries(  # a valid slot, each option of the right kind or a hostile number
    {"slot": st.sampled_from(["clicked_item", "item_ctr", "clicked_category", "catalog_items", "item_users"])},
    optional={
        "window": st.one_of(st.sampled_from(["5m", "1h", "7d", "30d"]), NUMBER),
        "since": st.one_of(st.floats(NOW - 86400, NOW), NUMBER),
        "top_k": st.integers(0, 20),
        "alpha": NUMBER,
        "beta": NUMBER,
        "values": st.lists(st.one_of(st.sampled_from(["i3", "c3", "fz-u0"]), TEXT), max_size=2),
        "name": TEXT,
    },
)
ENTITY = st.one_of(st.sampled_from(PROBE["entities"]), TEXT, st.builds(lambda t: f"user:{t}", TEXT))
QUERY = _near(
    {"entities": ["user:fz-u0"], "features": [{"slot": "clicked_item"}]},
    {
        "entities": st.lists(ENTITY, max_size=4),
        "features": st.lists(FEATURE, max_size=3),
        "now": NUMBER,
        "keys": st.lists(TEXT, max_size=1),
    },
)
PLAIN_QUERY = st.fixed_dictionaries(
    {
        "entities": st.lists(st.one_of(st.sampled_from(PROBE["entities"]), ENTITY), min_size=1, max_size=4),
        "features": st.lists(st.one_of(PLAIN_FEATURE, FEATURE), min_size=1, max_size=3),
    },
    optional={"now": st.one_of(st.just(NOW), NUMBER)},
)
RAW = st.one_of(
    st.binary(max_size=40),
    st.sampled_from(
        [b"", b"{", b"null", b"[]", b'{"events": {}}', b'{"events": [1, "x", null]}', b"[" * 5000 + b"]" * 5000,
         b'{"events": [' + b"[" * 3000 + b"]" * 3000 + b"]}", b"\xff\xfe", b'{"events": [], "x": 1e999999}',
         '{"entities": ["user:\udcff"]}'.encode("utf-8", "surrogatepass")]
    ),
)  # fmt: skip
QUERY_TEXT = st.one_of(
    st.sampled_from(["nan", "NaN", "inf", "-inf", "1e20", "1e400", "-1", "0", "", "1.5", "x", "10"]),
    st.integers(-(2**70), 2**70).map(str),
    st.floats().map(str),
)


def _dumps(body) -> bytes:
    """JSON text as a client can write it: NaN and Infinity bare, lone surrogates as ``\\ud800``."""
    return json.dumps(body, allow_nan=True).encode()


# -- the stores, read back ---------------------------------------------------------------------------


def _stores(world) -> dict:
    stats = world.client.stats()["local"]
    return {
        "actions": world.log.end_offset("actions"),
        "impressions": world.log.end_offset("impressions"),
        "wal_seq": stats["wal_seq"],
        "taken": stats["accepted"] + stats["too_old"],
        "store_rejected": stats["rejected"],
    }


def _answers(client) -> bytes:
    r = client.post("/v1/features/query", json=PROBE)
    assert r.status_code == 200, r.text
    return r.content


def _send(client, world, method: str, path: str, **kwargs) -> None:
    world.client.flush()  # what earlier requests wrote is merged: answers move only with new writes
    before, answers = _stores(world), _answers(client)
    r = client.request(method, path, **kwargs)
    STATUS[r.status_code] += 1
    assert r.status_code < 500, (method, path, kwargs, r.status_code, r.text[:500])
    after = _stores(world)
    accepted = 0
    items = 0
    if path == "/v1/events" and r.status_code in (200, 422) and r.headers.get("content-type") == "application/json":
        accepted = r.json().get("accepted", 0)
    if path == "/v1/recommendations" and r.status_code == 200:
        items = len(r.json()["items"])
    assert after["actions"] - before["actions"] == accepted, (kwargs, r.text[:500])
    assert after["taken"] - before["taken"] == accepted, (kwargs, r.text[:500])
    assert after["impressions"] - before["impressions"] == items
    assert after["store_rejected"] == before["store_rejected"]  # a refused event never reaches the store
    if accepted == 0:
        assert after["wal_seq"] == before["wal_seq"]
        world.client.flush()
        assert _answers(client) == answers


# -- the routes ---------------------------------------------------------------------------------------


def _events(app, n: int) -> None:
    client, world = app

    events = st.lists(st.one_of(EVENT, PLAIN_EVENT), max_size=4)

    @settings(max_examples=n, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(body=st.one_of(st.builds(lambda events: {"events": events}, events), JSON, RAW))
    def run(body):
        content = body if isinstance(body, bytes) else _dumps(body)
        _send(client, world, "POST", "/v1/events", content=content, headers={"content-type": "application/json"})

    run()


def _features(app, n: int) -> None:
    client, world = app

    @settings(max_examples=n, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(body=st.one_of(PLAIN_QUERY, QUERY, JSON, RAW))
    def run(body):
        content = body if isinstance(body, bytes) else _dumps(body)
        _send(
            client, world, "POST", "/v1/features/query", content=content, headers={"content-type": "application/json"}
        )

    run()


def _recommendations(app, n: int) -> None:
    client, world = app
    user = st.one_of(st.sampled_from(USERS), st.text(max_size=6), st.just(""))
    k = st.one_of(st.sampled_from(["1", "5", "10"]), QUERY_TEXT)
    now = st.one_of(st.sampled_from(["nan", "inf", "-inf", "1e20", "-1", str(NOW)]), QUERY_TEXT)
    params = st.one_of(
        st.fixed_dictionaries({"user_id": st.sampled_from(USERS)}, optional={"k": k, "now": now}),
        st.fixed_dictionaries({}, optional={"user_id": user, "k": QUERY_TEXT, "now": QUERY_TEXT}),
    )

    @settings(max_examples=n, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(params=params)
    def run(params):
        _send(client, world, "GET", "/v1/recommendations", params=params)

    run()


OTHER = ["/healthz", "/metrics", "/v1/stats", "/v1/dashboard/config", "/", "/dashboard.js", "/openapi.json",
         "/docs", "/v1/events", "/v1/features/query", "/v1/recommendations", "/nope", "/v1/"]  # fmt: skip


def _other(app, n: int) -> None:
    client, world = app

    @settings(max_examples=n, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(
        method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]),
        path=st.sampled_from(OTHER),
        params=st.dictionaries(st.sampled_from(["seconds", "k", "x"]), QUERY_TEXT, max_size=2),
        body=st.one_of(st.none(), RAW),
    )
    def run(method, path, params, body):
        if method == "POST" and path in ("/v1/events", "/v1/features/query") and body is not None:
            body = b"null"  # the routes' own fuzzing is above; here: anything but a body they take
        _send(client, world, method, path, params=params, content=body)

    run()


FUZZ = {"events": _events, "features_query": _features, "recommendations": _recommendations, "other": _other}
DEFAULT = {"events": 150, "features_query": 120, "recommendations": 60, "other": 60}


@pytest.mark.parametrize("route", list(FUZZ))
def test_fuzzed_requests_never_answer_5xx_and_a_refusal_stores_nothing(app, route):
    before = sum(STATUS.values())
    FUZZ[route](app, DEFAULT[route])
    assert sum(STATUS.values()) - before >= DEFAULT[route] // 2


@pytest.mark.slow
@pytest.mark.parametrize("route", list(FUZZ))
def test_fuzzed_requests_thousands(app, route, request):
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("thousands of fuzzed requests: select with -m slow")
    before = sum(STATUS.values())
    FUZZ[route](app, DEFAULT[route] * 8)
    assert sum(STATUS.values()) - before >= DEFAULT[route] * 4
