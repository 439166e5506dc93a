"""Every bad input to a profile node answers INVALID_ARGUMENT naming the field, and stores nothing.

A real node (gRPC over a local port, a store with its WAL on disk) is asked with the inputs a
hostile or broken client sends: clocks and windows no calendar holds (1e300, inf, NaN, 2^70),
SQL nested thousands deep, profile blobs that decode but hold NaN/inf counters, slice starts of
2^62 or an unknown format tag, and a 96 KiB zstd blob that inflates to 3 GiB. Each must answer
``INVALID_ARGUMENT`` (never ``UNKNOWN``: the status of an exception the node did not expect) with a
message that starts with the field, and the node's state (keys, exported profiles, WAL sequence
number) must be the same after the call as before it. A hypothesis fuzz over every method then
checks the same two properties on generated requests.
"""

from __future__ import annotations

import io
import json
import resource
import time
from collections import Counter

import grpc
import msgspec
import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamrec.profiles import ProfileStore
from streamrec.profiles.client import ProfileClient
from streamrec.profiles.profile import ProfileBlob, SlotBlob
from streamrec.profiles.proto import profiles_pb2, profiles_pb2_grpc
from streamrec.profiles.service import ProfileNodeServer

NOW = 1_700_000_000.0
MINUTE = int(NOW) // 60 * 60
HUGE = (1e300, -1e300, float("inf"), float("-inf"), float("nan"), 2.0**70)

EVENTS = [
    {"user": "42", "item": "m1", "action": "click", "time": NOW - 30, "attributes": {"category": "comedy"}},
    {"user": "42", "item": "m2", "action": "show", "time": NOW - 90, "attributes": {"category": "drama"}},
    {"user": "7", "item": "m2", "action": "rate", "time": NOW - 10, "counters": {"rating": 4.0}},
]


def _node(path, clock: str = "fixed") -> ProfileNodeServer:
    if clock == "event":  # the clock is the latest event time: max_future bounds nothing
        store = ProfileStore({"fsync": False, "clock": "event"}, path=path, background=False)
    else:
        store = ProfileStore({"fsync": False}, path=path, clock=lambda: NOW, background=False)
    return ProfileNodeServer(store, own_store=True).start()


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    with _node(tmp_path_factory.mktemp("node")) as server:
        client = ProfileClient([server.address])
        assert client.write(EVENTS).accepted == len(EVENTS)
        client.close()
        yield server


@pytest.fixture(scope="module")
def stub(node):
    with grpc.insecure_channel(node.address) as channel:
        yield profiles_pb2_grpc.ProfileNodeStub(channel)


def _state(stub) -> tuple:
    """Everything a request could have changed: keys, their stored profiles, the WAL sequence."""
    keys = sorted(k for chunk in stub.ListKeys(profiles_pb2.ListKeysRequest()) for k in chunk.keys)
    exported = stub.ExportProfiles(profiles_pb2.Keys(keys=keys))
    dctx = zstandard.ZstdDecompressor()
    profiles = {k: dctx.decompress(b) for k, b in zip(exported.keys, exported.blobs, strict=True)}
    stats = json.loads(stub.Stats(profiles_pb2.Empty()).json)
    return keys, profiles, stats["wal_seq"], stats["pending_batches"]


def _refused(stub, method: str, request) -> str:
    """Call ``method``; assert INVALID_ARGUMENT and an unchanged node; return the message."""
    before = _state(stub)
    with pytest.raises(grpc.RpcError) as info:
        getattr(stub, method)(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, info.value.code(), info.value.details())
    assert _state(stub) == before, f"{method} changed the node although it was refused"
    return info.value.details()


def _features(**kw) -> bytes:
    return msgspec.msgpack.encode([{"slot": "clicked_category", **kw}])


# ---------------------------------------------------------------------------------------- Query


@pytest.mark.parametrize("now", HUGE)
def test_query_clock_out_of_range_names_now(stub, now):
    req = profiles_pb2.QueryRequest(features=_features(), entities=["user:42"], now=now)
    assert _refused(stub, "Query", req).startswith("now:")


