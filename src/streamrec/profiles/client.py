"""ProfileClient: one API over one in-process store or a cluster of profile nodes.

Placement is here, not in the nodes: entity keys (keyed hashes, computed with the cluster's
secret, so raw ids never leave the client in cluster mode) go on a consistent-hash ring of the
nodes (``ring.py``). A query is split by owner, sent to every owner at once (gRPC futures, one
request per node however many entities it owns), and the answers are put back in the caller's
order. A write goes to every node that owns one of the event's entities; each node keeps only
its own entities' rows (``service.write_owned``) and reports only on the events it is *primary*
for (the owner of the event's first entity), so the merged :class:`WriteResult` counts each
event once.

A node is anything with the small :class:`_Node` interface: :class:`_LocalNode` wraps a
``ProfileStore`` in this process (embedded mode: no gRPC, no serialization), :class:`_GrpcNode`
talks to ``streamrec profiles serve``. The routing code is the same for both, so an embedded
client over several local stores behaves exactly like a cluster (tests use that too).

Resizing (:meth:`ProfileClient.add_node`, :meth:`ProfileClient.remove_node`) switches the ring,
then moves every profile whose owner changed: ``export_profiles`` on the old owner,
``import_profiles`` on the new one (which *merges*, so writes that reached the new owner during
the move are kept), then ``delete_profiles`` on the old one. Writes should pause during a
resize only if exact answers are needed while it runs; nothing is lost either way.

**Replicas** (``replicas=R``, default the config's ``replicas``): every key lives on the ``R``
distinct nodes that follow it on the ring. A write goes to every replica of every entity of its
events at once and is acknowledged when each entity has ``W = R // 2 + 1`` replicas with it
durable (:class:`ReplicatedWrite`); each node's part carries a 16-byte write id, and a node
applies an id once (``service.WriteLedger``), so a part whose reply was lost can be sent again —
by gRPC's retry policy on ``UNAVAILABLE`` or by :meth:`ProfileClient.resume` — without counting
it twice. A write short of its quorum raises :class:`WriteQuorumError` holding the write; resuming
it sends only the parts not yet confirmed. A read goes to one replica of each key (the first
one not seen failing lately) and fails over to the next on an error, within the request's
deadline. Why not a peer copy to catch a node up, and what the ingest does: ``docs/profiles.md``,
"Replication".
"""

from __future__ import annotations

import json
import operator
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import msgspec
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from streamrec.errors import InvalidInputError, StreamrecError
from streamrec.profiles.config import ProfilesConfig, profiles_config
from streamrec.profiles.events import EntityKeyer, build_specs
from streamrec.profiles.proto import profiles_pb2, profiles_pb2_grpc
from streamrec.profiles.ring import HashRing
from streamrec.profiles.store import ProfileStore
from streamrec.profiles.types import FeatureQuery, FeatureResult, QueryResult, SqlResult, WriteResult

__all__ = ["ProfileClient", "ReplicasUnavailableError", "ReplicatedWrite", "WriteQuorumError"]

_RESULT = msgspec.msgpack.Decoder(QueryResult)
_SQL = msgspec.msgpack.Decoder(SqlResult)
_ENC = msgspec.msgpack.Encoder()
_MOVE_CHUNK = 512
_NO_KEY = b"\x00" * 16  # owned by no node: a write that validates and counts but keeps no row
_SERVICE = "streamrec.profiles.v1.ProfileNode"
# How long a node that failed is tried last by reads (doubling up to the max while it keeps failing).
_SUSPECT_S, _SUSPECT_MAX_S = 0.5, 5.0


