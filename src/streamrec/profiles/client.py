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
"""

from __future__ import annotations

import json
import operator
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import grpc
import msgspec

from streamrec.errors import InvalidInputError, StreamrecError
from streamrec.profiles.config import ProfilesConfig, profiles_config
from streamrec.profiles.events import EntityKeyer, build_specs
from streamrec.profiles.proto import health_pb2, health_pb2_grpc, profiles_pb2, profiles_pb2_grpc
from streamrec.profiles.ring import HashRing
from streamrec.profiles.store import ProfileStore
from streamrec.profiles.types import FeatureQuery, FeatureResult, QueryResult, SqlResult, WriteResult

__all__ = ["ProfileClient"]

_RESULT = msgspec.msgpack.Decoder(QueryResult)
_SQL = msgspec.msgpack.Decoder(SqlResult)
_ENC = msgspec.msgpack.Encoder()
_MOVE_CHUNK = 512


def _remote_error(address: str, err: grpc.RpcError) -> StreamrecError:
    """A node's error as the typed error the store would have raised in-process."""
    code = err.code() if hasattr(err, "code") else None
    details = err.details() if hasattr(err, "details") else str(err)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        field, _, reason = (details or "").partition(": ")
        exc = InvalidInputError.__new__(InvalidInputError)
        Exception.__init__(exc, details)
        exc.field, exc.value, exc.reason = field, None, reason
        return exc
    return StreamrecError(f"profile node {address}: {code.name if code else 'error'}: {details}")


class _Node:
    """What the client needs from a node (a local store or a remote one)."""

    name: str

    def query(self, query: FeatureQuery) -> QueryResult: ...
    def query_async(self, query: FeatureQuery) -> Any: ...
    def result(self, pending: Any) -> QueryResult: ...
    def write(self, events: list[Any], primary: int, owned: list[bytes]) -> WriteResult: ...
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

    def query_async(self, query: FeatureQuery) -> Any:
        return self.store.query(query)

    def result(self, pending: Any) -> QueryResult:
        return pending

    def write(self, events: list[Any], primary: int, owned: list[bytes]) -> WriteResult:
        if not owned:
            return self.store.write(events)
        from streamrec.profiles.service import write_owned

        return write_owned(self.store, events, primary, frozenset(owned))

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