@pytest.mark.parametrize("window", [*HUGE, 2**63 - 1, "99999999999999999999d", "1e300s"])
def test_query_window_out_of_range_names_window(stub, window):
    req = profiles_pb2.QueryRequest(features=_features(window=window), entities=["user:42"])
    assert _refused(stub, "Query", req).startswith("window:")


@pytest.mark.parametrize("since", [*HUGE, 2**63 - 1, -(2**63)])
def test_query_since_out_of_range_names_since(stub, since):
    req = profiles_pb2.QueryRequest(features=_features(since=since), entities=["user:42"])
    assert _refused(stub, "Query", req).startswith("since:")


@pytest.mark.parametrize("top_k", [2**63 - 1, 2**64 - 1])
def test_query_top_k_out_of_range_names_top_k(stub, top_k):
    req = profiles_pb2.QueryRequest(features=_features(top_k=top_k), entities=["user:42"])
    assert _refused(stub, "Query", req).startswith("top_k:")


def test_a_query_in_range_still_answers(stub):
    req = profiles_pb2.QueryRequest(features=_features(window="30d", counters=["click"]), entities=["user:42"])
    res = msgspec.msgpack.decode(stub.Query(req).result)
    assert res[3] == [[[None, [[1.0]]]]]  # results: one entity, one feature, one click


@pytest.mark.parametrize("when", [1e300, 2.0**70, 253_402_300_800.0])
def test_an_event_after_the_year_9999_is_rejected_under_the_event_clock(tmp_path, when):
    """Under the event clock such an event would become the clock, and every merge would overflow."""
    with _node(tmp_path, clock="event") as server, grpc.insecure_channel(server.address) as channel:
        stub = profiles_pb2_grpc.ProfileNodeStub(channel)
        good = {"user": "1", "item": "m", "action": "click", "time": NOW}
        bad = {**good, "time": when}
        rep = stub.Write(profiles_pb2.WriteRequest(events=msgspec.msgpack.encode([bad, good, bad])))
        assert rep.accepted == 1 and [r.index for r in rep.rejected] == [0, 2]
        assert rep.rejected[0].reason.startswith("time:"), rep.rejected[0].reason
        assert json.loads(stub.Stats(profiles_pb2.Empty()).json)["wal_seq"] == 1  # one durable write
        stub.Flush(profiles_pb2.Empty())
        req = profiles_pb2.QueryRequest(features=msgspec.msgpack.encode([{"slot": "actions"}]), entities=["user:1"])
        res = msgspec.msgpack.decode(stub.Query(req).result)
        assert res[3][0][0][1][0][0] == 1.0  # the good event counted once
        assert res[4] == NOW  # the clock did not jump


def test_the_year_9999_check_is_an_event_check_of_the_event_clock():
    """``events_to_rows`` (the store's validation, also the recommender's dry run) rejects it itself."""
    from streamrec.profiles.config import profiles_config
    from streamrec.profiles.events import MAX_TIME, EntityKeyer, build_specs, events_to_rows
    from streamrec.records import parse_action

    good = {"user": "1", "item": "m", "action": "click", "time": NOW}
    events = [parse_action({**good, "time": t}) for t in (MAX_TIME + 1, MAX_TIME - 60, MAX_TIME, 2.0**70)]
    specs, keyer = build_specs(profiles_config()), EntityKeyer("k")
    _, accepted, rejected, _, now = events_to_rows(events, specs, keyer, None, 86400.0)
    assert accepted == 2 and now == MAX_TIME and [i for i, _ in rejected] == [0, 3]
    assert all(r.startswith(f"time: must be at most {MAX_TIME} epoch seconds") for _, r in rejected), rejected
    # The wall clock keeps its own rule: at most max_future ahead of the clock.
    _, accepted, rejected, _, _ = events_to_rows(events, specs, keyer, NOW, 86400.0)
    assert accepted == 0 and all(r.startswith("time: more than max_future") for _, r in rejected), rejected


# ---------------------------------------------------------------------------------------- Sql

SQL_OK = "SELECT value, sum(click) AS c FROM clicked_category WHERE entity = 'user:42' AND window = '1d'"