def _retry_policy(methods: Sequence[str]) -> dict[str, Any]:
    return {
        "name": [{"service": _SERVICE, "method": m} for m in methods],
        "retryPolicy": {
            "maxAttempts": 5,
            "initialBackoff": "0.05s",
            "maxBackoff": "1s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        },
    }


def channel_options(replicas: int) -> list[tuple[str, Any]]:
    """gRPC channel options of a client with ``replicas`` copies of each key.

    ``UNAVAILABLE`` (the node is not listening, or the connection broke) is retried by gRPC itself
    with exponential backoff (50 ms doubling to 1 s, 5 attempts, within the call's deadline) for
    calls that are safe to repeat: reads, and writes when they carry a write id (``replicas > 1``).
    With replicas a read is not retried on the same node but failed over to another replica by
    the client, which is faster than waiting on a node that is down. Reconnection backs off from
    100 ms to at most 1 s, so a node that restarts is used again within about a second.
    """
    reads = ["ListKeys", "ExportProfiles", "Flush", "Stats", "DeleteProfiles"]
    if replicas == 1:
        reads += ["Query", "Sql"]
    else:
        reads += ["Write"]
    config = {"methodConfig": [_retry_policy(reads)]}
    from streamrec.profiles.service import GRPC_OPTIONS

    return [
        *GRPC_OPTIONS,
        ("grpc.enable_retries", 1),
        ("grpc.service_config", json.dumps(config)),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ]


class ReplicasUnavailableError(StreamrecError):
    """No replica of some entity answered a read within the request's deadline.

    ``errors`` maps each node tried to its last error.
    """

    def __init__(self, what: str, errors: Mapping[str, str]) -> None:
        self.errors = dict(errors)
        tried = "; ".join(f"{n}: {e}" for n, e in self.errors.items()) or "no node tried"
        super().__init__(f"{what}: no replica answered ({tried})")


class WriteQuorumError(StreamrecError):
    """A replicated write has fewer than its quorum ``W`` of durable replicas for some entity.

    Nothing of it is acknowledged. Parts may have been applied on some replicas: send the *same*
    write again with :meth:`ProfileClient.resume` (``error.write``), which sends only the parts
    not confirmed yet, each with its write id, so no replica applies a part twice. Writing the
    events again as a new write would count them twice on the replicas that have them.
    """

    def __init__(self, write: ReplicatedWrite) -> None:
        self.write = write
        short = write.short_of_quorum()
        errors = "; ".join(f"{n}: {write.errors.get(n, 'no reply')}" for n in write.missing) or "none"
        super().__init__(
            f"write of {len(write.events)} events: {short} replica set(s) below the write quorum "
            f"{write.quorum_size} of {write.replicas}; nodes without it: {errors}"
        )


def _is_bad_input(exc: BaseException) -> bool:
    return isinstance(exc, InvalidInputError)


def _remote_error(address: str, err: grpc.RpcError) -> StreamrecError:
    """A node's error as the typed error the store would have raised in-process.

    The node sends bad input as ``INVALID_ARGUMENT`` with rich details (``google.rpc.ErrorInfo``
    and ``BadRequest``, via ``grpcio-status``): the field, the reason and the bad value as text
    come from there. A status without them (a node older than the details, or an error raised by
    gRPC itself) keeps its message whole, with the field unknown (``"?"``).
    """
    code = err.code() if hasattr(err, "code") else None
    details = err.details() if hasattr(err, "details") else str(err)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        field, value, reason = "?", None, details or ""
        try:
            status = rpc_status.from_call(err)  # type: ignore[arg-type]
        except ValueError:  # details that contradict the call's own status: ignore them
            status = None
        for any_ in status.details if status is not None else ():
            info = error_details_pb2.ErrorInfo()
            if any_.Unpack(info) and "field" in info.metadata:
                field, value, reason = info.metadata["field"], info.metadata.get("value"), info.metadata["reason"]
        exc = InvalidInputError.__new__(InvalidInputError)
        Exception.__init__(exc, details)
        exc.field, exc.value, exc.reason = field, value, reason
        return exc
    return StreamrecError(f"profile node {address}: {code.name if code else 'error'}: {details}")


class _Node:
    """What the client needs from a node (a local store or a remote one)."""

    name: str

    def query(self, query: FeatureQuery) -> QueryResult: ...
    def query_async(self, query: FeatureQuery, timeout: float | None = None) -> Any: ...
    def result(self, pending: Any) -> QueryResult: ...
    def write(self, events: list[Any], primary: int, owned: list[bytes]) -> WriteResult: ...
    def write_async(
        self,
        events: list[Any],
        primary: int,
        owned: list[bytes],
        write_id: bytes,
        timeout: float,
        wait_for_ready: bool = False,
    ) -> Any: ...
    def write_result(self, pending: Any) -> WriteResult: ...
    def sql(self, text: str, now: float | None) -> SqlResult: ...
    def keys(self) -> list[bytes]: ...
    def export(self, keys: list[bytes]) -> dict[bytes, bytes]: ...
    def import_(self, blobs: dict[bytes, bytes]) -> None: ...
    def delete(self, keys: list[bytes]) -> None: ...
    def flush(self) -> None: ...
    def stats(self) -> dict[str, Any]: ...
    def health(self) -> str: ...
    def close(self) -> None: ...


class _LocalNode(_Node):
    def __init__(self, name: str, store: ProfileStore, own: bool) -> None:
        self.name = name
        self.store = store
        self.own = own

    def query(self, query: FeatureQuery) -> QueryResult:
        return self.store.query(query)

    def query_async(self, query: FeatureQuery, timeout: float | None = None) -> Any:
        try:
            return self.store.query(query)
        except Exception as exc:  # handed back by result(), as a gRPC future would
            return _Failed(exc)

    def result(self, pending: Any) -> QueryResult:
        if isinstance(pending, _Failed):
            raise pending.exc
        return pending

    def write(self, events: list[Any], primary: int, owned: list[bytes]) -> WriteResult:
        if not owned:
            return self.store.write(events)
        from streamrec.profiles.service import write_owned

        return write_owned(self.store, events, primary, frozenset(owned))

    def write_async(
        self,
        events: list[Any],
        primary: int,
        owned: list[bytes],
        write_id: bytes,
        timeout: float,
        wait_for_ready: bool = False,
    ) -> Any:
        try:  # in process a write either happens or raises: nothing to deduplicate
            return self.write(events, primary, owned)
        except Exception as exc:
            return _Failed(exc)

    def write_result(self, pending: Any) -> WriteResult:
        if isinstance(pending, _Failed):
            raise pending.exc
        return pending

    def sql(self, text: str, now: float | None) -> SqlResult:
        return self.store.sql(text, now)

    def keys(self) -> list[bytes]:
        return list(self.store.entity_keys())

    def export(self, keys: list[bytes]) -> dict[bytes, bytes]:
        return self.store.export_profiles(keys)

    def import_(self, blobs: dict[bytes, bytes]) -> None:
        self.store.import_profiles(blobs)

    def delete(self, keys: list[bytes]) -> None:
        self.store.delete_profiles(keys)

    def flush(self) -> None:
        self.store.flush()

    def stats(self) -> dict[str, Any]:
        return self.store.stats()

    def health(self) -> str:
        return "NOT_SERVING" if self.store.closed else "SERVING"

    def close(self) -> None:
        if self.own:
            self.store.close()


class _Failed:
    """An exception a local node's call raised, handed back like a failed gRPC future."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc


def split_result(res: QueryResult, sizes: Sequence[tuple[int, int]]) -> list[QueryResult]:
    """Cut the answer of a combined query back into the answers of its parts.

    ``sizes`` holds ``(entities, keys)`` of each part; the combined query asked every part's
    entities, then every part's keys, and a store answers entities before keys, so part ``i``'s rows
    are its slice of the first block followed by its slice of the second.
    """
    out = []
    e_at, k_at = 0, sum(ne for ne, _ in sizes)
    for ne, nk in sizes:
        rows = res.results[e_at : e_at + ne] + res.results[k_at : k_at + nk]
        keys = res.keys[e_at : e_at + ne] + res.keys[k_at : k_at + nk]
        out.append(QueryResult(names=res.names, columns=res.columns, keys=keys, results=rows, now=res.now))
        e_at += ne
        k_at += nk
    return out


class _Waiter:
    """One ``query`` call waiting in a :class:`_QueryCombiner`."""

    __slots__ = ("batch", "blob", "error", "event", "query", "result")

    def __init__(self, blob: bytes, query: FeatureQuery) -> None:
        self.blob = blob
        self.query = query
        self.event = threading.Event()
        self.result: QueryResult | None = None
        self.error: BaseException | None = None
        self.batch: list[_Waiter] | None = None  # set when this caller is handed a request to send

    def outcome(self) -> QueryResult:
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


class _QueryCombiner:
    """Concurrent ``query`` calls of one client to one node, sent as one request when they overlap.

    gRPC in Python costs a few hundred microseconds of CPU per call on each side, as much as the
    node's work for one user, so a process whose threads share a client (a serving worker's
    request threads) sends fewer, larger requests: while ``max_in_flight`` requests to the node
    are outstanding, a new call waits; when one returns, the calls that queued meanwhile with the
    same feature list and ``now`` leave together as one ``QueryRequest`` (entities and keys
    concatenated, up to ``max_entities``), sent by the first of their threads, and the node's
    answer is cut back per call (:func:`split_result`). A client that is not busy sends each call at
    once, without waiting. The wire is unchanged: a combined request is an ordinary query of
    several entities, and each entity's answer does not depend on the others.

    A combined request the node rejects as bad input is retried call by call, so only the call
    with the bad input fails; any other error fails every call of the request (each would have
    met it alone). A queued call waits at most ``timeout`` for its turn.
    """

    def __init__(
        self, send: Callable[[bytes, FeatureQuery], QueryResult], max_in_flight: int = 1, max_entities: int = 256
    ) -> None:
        self._send = send
        self.max_in_flight = max_in_flight
        self.max_entities = max_entities
        self._lock = threading.Lock()
        self._queue: list[_Waiter] = []
        self._in_flight = 0
        self.calls = 0  # query() calls
        self.requests = 0  # requests sent for them

    def query(self, blob: bytes, query: FeatureQuery, timeout: float) -> QueryResult:
        w = _Waiter(blob, query)
        with self._lock:
            self.calls += 1
            if self._in_flight < self.max_in_flight:
                self._in_flight += 1
                w.batch = [w]
            else:
                self._queue.append(w)
        if w.batch is None:
            if not w.event.wait(timeout):
                with self._lock:
                    if w in self._queue:
                        self._queue.remove(w)
                        raise StreamrecError(f"query: no turn to send within {timeout:g} s (client busy)")
                w.event.wait()  # taken into a request meanwhile: answered within that request's deadline
            if w.batch is None:
                return w.outcome()
        batch = w.batch
        try:
            self._send_batch(batch)
        finally:
            with self._lock:
                nxt = self._take()
            if nxt is not None:  # hand the freed slot to the first caller of the next request
                nxt[0].batch = nxt
                nxt[0].event.set()
        return w.outcome()

    def _take(self) -> list[_Waiter] | None:
        """The next request's calls: the oldest queued call and those that can go with it (lock held)."""
        if not self._queue:
            self._in_flight -= 1
            return None
        head = self._queue[0]
        key = (head.blob, head.query.now)
        taken: list[_Waiter] = []
        rest: list[_Waiter] = []
        size = 0
        for w in self._queue:
            n = len(w.query.entities) + len(w.query.keys)
            if (w.blob, w.query.now) == key and (not taken or size + n <= self.max_entities):
                taken.append(w)
                size += n
            else:
                rest.append(w)
        self._queue = rest
        return taken

    def _send_batch(self, batch: list[_Waiter]) -> None:
        self.requests += 1
        try:
            if len(batch) == 1:
                batch[0].result = self._send(batch[0].blob, batch[0].query)
                return
            first = batch[0].query
            combined = FeatureQuery(
                features=first.features,
                entities=[e for w in batch for e in w.query.entities],
                keys=[k for w in batch for k in w.query.keys],
                now=first.now,
            )
            try:
                res = self._send(batch[0].blob, combined)
            except InvalidInputError:  # someone's bad input: each alone, so only its caller fails
                for w in batch:
                    self.requests += 1
                    try:
                        w.result = self._send(w.blob, w.query)
                    except StreamrecError as exc:
                        w.error = exc
                return
            sizes = [(len(w.query.entities), len(w.query.keys)) for w in batch]
            for w, part in zip(batch, split_result(res, sizes), strict=True):
                w.result = part
        except BaseException as exc:
            for w in batch:
                if w.result is None and w.error is None:
                    w.error = exc
        finally:
            for w in batch[1:]:
                w.event.set()


