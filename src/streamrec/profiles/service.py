"""A profile node: one :class:`ProfileStore` behind gRPC, with health checks and Prometheus metrics.

The node is thin on purpose. Everything a feature means is decided by the store; the node only
turns wire bytes into the store's types and back, so a query answered over gRPC is the same
``QueryResult`` an in-process caller gets. The hot call (``Query``) does three things: look the
feature list up in a small cache keyed by its msgpack bytes (a client asking the same 100 features
again pays their decoding once, and the store's per-feature plan cache then hits on the very
same ``Feature`` objects), call ``store.query``, and encode the answer with one msgspec call. No
protobuf message is built per feature or per number.

Placement is the client's job (``client.py``): a node owns whatever entities the client's ring
sends it. An event feeds the profiles of several entities (its user, its item...), which may live
on different nodes, so a clustered ``Write`` names the keys this node owns and the node applies
only their rows (``write_owned``); the other nodes apply the rest of the same events.

Bad input (undecodable blobs, unknown slots, bad keys, a bad clock) answers ``INVALID_ARGUMENT``
with the message of the :class:`InvalidInputError` that names the field, and changes nothing.

**Writes are applied at most once per write id** (:class:`WriteLedger`). A replicated client
resends a write whose reply it did not get (the node died, or the reply was lost, after the WAL
had it): counting it again would break the counters, so a ``Write`` may carry a 16-byte
``write_id`` and the node remembers the ids it applied. The ledger is a small append-only file
beside the store; before the store write, the node appends ``begin(id, seq)`` (``seq``: the
store's WAL sequence number before it) and fsyncs it; after, ``done(id)`` or ``abort(id)``. Writes,
imports and deletes run one at a time on a node (the store serialises them anyway), so after a
``kill -9`` a ``begin`` with no outcome is decided by the store itself: the write is in the WAL
exactly when the store's recovered sequence number passed ``seq``. No change to the store's WAL
format is needed, and the answer is exact whether the process died before, during or after the
WAL append.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import msgspec
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from streamrec.errors import InvalidInputError, StreamrecError
from streamrec.profiles.proto import health_pb2, health_pb2_grpc, profiles_pb2, profiles_pb2_grpc
from streamrec.profiles.store import DEFAULT_MAX_PROFILE_BYTES, ProfileStore
from streamrec.profiles.types import Feature, FeatureQuery, WriteResult

__all__ = ["NodeMetrics", "ProfileNodeServer", "WriteLedger", "serve", "write_owned"]

_FEATURES = msgspec.msgpack.Decoder(list[Feature])
# Decompressed bytes the blobs of one ImportProfiles request may inflate to, together (a move
# sends 512 profiles a request, a few MB; a 256 MB request of small zstd bombs must not become GBs).
DEFAULT_MAX_IMPORT_BYTES = DEFAULT_MAX_PROFILE_BYTES
_MAX_MESSAGE = 256 * 1024 * 1024
GRPC_OPTIONS = [
    ("grpc.max_send_message_length", _MAX_MESSAGE),
    ("grpc.max_receive_message_length", _MAX_MESSAGE),
    ("grpc.so_reuseport", 0),
]


def write_owned(store: ProfileStore, events: Sequence[Any], primary: int, owned: frozenset[bytes]) -> WriteResult:
    """Apply only the rows of ``owned`` entity keys; report on ``events[:primary]`` only.

    A clustered write sends an event to every node that owns one of its entities; each node keeps
    the rows of its own entities (``ProfileStore.write(owns=...)``). Validation is per event and
    deterministic, so every node judges an event the same way; the reply counts only the events
    this node is primary for, so the client adds the replies up without counting an event twice.
    The whole batch is one durable write (one WAL record: all or nothing, which the write ledger
    relies on); the report on the primaries is cut from its result (``too_old`` has no indices, so
    a batch with too-old events is judged once more, writing nothing, to count the primaries').
    """
    events = list(events)
    res = store.write(events, owns=owned.__contains__)
    if primary >= len(events):
        return res
    return _primaries_report(store, events, primary, res)


def _primaries_report(store: ProfileStore, events: list[Any], primary: int, whole: WriteResult | None) -> WriteResult:
    rejected = [(i, reason) for i, reason in (whole.rejected if whole is not None else []) if i < primary]
    if whole is not None and whole.too_old == 0:
        return WriteResult(accepted=primary - len(rejected), rejected=rejected, too_old=0)
    if primary == 0:
        return WriteResult(accepted=0)
    return store.write(events[:primary], owns=_owns_nothing)  # validation only: no row is kept


def _owns_nothing(key: bytes) -> bool:
    return False


class WriteLedger:
    """The write ids a node applied, so that a write resent with the same id is applied once.

    A replicated client resends a write to a replica that did not confirm it, with the same id. If
    the replica had applied it (the reply was lost, or the node died after its WAL append), the
    ledger says so and the write is answered without being applied again.

    The file is a sequence of 29-byte records ``kind (B/D/A) | id (16 B) | seq (u64) | crc32`` —
    ``B``egin with the store's WAL sequence number before the write (fsynced before the write,
    when the store fsyncs), then ``D``one or ``A``borted (flushed; a later fsync makes them
    durable too). The caller serialises every store mutation with :meth:`begin` .. :meth:`done`,
    so on open a ``begin`` without an outcome (the node died in between) is decided by the
    store: applied exactly when the store's recovered sequence number passed the recorded one (a
    write that kept no rows moved nothing, and applying it again changes nothing either). The
    file is compacted on open and when it holds twice ``keep`` records; ids older than the newest
    ``keep`` are forgotten (a resend that late would be applied again: the client resends within
    seconds to minutes, a few writes later).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> def crash_during_x(path):
    ...     ledger = WriteLedger(path, store_seq=0)
    ...     ledger.begin(b"w" * 16, seq=0); ledger.done(b"w" * 16)   # w made the store's seq 1
    ...     ledger.begin(b"x" * 16, seq=1)                           # ... and the node dies here
    ...     ledger.close()
    >>> crash_during_x(a := pathlib.Path(tempfile.mkdtemp()) / "writes.ledger")
    >>> WriteLedger(a, store_seq=2).applied(b"x" * 16)   # the WAL replayed seq 2: x is in it
    True
    >>> crash_during_x(b := pathlib.Path(tempfile.mkdtemp()) / "writes.ledger")
    >>> WriteLedger(b, store_seq=1).applied(b"x" * 16), WriteLedger(b, store_seq=1).applied(b"w" * 16)
    (False, True)
    """

    _BODY = struct.Struct("<c16sQ")
    _RECORD = struct.Struct("<c16sQI")

    def __init__(self, path: Path | None, store_seq: int, *, fsync: bool = True, keep: int = 100_000) -> None:
        self.path = path
        self.fsync = fsync
        self.keep = keep
        self.damaged = False  # a record in the middle did not validate; later ones were dropped
        self._applied: OrderedDict[bytes, None] = OrderedDict()
        self._records = 0
        self._fh: Any = None
        if path is not None:
            self._recover(store_seq)
            self._fh = open(path, "ab")  # noqa: SIM115 - held for the node's life

    def _recover(self, store_seq: int) -> None:
        assert self.path is not None
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            data = b""
        size = self._RECORD.size
        open_begin: dict[bytes, int] = {}
        for off in range(0, len(data) - size + 1, size):
            kind, wid, seq, crc = self._RECORD.unpack_from(data, off)
            if zlib.crc32(data[off : off + self._BODY.size]) != crc:
                self.damaged = off + size < len(data)  # a torn last record is a crash mid-append
                break
            if kind == b"B":
                open_begin[wid] = seq
            else:
                open_begin.pop(wid, None)
                if kind == b"D":
                    self._applied[wid] = None
        for wid, seq in open_begin.items():
            if store_seq > seq:
                self._applied[wid] = None
        self._compact()

    def _compact(self) -> None:
        assert self.path is not None
        while len(self._applied) > self.keep:
            self._applied.popitem(last=False)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            fh.write(b"".join(self._record(b"D", wid, 0) for wid in self._applied))
            fh.flush()
            if self.fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        self._records = len(self._applied)

    def _record(self, kind: bytes, wid: bytes, seq: int) -> bytes:
        body = self._BODY.pack(kind, wid, seq)
        return body + zlib.crc32(body).to_bytes(4, "little")

    def _append(self, kind: bytes, wid: bytes, seq: int, durable: bool) -> None:
        if self._fh is None:
            return
        self._fh.write(self._record(kind, wid, seq))
        self._fh.flush()
        if durable and self.fsync:
            os.fsync(self._fh.fileno())
        self._records += 1

    def applied(self, wid: bytes) -> bool:
        """Whether the write ``wid`` was applied (and is still remembered)."""
        return wid in self._applied

    def begin(self, wid: bytes, seq: int) -> None:
        """Record that ``wid`` is about to be applied on top of WAL sequence number ``seq`` (durable)."""
        self._append(b"B", wid, seq, durable=True)

    def done(self, wid: bytes) -> None:
        """Record that ``wid`` was applied."""
        self._append(b"D", wid, 0, durable=False)
        self._applied[wid] = None
        while len(self._applied) > self.keep:
            self._applied.popitem(last=False)
        if self._fh is not None and self._records > 2 * self.keep:
            self._fh.close()
            self._compact()
            self._fh = open(self.path, "ab")  # type: ignore[arg-type]  # noqa: SIM115

    def abort(self, wid: bytes) -> None:
        """Record that ``wid`` failed before anything of it was applied."""
        self._append(b"A", wid, 0, durable=False)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _wal_seq(store: ProfileStore) -> int:
    # The store's WAL sequence number: what the ledger compares against after a crash. Read
    # directly (stats() would also walk LMDB to count entities, once per write).
    return int(store._seq)


class NodeMetrics:
    """Prometheus metrics of one node, in a registry of its own (several nodes may share a process).

    Request counts and latencies per method and status code, events by outcome, entities and
    features queried, and the store's own counters and sizes read at scrape time.
    """

    def __init__(self, store: ProfileStore) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "streamrec_profiles_requests",
            "gRPC requests by method and status code",
            ["method", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "streamrec_profiles_request_seconds",
            "gRPC request latency by method",
            ["method"],
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
            registry=self.registry,
        )
        self.events = Counter(
            "streamrec_profiles_events", "events written by outcome", ["outcome"], registry=self.registry
        )
        self.entities = Counter(
            "streamrec_profiles_entities_queried", "entities answered by Query", registry=self.registry
        )
        self.features = Counter(
            "streamrec_profiles_features_queried", "features answered (per entity)", registry=self.registry
        )
        self.deduplicated = Counter(
            "streamrec_profiles_writes_deduplicated",
            "writes resent with the id of one already applied (answered, not applied again)",
            registry=self.registry,
        )
        self.registry.register(_StoreCollector(store))


class _StoreCollector:
    """Exposes ``ProfileStore.stats()`` at scrape time (counters end in ``_total``, sizes are gauges)."""

    _COUNTERS = (
        "cache_hits",
        "cache_misses",
        "evictions",
        "merges",
        "flushes",
        "loads",
        "dropped_retention",
        "wal_corruptions",
        "wal_corrupt_bytes",
        "wal_salvaged_records",
        "wal_torn_tails",
        "wal_torn_bytes",
    )

    def __init__(self, store: ProfileStore) -> None:
        self.store = store

    def describe(self) -> list:
        return []

    def collect(self) -> Iterator[Any]:
        try:
            stats = self.store.stats()
        except Exception:  # a closed store: nothing to report
            return
        for name, value in stats.items():
            if not isinstance(value, int | float) or isinstance(value, bool):
                continue
            if name in self._COUNTERS:
                yield CounterMetricFamily(f"streamrec_profiles_store_{name}", f"ProfileStore {name}", value=value)
            elif name not in ("accepted", "rejected", "too_old"):
                yield GaugeMetricFamily(f"streamrec_profiles_store_{name}", f"ProfileStore {name}", value=value)


def _invalid(context: grpc.ServicerContext, message: str) -> None:
    context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)


class _Servicer(profiles_pb2_grpc.ProfileNodeServicer):
    def __init__(self, store: ProfileStore, metrics: NodeMetrics, max_import_bytes: int) -> None:
        self.store = store
        self.max_import_bytes = max_import_bytes
        # Store mutations one at a time (the store serialises them anyway), so the write ledger
        # can decide from the WAL sequence number whether an interrupted write was applied.
        self._mutate_lock = threading.Lock()
        ledger_path = store.path / "writes.ledger" if store.path is not None else None
        self.ledger = WriteLedger(ledger_path, _wal_seq(store), fsync=bool(store.cfg.fsync))
        # One import decodes at a time: decoded, a blob takes several times its inflated size in
        # arrays and strings, so concurrent imports would multiply the node's worst case.
        self._import_lock = threading.Lock()
        self.m = metrics
        self._features: dict[bytes, list[Feature]] = {}
        self._enc = msgspec.msgpack.Encoder()
        self._lat = {name: metrics.latency.labels(name) for name in self._methods()}
        self._ok = {name: metrics.requests.labels(name, "OK") for name in self._methods()}

    @staticmethod
    def _methods() -> tuple[str, ...]:
        return (
            "Query",
            "Write",
            "Sql",
            "ListKeys",
            "ExportProfiles",
            "ImportProfiles",
            "DeleteProfiles",
            "Flush",
            "Stats",
        )

    def _call(self, name: str, context: grpc.ServicerContext, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        try:
            out = fn()
        except InvalidInputError as exc:
            self.m.requests.labels(name, "INVALID_ARGUMENT").inc()
            _invalid(context, str(exc))
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            self.m.requests.labels(name, "INVALID_ARGUMENT").inc()
            _invalid(context, f"{name.lower()}: undecodable msgpack ({exc})")
        except StreamrecError as exc:
            self.m.requests.labels(name, "FAILED_PRECONDITION").inc()
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except Exception as exc:  # a bug, not bad input: say so (and count it) instead of UNKNOWN
            self.m.requests.labels(name, "INTERNAL").inc()
            context.abort(grpc.StatusCode.INTERNAL, f"{name}: internal error {type(exc).__name__}: {exc}")
        self._lat[name].observe(time.perf_counter() - t0)
        self._ok[name].inc()
        return out

    # ---------------------------------------------------------------- hot path

    def _decode_features(self, blob: bytes) -> list[Feature]:
        feats = self._features.get(blob)
        if feats is None:
            try:
                feats = _FEATURES.decode(blob)
            except msgspec.ValidationError as exc:
                raise InvalidInputError("features", blob[:40], f"not a list of Feature ({exc})") from None
            except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                raise InvalidInputError("features", blob[:40], f"undecodable msgpack ({exc})") from None
            if not feats:
                raise InvalidInputError("features", feats, "ask for at least one feature")
            if len(self._features) >= 1024:
                self._features.clear()
            self._features[blob] = feats
        return feats

    def Query(self, request: profiles_pb2.QueryRequest, context: grpc.ServicerContext) -> profiles_pb2.QueryReply:
        def run() -> profiles_pb2.QueryReply:
            feats = self._decode_features(request.features)
            now = request.now if request.HasField("now") else None
            q = FeatureQuery(features=feats, entities=list(request.entities), keys=list(request.keys), now=now)
            res = self.store.query(q)
            self.m.entities.inc(len(res.keys))
            self.m.features.inc(len(res.keys) * len(feats))
            return profiles_pb2.QueryReply(result=self._enc.encode(res))

        return self._call("Query", context, run)

    # ---------------------------------------------------------------- writes and moves

    def Write(self, request: profiles_pb2.WriteRequest, context: grpc.ServicerContext) -> profiles_pb2.WriteReply:
        def run() -> profiles_pb2.WriteReply:
            try:
                events = msgspec.msgpack.decode(request.events)
            except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                raise InvalidInputError("events", request.events[:40], f"undecodable msgpack ({exc})") from None
            if not isinstance(events, list):
                raise InvalidInputError("events", type(events).__name__, "expected a msgpack list of events")
            wid = request.write_id
            if wid and len(wid) != 16:
                raise InvalidInputError("write_id", wid[:40], f"a write id is 16 bytes, got {len(wid)}")
            with self._mutate_lock:
                if wid and self.ledger.applied(wid):
                    self.m.deduplicated.inc()
                    primary = request.primary if request.owned else len(events)
                    return self._reply(_primaries_report(self.store, events, primary, None))
                if wid:
                    self.ledger.begin(wid, _wal_seq(self.store))
                try:
                    if request.owned:
                        res = write_owned(self.store, events, request.primary, frozenset(request.owned))
                    else:
                        res = self.store.write(events)
                except BaseException:
                    if wid:
                        self.ledger.abort(wid)
                    raise
                if wid:
                    self.ledger.done(wid)
            self.m.events.labels("accepted").inc(res.accepted)
            self.m.events.labels("rejected").inc(len(res.rejected))
            self.m.events.labels("too_old").inc(res.too_old)
            return self._reply(res)

        return self._call("Write", context, run)

    @staticmethod
    def _reply(res: WriteResult) -> profiles_pb2.WriteReply:
        return profiles_pb2.WriteReply(
            accepted=res.accepted,
            too_old=res.too_old,
            rejected=[profiles_pb2.Rejected(index=i, reason=r) for i, r in res.rejected],
        )

    def Sql(self, request: profiles_pb2.SqlRequest, context: grpc.ServicerContext) -> profiles_pb2.SqlReply:
        def run() -> profiles_pb2.SqlReply:
            now = request.now if request.HasField("now") else None
            return profiles_pb2.SqlReply(result=self._enc.encode(self.store.sql(request.text, now)))

        return self._call("Sql", context, run)

    def ListKeys(
        self, request: profiles_pb2.ListKeysRequest, context: grpc.ServicerContext
    ) -> Iterator[profiles_pb2.Keys]:
        chunk = request.chunk or 4096
        keys = self._call("ListKeys", context, lambda: list(self.store.entity_keys()))
        for i in range(0, len(keys), chunk):
            yield profiles_pb2.Keys(keys=keys[i : i + chunk])

    def ExportProfiles(self, request: profiles_pb2.Keys, context: grpc.ServicerContext) -> profiles_pb2.Profiles:
        def run() -> profiles_pb2.Profiles:
            blobs = self.store.export_profiles(list(request.keys))
            return profiles_pb2.Profiles(keys=list(blobs), blobs=list(blobs.values()))

        return self._call("ExportProfiles", context, run)

    def ImportProfiles(self, request: profiles_pb2.Profiles, context: grpc.ServicerContext) -> profiles_pb2.Count:
        def run() -> profiles_pb2.Count:
            if len(request.keys) != len(request.blobs):
                raise InvalidInputError(
                    "blobs", len(request.blobs), f"need one blob per key ({len(request.keys)} keys)"
                )
            try:
                with self._import_lock, self._mutate_lock:
                    self.store.import_profiles(
                        dict(zip(request.keys, request.blobs, strict=True)), max_total_bytes=self.max_import_bytes
                    )
            except (msgspec.DecodeError, ValueError) as exc:
                if isinstance(exc, InvalidInputError):
                    raise
                raise InvalidInputError("blobs", "...", f"not an exported profile ({exc})") from None
            return profiles_pb2.Count(count=len(request.keys))

        return self._call("ImportProfiles", context, run)

    def DeleteProfiles(self, request: profiles_pb2.Keys, context: grpc.ServicerContext) -> profiles_pb2.Count:
        def run() -> profiles_pb2.Count:
            with self._mutate_lock:
                self.store.delete_profiles(list(request.keys))
            return profiles_pb2.Count(count=len(request.keys))

        return self._call("DeleteProfiles", context, run)

    def Flush(self, request: profiles_pb2.Empty, context: grpc.ServicerContext) -> profiles_pb2.Empty:
        def run() -> profiles_pb2.Empty:
            self.store.flush()
            return profiles_pb2.Empty()

        return self._call("Flush", context, run)

    def Stats(self, request: profiles_pb2.Empty, context: grpc.ServicerContext) -> profiles_pb2.StatsReply:
        return self._call(
            "Stats", context, lambda: profiles_pb2.StatsReply(json=json.dumps(self.store.stats(), default=str))
        )


class _Health(health_pb2_grpc.HealthServicer):
    """``grpc.health.v1.Health``: SERVING while the store is open, NOT_SERVING while draining."""

    SERVICES = ("", "streamrec.profiles.v1.ProfileNode")

    def __init__(self) -> None:
        self.status = health_pb2.HealthCheckResponse.SERVING

    def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        if request.service not in self.SERVICES:
            return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)
        return health_pb2.HealthCheckResponse(status=self.status)

    def Watch(self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext) -> Iterator[Any]:
        yield self.Check(request, context)


class ProfileNodeServer:
    """A running profile node: gRPC (profiles + health) and an optional Prometheus endpoint.

    Parameters
    ----------
    store: the store it serves (closed by :meth:`stop` if ``own_store``).
    host, port: where gRPC listens (``port=0``: a free port, see :attr:`port` after start).
    metrics_port: where ``/metrics`` listens (``None``: no HTTP endpoint; ``0``: a free port).
    workers: gRPC handler threads.
    own_store: close the store on :meth:`stop`.
    max_import_bytes: the most bytes the blobs of one ``ImportProfiles`` request may decompress to,
        together (default 64 MiB; each blob is also held to the store's ``max_profile_bytes``).

    Examples
    --------
    >>> from streamrec.profiles import ProfileStore, ProfileClient
    >>> with ProfileNodeServer(ProfileStore(), own_store=True).start() as node:
    ...     client = ProfileClient([node.address])
    ...     client.health()[node.address]
    'SERVING'
    """

    def __init__(
        self,
        store: ProfileStore,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        metrics_port: int | None = None,
        workers: int = 8,
        own_store: bool = False,
        max_import_bytes: int = DEFAULT_MAX_IMPORT_BYTES,
    ) -> None:
        if isinstance(max_import_bytes, bool) or not isinstance(max_import_bytes, int) or max_import_bytes <= 0:
            raise InvalidInputError("max_import_bytes", max_import_bytes, "must be a positive number of bytes")
        self.store = store
        self.host = host
        self.port = port
        self.metrics_port = metrics_port
        self.own_store = own_store
        self.metrics = NodeMetrics(store)
        self._health = _Health()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), options=GRPC_OPTIONS)
        servicer = self._servicer = _Servicer(store, self.metrics, max_import_bytes)
        profiles_pb2_grpc.add_ProfileNodeServicer_to_server(servicer, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        self._http: Any = None
        self._stop_requested = threading.Event()
        self._stop_lock = threading.Lock()
        self._stopped = False

    @property
    def address(self) -> str:
        """``host:port`` of the gRPC endpoint."""
        return f"{self.host}:{self.port}"

    def start(self) -> ProfileNodeServer:
        """Bind and start serving (returns at once)."""
        bound = self._server.add_insecure_port(f"{self.host}:{self.port}")
        if bound == 0:
            raise StreamrecError(f"profile node: cannot listen on {self.host}:{self.port}")
        self.port = bound
        self._server.start()
        if self.metrics_port is not None:
            self._http, _ = start_http_server(self.metrics_port, addr=self.host, registry=self.metrics.registry)
            self.metrics_port = self._http.server_port
        return self

    def request_stop(self) -> None:
        """Make :meth:`wait` return; the waiting thread then calls :meth:`stop`."""
        self._stop_requested.set()

    def stop(self, grace: float = 2.0) -> None:
        """Report NOT_SERVING, finish in-flight calls (up to ``grace`` s), stop, close the store if owned.

        Idempotent; a second caller blocks until the first has finished (so a process that returns from
        ``stop`` never exits with the store half closed).
        """
        self._stop_requested.set()
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
            self._shutdown(grace)

    def _shutdown(self, grace: float) -> None:
        self._health.status = health_pb2.HealthCheckResponse.NOT_SERVING
        self._server.stop(grace).wait()
        self._servicer.ledger.close()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        if self.own_store:
            self.store.close()

    def wait(self) -> None:
        """Block until :meth:`request_stop` or :meth:`stop` (from a signal handler or another thread)."""
        self._stop_requested.wait()

    def __enter__(self) -> ProfileNodeServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(
    store: ProfileStore,
    host: str,
    port: int,
    metrics_port: int | None,
    workers: int = 8,
    on_ready: Callable[[ProfileNodeServer], None] | None = None,
    max_import_bytes: int = DEFAULT_MAX_IMPORT_BYTES,
) -> None:
    """Run a node until SIGTERM/SIGINT, then drain and close the store (flushes it to disk)."""
    node = ProfileNodeServer(
        store, host, port, metrics_port=metrics_port, workers=workers, own_store=True, max_import_bytes=max_import_bytes
    ).start()

    def _stop(signum: int, frame: Any) -> None:
        # Only wake the main thread: it does the shutdown itself, so the process cannot exit while a
        # helper thread is still flushing the store (an Event set inside a signal handler could also
        # deadlock on the lock the interrupted wait holds, hence the thread).
        threading.Thread(target=node.request_stop, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if on_ready is not None:
        on_ready(node)
    node.wait()
    node.stop()