@pytest.mark.parametrize(
    "text",
    [
        "SELECT click FROM clicked_category WHERE " + "(" * 5000 + "entity = 'user:42'" + ")" * 5000,
        "SELECT " + "(" * 3000 + "click" + ")" * 3000 + " FROM clicked_category WHERE entity = 'user:42'",
        "SELECT click FROM clicked_category WHERE entity = 'user:42' AND " + " AND ".join(["now = 1"] * 3000),
        "SELECT " + " + ".join(["click"] * 5000) + " FROM clicked_category WHERE entity = 'user:42'",
        "SELECT click FROM clicked_category WHERE entity = 'user:42' " + "x" * 300_000,
    ],
    ids=["nested-where", "nested-select", "and-chain", "plus-chain", "long"],
)
def test_sql_nested_too_deep_or_too_long_names_sql(stub, text):
    assert _refused(stub, "Sql", profiles_pb2.SqlRequest(text=text)).startswith("sql:")


@pytest.mark.parametrize(
    ("where", "field"),
    [
        ("now = 1e300", "now"),
        ("now = 1e400", "now"),
        ("window = 1e300", "window"),
        ("since = 1e300", "since"),
        ("since = -1e300", "since"),
    ],
)
def test_sql_clock_and_window_out_of_range_name_the_field(stub, where, field):
    text = f"SELECT click FROM clicked_category WHERE entity = 'user:42' AND {where}"
    assert _refused(stub, "Sql", profiles_pb2.SqlRequest(text=text)).startswith(f"{field}:")


@pytest.mark.parametrize("now", HUGE)
def test_sql_now_argument_out_of_range_names_now(stub, now):
    assert _refused(stub, "Sql", profiles_pb2.SqlRequest(text=SQL_OK, now=now)).startswith("now:")


@pytest.mark.parametrize("limit", ["1e400", "-1e400", "0.5", "'ten'"])
def test_sql_limit_out_of_range_names_sql(stub, limit):
    text = SQL_OK + f" LIMIT {limit}"
    assert _refused(stub, "Sql", profiles_pb2.SqlRequest(text=text)).startswith("sql:")


def test_sql_in_range_still_answers(stub):
    res = msgspec.msgpack.decode(stub.Sql(profiles_pb2.SqlRequest(text=SQL_OK + " ORDER BY c DESC", now=NOW)).result)
    assert res[1] == [["comedy", 1.0], ["drama", 0.0]]


# ---------------------------------------------------------------------------------------- ImportProfiles


def _blob(
    slot: str = "clicked_category",
    columns: tuple[str, ...] = ("show", "click", "like", "dwell_ms"),
    starts: tuple[int, ...] = (MINUTE,),
    data: tuple[float, ...] | None = None,
    fmt: int = 1,
) -> bytes:
    n = len(starts)
    values = data if data is not None else (1.0,) * (n * len(columns))
    sb = SlotBlob(
        columns=list(columns),
        starts=np.asarray(starts, dtype="<i8").tobytes(),
        vals=np.zeros(n, dtype="<i4").tobytes(),
        data=np.asarray(values, dtype="<f8").tobytes(),
        vocab=["comedy"],
    )
    return zstandard.ZstdCompressor().compress(msgspec.msgpack.encode(ProfileBlob(format=fmt, slots={slot: sb})))


def _import(*blobs: bytes) -> profiles_pb2.Profiles:
    keys = [bytes([i]) * 16 for i in range(len(blobs))]
    return profiles_pb2.Profiles(keys=keys, blobs=list(blobs))


def _raw_blob(slots: dict) -> bytes:
    return zstandard.ZstdCompressor().compress(msgspec.msgpack.encode([1, slots]))


_EMPTY_SLOT = [["click"], b"", b"", b"", []]