class _GrpcNode(_Node):
    """A remote node; one channel and stub reused for every call (the hot path allocates neither)."""

    def __init__(self, address: str, timeout: float, replicas: int = 1) -> None:
        self.name = address
        self.timeout = timeout
        self.channel = grpc.insecure_channel(address, options=channel_options(replicas))
        self.stub = profiles_pb2_grpc.ProfileNodeStub(self.channel)
        self.health_stub = health_pb2_grpc.HealthStub(self.channel)
        self._feature_blobs: dict[int, tuple[list, tuple, bytes]] = {}
        self.combiner = _QueryCombiner(self._send_query)

    def _features(self, features: list) -> bytes:
        # A fixed feature set asked again and again (the usual case) is encoded once: the cache
        # hits only for the same list holding the very same (frozen) Feature objects, so a list
        # changed in place since is encoded afresh.
        hit = self._feature_blobs.get(id(features))
        if (
            hit is not None
            and hit[0] is features
            and len(hit[1]) == len(features)
            and all(map(operator.is_, hit[1], features))
        ):
            return hit[2]
        blob = _ENC.encode(features)
        if len(self._feature_blobs) > 256:
            self._feature_blobs.clear()
        self._feature_blobs[id(features)] = (features, tuple(features), blob)
        return blob

    def _request(self, query: FeatureQuery, blob: bytes | None = None) -> profiles_pb2.QueryRequest:
        req = profiles_pb2.QueryRequest(
            features=self._features(query.features) if blob is None else blob, entities=query.entities, keys=query.keys
        )
        if query.now is not None:
            req.now = query.now
        return req

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as err:
            raise _remote_error(self.name, err) from None

    def _send_query(self, blob: bytes, query: FeatureQuery) -> QueryResult:
        return _RESULT.decode(self._call(self.stub.Query, self._request(query, blob)).result)

    def query(self, query: FeatureQuery) -> QueryResult:
        return self.combiner.query(self._features(query.features), query, self.timeout)

    def query_async(self, query: FeatureQuery, timeout: float | None = None) -> Any:
        return self.stub.Query.future(self._request(query), timeout=self.timeout if timeout is None else timeout)

    def result(self, pending: Any) -> QueryResult:
        try:
            return _RESULT.decode(pending.result().result)
        except grpc.RpcError as err:
            raise _remote_error(self.name, err) from None

    def write(self, events: list[Any], primary: int, owned: list[bytes]) -> WriteResult:
        req = profiles_pb2.WriteRequest(events=_ENC.encode(events), primary=primary, owned=owned)
        rep = self._call(self.stub.Write, req)
        return WriteResult(
            accepted=rep.accepted, rejected=[(r.index, r.reason) for r in rep.rejected], too_old=rep.too_old
        )

    def write_async(
        self,
        events: list[Any],
        primary: int,
        owned: list[bytes],
        write_id: bytes,
        timeout: float,
        wait_for_ready: bool = False,
    ) -> Any:
        req = profiles_pb2.WriteRequest(events=_ENC.encode(events), primary=primary, owned=owned, write_id=write_id)
        return self.stub.Write.future(req, timeout=timeout, wait_for_ready=wait_for_ready)

    def write_result(self, pending: Any) -> WriteResult:
        try:
            rep = pending.result()
        except grpc.RpcError as err:
            raise _remote_error(self.name, err) from None
        return WriteResult(
            accepted=rep.accepted, rejected=[(r.index, r.reason) for r in rep.rejected], too_old=rep.too_old
        )

    def sql(self, text: str, now: float | None) -> SqlResult:
        req = profiles_pb2.SqlRequest(text=text)
        if now is not None:
            req.now = now
        return _SQL.decode(self._call(self.stub.Sql, req).result)

    def keys(self) -> list[bytes]:
        try:
            return [
                k
                for chunk in self.stub.ListKeys(profiles_pb2.ListKeysRequest(), timeout=self.timeout)
                for k in chunk.keys
            ]
        except grpc.RpcError as err:
            raise _remote_error(self.name, err) from None

    def export(self, keys: list[bytes]) -> dict[bytes, bytes]:
        rep = self._call(self.stub.ExportProfiles, profiles_pb2.Keys(keys=keys))
        return dict(zip(rep.keys, rep.blobs, strict=True))

    def import_(self, blobs: dict[bytes, bytes]) -> None:
        self._call(self.stub.ImportProfiles, profiles_pb2.Profiles(keys=list(blobs), blobs=list(blobs.values())))

    def delete(self, keys: list[bytes]) -> None:
        self._call(self.stub.DeleteProfiles, profiles_pb2.Keys(keys=keys))

    def flush(self) -> None:
        self._call(self.stub.Flush, profiles_pb2.Empty())

    def stats(self) -> dict[str, Any]:
        return json.loads(self._call(self.stub.Stats, profiles_pb2.Empty()).json)

    def health(self) -> str:
        try:
            rep = self.health_stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=self.timeout)
        except grpc.RpcError as err:
            return f"UNREACHABLE ({err.code().name})"
        return health_pb2.HealthCheckResponse.ServingStatus.Name(rep.status)

    def close(self) -> None:
        self.channel.close()


