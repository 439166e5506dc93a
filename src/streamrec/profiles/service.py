"""A profile node: one :class:`ProfileStore` behind gRPC, with health checks and Prometheus metrics.

The node is thin on purpose. Everything a feature means is decided by the store; the node only
turns wire bytes into the store's types and back, so a query answered over gRPC is the same
``QueryResult`` an in-process caller gets. The server is ``grpc.aio`` on an event loop of its own
thread. The hot call (``Query``) runs on that loop: look the feature list up in a small cache keyed
by its msgpack bytes (a client asking the same 100 features again pays their decoding once, and
the store's per-feature plan cache then hits on the very same ``Feature`` objects), hand the
request to the :class:`QueryBatcher`, which answers the requests in flight together with one
``store.query`` (the fixed cost of a query is paid once per batch, not per request), and encode
the answer with one msgspec call. No protobuf message is built per feature or per number. Calls
that may block (writes with their fsync, imports, SQL...) run on worker threads.

Placement is the client's job (``client.py``): a node owns whatever entities the client's ring
sends it. An event feeds the profiles of several entities (its user, its item...), which may live
on different nodes, so a clustered ``Write`` names the keys this node owns and the node applies
only their rows (``write_owned``); the other nodes apply the rest of the same events.

Bad input (undecodable blobs, unknown slots, bad keys, a bad clock) answers ``INVALID_ARGUMENT``
with the message of the :class:`InvalidInputError` that names the field, and changes nothing; the
status carries the field, reason and value as ``google.rpc`` details (``grpcio-status``), which the
client turns back into the typed error.

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

import asyncio
import json
import os
import signal
import struct
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import msgspec
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health as health_lib
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from streamrec.errors import InvalidInputError, StreamrecError
from streamrec.profiles.client import split_result
from streamrec.profiles.proto import profiles_pb2, profiles_pb2_grpc
from streamrec.profiles.store import DEFAULT_MAX_PROFILE_BYTES, ProfileStore
from streamrec.profiles.types import Feature, FeatureQuery, QueryResult, WriteResult

__all__ = ["NodeMetrics", "ProfileNodeServer", "QueryBatcher", "WriteLedger", "serve", "write_owned"]

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


# --------------------------------------------------------------------------- errors on the wire

_ERROR_DOMAIN = "streamrec.profiles"
_MAX_DETAIL = 2000  # characters of a message or value sent back (the whole status rides in trailers)


def _error_status(code: grpc.StatusCode, message: str, exc: BaseException) -> grpc.Status:
    """A ``google.rpc.Status`` with rich details (``grpcio-status``) for an error the node answers.

    Bad input carries a ``BadRequest`` field violation (the field and the reason) and an
    ``ErrorInfo`` whose metadata holds the field, the reason and the bad value as text, so a client
    rebuilds the :class:`InvalidInputError` without parsing the message. The message itself stays
    ``field: reason (got value)``, as before, for clients that only read it.
    """
    message = message[:_MAX_DETAIL]
    info = error_details_pb2.ErrorInfo(reason=code.name, domain=_ERROR_DOMAIN)
    details = []
    if isinstance(exc, InvalidInputError):
        field = str(exc.field)[:200]
        reason = str(exc.reason)[:_MAX_DETAIL]
        info.metadata.update({"field": field, "reason": reason, "value": _short_value(exc.value)})
        violation = error_details_pb2.BadRequest.FieldViolation(field=field, description=reason)
        bad = any_pb2.Any()
        bad.Pack(error_details_pb2.BadRequest(field_violations=[violation]))
        details.append(bad)
    packed = any_pb2.Any()
    packed.Pack(info)
    details.insert(0, packed)
    return rpc_status.to_status(status_pb2.Status(code=code.value[0], message=message, details=details))


def _short_value(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def _classify(name: str, exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message of an exception a method raised (bad input, state, or a bug)."""
    if isinstance(exc, InvalidInputError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, msgspec.DecodeError | UnicodeDecodeError):
        return grpc.StatusCode.INVALID_ARGUMENT, f"{name.lower()}: undecodable msgpack ({exc})"
    if isinstance(exc, StreamrecError):
        return grpc.StatusCode.FAILED_PRECONDITION, str(exc)
    # A bug, not bad input: say so (and count it) instead of UNKNOWN.
    return grpc.StatusCode.INTERNAL, f"{name}: internal error {type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------- query batching


class _Pending:
    """One Query request waiting for its answer from a batch."""

    __slots__ = ("blob", "entities", "features", "future", "keys", "now")

    def __init__(
        self, blob: bytes, features: list[Feature], entities: list[str], keys: list[bytes], now: float | None, future
    ) -> None:
        self.blob = blob
        self.features = features
        self.entities = entities
        self.keys = keys
        self.now = now
        self.future = future