BAD_BLOBS = {
    "nan-sum-counter": _blob(data=(1.0, float("nan"), 1.0, 1.0)),
    "inf-counter": _blob(data=(1.0, float("inf"), 1.0, 1.0)),
    "-inf-max-counter": _blob(slot="actions", columns=("count", "dwell_ms"), data=(1.0, float("-inf"))),
    "inf-time-column": _blob(slot="item_last_rating", columns=("rating", "rating@time"), data=(4.0, float("inf"))),
    "slice-start-2^62": _blob(starts=(2**62,)),
    "slice-start--2^62": _blob(starts=(-(2**62),)),
    "slice-start-year-10000": _blob(starts=(253_402_300_800,)),
    "unknown-format-tag": _blob(fmt=9),
    "data-not-whole-rows": _blob(data=(1.0, 1.0, 1.0)),
    "not-zstd": b"\x00garbage",
    "zstd-of-garbage": zstandard.ZstdCompressor().compress(b"\xc1" * 40),
    "truncated-zstd": _blob()[:-3],
    # Containers bounded before their elements become Python objects (a short string costs ~20x
    # its msgpack size decoded): a vocabulary out of proportion to the rows, thousands of slots or columns.
    "vocabulary-without-rows": _raw_blob(
        {"clicked_category": [["click"], b"", b"", b"", [str(i) for i in range(1000)]]}
    ),
    "too-many-slots": _raw_blob({f"s{i}": _EMPTY_SLOT for i in range(2000)}),
    "too-many-columns": _raw_blob({"clicked_category": [[f"c{i}" for i in range(2000)], b"", b"", b"", []]}),
}


@pytest.mark.parametrize("case", list(BAD_BLOBS))
def test_import_of_an_invalid_blob_names_blobs_and_imports_nothing(stub, case):
    # The good blob beside the bad one is not imported either: a request is all or nothing.
    message = _refused(stub, "ImportProfiles", _import(_blob(), BAD_BLOBS[case]))
    assert message.startswith("blobs:"), message


def test_import_of_a_valid_blob_with_nan_in_a_max_counter_is_accepted(node, tmp_path):
    # NaN is the identity of max/min/last/first ("never set"), so it is a valid stored value there;
    # -inf is the identity of a hidden time column.
    with _node(tmp_path) as other, grpc.insecure_channel(other.address) as channel:
        stub = profiles_pb2_grpc.ProfileNodeStub(channel)
        ok = [
            _blob(slot="actions", columns=("count", "dwell_ms"), data=(1.0, float("nan"))),
            _blob(slot="item_last_rating", columns=("rating", "rating@time"), data=(float("nan"), float("-inf"))),
        ]
        assert stub.ImportProfiles(_import(*ok)).count == 2