@dataclass
class _Part:
    """What one node gets of a write: events ``order`` (its primaries first), its keys, its id."""

    order: list[int]
    primary: int
    owned: list[bytes]
    write_id: bytes


@dataclass
class ReplicatedWrite:
    """One batch of events on its way to the replicas of its entities.

    ``parts`` maps each node to what it gets; ``done`` holds the nodes that confirmed their part
    (with their report on the events they answer for), ``errors`` the last error of the others.
    ``replica_sets`` are the distinct replica sets of the batch's entities: the write has its
    quorum when each set has at least ``quorum_size`` nodes in ``done``. ``result`` is the merged
    :class:`WriteResult` (each event counted once), set once the quorum is reached.
    """

    events: list[Any]
    parts: dict[str, _Part]
    replica_sets: list[tuple[str, ...]]
    replicas: int
    quorum_size: int
    done: dict[str, WriteResult] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    reports: dict[str, WriteResult] = field(default_factory=dict)
    result: WriteResult | None = None
    attempts: int = 0

    @property
    def missing(self) -> list[str]:
        """Nodes whose part is not confirmed yet (a hint for each, once the write has its quorum)."""
        return [n for n in self.parts if n not in self.done]

    @property
    def complete(self) -> bool:
        """Every replica has its part."""
        return not self.missing

    @property
    def has_quorum(self) -> bool:
        """Each entity has ``quorum_size`` replicas with the write, and every event has its report."""
        return self.short_of_quorum() == 0 and self.result is not None

    def short_of_quorum(self) -> int:
        """How many replica sets have fewer than ``quorum_size`` confirmations."""
        done = self.done
        return sum(1 for s in self.replica_sets if sum(n in done for n in s) < self.quorum_size)


