"""Table deltas: what a training table changed since its last export, as data that travels.

A :class:`TableDelta` carries, for one slot, the ids whose vectors changed (with the new vectors)
and the ids that were evicted. Optimizer state never travels: serving replicas only need the
vectors. A :class:`CollectionDelta` bundles the deltas of every slot; ``to_bytes``/``from_bytes``
give a compact msgpack form (raw little-endian arrays inside) for the ``model-updates`` topic.

Apply order on a replica: evictions first, then upserts. An id evicted and re-admitted within one
interval appears in both lists and ends present with its new vector; one admitted and evicted
within an interval appears only among the evictions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec
import numpy as np

from streamrec.errors import InvalidInputError


@dataclass(frozen=True)
class TableDelta:
    """Changes of one slot's table: ``ids`` with their new ``vectors``, and ``evicted`` ids."""

    slot: str
    ids: np.ndarray  # int64 [n]
    vectors: np.ndarray  # float32 [n, dim]
    evicted: np.ndarray  # int64 [m]

    def __post_init__(self) -> None:
        if self.ids.dtype != np.int64 or self.ids.ndim != 1:
            raise InvalidInputError("delta.ids", self.ids.dtype, "must be a 1-D int64 array")
        if self.vectors.dtype != np.float32 or self.vectors.ndim != 2 or len(self.vectors) != len(self.ids):
            raise InvalidInputError(
                "delta.vectors", self.vectors.shape, f"must be float32 [{len(self.ids)}, dim] matching ids"
            )
        if self.evicted.dtype != np.int64 or self.evicted.ndim != 1:
            raise InvalidInputError("delta.evicted", self.evicted.dtype, "must be a 1-D int64 array")

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    @property
    def nbytes(self) -> int:
        return self.ids.nbytes + self.vectors.nbytes + self.evicted.nbytes

    def __len__(self) -> int:
        return len(self.ids) + len(self.evicted)


class _WireTable(msgspec.Struct, array_like=True):
    slot: str
    dim: int
    ids: bytes
    vectors: bytes
    evicted: bytes


class _WireDelta(msgspec.Struct, array_like=True):
    version: int
    tables: list[_WireTable]


_FORMAT_VERSION = 1


@dataclass(frozen=True)
class CollectionDelta:
    """The deltas of every slot of a collection, exported together."""

    tables: dict[str, TableDelta] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tables.values())

    def __len__(self) -> int:
        return sum(len(t) for t in self.tables.values())

    def to_bytes(self) -> bytes:
        wire = _WireDelta(
            _FORMAT_VERSION,
            [
                _WireTable(
                    t.slot,
                    t.dim,
                    t.ids.astype("<i8").tobytes(),
                    t.vectors.astype("<f4").tobytes(),
                    t.evicted.astype("<i8").tobytes(),
                )
                for t in self.tables.values()
            ],
        )
        return msgspec.msgpack.encode(wire)

    @classmethod
    def from_bytes(cls, data: bytes) -> CollectionDelta:
        try:
            wire = msgspec.msgpack.decode(data, type=_WireDelta)
        except msgspec.DecodeError as exc:
            raise InvalidInputError("delta", f"{len(data)} bytes", f"not a collection delta: {exc}") from None
        if wire.version != _FORMAT_VERSION:
            raise InvalidInputError("delta.version", wire.version, f"expected {_FORMAT_VERSION}")
        tables = {}
        for t in wire.tables:
            n = len(t.ids) // 8
            if t.dim < 1 or len(t.ids) % 8 or len(t.evicted) % 8 or len(t.vectors) != n * t.dim * 4:
                sizes = f"dim={t.dim}, ids={len(t.ids)}B, vectors={len(t.vectors)}B, evicted={len(t.evicted)}B"
                raise InvalidInputError(f"delta.tables.{t.slot}", sizes, "array sizes do not match ids and dim")
            ids = np.frombuffer(t.ids, dtype="<i8").astype(np.int64)
            vectors = np.frombuffer(t.vectors, dtype="<f4").astype(np.float32).reshape(len(ids), t.dim)
            evicted = np.frombuffer(t.evicted, dtype="<i8").astype(np.int64)
            tables[t.slot] = TableDelta(t.slot, ids, vectors, evicted)
        return cls(tables)