@pytest.mark.parametrize("content_size", [True, False], ids=["size-in-header", "streamed"])
def test_a_zstd_bomb_is_refused_without_inflating_it(stub, content_size):
    """96 KiB that inflate to 3 GiB: refused by the size cap, without allocating the 3 GiB."""
    total = 3 << 30
    out = io.BytesIO()
    cctx = zstandard.ZstdCompressor(level=1)
    zeros = bytes(1 << 20)
    with cctx.stream_writer(out, size=total if content_size else -1, closefd=False) as w:
        for _ in range(total // len(zeros)):
            w.write(zeros)
    bomb = out.getvalue()
    assert len(bomb) < 128 * 1024
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB, high-water mark (the node is in process)
    t0 = time.perf_counter()
    message = _refused(stub, "ImportProfiles", _import(bomb))
    elapsed = time.perf_counter() - t0
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    assert message.startswith("blobs:") and "max_import_bytes" in message and "67108864" in message, message
    assert grown_mib < 200, f"the node grew by {grown_mib:.0f} MiB refusing a zstd bomb"
    assert elapsed < 10, elapsed


def test_the_import_size_cap_is_per_request_and_configurable(tmp_path):
    blob = _blob()
    size = len(zstandard.ZstdDecompressor().decompress(blob))
    store = ProfileStore({"fsync": False}, path=tmp_path, clock=lambda: NOW, background=False)
    with (
        ProfileNodeServer(store, own_store=True, max_import_bytes=3 * size).start() as server,
        grpc.insecure_channel(server.address) as channel,
    ):
        stub = profiles_pb2_grpc.ProfileNodeStub(channel)
        assert stub.ImportProfiles(_import(blob, blob, blob)).count == 3
        message = _refused(stub, "ImportProfiles", _import(blob, blob, blob, blob))
        assert message.startswith("blobs:") and f"max_import_bytes = {3 * size}" in message, message


def test_the_per_profile_cap_holds_in_process_too(tmp_path):
    from streamrec.errors import InvalidInputError

    blob = _blob()
    size = len(zstandard.ZstdDecompressor().decompress(blob))
    store = ProfileStore({"fsync": False}, clock=lambda: NOW, background=False, max_profile_bytes=size)
    many = {bytes([i]) * 16: blob for i in range(50)}
    store.import_profiles(many)  # no total cap in process: 50 profiles of `size` bytes each are fine
    assert len(list(store.entity_keys())) == 50
    store.max_profile_bytes = size - 1
    with pytest.raises(InvalidInputError, match=f"max_profile_bytes = {size - 1}") as info:
        store.import_profiles({b"x" * 16: blob})
    assert info.value.field == "blobs"
    assert len(list(store.entity_keys())) == 50
    store.close()


def test_the_size_caps_are_profiles_config_keys_checked_by_name():
    from streamrec.errors import ConfigError
    from streamrec.profiles.config import profiles_config
    from streamrec.profiles.service import DEFAULT_MAX_IMPORT_BYTES
    from streamrec.profiles.store import DEFAULT_MAX_PROFILE_BYTES

    cfg = profiles_config()
    assert (cfg.max_profile_bytes, cfg.max_import_bytes) == (DEFAULT_MAX_PROFILE_BYTES, DEFAULT_MAX_IMPORT_BYTES)
    assert profiles_config({"max_import_bytes": 1000}).max_import_bytes == 1000
    for key in ("max_profile_bytes", "max_import_bytes"):
        for bad in (0, -1, 1.5, "64MiB", True):
            with pytest.raises(ConfigError, match=rf"'profiles\.{key}'"):
                profiles_config({key: bad})


def test_profiles_serve_takes_the_size_caps_from_the_config(tmp_path):
    """``streamrec profiles serve -c FILE`` holds imports to the file's max_profile_bytes and max_import_bytes."""
    import os
    import signal
    import subprocess
    import sys

    small, big = _blob(), _blob(starts=(MINUTE - 120, MINUTE - 60, MINUTE))
    size = len(zstandard.ZstdDecompressor().decompress(small))
    assert len(zstandard.ZstdDecompressor().decompress(big)) > size
    config = tmp_path / "node.toml"
    config.write_text(f"[profiles]\nfsync = false\nmax_profile_bytes = {size}\nmax_import_bytes = {2 * size}\n")
    ready = tmp_path / "ready.json"
    args = ["--config", str(config), "--path", str(tmp_path / "data"), "--port", "0", "--metrics-port", "-1"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamrec.profiles.service_cli", *args, "--ready-file", str(ready)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"},
    )
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.1)
        with grpc.insecure_channel(json.loads(ready.read_text())["address"]) as channel:
            stub = profiles_pb2_grpc.ProfileNodeStub(channel)
            assert stub.ImportProfiles(_import(small, small)).count == 2
            message = _refused(stub, "ImportProfiles", _import(small, small, small))
            assert message.startswith("blobs:") and f"max_import_bytes = {2 * size}" in message, message
            message = _refused(stub, "ImportProfiles", _import(big))
            assert message.startswith("blobs:") and f"max_profile_bytes = {size}" in message, message
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0


def test_import_with_keys_and_blobs_that_do_not_pair_names_the_field(stub):
    assert _refused(stub, "ImportProfiles", profiles_pb2.Profiles(keys=[b"k" * 16], blobs=[])).startswith("blobs:")
    req = profiles_pb2.Profiles(keys=[b"short"], blobs=[_blob()])
    assert _refused(stub, "ImportProfiles", req).startswith("keys:")


# ---------------------------------------------------------------------------------------- fuzz

SLOTS = ["actions", "clicked_item", "clicked_category", "watched_genre", "item_engagement", "item_last_rating"]
COUNTERS = ["count", "show", "click", "like", "dwell_ms", "rating", "rating@time"]
ODD_FLOATS = [0.0, -0.0, 1e300, -1e300, 2.0**70, 2.0**63, 2.0**62, NOW, NOW + 1e9, 5e-324, 253_402_300_800.0]
ODD_INTS = [0, -1, 1, 2**31, 2**62, 2**63 - 1, -(2**63), 2**64 - 1]