class QueryBatcher:
    """Answers Query requests that are in flight together with one ``store.query`` per feature list.

    A query's fixed cost (resolving 100 features, grouping them by slot, one window plan per slot)
    is about half of a one-user answer, and it is the same for every entity of the query, so eight
    users asked at once cost what five asked one by one cost (``docs/profiles.md``, "Batching").
    The node's event loop hands each request here; the first one schedules a drain that yields to
    the loop until no new request joins (gRPC delivers requests that arrived together within a few
    loop turns), then answers the waiting requests grouped by (feature list bytes, ``now``), up to
    ``max_entities`` entities per store call, and splits the answer back per request.

    Exactness: an entity's answer does not depend on the other entities of a store call (the store
    computes each one on its own; only identical answer objects may be shared), and a batch uses
    one ``now`` (requests without ``now`` get the node clock read once for the batch). Errors stay
    per request: if the combined call rejects its input, each request of it is answered on its own,
    so a bad key fails only the request that sent it. Not a cache: nothing outlives the batch.
    """

    def __init__(
        self, store: ProfileStore, max_entities: int = 256, quiet_turns: int = 4, max_wait: float = 0.001
    ) -> None:
        self.store = store
        self.max_entities = max_entities
        self.quiet_turns = quiet_turns
        self.max_wait = max_wait
        self._pending: list[_Pending] = []
        self._draining: asyncio.Task[None] | None = None
        self.requests = 0  # requests answered through here
        self.store_calls = 0  # store.query calls made for them

    async def query(
        self, blob: bytes, features: list[Feature], entities: list[str], keys: list[bytes], now: float | None
    ) -> QueryResult:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append(_Pending(blob, features, entities, keys, now, future))
        if self._draining is None:
            self._draining = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                # gRPC's aio server accepts calls one at a time, a few loop turns apart, so calls that
                # arrived together join over several turns: wait until `quiet_turns` pass with no new
                # one, or `max_wait` seconds.
                seen, quiet, give_up = -1, 0, loop.time() + self.max_wait
                while quiet < self.quiet_turns and loop.time() < give_up:
                    await asyncio.sleep(0)
                    quiet = quiet + 1 if len(self._pending) == seen else 0
                    seen = len(self._pending)
                batch, self._pending = self._pending, []
                try:
                    outcomes = self.answer(batch)
                except Exception as exc:  # a bug: fail the batch's calls rather than leave them waiting
                    outcomes = [(p, False, exc) for p in batch]
                for p, ok, value in outcomes:
                    if p.future.done():  # cancelled meanwhile (the client went away)
                        continue
                    if ok:
                        p.future.set_result(value)
                    else:
                        p.future.set_exception(value)
        finally:
            self._draining = None

    def answer(self, batch: list[_Pending]) -> list[tuple[_Pending, bool, Any]]:
        """Answers of every request of ``batch``: ``(request, True, QueryResult)`` or ``(request, False, error)``."""
        out: list[tuple[_Pending, bool, Any]] = []
        groups: dict[tuple[bytes, float | None], list[_Pending]] = {}
        for p in batch:
            if not p.future.done():  # a cancelled call (client gone) needs no answer
                groups.setdefault((p.blob, p.now), []).append(p)
        for group in groups.values():
            chunk: list[_Pending] = []
            size = 0
            for p in group:
                n = len(p.entities) + len(p.keys)
                if chunk and size + n > self.max_entities:
                    self._answer_together(chunk, out)
                    chunk, size = [], 0
                chunk.append(p)
                size += n
            if chunk:
                self._answer_together(chunk, out)
        return out

    def _answer_together(self, chunk: list[_Pending], out: list[tuple[_Pending, bool, Any]]) -> None:
        self.requests += len(chunk)
        if len(chunk) == 1:
            self._answer_alone(chunk[0], out)
            return
        first = chunk[0]
        entities = [e for p in chunk for e in p.entities]
        keys = [k for p in chunk for k in p.keys]
        try:
            self.store_calls += 1
            res = self.store.query(FeatureQuery(features=first.features, entities=entities, keys=keys, now=first.now))
        except Exception:  # bad input somewhere: answer each on its own so only its sender fails
            self.store_calls -= 1
            for p in chunk:
                self._answer_alone(p, out)
            return
        sizes = [(len(p.entities), len(p.keys)) for p in chunk]
        out.extend((p, True, part) for p, part in zip(chunk, split_result(res, sizes), strict=True))

    def _answer_alone(self, p: _Pending, out: list[tuple[_Pending, bool, Any]]) -> None:
        self.store_calls += 1
        try:
            res = self.store.query(FeatureQuery(features=p.features, entities=p.entities, keys=p.keys, now=p.now))
        except Exception as exc:
            out.append((p, False, exc))
            return
        out.append((p, True, res))


