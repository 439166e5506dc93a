"""The profile node over real gRPC: same answers as in process, health, metrics, bad input."""

from __future__ import annotations

import urllib.request

import grpc
import msgspec
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from streamrec.profiles import Feature, FeatureQuery, ProfileStore
from streamrec.profiles.client import ProfileClient
from streamrec.profiles.proto import profiles_pb2, profiles_pb2_grpc
from streamrec.profiles.service import ProfileNodeServer

NOW = 1_700_000_000.0

EVENTS = [
    {"user": "42", "item": "m1", "action": "click", "time": NOW - 30, "attributes": {"category": "comedy"}},
    {"user": "42", "item": "m2", "action": "show", "time": NOW - 90, "attributes": {"category": "drama"}},
    {"user": "42", "item": "m1", "action": "show", "time": NOW - 4000, "attributes": {"category": "comedy"}},
    {"user": "7", "item": "m2", "action": "click", "time": NOW - 10, "attributes": {"category": "drama"}},
]


@pytest.fixture()
def node():
    store = ProfileStore(clock=lambda: NOW, background=False)
    with ProfileNodeServer(store, metrics_port=0, own_store=True).start() as server:
        yield server


@pytest.fixture()
def stub(node):
    with grpc.insecure_channel(node.address) as channel:
        yield profiles_pb2_grpc.ProfileNodeStub(channel)


def test_query_over_grpc_matches_the_events(node):
    client = ProfileClient([node.address])
    res = client.write(EVENTS)
    assert res.accepted == 4 and res.rejected == []
    client.flush()
    features = [
        Feature(slot="clicked_category", window="1h", counters=("show", "click")),
        Feature(slot="clicked_category", window="5m", counters=("show", "click")),
        Feature(slot="clicked_category", window="1d", top_k=1, by="show"),
        Feature(slot="clicked_item", window="1d", agg="distinct"),
    ]
    got = client.query(FeatureQuery(features=features, entities=["user:42", "user:7", "user:nobody"], now=NOW))
    # By hand from EVENTS: user 42 in the last hour: 1 click + 1 show; last 5 min the same;
    # over a day comedy has 2 events (1 show), drama 1 show; two distinct items.
    assert got.results[0][0].data == [[1.0, 1.0]]
    assert got.results[0][1].data == [[1.0, 1.0]]
    assert got.results[0][2].values == ["comedy"] or got.results[0][2].values == ["drama"]
    assert got.results[0][3].data == [[2.0]]
    assert got.results[1][0].data == [[0.0, 1.0]]
    assert got.results[2][0].data == [[0.0, 0.0]]
    assert got.names[0] == "clicked_category:counters:1h"
    # And exactly what the store answers in process.
    sql = "SELECT value, sum(click) AS c FROM clicked_category WHERE entity = 'user:42' AND window = '1h'"
    sql += " ORDER BY c DESC"
    assert client.sql(sql, now=NOW).rows == node.store.sql(sql, now=NOW).rows == [["comedy", 1.0], ["drama", 0.0]]
    local = node.store.query(FeatureQuery(features=features, entities=["user:42", "user:7", "user:nobody"], now=NOW))
    assert msgspec.msgpack.encode(got) == msgspec.msgpack.encode(local)
    client.close()


def test_health_answers_serving_then_not_serving(node):
    with grpc.insecure_channel(node.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        ok = health.Check(health_pb2.HealthCheckRequest(service=""))
        assert ok.status == health_pb2.HealthCheckResponse.SERVING
        named = health.Check(health_pb2.HealthCheckRequest(service="streamrec.profiles.v1.ProfileNode"))
        assert named.status == health_pb2.HealthCheckResponse.SERVING
        # The standard servicer (grpcio-health-checking): Check of an unknown name is NOT_FOUND.
        with pytest.raises(grpc.RpcError) as info:
            health.Check(health_pb2.HealthCheckRequest(service="nope"))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        watch = health.Watch(health_pb2.HealthCheckRequest(service="nope"))
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        watch.cancel()
    node.stop()
    assert ProfileClient([node.address], timeout=1).health()[node.address].startswith("UNREACHABLE")


def test_metrics_endpoint_serves_prometheus_text(node):
    client = ProfileClient([node.address])
    client.write(EVENTS)
    client.query(FeatureQuery(features=[Feature(slot="actions")], entities=["user:42"], now=NOW))
    text = urllib.request.urlopen(f"http://127.0.0.1:{node.metrics_port}/metrics", timeout=5).read().decode()
    assert "# TYPE streamrec_profiles_requests_total counter" in text
    assert 'streamrec_profiles_requests_total{code="OK",method="Query"} 1.0' in text
    assert 'streamrec_profiles_events_total{outcome="accepted"} 4.0' in text
    assert "streamrec_profiles_request_seconds_bucket" in text
    assert "streamrec_profiles_store_entities" in text
    client.close()


def _code_and_details(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def test_bad_input_is_invalid_argument_naming_the_field(stub):
    feats = msgspec.msgpack.encode([Feature(slot="actions")])
    cases = {
        "slot": profiles_pb2.QueryRequest(features=msgspec.msgpack.encode([Feature(slot="nope")]), entities=["user:1"]),
        "features": profiles_pb2.QueryRequest(features=b"\xc1garbage", entities=["user:1"]),
        "entities": profiles_pb2.QueryRequest(features=feats, entities=["no-colon"]),
        "keys": profiles_pb2.QueryRequest(features=feats, keys=[b"short"]),
        "now": profiles_pb2.QueryRequest(features=feats, entities=["user:1"], now=float("nan")),
    }
    for field, request in cases.items():
        code, details = _code_and_details(lambda r=request: stub.Query(r))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, field
        assert details.startswith(field), (field, details)
    code, details = _code_and_details(
        lambda: stub.Write(profiles_pb2.WriteRequest(events=msgspec.msgpack.encode({"a": 1})))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("events")
    code, details = _code_and_details(lambda: stub.ImportProfiles(profiles_pb2.Profiles(keys=[b"k" * 16])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("blobs")
    code, details = _code_and_details(lambda: stub.Sql(profiles_pb2.SqlRequest(text="SELECT nope FROM")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("sql")
    # A bad event is rejected with its reason; the good one beside it is applied.
    mixed = [dict(EVENTS[0]), {"user": "1", "item": "m", "action": "click", "time": "yesterday"}]
    rep = stub.Write(profiles_pb2.WriteRequest(events=msgspec.msgpack.encode(mixed)))
    assert rep.accepted == 1 and [r.index for r in rep.rejected] == [1] and "time" in rep.rejected[0].reason


def test_client_raises_typed_errors_from_a_node(node):
    from streamrec.errors import InvalidInputError

    client = ProfileClient([node.address])
    with pytest.raises(InvalidInputError) as info:
        client.query(FeatureQuery(features=[Feature(slot="nope")], entities=["user:1"]))
    assert info.value.field == "slot"
    client.close()


def test_feature_list_changed_in_place_is_not_answered_from_a_stale_encoding(node):
    client = ProfileClient([node.address])
    client.write(EVENTS)
    client.flush()
    features = [Feature(slot="actions", window="1h")]
    q = FeatureQuery(features=features, entities=["user:42"], now=NOW)
    assert client.query(q).names == ["actions:counters:1h"]
    features[0] = Feature(slot="clicked_item", window="1d", agg="distinct")
    features.append(Feature(slot="actions", window="5m"))
    assert client.query(q).names == ["clicked_item:distinct:1d", "actions:counters:5m"]
    client.close()