floats = st.one_of(st.floats(), st.sampled_from(ODD_FLOATS))
ints = st.one_of(st.integers(min_value=-(2**63), max_value=2**64 - 1), st.sampled_from(ODD_INTS))
short_text = st.text(max_size=10)
scalars = st.one_of(st.none(), st.booleans(), ints, floats, short_text, st.binary(max_size=16))
anything = st.recursive(
    scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(short_text, c, max_size=3), max_leaves=8
)
windows = st.one_of(
    floats,
    ints,
    short_text,
    st.sampled_from(["5m", "1h", "7d", "30d", "0s", "-1d", "1e300s", "nan", "inf", "9" * 25 + "d"]),
)


def _msgpack(strategy):
    return strategy.map(msgspec.msgpack.encode)


feature = st.fixed_dictionaries(
    {"slot": st.one_of(st.sampled_from(SLOTS), short_text)},
    optional={
        "window": windows,
        "since": st.one_of(floats, ints),
        "agg": st.sampled_from(["counters", "ratio", "distinct", "sum"]),
        "counters": st.lists(st.one_of(st.sampled_from(COUNTERS), short_text), max_size=3),
        "numerator": st.sampled_from(COUNTERS),
        "denominator": st.sampled_from(COUNTERS),
        "alpha": floats,
        "beta": floats,
        "top_k": ints,
        "by": st.one_of(st.sampled_from([*COUNTERS, "ratio"]), short_text),
        "values": st.lists(short_text, max_size=3),
        "name": short_text,
        "junk": anything,
    },
)
keys = st.lists(st.one_of(st.binary(min_size=16, max_size=16), st.binary(max_size=20)), max_size=4)
entities = st.lists(
    st.one_of(
        st.builds(lambda t, i: f"{t}:{i}", st.sampled_from(["user", "item", "author", "x", ""]), short_text), short_text
    ),
    max_size=4,
)

# Hostile requests mostly fail validation early; plausible ones (valid but for one extreme value)
# reach the kernels, the WAL and the merge.
plausible_feature = st.fixed_dictionaries(
    {"slot": st.sampled_from(["clicked_category", "actions", "item_engagement", "item_last_rating"])},
    optional={
        "window": st.one_of(st.sampled_from(["5m", "1h", "1d", "7d", "30d"]), st.floats(1, 1e12), floats),
        "since": st.one_of(st.floats(0, NOW + 1e9), st.sampled_from(ODD_FLOATS)),
        "top_k": st.one_of(st.integers(0, 20), st.sampled_from(ODD_INTS)),
        "values": st.lists(st.sampled_from(["comedy", "drama", "m1", "click"]), max_size=2),
    },
)
plausible_query = st.builds(
    lambda f, e, now: profiles_pb2.QueryRequest(features=f, entities=e, **({} if now is None else {"now": now})),
    _msgpack(st.lists(plausible_feature, min_size=1, max_size=3)),
    st.lists(st.sampled_from(["user:42", "user:7", "item:m1", "item:m2", "user:nobody"]), max_size=3),
    st.one_of(st.none(), st.floats(0, 253_402_300_799), floats),
)
hostile_query = st.builds(
    lambda f, e, k, now: profiles_pb2.QueryRequest(
        features=f, entities=e, keys=k, **({} if now is None else {"now": now})
    ),
    st.one_of(_msgpack(st.lists(feature, max_size=4)), _msgpack(anything), st.binary(max_size=40)),
    entities,
    keys,
    st.one_of(st.none(), floats),
)
query_requests = st.one_of(plausible_query, hostile_query)