class _GrpcNode(_Node):
    """A remote node; one channel and stub reused for every call (the hot path allocates neither)."""

    def __init__(self, address: str, timeout: float) -> None:
        from streamrec.profiles.service import GRPC_OPTIONS

        self.name = address
        self.timeout = timeout
        self.channel = grpc.insecure_channel(address, options=GRPC_OPTIONS)
        self.stub = profiles_pb2_grpc.ProfileNodeStub(self.channel)
        self.health_stub = health_pb2_grpc.HealthStub(self.channel)
        self._feature_blobs: dict[int, tuple[list, tuple, bytes]] = {}

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

    def _request(self, query: FeatureQuery) -> profiles_pb2.QueryRequest:
        req = profiles_pb2.QueryRequest(
            features=self._features(query.features), entities=query.entities, keys=query.keys
        )
        if query.now is not None:
            req.now = query.now
        return req

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as err:
            raise _remote_error(self.name, err) from None

    def query(self, query: FeatureQuery) -> QueryResult:
        return _RESULT.decode(self._call(self.stub.Query, self._request(query)).result)

    def query_async(self, query: FeatureQuery) -> Any:
        return self.stub.Query.future(self._request(query), timeout=self.timeout)

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
    timeout: seconds per gRPC call.

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
    """

    def __init__(
        self,
        nodes: Sequence[str] | Mapping[str, ProfileStore],
        cfg: ProfilesConfig | dict[str, Any] | None = None,
        *,
        vnodes: int = 256,
        timeout: float = 30.0,
    ) -> None:
        self.cfg = profiles_config(cfg)
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
                self._nodes[address] = _GrpcNode(address, timeout)
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
        """Name of the node that owns an entity (label or key)."""
        key = label_or_key if isinstance(label_or_key, bytes) else self.key(label_or_key)
        return self.ring.owner(key)

    # ---------------------------------------------------------------- reads

    def query(self, query: FeatureQuery) -> QueryResult:
        """Answer many features of one or many entities, fanned out to their owners and merged.

        The answer is the one a single store holding every profile would give (entities in the
        order asked: ``entities`` then ``keys``).
        """
        if not isinstance(query, FeatureQuery):
            raise InvalidInputError("query", query, "expected a FeatureQuery")
        if len(self._nodes) == 1:
            return next(iter(self._nodes.values())).query(query)
        keys = [self.key(e) for e in query.entities]
        keys.extend(query.keys)
        if not keys:
            return QueryResult(names=[], columns=[], keys=[], results=[], now=query.now or 0.0)
        owners = self.ring.indices(keys).tolist()
        by_node: dict[int, list[int]] = {}
        for i, o in enumerate(owners):
            by_node.setdefault(o, []).append(i)
        pending = []
        for o, idx in by_node.items():
            node = self._nodes[self.ring.nodes[o]]
            sub = FeatureQuery(features=query.features, keys=[keys[i] for i in idx], now=query.now)
            pending.append((node, idx, node.query_async(sub)))
        results: list[list[FeatureResult]] = [[] for _ in keys]
        first: QueryResult | None = None
        for node, idx, p in pending:
            res = node.result(p)
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
        owners = {self.owner(label) for label in labels}
        if len(owners) > 1:
            raise InvalidInputError("sql", sorted(labels), "these entities live on different nodes; use query()")
        return self._nodes[owners.pop()].sql(text, now)

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

        Durable on every node involved when this returns; bad events are rejected with their index
        in ``events`` and the reason, and the valid ones are applied.
        """
        if isinstance(events, str | bytes) or not isinstance(events, Sequence | Iterable):
            raise InvalidInputError("events", events, "expected a sequence of action events")
        events = list(events)
        if len(self._nodes) == 1:
            return next(iter(self._nodes.values())).write(events, len(events), [])
        # per node: (primary event indices, secondary event indices, owned keys)
        plan: dict[int, tuple[list[int], list[int], set[bytes]]] = {}
        all_keys: list[list[bytes] | None] = [self._event_keys(e) for e in events]
        flat = [k for ks in all_keys if ks for k in ks]
        owners = iter(self.ring.indices(flat).tolist())
        for i, ks in enumerate(all_keys):
            if ks is None:  # no entity at all: node 0 rejects it with the reason
                plan.setdefault(0, ([], [], set()))[0].append(i)
                continue
            seen: list[int] = []
            for k in ks:
                o = next(owners)
                entry = plan.setdefault(o, ([], [], set()))
                entry[2].add(k)
                if o not in seen:
                    (entry[0] if not seen else entry[1]).append(i)
                    seen.append(o)
        accepted = too_old = 0
        rejected: list[tuple[int, str]] = []
        for o, (prim, sec, owned) in plan.items():
            order = prim + sec
            res = self._nodes[self.ring.nodes[o]].write(
                [events[i] for i in order], len(prim), sorted(owned) or [b"\x00" * 16]
            )
            accepted += res.accepted
            too_old += res.too_old
            rejected.extend((order[j], reason) for j, reason in res.rejected)
        rejected.sort()
        return WriteResult(accepted=accepted, rejected=rejected, too_old=too_old)

    # ---------------------------------------------------------------- resize

    def add_node(self, node: str, store: ProfileStore | None = None) -> dict[str, int]:
        """Add a node (an address, or a name and its in-process ``store``) and move its profiles to it.

        Returns ``{"moved": profiles moved, "total": profiles before the move}``.
        """
        if node in self._nodes:
            raise InvalidInputError("node", node, "already in the ring")
        self._nodes[node] = _LocalNode(node, store, own=False) if store is not None else _GrpcNode(node, self.timeout)
        return self._rebalance(self.ring.with_node(node))

    def remove_node(self, node: str) -> dict[str, int]:
        """Move a node's profiles to the remaining nodes, then drop it from the ring."""
        new_ring = self.ring.without_node(node)
        report = self._rebalance(new_ring)
        self._nodes.pop(node).close()
        return report

    def _rebalance(self, new_ring: HashRing) -> dict[str, int]:
        old_nodes = list(self.ring.nodes)
        self.ring = new_ring  # new writes and reads go to the new owners from here on
        moved = total = 0
        for name in old_nodes:
            node = self._nodes[name]
            keys = node.keys()
            total += len(keys)
            owners = new_ring.owners(keys)
            by_dest: dict[str, list[bytes]] = {}
            for key, dest in zip(keys, owners, strict=True):
                if dest != name:
                    by_dest.setdefault(dest, []).append(key)
            for dest, dest_keys in by_dest.items():
                for i in range(0, len(dest_keys), _MOVE_CHUNK):
                    chunk = dest_keys[i : i + _MOVE_CHUNK]
                    blobs = node.export(chunk)
                    if blobs:
                        self._nodes[dest].import_(blobs)
                    node.delete(chunk)
                    moved += len(blobs)
        return {"moved": moved, "total": total}

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
