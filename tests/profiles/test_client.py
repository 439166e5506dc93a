"""ProfileClient: placement, fan-out and merge, write routing, and resizing without losing a profile.

The reference is one ProfileStore fed every event: a cluster must answer exactly what it answers.
Most tests run the cluster in process (local stores: the same routing code as gRPC, no network);
one runs it over real gRPC servers.
"""

from __future__ import annotations

import random

import msgspec
import pytest

from streamrec.errors import InvalidInputError
from streamrec.profiles import Feature, FeatureQuery, ProfileStore
from streamrec.profiles.client import ProfileClient
from streamrec.profiles.service import ProfileNodeServer

NOW = 1_700_000_000.0


def clock() -> float:
    return NOW


def make_events(n: int, users: int, items: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        u, i = rng.randrange(users), rng.randrange(items)
        action = rng.choice(["show", "show", "click", "like", "rate"])
        ev = {
            "user": f"u{u}",
            "item": f"m{i}",
            "action": action,
            "time": NOW - rng.uniform(0, 3 * 86400),
            "attributes": {"category": f"c{i % 5}", "genre": f"g{i % 3}", "author": f"a{i % 11}"},
        }
        if action == "rate":
            ev["counters"] = {"rating": float(rng.randint(1, 5))}
        if action == "click":
            ev["counters"] = {"dwell_ms": float(rng.randint(100, 5000))}
        out.append(ev)
    return out


FEATURES = [
    Feature(slot="clicked_category", window="1h"),
    Feature(slot="clicked_category", window="7d", top_k=3, by="click"),
    Feature(slot="clicked_item", window="1d", agg="ratio", numerator="click", denominator="show", alpha=1, beta=5),
    Feature(slot="watched_genre", window="30d", agg="distinct"),
    Feature(slot="actions", window="3d"),
    Feature(slot="item_engagement", window="1d"),
    Feature(slot="item_last_rating", window="30d"),
]


def store() -> ProfileStore:
    return ProfileStore(clock=clock, background=False)


def local_cluster(n: int) -> tuple[ProfileClient, dict[str, ProfileStore]]:
    stores = {f"node{i}": store() for i in range(n)}
    return ProfileClient(stores), stores


def entities(users: int, items: int) -> list[str]:
    return [f"user:u{u}" for u in range(users)] + [f"item:m{i}" for i in range(items)]


def answers(client_or_store, labels: list[str]) -> bytes:
    """The answers as bytes, so NaN (``last`` of nothing) compares equal to NaN."""
    res = client_or_store.query(FeatureQuery(features=FEATURES, entities=labels, now=NOW))
    return msgspec.msgpack.encode(res.results)


@pytest.fixture(scope="module")
def events() -> list[dict]:
    return make_events(3000, users=300, items=60)


@pytest.fixture(scope="module")
def reference(events):
    ref = store()
    assert ref.write(events).accepted == len(events)
    ref.merge()
    yield ref
    ref.close()


def test_embedded_client_answers_like_the_store(events, reference):
    with ProfileClient.embedded(clock=clock, background=False) as client:
        assert client.write(events).accepted == len(events)
        client.flush()
        labels = entities(50, 20)
        assert answers(client, labels) == answers(reference, labels)
        assert client.health() == {"local": "SERVING"}


def test_cluster_answers_equal_one_store_and_nodes_hold_only_their_entities(events, reference):
    client, _stores = local_cluster(3)
    res = client.write(events)
    assert (res.accepted, res.rejected, res.too_old) == (len(events), [], 0)
    client.flush()
    labels = entities(300, 60)
    got = client.query(FeatureQuery(features=FEATURES, entities=labels, now=NOW))
    assert msgspec.msgpack.encode(got.results) == answers(reference, labels)
    assert got.keys == [reference.label_key(x) for x in labels]
    held = client.keys()
    assert sum(len(v) for v in held.values()) == len(set(reference.entity_keys())) == 360
    for name, keys in held.items():
        assert keys and all(client.ring.owner(k) == name for k in keys)  # no stray profile anywhere


def test_cluster_write_reports_each_event_once_with_its_own_index(events):
    client, _ = local_cluster(3)
    batch = list(events[:50])
    batch.insert(7, {"user": "u1", "item": "m1", "action": "click", "time": float("nan")})
    batch.insert(20, {"user": "", "item": "m2", "action": "click", "time": NOW})
    batch.insert(30, {"user": "u1", "item": "m1", "action": "click", "time": NOW - 400 * 86400})
    res = client.write(batch)
    assert res.accepted == 50 and res.too_old == 1
    assert [i for i, _ in res.rejected] == [7, 20]
    assert "time" in res.rejected[0][1] and "user" in res.rejected[1][1]


def test_resize_3_to_4_moves_about_a_quarter_and_changes_no_answer(events, reference):
    client, _stores = local_cluster(3)
    client.write(events)
    client.flush()
    labels = entities(300, 60)
    before = answers(client, labels)
    placed_before = {k: client.ring.owner(k) for keys in client.keys().values() for k in keys}
    report = client.add_node("node3", store())
    assert report["total"] == 360
    assert 0.15 <= report["moved"] / report["total"] <= 0.35
    held = client.keys()
    assert len(held["node3"]) == report["moved"]
    placed_after = {k: n for n, keys in held.items() for k in keys}
    assert placed_after.keys() == placed_before.keys()  # nothing lost, nothing duplicated
    assert sum(len(v) for v in held.values()) == 360
    assert all(placed_after[k] in (placed_before[k], "node3") for k in placed_after)
    assert answers(client, labels) == before == answers(reference, labels)
    # Writes after the resize land on the new owners and are counted once.
    more = make_events(200, users=300, items=60, seed=9)
    client.write(more)
    client.flush()
    reference2 = store()
    reference2.write(events + more)
    reference2.merge()
    assert answers(client, labels) == answers(reference2, labels)
    # And shrinking back moves node3's profiles out, still losing nothing.
    client.remove_node("node3")
    assert answers(client, labels) == answers(reference2, labels)


def test_bad_input_names_the_field():
    client, _ = local_cluster(2)
    with pytest.raises(InvalidInputError, match="entities"):
        client.query(FeatureQuery(features=FEATURES, entities=["nocolon"]))
    with pytest.raises(InvalidInputError, match="entities"):
        client.query(FeatureQuery(features=FEATURES, entities=["planet:1"]))
    with pytest.raises(InvalidInputError, match="query"):
        client.query({"features": []})  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="events"):
        client.write("not events")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="node"):
        client.add_node("node0", store())