plausible_event = st.fixed_dictionaries(
    {
        "user": st.sampled_from(["42", "7", "u1"]),
        "item": st.sampled_from(["m1", "m2"]),
        "action": st.sampled_from(["click", "show", "like", "rate"]),
        "time": st.one_of(st.floats(NOW - 40 * 86400, NOW + 86400), floats),
    },
    optional={
        "counters": st.dictionaries(st.sampled_from(["dwell_ms", "rating"]), floats, max_size=2),
        "attributes": st.dictionaries(st.sampled_from(["category", "genre", "author"]), short_text, max_size=3),
    },
)
event = st.fixed_dictionaries(
    {
        "user": st.one_of(st.sampled_from(["42", "7", "u1"]), scalars),
        "item": st.one_of(st.sampled_from(["m1", "m2"]), scalars),
        "action": st.one_of(st.sampled_from(["click", "show", "like", "rate", "watch"]), scalars),
        "time": st.one_of(st.floats(NOW - 40 * 86400, NOW + 86400), floats, ints, short_text),
    },
    optional={
        "counters": st.dictionaries(
            st.one_of(st.sampled_from(COUNTERS), short_text), st.one_of(floats, scalars), max_size=3
        ),
        "attributes": st.dictionaries(
            st.one_of(st.sampled_from(["category", "genre", "author"]), short_text), scalars, max_size=3
        ),
        "request_id": scalars,
        "junk": anything,
    },
)
write_requests = st.one_of(
    _msgpack(st.lists(plausible_event, min_size=1, max_size=4)).map(lambda ev: profiles_pb2.WriteRequest(events=ev)),
    st.builds(
        lambda ev, primary, owned: profiles_pb2.WriteRequest(events=ev, primary=primary, owned=owned),
        st.one_of(_msgpack(st.lists(event, max_size=4)), _msgpack(anything), st.binary(max_size=40)),
        st.integers(0, 2**32 - 1),
        keys,
    ),
)

sql_items = st.sampled_from(
    [
        "value",
        "entity",
        "click",
        "sum(click)",
        "max(dwell_ms)",
        "avg(click)",
        "ratio(click, show, 1, 20)",
        "click / show",
        "count(DISTINCT value)",
        "count(*)",
        "nope",
        "*",
    ]
)
sql_conditions = st.one_of(
    st.sampled_from(["entity = 'user:42'", "entity IN ('user:42', 'user:7')", "value IN ('comedy')", "entity = 1"]),
    st.builds(lambda c, x: f"{c} = {x!r}", st.sampled_from(["window", "since", "now", "value", "entity"]), floats),
    st.builds(
        lambda c, x: f"{c} = {x}",
        st.sampled_from(["window", "since", "now", "limit"]),
        st.sampled_from(["1e300", "1e400", "-1e400", "0", "'7d'", "NULL"]),
    ),
)
sql_composed = st.builds(
    lambda items, slot, conds, depth, tail: (
        f"SELECT {', '.join(items)} FROM {slot} WHERE " + "(" * depth + " AND ".join(conds) + ")" * depth + tail
    ),
    st.lists(sql_items, min_size=1, max_size=3),
    st.one_of(st.sampled_from(SLOTS), short_text),
    st.lists(sql_conditions, min_size=1, max_size=4),
    st.one_of(st.integers(0, 3), st.sampled_from([100, 1000, 5000])),
    st.sampled_from(["", " ORDER BY click DESC", " LIMIT 2", " LIMIT 1e400", " GROUP BY value", " ORDER BY nope"]),
)
plausible_sql = st.builds(
    lambda items, cond, tail: (
        f"SELECT {', '.join(items)} FROM clicked_category WHERE entity IN ('user:42', 'user:7'){cond}{tail}"
    ),
    st.lists(st.sampled_from(["value", "click", "sum(click)", "ratio(click, show, 1, 20)", "count(*)"]), min_size=1),
    st.one_of(
        st.just(""),
        st.builds(lambda c, x: f" AND {c} = {x!r}", st.sampled_from(["window", "since", "now"]), floats),
        st.builds(lambda c, x: f" AND {c} = {x}", st.sampled_from(["window", "since", "now"]), st.integers(0, 2**70)),
    ),
    st.sampled_from(["", " ORDER BY click DESC", " LIMIT 1", " LIMIT 1e400"]),
)
sql_requests = st.builds(
    lambda text, now: profiles_pb2.SqlRequest(text=text, **({} if now is None else {"now": now})),
    st.one_of(plausible_sql, sql_composed, st.text(max_size=60)),
    st.one_of(st.none(), floats),
)

