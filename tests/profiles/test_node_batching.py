"""Queries combined for speed answer exactly what each query answers alone, and errors stay per query.

Two places combine queries: the node (``QueryBatcher``: requests in flight together become one
store call) and the client (``_QueryCombiner``: a client's concurrent calls to one node leave as one
request). The reference for both is the same store answering each query on its own; the store
itself is checked against a brute force in ``test_query_bruteforce.py``. Everything runs over a
real gRPC server on a local port.
"""

from __future__ import annotations

import asyncio
import random
import threading

import grpc
import msgspec
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from streamrec.errors import InvalidInputError
from streamrec.profiles import Feature, FeatureQuery, ProfileStore
from streamrec.profiles.client import ProfileClient, split_result
from streamrec.profiles.proto import profiles_pb2, profiles_pb2_grpc
from streamrec.profiles.service import ProfileNodeServer, QueryBatcher

NOW = 1_700_000_000.0

FEATURES_A = [
    Feature(slot="clicked_category", window="1h"),
    Feature(slot="clicked_category", window="7d", top_k=3, by="click"),
    Feature(slot="clicked_item", window="1d", agg="ratio", numerator="click", denominator="show", alpha=1, beta=5),
    Feature(slot="watched_genre", window="30d", agg="distinct"),
    Feature(slot="item_engagement", window="1d"),
]
FEATURES_B = [Feature(slot="actions", window="3d"), Feature(slot="clicked_item", window="7d", top_k=5, by="show")]