def test_grpc_cluster_fans_out_merges_and_resizes(events, reference):
    servers = [ProfileNodeServer(store(), own_store=True).start() for _ in range(4)]
    try:
        client = ProfileClient([s.address for s in servers[:3]])
        client.write(events)
        client.flush()
        labels = entities(300, 60)
        assert answers(client, labels) == answers(reference, labels)
        report = client.add_node(servers[3].address)
        assert 0.15 <= report["moved"] / report["total"] <= 0.35
        assert answers(client, labels) == answers(reference, labels)
        assert sum(len(v) for v in client.keys().values()) == 360
        client.close()
    finally:
        for s in servers:
            s.stop()


def test_cluster_sql_runs_on_the_owner_of_its_entity(events, reference):
    client, _stores = local_cluster(3)
    client.write(events)
    client.flush()
    for u in range(0, 300, 37):
        text = (
            "SELECT value, sum(click) AS clicks, sum(show) AS shows FROM clicked_category "
            f"WHERE entity = 'user:u{u}' AND window = '7d' AND now = {NOW} ORDER BY clicks DESC LIMIT 3"
        )
        want = reference.sql(text)
        got = client.sql(text)
        assert (got.columns, got.rows) == (want.columns, want.rows)
    labels = [f"'user:u{u}'" for u in range(40)]
    with pytest.raises(InvalidInputError, match="sql"):
        client.sql(f"SELECT count(*) FROM actions WHERE entity IN ({', '.join(labels)})")
    with pytest.raises(InvalidInputError, match="sql"):
        client.sql("SELECT count(*) FROM actions")