slot_blob = st.builds(
    lambda cols, starts, vals, data, vocab: [
        cols,
        np.asarray(starts, dtype="<i8").tobytes(),
        np.asarray(vals, dtype="<i4").tobytes(),
        np.asarray(data, dtype="<f8").tobytes(),
        vocab,
    ],
    st.lists(st.one_of(st.sampled_from(COUNTERS), short_text), max_size=4),
    st.lists(st.one_of(st.sampled_from([MINUTE, MINUTE - 86400, 0]), st.integers(-(2**63), 2**63 - 1)), max_size=3),
    st.lists(st.integers(-2, 3), max_size=3),
    st.lists(st.one_of(st.sampled_from([0.0, 1.0, float("nan")]), floats), max_size=12),
    st.lists(short_text, max_size=3),
)
profile_blob = st.builds(
    lambda fmt, slots: zstandard.ZstdCompressor().compress(msgspec.msgpack.encode([fmt, slots])),
    st.one_of(st.just(1), ints),
    st.dictionaries(st.one_of(st.sampled_from(SLOTS), short_text), slot_blob, max_size=2),
)
plausible_import = st.builds(
    lambda starts, data: _import(
        _blob(starts=(starts,), data=tuple(data)), _blob(slot="actions", columns=("count", "dwell_ms"))
    ),
    st.one_of(st.sampled_from([MINUTE, MINUTE - 86400, 0]), st.integers(-(2**63), 2**63 - 1)),
    st.lists(st.one_of(st.floats(0, 100), floats), min_size=4, max_size=4),
)
hostile_import = st.builds(
    lambda pairs, extra: profiles_pb2.Profiles(keys=[k for k, _ in pairs] + extra, blobs=[b for _, b in pairs]),
    st.lists(
        st.tuples(
            st.one_of(st.binary(min_size=16, max_size=16), st.binary(max_size=20)),
            st.one_of(
                profile_blob, st.binary(max_size=40), _msgpack(anything).map(zstandard.ZstdCompressor().compress)
            ),
        ),
        max_size=3,
    ),
    st.one_of(st.just([]), keys),
)
import_requests = st.one_of(plausible_import, hostile_import)

calls = st.one_of(
    st.tuples(st.just("Query"), query_requests),
    st.tuples(st.just("Write"), write_requests),
    st.tuples(st.just("Sql"), sql_requests),
    st.tuples(st.just("ImportProfiles"), import_requests),
    st.tuples(st.just("ExportProfiles"), keys.map(lambda k: profiles_pb2.Keys(keys=k))),
    st.tuples(st.just("DeleteProfiles"), keys.map(lambda k: profiles_pb2.Keys(keys=k))),
    st.tuples(st.just("ListKeys"), st.integers(0, 2**32 - 1).map(lambda c: profiles_pb2.ListKeysRequest(chunk=c))),
)


def _fuzz(tmp_path, examples: int, clock: str) -> Counter:
    codes: Counter = Counter()
    with _node(tmp_path, clock) as server, grpc.insecure_channel(server.address) as channel:
        stub = profiles_pb2_grpc.ProfileNodeStub(channel)
        ProfileClient([server.address]).write(EVENTS)

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(call=calls)
        def one(call):
            method, request = call
            before = _state(stub)
            try:
                reply = getattr(stub, method)(request, timeout=30)
                if method == "ListKeys":
                    list(reply)
                code = grpc.StatusCode.OK
            except grpc.RpcError as exc:
                code = exc.code()
                details = exc.details()
            codes[(method, code.name)] += 1
            assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT), (method, code, details, request)
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                assert _state(stub) == before, (method, details, request)

        one()
    by_code = Counter()
    for (_, code), n in codes.items():
        by_code[code] += n
    print(
        f"fuzz ({clock} clock): {sum(codes.values())} calls, by status {dict(by_code)}, "
        f"by method {dict(sorted(codes.items()))}"
    )
    return codes


@pytest.mark.parametrize("clock", ["fixed", "event"])
def test_fuzzed_requests_answer_ok_or_invalid_argument_and_refusals_store_nothing(tmp_path, clock):
    codes = _fuzz(tmp_path, 200, clock)
    assert sum(codes.values()) >= 200


@pytest.mark.slow
@pytest.mark.parametrize("clock", ["fixed", "event"])
def test_fuzzed_requests_thousands(tmp_path, clock, request):
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("thousands of fuzzed calls: select with -m slow")
    codes = _fuzz(tmp_path, 3000, clock)
    assert sum(codes.values()) >= 3000