class ProfileClient:
    """Read and write profiles on one store or a cluster of nodes, placed by consistent hashing.

    Parameters
    ----------
    nodes: node addresses ``"host:port"`` (gRPC), or a mapping ``name -> ProfileStore`` (in
        process; the client does not close stores it did not create).
    cfg: the cluster's ``[profiles]`` config; the client needs its ``secret`` (to place entities
        by their keyed hash) and its slots (to know which entities an event feeds). Default:
        the default config, as the nodes' default.
    vnodes: virtual nodes per node on the ring.
    timeout: seconds per gRPC call: the deadline of a read (fail-over included) and of each write
        attempt.
    replicas: copies of each key (``R``, on the ``R`` distinct nodes following it on the ring;
        capped at the number of nodes). Default: ``cfg.replicas`` (1). Writes are acknowledged by
        ``W = R // 2 + 1`` replicas of each entity.

    Examples
    --------
    >>> from streamrec.profiles import Feature, FeatureQuery, ProfileClient
    >>> client = ProfileClient.embedded(clock=lambda: 1_700_000_000.0)
    >>> ev = {"user": "42", "item": "m1", "action": "click", "time": 1_699_999_990.0,
    ...       "attributes": {"category": "comedy"}}
    >>> client.write([ev]).accepted
    1
    >>> client.flush()
    >>> f = Feature(slot="clicked_category", window="1h", counters=("click",))
    >>> q = FeatureQuery(entities=["user:42"], features=[f])
    >>> client.query(q).results[0][0].scalar()
    1.0
    >>> client.close()

    Two copies of each profile on three stores (in process here; gRPC nodes work alike):

    >>> from streamrec.profiles import ProfileStore
    >>> stores = {n: ProfileStore(clock=lambda: 1_700_000_000.0) for n in ("a", "b", "c")}
    >>> client = ProfileClient(stores, replicas=2)
    >>> client.write([ev]).accepted, client.quorum_size
    (1, 2)
    >>> key = client.key("user:42")
    >>> sorted(n for n, s in stores.items() if key in set(s.entity_keys())) == sorted(client.replica_nodes(key))
    True
    >>> for s in stores.values():
    ...     s.close()
    """

    def __init__(
        self,
        nodes: Sequence[str] | Mapping[str, ProfileStore],
        cfg: ProfilesConfig | dict[str, Any] | None = None,
        *,
        vnodes: int = 256,
        timeout: float = 30.0,
        replicas: int | None = None,
    ) -> None:
        self.cfg = profiles_config(cfg)
        replicas = self.cfg.replicas if replicas is None else replicas
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
            raise InvalidInputError("replicas", replicas, "must be an integer >= 1")
        self.replicas = replicas
        self._suspect: dict[str, tuple[float, float]] = {}  # node -> (tried last until, backoff)
        self._hints: list[ReplicatedWrite] = []
        self._lock = threading.Lock()
        self._specs = build_specs(self.cfg)
        self._entity_of = [s.entity for s in self._specs]
        self._entity_types = list(dict.fromkeys(self._entity_of))
        self._keyer = EntityKeyer(self.cfg.secret)
        self.timeout = timeout
        self.vnodes = vnodes
        self._nodes: dict[str, _Node] = {}
        if isinstance(nodes, Mapping):
            for name, store in nodes.items():
                self._nodes[name] = _LocalNode(name, store, own=False)
        else:
            if isinstance(nodes, str):
                raise InvalidInputError("nodes", nodes, "expected a list of 'host:port' addresses")
            for address in nodes:
                self._nodes[address] = _GrpcNode(address, timeout, replicas)
        self.ring = HashRing(list(self._nodes), vnodes)

    @classmethod
    def embedded(
        cls, cfg: ProfilesConfig | dict[str, Any] | None = None, path: str | None = None, **store_kwargs: Any
    ) -> ProfileClient:
        """A client over one in-process :class:`ProfileStore` (no gRPC); :meth:`close` closes it."""
        cfg = profiles_config(cfg)
        store = ProfileStore(cfg, path, **store_kwargs)
        client = cls({"local": store}, cfg)
        client._nodes["local"].own = True  # type: ignore[attr-defined]
        return client

    @property
    def local_store(self) -> ProfileStore | None:
        """The in-process store when this client is one local node (:meth:`embedded`), else ``None``."""
        if len(self._nodes) != 1:
            return None
        node = next(iter(self._nodes.values()))
        return node.store if isinstance(node, _LocalNode) else None

    @property
    def nodes(self) -> list[str]:
        """Node names (addresses in cluster mode), in ring order of declaration."""
        return list(self.ring.nodes)

    # ---------------------------------------------------------------- placement

    def key(self, label: str) -> bytes:
        """Entity key of ``"type:id"`` under the cluster's secret."""
        if not isinstance(label, str) or ":" not in label:
            raise InvalidInputError("entities", label, "expected 'type:id', e.g. 'user:42'")
        entity_type, entity_id = label.split(":", 1)
        if entity_type not in self._entity_types:
            raise InvalidInputError("entities", label, f"unknown entity type; known: {', '.join(self._entity_types)}")
        if not entity_id:
            raise InvalidInputError("entities", label, "entity id must be non-empty")
        return self._keyer(entity_type, entity_id)

    def owner(self, label_or_key: str | bytes) -> str:
        """Name of the node that owns an entity (label or key): the first of its replicas."""
        key = label_or_key if isinstance(label_or_key, bytes) else self.key(label_or_key)
        return self.ring.owner(key)

    def replica_nodes(self, label_or_key: str | bytes) -> list[str]:
        """Names of the nodes that hold an entity (label or key), owner first."""
        key = label_or_key if isinstance(label_or_key, bytes) else self.key(label_or_key)
        return self.ring.replicas(key, self.replicas)

    @property
    def quorum_size(self) -> int:
        """``W``: replicas of each entity that must have a write before it is acknowledged."""
        return self.ring.replica_count(self.replicas) // 2 + 1

    # Nodes that failed lately are tried last by reads, for a backoff that doubles while they keep
    # failing; the first success clears it.
    def _failed(self, name: str) -> None:
        with self._lock:
            _, backoff = self._suspect.get(name, (0.0, _SUSPECT_S / 2))
            backoff = min(backoff * 2, _SUSPECT_MAX_S)
            self._suspect[name] = (time.monotonic() + backoff, backoff)

    def _answered(self, name: str) -> None:
        if name in self._suspect:
            with self._lock:
                self._suspect.pop(name, None)

    def _preference(self, candidates: Sequence[int]) -> list[int]:
        """Candidates (node indices) in the order to try them: ring order, suspects last."""
        if not self._suspect:
            return list(candidates)
        now = time.monotonic()
        names = self.ring.nodes
        fresh = [c for c in candidates if self._suspect.get(names[c], (0.0, 0.0))[0] <= now]
        return fresh + [c for c in candidates if c not in fresh]

    # ---------------------------------------------------------------- reads

    def query(self, query: FeatureQuery) -> QueryResult:
        """Answer many features of one or many entities, fanned out to their owners and merged.

        The answer is the one a single store holding every profile would give (entities in the
        order asked: ``entities`` then ``keys``). With replicas, each key is asked of one replica
        (the first in ring order not seen failing lately); the keys of a node that fails are asked
        again of their next replica, within ``timeout`` in all (each round gets an equal share of
        what is left for the replicas still untried). :class:`ReplicasUnavailableError` when every
        replica of some key failed.
        """
        if not isinstance(query, FeatureQuery):
            raise InvalidInputError("query", query, "expected a FeatureQuery")
        if len(self._nodes) == 1:
            return next(iter(self._nodes.values())).query(query)
        keys = [self.key(e) for e in query.entities]
        keys.extend(query.keys)
        if not keys:
            return QueryResult(names=[], columns=[], keys=[], results=[], now=query.now or 0.0)
        deadline = time.monotonic() + self.timeout
        rows = self.ring.replica_indices(keys, self.replicas).tolist()
        preference: dict[tuple[int, ...], list[int]] = {}  # one per distinct replica set, not per key
        candidates: list[list[int]] = []
        for row in map(tuple, rows):
            if row not in preference:
                preference[row] = self._preference(row)
            candidates.append(preference[row])
        tried = [0] * len(keys)
        results: list[list[FeatureResult]] = [[] for _ in keys]
        errors: dict[str, str] = {}
        first: QueryResult | None = None
        todo = list(range(len(keys)))
        while todo:
            by_node: dict[int, list[int]] = {}
            for i in todo:
                if tried[i] >= len(candidates[i]):
                    raise ReplicasUnavailableError(f"query of {len(keys)} entities", errors)
                by_node.setdefault(candidates[i][tried[i]], []).append(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise ReplicasUnavailableError(f"query of {len(keys)} entities (deadline)", errors)
            share = left / max(len(candidates[i]) - tried[i] for i in todo)
            pending = []
            for o, idx in by_node.items():
                node = self._nodes[self.ring.nodes[o]]
                sub = FeatureQuery(features=query.features, keys=[keys[i] for i in idx], now=query.now)
                pending.append((node, idx, node.query_async(sub, share)))
            todo = []
            for node, idx, p in pending:
                try:
                    res = node.result(p)
                except StreamrecError as exc:
                    if _is_bad_input(exc):
                        raise
                    self._failed(node.name)
                    errors[node.name] = str(exc)
                    for i in idx:
                        tried[i] += 1
                    todo.extend(idx)
                    continue
                self._answered(node.name)
                first = first or res
                for i, row in zip(idx, res.results, strict=True):
                    results[i] = row
        assert first is not None
        return QueryResult(names=first.names, columns=first.columns, keys=keys, results=results, now=first.now)

    def sql(self, text: str, now: float | None = None) -> SqlResult:
        """Run a SQL query on the node that owns its entity (``WHERE entity = 'type:id'``)."""
        if len(self._nodes) == 1:
            return next(iter(self._nodes.values())).sql(text, now)
        labels = _sql_entities(text)
        if not labels:
            raise InvalidInputError("sql", text, "a clustered SQL query needs WHERE entity = 'type:id'")
        placements = {tuple(self.replica_nodes(label)) for label in labels}
        if len(placements) > 1:
            raise InvalidInputError("sql", sorted(labels), "these entities live on different nodes; use query()")
        errors: dict[str, str] = {}
        names = placements.pop()
        by_name = {n: i for i, n in enumerate(self.ring.nodes)}
        for i in self._preference([by_name[n] for n in names]):
            name = self.ring.nodes[i]
            try:
                out = self._nodes[name].sql(text, now)
            except StreamrecError as exc:
                if _is_bad_input(exc):
                    raise
                self._failed(name)
                errors[name] = str(exc)
                continue
            self._answered(name)
            return out
        raise ReplicasUnavailableError("sql", errors)

    # ---------------------------------------------------------------- writes

    def _event_keys(self, event: Any) -> list[bytes] | None:
        get = event.get if isinstance(event, Mapping) else lambda k, d=None: getattr(event, k, d)
        out: list[bytes] = []
        attributes = get("attributes", None) or {}
        for entity in self._entity_types:
            if entity in ("user", "item"):
                eid = get(entity, None)
            else:
                eid = attributes.get(entity) if isinstance(attributes, Mapping) else None
            if isinstance(eid, str) and eid:
                out.append(self._keyer(entity, eid))
        return out or None

    def write(self, events: Sequence[Any]) -> WriteResult:
        """Write a batch of action events (structs or mappings) to the nodes that own their entities.

        Durable when this returns: on every node involved (one copy), or with replicas on at least
        ``W`` replicas of each entity (:attr:`quorum_size`). Bad events are rejected with their
        index in ``events`` and the reason, and the valid ones are applied. A write short of its
        quorum raises :class:`WriteQuorumError` (resume it with :meth:`resume`, never by writing
        the events again). Parts of an acknowledged write that some replica missed are kept in
        this client (:attr:`hints`) and sent again, with their write ids, before each later write
        and by :meth:`deliver_hints`; a process that must not lose them (the ingest) uses
        :meth:`submit` and keeps them itself.
        """
        self.deliver_hints()
        w = self.submit(events)
        if not w.has_quorum:
            raise WriteQuorumError(w)
        if not w.complete:
            with self._lock:
                self._hints.append(w)
        assert w.result is not None
        return w.result

    def submit(self, events: Sequence[Any]) -> ReplicatedWrite:
        """Send a batch to every replica once (gRPC retries included) and return where it stands.

        Raises only for bad input (:class:`InvalidInputError`); a node that fails is recorded in
        the returned write's ``errors``. See :class:`ReplicatedWrite` for ``has_quorum``,
        ``complete`` and ``result``.
        """
        if isinstance(events, str | bytes) or not isinstance(events, Sequence | Iterable):
            raise InvalidInputError("events", events, "expected a sequence of action events")
        return self.resume(self._plan(list(events)))

    def resume(self, write: ReplicatedWrite) -> ReplicatedWrite:
        """Send the parts of ``write`` no node confirmed yet (same write ids: applied once each)."""
        missing = write.missing
        if missing:
            self._send(write, missing)
        if write.result is None and write.short_of_quorum() == 0:
            write.result = self._merge_reports(write)
        return write

    @property
    def hints(self) -> list[ReplicatedWrite]:
        """Acknowledged writes that some replica has not confirmed yet (held by this client)."""
        with self._lock:
            return list(self._hints)

    def deliver_hints(self) -> int:
        """Send the parts of held writes to replicas not failing lately; return how many are left."""
        with self._lock:
            hints = list(self._hints)
        if not hints:
            return 0
        now = time.monotonic()
        for w in hints:
            due = [n for n in w.missing if self._suspect.get(n, (0.0, 0.0))[0] <= now]
            if due:
                self._send(w, due)
        with self._lock:
            self._hints = [w for w in self._hints if not w.complete]
            return len(self._hints)

    def send_part(self, node: str, events: Sequence[Any], owned: Sequence[bytes], write_id: bytes) -> None:
        """Send ``node`` its part of an earlier write (a hint: ``ReplicatedWrite.parts[node]``).

        The write id makes it idempotent: a node that has the part already does not apply it
        again. Raises :class:`StreamrecError` if the node does not confirm it, and
        :class:`InvalidInputError` if ``node`` is not in the ring any more.
        """
        target = self._nodes.get(node)
        if target is None:
            raise InvalidInputError("node", node, f"not in the ring {self.nodes!r}")
        try:  # waits (up to 1 s) for a channel reconnecting to a node just back, instead of failing fast
            target.write_result(target.write_async(list(events), 0, list(owned), write_id, 1.0, wait_for_ready=True))
        except StreamrecError as exc:
            if not _is_bad_input(exc):
                self._failed(node)
            raise
        self._answered(node)

    def _plan(self, events: list[Any]) -> ReplicatedWrite:
        """Which node gets which events and keys (hot path: a loop per event over its few keys).

        Every replica of an entity gets the events that feed it, with that entity's key in
        ``owned``. Each event is *reported* (accepted / rejected / too_old in the reply) by one
        node, the first replica of its first entity not failing lately: its primaries come first.
        With one replica this is exactly the unreplicated plan (reporter = owner of the first entity).
        """
        n_nodes = len(self.ring.nodes)
        all_keys: list[list[bytes] | None] = [self._event_keys(e) for e in events]
        flat = [k for ks in all_keys if ks for k in ks]
        rows = iter(map(tuple, self.ring.replica_indices(flat, self.replicas).tolist()))
        prim: dict[int, list[int]] = {}
        sec: dict[int, list[int]] = {}
        owned: dict[int, set[bytes]] = {}
        sets: set[tuple[int, ...]] = set()
        preferred: dict[tuple[int, ...], int] = {}
        for i, ks in enumerate(all_keys):
            if ks is None:  # no entity at all: a node rejects it with the reason
                reporter = self._preference(range(n_nodes))[0]
                prim.setdefault(reporter, []).append(i)
                owned.setdefault(reporter, set())
                continue
            involved: list[int] = []
            reporter = -1
            for k in ks:
                row = next(rows)
                if reporter < 0:
                    reporter = preferred.get(row, -1)
                    if reporter < 0:
                        reporter = preferred[row] = self._preference(row)[0]
                sets.add(row)
                for o in row:
                    owned.setdefault(o, set()).add(k)
                    if o not in involved:
                        involved.append(o)
            for o in involved:
                (prim if o == reporter else sec).setdefault(o, []).append(i)
        names = self.ring.nodes
        lone = len(self._nodes) == 1
        parts: dict[str, _Part] = {}
        for o in sorted(set(prim) | set(sec)):
            p, q = prim.get(o, []), sec.get(o, [])
            keys = [] if lone else (sorted(owned[o]) or [_NO_KEY])
            wid = os.urandom(16) if self.replicas > 1 else b""
            parts[names[o]] = _Part(order=p + q, primary=len(p), owned=keys, write_id=wid)
        r = self.ring.replica_count(self.replicas)
        replica_sets = [tuple(names[o] for o in row) for row in sorted(sets)]
        return ReplicatedWrite(events, parts, replica_sets, r, r // 2 + 1)

    def _send(self, write: ReplicatedWrite, nodes: list[str]) -> None:
        """Send the parts of ``nodes`` at once and record who confirmed (in parallel over gRPC)."""
        write.attempts += 1
        pending = []
        for name in nodes:
            part = write.parts[name]
            node = self._nodes[name]
            batch = [write.events[i] for i in part.order]
            pending.append((name, node, node.write_async(batch, part.primary, part.owned, part.write_id, self.timeout)))
        for name, node, p in pending:
            try:
                report = node.write_result(p)
            except StreamrecError as exc:
                if _is_bad_input(exc):
                    raise
                self._failed(name)
                write.errors[name] = str(exc)
                continue
            self._answered(name)
            write.errors.pop(name, None)
            write.done[name] = report

    def _merge_reports(self, write: ReplicatedWrite) -> WriteResult | None:
        """One :class:`WriteResult` for the batch from the reports of the nodes that answer for its events.

        A reporting node that did not confirm (the write has its quorum without it) is replaced by
        a check of its events on a node that did: a write that keeps no row (``owned`` = a key no
        node has), which judges the events exactly as the missed node would have.
        """
        accepted = too_old = 0
        rejected: list[tuple[int, str]] = []
        for name, part in write.parts.items():
            if part.primary == 0:
                continue
            report = write.done.get(name)
            if report is None:
                report = self._check_only(write, [write.events[i] for i in part.order[: part.primary]])
                if report is None:
                    return None
            accepted += report.accepted
            too_old += report.too_old
            rejected.extend((part.order[j], reason) for j, reason in report.rejected)
        for name, part in write.parts.items():
            if part.owned == [_NO_KEY]:  # only events without an entity: judged, nothing to keep
                write.done.setdefault(name, WriteResult(accepted=0))
        rejected.sort()
        return WriteResult(accepted=accepted, rejected=rejected, too_old=too_old)

    def _check_only(self, write: ReplicatedWrite, events: list[Any]) -> WriteResult | None:
        for name in [*write.done, *self.ring.nodes]:
            try:
                return self._nodes[name].write(events, len(events), [_NO_KEY])
            except StreamrecError as exc:
                if _is_bad_input(exc):
                    raise
                self._failed(name)
        return None

    # ---------------------------------------------------------------- resize

    def add_node(self, node: str, store: ProfileStore | None = None) -> dict[str, int]:
        """Add a node (an address, or a name and its in-process ``store``) and move its profiles to it.

        Returns ``{"moved": profiles moved, "total": profiles before the move}``.
        """
        if node in self._nodes:
            raise InvalidInputError("node", node, "already in the ring")
        self._nodes[node] = (
            _LocalNode(node, store, own=False) if store is not None else _GrpcNode(node, self.timeout, self.replicas)
        )
        return self._rebalance(self.ring.with_node(node))

    def remove_node(self, node: str) -> dict[str, int]:
        """Move a node's profiles to the remaining nodes, then drop it from the ring."""
        new_ring = self.ring.without_node(node)
        report = self._rebalance(new_ring)
        self._nodes.pop(node).close()
        return report

    def _rebalance(self, new_ring: HashRing) -> dict[str, int]:
        """Copy each profile to the nodes that newly hold it, then delete it where it no longer belongs.

        A key's copy comes from a node that leaves its replica set (it gets no new write after the
        switch, so the import, which merges, adds nothing twice); only when no node leaves (fewer
        nodes than replicas) does it come from one that stays, and writes during the move may then
        count twice on the new node. ``moved`` counts copies made; ``total`` distinct profiles.
        """
        old_ring = self.ring
        self.ring = new_ring  # new writes and reads go to the new replicas from here on
        held = {name: self._nodes[name].keys() for name in old_ring.nodes}
        holders: dict[bytes, list[str]] = {}
        for name, keys in held.items():
            for key in keys:
                holders.setdefault(key, []).append(name)
        keys = list(holders)
        olds = old_ring.replica_indices(keys, self.replicas).tolist()
        news = new_ring.replica_indices(keys, self.replicas).tolist()
        copies: dict[tuple[str, str], list[bytes]] = {}
        deletes: dict[str, list[bytes]] = {}
        for key, old, new in zip(keys, olds, news, strict=True):
            old_names = {old_ring.nodes[i] for i in old}
            new_names = [new_ring.nodes[i] for i in new]
            have = holders[key]
            gained = [n for n in new_names if n not in old_names and n not in have]
            leaving = [n for n in have if n not in new_names]
            if gained:
                source = (leaving or have)[0]
                for dest in gained:
                    copies.setdefault((source, dest), []).append(key)
            for name in leaving:
                deletes.setdefault(name, []).append(key)
        moved = 0
        for (source, dest), dest_keys in copies.items():
            for i in range(0, len(dest_keys), _MOVE_CHUNK):
                blobs = self._nodes[source].export(dest_keys[i : i + _MOVE_CHUNK])
                if blobs:
                    self._nodes[dest].import_(blobs)
                moved += len(blobs)
        for name, gone in deletes.items():  # only once every copy is durable
            for i in range(0, len(gone), _MOVE_CHUNK):
                self._nodes[name].delete(gone[i : i + _MOVE_CHUNK])
        return {"moved": moved, "total": len(keys)}

    # ---------------------------------------------------------------- admin

    def keys(self) -> dict[str, list[bytes]]:
        """Entity keys held by each node."""
        return {name: node.keys() for name, node in self._nodes.items()}

    def flush(self) -> None:
        """Merge and persist on every node (makes recent writes visible to queries at once)."""
        for node in self._nodes.values():
            node.flush()

    def stats(self) -> dict[str, dict[str, Any]]:
        """``ProfileStore.stats()`` of each node."""
        return {name: node.stats() for name, node in self._nodes.items()}

    def health(self) -> dict[str, str]:
        """Health of each node: ``SERVING``, ``NOT_SERVING`` or ``UNREACHABLE (...)``."""
        return {name: node.health() for name, node in self._nodes.items()}

    def close(self) -> None:
        """Close channels (and the store of an :meth:`embedded` client)."""
        for node in self._nodes.values():
            node.close()

    def __enter__(self) -> ProfileClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _sql_entities(text: str) -> list[str]:
    """Entity labels named by ``entity = '...'`` or ``entity IN (...)`` in a SQL text."""
    import sqlglot
    from sqlglot import expressions as exp

    try:
        tree = sqlglot.parse_one(text)
    except sqlglot.errors.ParseError as exc:
        raise InvalidInputError("sql", text, f"cannot parse: {exc}") from None
    out: list[str] = []
    for node in tree.find_all(exp.EQ, exp.In):
        col = node.this
        if isinstance(col, exp.Column) and col.name.lower() == "entity":
            if isinstance(node, exp.EQ) and isinstance(node.expression, exp.Literal):
                out.append(node.expression.this)
            elif isinstance(node, exp.In):
                out.extend(e.this for e in node.expressions if isinstance(e, exp.Literal))
    return out