def _resolve(future: Any, value: Any) -> None:
    if not future.done():
        future.set_result(value)


# --------------------------------------------------------------------------- the service


class _Servicer(profiles_pb2_grpc.ProfileNodeServicer):
    """``ProfileNode`` on a ``grpc.aio`` server: queries on the event loop (batched), the rest on threads.

    A query answers in a fraction of a millisecond and holds the GIL throughout, so it runs on the
    loop itself: no thread hand-off, and requests that arrive while one batch runs wait in gRPC's
    queue and form the next batch. Writes (an fsync), imports, exports, SQL, flushes and stats may
    block for milliseconds and run on ``workers`` threads, so the loop keeps answering queries
    meanwhile.
    """

    def __init__(self, store: ProfileStore, metrics: NodeMetrics, max_import_bytes: int, workers: int) -> None:
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
        self.batcher = QueryBatcher(store)
        self.pool = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="profile-node")
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

    async def _fail(self, name: str, context: grpc.aio.ServicerContext, exc: BaseException) -> None:
        code, message = _classify(name, exc)
        self.m.requests.labels(name, code.name).inc()
        status = _error_status(code, message, exc)
        await context.abort(status.code, status.details, status.trailing_metadata)

    def _succeeded(self, name: str, t0: float) -> None:
        self._lat[name].observe(time.perf_counter() - t0)
        self._ok[name].inc()

    async def _blocking(self, name: str, context: grpc.aio.ServicerContext, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on a worker thread; answer its error as a status with details."""
        t0 = time.perf_counter()
        try:
            out = await asyncio.get_running_loop().run_in_executor(self.pool, fn)
        except Exception as exc:
            failure: BaseException = exc
        else:
            self._succeeded(name, t0)
            return out
        await self._fail(name, context, failure)

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

    async def Query(self, request: profiles_pb2.QueryRequest, context: grpc.aio.ServicerContext) -> Any:
        t0 = time.perf_counter()
        try:
            feats = self._decode_features(request.features)
            now = request.now if request.HasField("now") else None
            res = await self.batcher.query(request.features, feats, list(request.entities), list(request.keys), now)
            reply = profiles_pb2.QueryReply(result=self._enc.encode(res))
        except Exception as exc:
            failure: BaseException = exc
        else:
            self.m.entities.inc(len(res.keys))
            self.m.features.inc(len(res.keys) * len(feats))
            self._succeeded("Query", t0)
            return reply
        await self._fail("Query", context, failure)

    # ---------------------------------------------------------------- writes and moves

    async def Write(self, request: profiles_pb2.WriteRequest, context: grpc.aio.ServicerContext) -> Any:
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

        return await self._blocking("Write", context, run)

    @staticmethod
    def _reply(res: WriteResult) -> profiles_pb2.WriteReply:
        return profiles_pb2.WriteReply(
            accepted=res.accepted,
            too_old=res.too_old,
            rejected=[profiles_pb2.Rejected(index=i, reason=r) for i, r in res.rejected],
        )

    async def Sql(self, request: profiles_pb2.SqlRequest, context: grpc.aio.ServicerContext) -> Any:
        def run() -> profiles_pb2.SqlReply:
            now = request.now if request.HasField("now") else None
            return profiles_pb2.SqlReply(result=self._enc.encode(self.store.sql(request.text, now)))

        return await self._blocking("Sql", context, run)

    async def ListKeys(
        self, request: profiles_pb2.ListKeysRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[profiles_pb2.Keys]:
        chunk = request.chunk or 4096
        keys = await self._blocking("ListKeys", context, lambda: list(self.store.entity_keys()))
        for i in range(0, len(keys), chunk):
            yield profiles_pb2.Keys(keys=keys[i : i + chunk])

    async def ExportProfiles(self, request: profiles_pb2.Keys, context: grpc.aio.ServicerContext) -> Any:
        def run() -> profiles_pb2.Profiles:
            blobs = self.store.export_profiles(list(request.keys))
            return profiles_pb2.Profiles(keys=list(blobs), blobs=list(blobs.values()))

        return await self._blocking("ExportProfiles", context, run)

    async def ImportProfiles(self, request: profiles_pb2.Profiles, context: grpc.aio.ServicerContext) -> Any:
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

        return await self._blocking("ImportProfiles", context, run)

    async def DeleteProfiles(self, request: profiles_pb2.Keys, context: grpc.aio.ServicerContext) -> Any:
        def run() -> profiles_pb2.Count:
            with self._mutate_lock:
                self.store.delete_profiles(list(request.keys))
            return profiles_pb2.Count(count=len(request.keys))

        return await self._blocking("DeleteProfiles", context, run)

    async def Flush(self, request: profiles_pb2.Empty, context: grpc.aio.ServicerContext) -> Any:
        def run() -> profiles_pb2.Empty:
            self.store.flush()
            return profiles_pb2.Empty()

        return await self._blocking("Flush", context, run)

    async def Stats(self, request: profiles_pb2.Empty, context: grpc.aio.ServicerContext) -> Any:
        def run() -> profiles_pb2.StatsReply:
            stats = self.store.stats()
            stats["query_requests"] = self.batcher.requests
            stats["query_store_calls"] = self.batcher.store_calls
            return profiles_pb2.StatsReply(json=json.dumps(stats, default=str))

        return await self._blocking("Stats", context, run)


_SERVICES = ("", "streamrec.profiles.v1.ProfileNode")


class ProfileNodeServer:
    """A running profile node: gRPC (profiles + health) and an optional Prometheus endpoint.

    The gRPC server is ``grpc.aio`` on an event loop of its own (a thread started by :meth:`start`),
    so a node runs inside any program, several per process; queries are batched on that loop
    (:class:`QueryBatcher`). Health is ``grpcio-health-checking``'s servicer.

    Parameters
    ----------
    store: the store it serves (closed by :meth:`stop` if ``own_store``).
    host, port: where gRPC listens (``port=0``: a free port, see :attr:`port` after start).
    metrics_port: where ``/metrics`` listens (``None``: no HTTP endpoint; ``0``: a free port).
    workers: threads for the calls that may block (writes, imports, exports, SQL, flush, stats);
        queries run on the event loop.
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
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise InvalidInputError("workers", workers, "must be an integer >= 1")
        self.store = store
        self.host = host
        self.port = port
        self.metrics_port = metrics_port
        self.own_store = own_store
        self.metrics = NodeMetrics(store)
        self._servicer = _Servicer(store, self.metrics, max_import_bytes, workers)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: Any = None
        self._health: Any = None
        self._http: Any = None
        self._stop_requested = threading.Event()
        self._stop_lock = threading.Lock()
        self._stopped = False

    @property
    def address(self) -> str:
        """``host:port`` of the gRPC endpoint."""
        return f"{self.host}:{self.port}"

    @property
    def batcher(self) -> QueryBatcher:
        """The query batcher (its ``requests`` and ``store_calls`` counters)."""
        return self._servicer.batcher

    def start(self) -> ProfileNodeServer:
        """Bind and start serving (returns at once; the server runs on its own thread)."""
        loop = self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name=f"profile-node-{self.port}", daemon=True)
        self._thread.start()
        try:
            self.port = asyncio.run_coroutine_threadsafe(self._start_server(), loop).result()
        except BaseException:
            self._stop_loop()
            raise
        if self.metrics_port is not None:
            self._http, _ = start_http_server(self.metrics_port, addr=self.host, registry=self.metrics.registry)
            self.metrics_port = self._http.server_port
        return self

    def _run_loop(self) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()
        self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        self._loop.close()

    async def _start_server(self) -> int:
        server = grpc.aio.server(options=GRPC_OPTIONS)
        profiles_pb2_grpc.add_ProfileNodeServicer_to_server(self._servicer, server)
        health = health_lib.aio.HealthServicer()
        for name in _SERVICES:
            await health.set(name, health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        try:
            bound = server.add_insecure_port(f"{self.host}:{self.port}")
        except RuntimeError:
            bound = 0
        if bound == 0:
            raise StreamrecError(f"profile node: cannot listen on {self.host}:{self.port}")
        await server.start()
        self._server, self._health = server, health
        return bound

    async def _stop_server(self, grace: float) -> None:
        if self._health is not None:
            await self._health.enter_graceful_shutdown()  # NOT_SERVING for every service name
        if self._server is not None:
            await self._server.stop(grace)

    def _stop_loop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._thread = None

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
        if self._loop is not None and self._thread is not None:
            asyncio.run_coroutine_threadsafe(self._stop_server(grace), self._loop).result()
            self._stop_loop()
        # A call cancelled at the end of the grace period may still run on a worker thread: let it
        # finish before the store closes under it.
        self._servicer.pool.shutdown(wait=True)
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