def make_events(n: int, users: int, items: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        u, i = rng.randrange(users), rng.randrange(items)
        action = rng.choice(["show", "show", "click", "like"])
        ev = {
            "user": f"u{u}",
            "item": f"m{i}",
            "action": action,
            "time": NOW - rng.uniform(0, 3 * 86400),
            "attributes": {"category": f"c{i % 5}", "genre": f"g{i % 3}", "author": f"a{i % 11}"},
        }
        if action == "click":
            ev["counters"] = {"dwell_ms": float(rng.randint(100, 5000))}
        out.append(ev)
    return out


@pytest.fixture(scope="module")
def node():
    store = ProfileStore(clock=lambda: NOW, background=False)
    assert store.write(make_events(3000, 60, 40)).accepted == 3000
    store.flush()
    with ProfileNodeServer(store, own_store=True).start() as server:
        yield server


def _queries(store: ProfileStore, n: int, seed: int) -> list[FeatureQuery]:
    """Queries of 1-3 entities (labels, keys, unknown ones, items), two feature lists, two clocks."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        labels = [f"user:u{rng.randrange(70)}" for _ in range(rng.randint(0, 2))]
        if rng.random() < 0.3:
            labels.append(f"item:m{rng.randrange(45)}")
        keys = [store.label_key(f"user:u{rng.randrange(60)}")] if rng.random() < 0.4 or not labels else []
        feats = FEATURES_A if rng.random() < 0.7 else FEATURES_B
        now = NOW if rng.random() < 0.8 else NOW - 3600
        out.append(FeatureQuery(features=feats, entities=labels, keys=keys, now=now))
    return out


def _alone(store: ProfileStore, q: FeatureQuery) -> bytes:
    return msgspec.msgpack.encode(store.query(q))


def test_split_result_cuts_a_combined_answer_into_each_parts_answer(node):
    store = node.store
    parts = _queries(store, 12, seed=1)
    parts = [FeatureQuery(features=FEATURES_A, entities=p.entities, keys=p.keys, now=NOW) for p in parts]
    combined = FeatureQuery(
        features=FEATURES_A,
        entities=[e for p in parts for e in p.entities],
        keys=[k for p in parts for k in p.keys],
        now=NOW,
    )
    pieces = split_result(store.query(combined), [(len(p.entities), len(p.keys)) for p in parts])
    assert [msgspec.msgpack.encode(x) for x in pieces] == [_alone(store, p) for p in parts]


def test_node_batcher_answers_concurrent_requests_with_one_store_call_per_feature_list(node):
    store = node.store
    queries = _queries(store, 40, seed=2)
    batcher = QueryBatcher(store)
    blobs = {id(FEATURES_A): msgspec.msgpack.encode(FEATURES_A), id(FEATURES_B): msgspec.msgpack.encode(FEATURES_B)}

    async def ask_all() -> list:
        return await asyncio.gather(
            *(batcher.query(blobs[id(q.features)], q.features, q.entities, q.keys, q.now) for q in queries)
        )

    got = asyncio.run(ask_all())
    assert [msgspec.msgpack.encode(r) for r in got] == [_alone(store, q) for q in queries]
    # All 40 arrived before the drain ran: one store call per (feature list, clock) pair.
    groups = {(id(q.features), q.now) for q in queries}
    assert batcher.requests == 40 and batcher.store_calls == len(groups)


def test_node_batcher_fails_only_the_request_with_bad_input(node):
    store = node.store
    good = _queries(store, 6, seed=3)
    good = [FeatureQuery(features=FEATURES_A, entities=q.entities, keys=q.keys, now=NOW) for q in good]
    blob = msgspec.msgpack.encode(FEATURES_A)
    batcher = QueryBatcher(store)

    async def ask_all() -> list:
        calls = [batcher.query(blob, FEATURES_A, q.entities, q.keys, NOW) for q in good]
        calls.insert(3, batcher.query(blob, FEATURES_A, ["user:1"], [b"short"], NOW))
        calls.insert(5, batcher.query(blob, FEATURES_A, ["no-colon"], [], NOW))
        return await asyncio.gather(*calls, return_exceptions=True)

    got = asyncio.run(ask_all())
    bad = [got.pop(5), got.pop(3)]
    assert [type(b) for b in bad] == [InvalidInputError, InvalidInputError]
    assert {b.field for b in bad} == {"keys", "entities"}
    assert [msgspec.msgpack.encode(r) for r in got] == [_alone(store, q) for q in good]


def test_node_batcher_bounds_the_entities_of_one_store_call(node):
    store = node.store
    blob = msgspec.msgpack.encode(FEATURES_B)
    batcher = QueryBatcher(store, max_entities=5)
    labels = [[f"user:u{i}", f"user:u{i + 1}"] for i in range(0, 20, 2)]  # 10 requests of 2 entities

    async def ask_all() -> list:
        return await asyncio.gather(*(batcher.query(blob, FEATURES_B, ls, [], NOW) for ls in labels))

    got = asyncio.run(ask_all())
    assert batcher.store_calls == 5  # two requests (4 entities) per call: a third would make 6 > 5
    for ls, r in zip(labels, got, strict=True):
        assert msgspec.msgpack.encode(r) == _alone(store, FeatureQuery(features=FEATURES_B, entities=ls, now=NOW))


def test_many_clients_at_once_over_grpc_get_exactly_their_own_answers(node):
    store = node.store
    queries = _queries(store, 240, seed=4)
    want = [_alone(store, q) for q in queries]
    shared = ProfileClient([node.address])
    separate = [ProfileClient([node.address]) for _ in range(4)]
    callers = [shared] * 4 + separate  # 4 threads share a client, 4 have their own
    got: list[bytes | None] = [None] * len(queries)
    errors: list[BaseException] = []
    start = threading.Barrier(len(callers))

    def run(i: int, client: ProfileClient) -> None:
        start.wait()
        try:
            for j in range(i, len(queries), len(callers)):
                got[j] = msgspec.msgpack.encode(client.query(queries[j]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert got == want
    combiner = shared._nodes[node.address].combiner
    assert combiner.calls == 120 and 1 <= combiner.requests <= 120
    for c in [shared, *separate]:
        c.close()


class _Gate:
    """A send function that holds its first request until released, so later calls queue behind it."""

    def __init__(self, send) -> None:
        self.send = send
        self.entered = threading.Event()
        self.release = threading.Event()
        self.sent: list[FeatureQuery] = []
        self.first = True

    def __call__(self, blob: bytes, query: FeatureQuery):
        self.sent.append(query)
        if self.first:
            self.first = False
            self.entered.set()
            assert self.release.wait(10)
        return self.send(blob, query)


def _run_queued(client: ProfileClient, node_address: str, queries: list[FeatureQuery]) -> tuple[list, _Gate]:
    """The first query in flight alone; the others queue behind it, then go as the next requests."""
    grpc_node = client._nodes[node_address]
    gate = _Gate(grpc_node._send_query)
    grpc_node.combiner._send = gate
    out: list = [None] * len(queries)

    def ask(i: int) -> None:
        try:
            out[i] = client.query(queries[i])
        except Exception as exc:
            out[i] = exc

    first = threading.Thread(target=ask, args=(0,))
    first.start()
    assert gate.entered.wait(10)
    rest = [threading.Thread(target=ask, args=(i,)) for i in range(1, len(queries))]
    for n, t in enumerate(rest, start=1):  # one at a time, so they queue in order
        t.start()
        while len(grpc_node.combiner._queue) < n:
            threading.Event().wait(0.002)
    gate.release.set()
    for t in [first, *rest]:
        t.join()
    return out, gate


def test_client_sends_calls_queued_behind_a_request_as_one_request(node):
    store = node.store
    client = ProfileClient([node.address])
    queries = [
        FeatureQuery(features=FEATURES_A, entities=[f"user:u{i}"], keys=[store.label_key(f"item:m{i}")], now=NOW)
        for i in range(6)
    ]
    queries.append(FeatureQuery(features=FEATURES_B, entities=["user:u3"], now=NOW))  # another feature list
    got, gate = _run_queued(client, node.address, queries)
    assert [msgspec.msgpack.encode(r) for r in got] == [_alone(store, q) for q in queries]
    # The first alone; the five queued with its feature list together; the other list alone.
    assert [len(q.entities) for q in gate.sent] == [1, 5, 1]
    assert gate.sent[1].entities == [f"user:u{i}" for i in range(1, 6)]
    client.close()


def test_client_fails_only_the_queued_call_with_bad_input(node):
    store = node.store
    client = ProfileClient([node.address])
    queries = [FeatureQuery(features=FEATURES_A, entities=[f"user:u{i}"], now=NOW) for i in range(5)]
    queries.insert(2, FeatureQuery(features=FEATURES_A, entities=["planet:9"], now=NOW))
    got, gate = _run_queued(client, node.address, queries)
    bad = got.pop(2)
    assert isinstance(bad, InvalidInputError) and bad.field == "entity" and "planet" in str(bad.value)
    queries.pop(2)
    assert [msgspec.msgpack.encode(r) for r in got] == [_alone(store, q) for q in queries]
    # first alone, the combined request (refused), then each of its five calls alone
    assert [len(q.entities) for q in gate.sent] == [1, 5, 1, 1, 1, 1, 1]
    client.close()


def test_bad_input_carries_rich_error_details(node):
    with grpc.insecure_channel(node.address) as channel:
        stub = profiles_pb2_grpc.ProfileNodeStub(channel)
        request = profiles_pb2.QueryRequest(features=msgspec.msgpack.encode(FEATURES_A), keys=[b"short"])
        with pytest.raises(grpc.RpcError) as info:
            stub.Query(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(info.value)
    assert status is not None and status.message == info.value.details()
    found = {}
    for detail in status.details:
        for kind in (error_details_pb2.BadRequest, error_details_pb2.ErrorInfo):
            msg = kind()
            if detail.Unpack(msg):
                found[kind.__name__] = msg
    assert found["BadRequest"].field_violations[0].field == "keys"
    assert "16 bytes" in found["BadRequest"].field_violations[0].description
    info_md = found["ErrorInfo"].metadata
    assert found["ErrorInfo"].reason == "INVALID_ARGUMENT" and found["ErrorInfo"].domain == "streamrec.profiles"
    assert info_md["field"] == "keys" and info_md["value"] == repr(b"short")
    # The client rebuilds the typed error from the details, not from the message.
    client = ProfileClient([node.address])
    with pytest.raises(InvalidInputError) as err:
        client.query(FeatureQuery(features=FEATURES_A, keys=[b"short"], now=NOW))
    assert (err.value.field, err.value.value) == ("keys", repr(b"short"))
    assert "16 bytes" in err.value.reason and str(err.value) == info.value.details()
    client.close()


def test_an_error_without_details_keeps_its_message_and_an_unknown_field():
    # A node that answers INVALID_ARGUMENT without rich details (an older node): a real gRPC server.
    def refuse(request: bytes, context: grpc.ServicerContext) -> bytes:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "window: must be positive (got -1)")

    handler = grpc.method_handlers_generic_handler(
        "streamrec.profiles.v1.ProfileNode", {"Query": grpc.unary_unary_rpc_method_handler(refuse)}
    )
    from concurrent import futures

    server = grpc.server(futures.ThreadPoolExecutor(2))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        client = ProfileClient([f"127.0.0.1:{port}"])
        with pytest.raises(InvalidInputError) as err:
            client.query(FeatureQuery(features=FEATURES_B, entities=["user:1"], now=NOW))
        assert err.value.field == "?" and str(err.value) == "window: must be positive (got -1)"
        client.close()
    finally:
        server.stop(0)


def test_feature_list_cache_stays_within_its_bound_and_answers_as_fresh(node):
    store = node.store
    servicer = node._servicer
    client = ProfileClient([node.address])
    windows = [f"{m}m" for m in range(1, 1100)]  # 1,099 distinct feature lists: past the 1,024 bound
    for i, w in enumerate(windows):
        q = FeatureQuery(features=[Feature(slot="actions", window=w)], entities=[f"user:u{i % 60}"], now=NOW)
        assert msgspec.msgpack.encode(client.query(q)) == _alone(store, q)
        assert len(servicer._features) <= 1024
    # Asked again after the cache was cleared and refilled: still the uncached answer.
    for i, w in enumerate(windows[:50]):
        q = FeatureQuery(features=[Feature(slot="actions", window=w)], entities=[f"user:u{i % 60}"], now=NOW)
        assert msgspec.msgpack.encode(client.query(q)) == _alone(store, q)
    client.close()


def test_a_node_on_a_taken_port_fails_loudly_and_the_first_keeps_serving(node):
    from streamrec.errors import StreamrecError

    with pytest.raises(StreamrecError, match="cannot listen"):
        ProfileNodeServer(ProfileStore(), port=node.port, own_store=True).start()
    client = ProfileClient([node.address])
    assert client.health()[node.address] == "SERVING"
    client.close()
