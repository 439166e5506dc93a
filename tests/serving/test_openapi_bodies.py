"""The OpenAPI bodies of /v1/events and /v1/features/query: generated from the msgspec types, and
the real answers of the API decode with the answer types (unknown fields forbidden)."""

from __future__ import annotations

import msgspec
import pytest
from fastapi.testclient import TestClient

from conftest import NOW
from streamrec.profiles.types import FeatureQuery
from streamrec.records import ActionEvent
from streamrec.serving.api import create_app
from streamrec.serving.openapi import EventsAnswer, EventsBody, FeaturesAnswer, RecommendationsAnswer


@pytest.fixture(scope="module")
def api(own_world):
    with TestClient(create_app(own_world.recommender())) as client:
        yield client


def _refs(node, out):
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            out.append(node["$ref"])
        for v in node.values():
            _refs(v, out)
    elif isinstance(node, list):
        for v in node:
            _refs(v, out)
    return out


def test_the_schema_names_the_bodies_and_every_reference_resolves(api):
    doc = api.get("/openapi.json").json()
    components = doc["components"]["schemas"]

    def body(path, where):
        op = doc["paths"][path]["post"]
        node = op["requestBody"] if where == "request" else op["responses"][where]
        return node["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]

    assert body("/v1/events", "request") == "EventsBody"
    assert body("/v1/events", "200") == body("/v1/events", "422") == "EventsAnswer"
    assert body("/v1/features/query", "request") == "FeatureQuery"
    assert body("/v1/features/query", "200") == "FeaturesAnswer"
    answer = doc["paths"]["/v1/recommendations"]["get"]["responses"]["200"]
    assert answer["content"]["application/json"]["schema"]["$ref"].endswith("/RecommendationsAnswer")
    # The records' fields, as msgspec itself states them (an independent call, not the module's).
    for record in (ActionEvent, FeatureQuery):
        (_,), own = msgspec.json.schema_components([record])
        expected = own[record.__name__]
        assert set(components[record.__name__]["properties"]) == set(expected["properties"])
        assert components[record.__name__].get("required") == expected.get("required")
    assert components["EventsBody"]["required"] == ["events"]
    for ref in _refs(doc, []):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in components, ref


def _event(user, **extra):
    return {"user": user, "item": "i3", "action": "click", "time": NOW - 5, "attributes": {"category": "c3"}, **extra}


def test_real_answers_decode_with_the_documented_types(api, own_world):
    good = {"events": [_event("oa-u1"), _event("oa-u1", item="i4")]}
    msgspec.convert(good, EventsBody)  # the request body this test sends is one the schema describes
    ok = msgspec.json.decode(api.post("/v1/events", json=good).content, type=EventsAnswer)
    assert ok.accepted == 2 and ok.rejected == [] and ok.detail is None
    r = api.post("/v1/events", json={"events": [_event("oa-u1"), _event("oa-u1", time="yesterday")]})
    assert r.status_code == 422
    bad = msgspec.json.decode(r.content, type=EventsAnswer)
    assert bad.accepted == 1 and [(e.index, e.field) for e in bad.rejected] == [(1, "time")] and bad.detail
    whole = msgspec.json.decode(api.post("/v1/events", json=[1, 2]).content, type=EventsAnswer)
    assert whole.accepted == 0 and whole.rejected[0].field == "events"

    own_world.client.flush()
    q = {
        "entities": ["user:oa-u1", "user:nobody"],
        "features": [
            {"slot": "clicked_item", "window": "1h", "counters": ["click"]},
            {"slot": "clicked_category", "window": "7d", "top_k": 3},
            {"slot": "clicked_category", "window": "7d"},
        ],
        "now": NOW,
    }
    msgspec.convert(q, FeatureQuery)
    r = api.post("/v1/features/query", json=q)
    assert r.status_code == 200
    answer = msgspec.json.decode(r.content, type=FeaturesAnswer)
    assert answer.entities == q["entities"] and len(answer.results) == 2
    assert answer.results[0]["clicked_item:counters:1h"] == 3.0  # the 2 + 1 clicks stored above
    assert isinstance(answer.results[0]["clicked_category:counters:7d"], dict)


def test_a_real_recommendation_decodes_with_its_documented_answer(api):
    r = api.get("/v1/recommendations", params={"user_id": "u3", "k": 4, "now": NOW})
    assert r.status_code == 200
    answer = msgspec.json.decode(r.content, type=RecommendationsAnswer)  # unknown fields forbidden
    assert len(answer.items) == 4 and answer.candidates >= 4
    assert set(answer.timings_ms) == {"retrieve", "features", "rank", "log"}
