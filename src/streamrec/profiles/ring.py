"""Consistent hashing with virtual nodes: which profile node owns which entity.

Every node is hashed onto a 64-bit circle at ``vnodes`` points (BLAKE2b of ``"name#i"``); an entity
key (already a keyed hash, see :meth:`ProfileStore.entity_key`) is owned by the first node point at
or after its own position, wrapping around. Adding an ``(n+1)``-th node therefore takes over only
the arcs just before its own points — about ``1/(n+1)`` of the keys, all of them from other nodes
and none moving between old nodes — which is what lets a cluster grow by moving a quarter of the
profiles (3 → 4 nodes) instead of nearly all of them as ``hash % n`` would.

Many virtual nodes per node (default 256) even out the arc lengths: with ``v`` points per node the
load of a node varies by roughly ``1/sqrt(v)`` around its fair share.

The circle is a sorted NumPy array, so placing a batch of keys is one ``searchsorted`` — the
client places every entity of a request at once (hot path: vectorised, no per-key Python search).
Placement depends only on the node names and ``vnodes``, never on insertion order or on process
state, so every client of a cluster agrees on the owner of every key.

**Replicas.** With replication factor ``r`` a key lives on the ``r`` distinct nodes met first
walking clockwise from its position (the owner first, then the next *different* node, and so on;
further points of nodes already met are skipped). This successor-list placement keeps the ring's
stability: adding a node changes the replica set of only the keys whose first ``r`` distinct nodes
now include it (the new node enters, the last of the old set leaves), about ``r/(n+1)`` of the
keys; removing a node changes only the sets that held it (the next distinct node takes its place).
The ``r`` successors of every point are computed once per ``r`` (a table of ``points x r``), so
placing a batch stays one ``searchsorted`` plus a gather.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import numpy as np

from streamrec.errors import InvalidInputError

__all__ = ["HashRing"]


def _point(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def key_positions(keys: Sequence[bytes]) -> np.ndarray:
    """Position of each key on the circle (uint64).

    Entity keys are keyed BLAKE2b digests already, so their first 8 bytes are uniform: they are
    used as is. Shorter keys (any bytes) are hashed first.
    """
    out = np.empty(len(keys), dtype=np.uint64)
    for i, key in enumerate(keys):
        out[i] = int.from_bytes(key[:8], "big") if len(key) >= 16 else _point(key)
    return out


class HashRing:
    """A consistent-hash ring of named nodes with virtual nodes.

    Parameters
    ----------
    nodes: node names (any strings: addresses, or labels that map to addresses elsewhere).
    vnodes: points per node on the circle; more points, more even load.

    Examples
    --------
    >>> ring = HashRing(["a", "b", "c"])
    >>> keys = [bytes([i % 256, i // 256]) * 8 for i in range(30000)]
    >>> before = ring.owners(keys)
    >>> bigger = ring.with_node("d")
    >>> moved = sum(o1 != o2 for o1, o2 in zip(before, bigger.owners(keys)))
    >>> 0.20 < moved / len(keys) < 0.30       # about a quarter moves, all of it to "d"
    True
    >>> all(o2 == "d" for o1, o2 in zip(before, bigger.owners(keys)) if o1 != o2)
    True

    Two copies of every key, on two distinct nodes, the owner first:

    >>> ring.replicas(keys[0], 2)[0] == ring.owner(keys[0]), len(set(ring.replicas(keys[0], 2)))
    (True, 2)
    >>> pairs = ring.replica_indices(keys, 2)
    >>> bool((pairs[:, 0] != pairs[:, 1]).all())
    True
    """

    def __init__(self, nodes: Iterable[str], vnodes: int = 256) -> None:
        names = list(nodes)
        if not names:
            raise InvalidInputError("nodes", names, "a ring needs at least one node")
        if len(set(names)) != len(names):
            raise InvalidInputError("nodes", names, "node names must be unique")
        if not isinstance(vnodes, int) or vnodes < 1:
            raise InvalidInputError("vnodes", vnodes, "must be an integer >= 1")
        self.nodes: list[str] = names
        self.vnodes = vnodes
        points: list[int] = []
        owners: list[int] = []
        for n, name in enumerate(names):
            for i in range(vnodes):
                points.append(_point(f"{name}#{i}".encode()))
                owners.append(n)
        pts = np.asarray(points, dtype=np.uint64)
        own = np.asarray(owners, dtype=np.int64)
        # Sort by point, ties (astronomically rare) by node name so order of `nodes` never matters.
        order = np.lexsort((np.asarray([names[o] for o in owners]), pts))
        self._points = pts[order]
        self._owner = own[order]
        self._successors: dict[int, np.ndarray] = {}

    def with_node(self, name: str) -> HashRing:
        """A new ring with ``name`` added."""
        return HashRing([*self.nodes, name], self.vnodes)

    def without_node(self, name: str) -> HashRing:
        """A new ring with ``name`` removed."""
        if name not in self.nodes:
            raise InvalidInputError("node", name, f"not in the ring {self.nodes!r}")
        return HashRing([n for n in self.nodes if n != name], self.vnodes)

    def indices(self, keys: Sequence[bytes]) -> np.ndarray:
        """Index into :attr:`nodes` of the owner of each key (vectorised)."""
        if len(keys) == 0:
            return np.empty(0, dtype=np.int64)
        pos = key_positions(keys)
        at = np.searchsorted(self._points, pos, side="left")
        at[at == len(self._points)] = 0
        return self._owner[at]

    def replica_count(self, replicas: int) -> int:
        """How many replicas a key really gets: ``replicas``, at most the number of nodes."""
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
            raise InvalidInputError("replicas", replicas, "must be an integer >= 1")
        return min(replicas, len(self.nodes))

    def _successor_table(self, r: int) -> np.ndarray:
        """For each point, the first ``r`` distinct owners clockwise from it (row ``i``: point ``i``)."""
        table = self._successors.get(r)
        if table is None:
            owner = self._owner.tolist()
            n = len(owner)
            table = np.empty((n, r), dtype=np.int64)
            for i in range(n):
                seen: list[int] = []
                j = i
                while len(seen) < r:
                    o = owner[j % n]
                    if o not in seen:
                        seen.append(o)
                    j += 1
                table[i] = seen
            self._successors[r] = table
        return table

    def replica_indices(self, keys: Sequence[bytes], replicas: int) -> np.ndarray:
        """Indices into :attr:`nodes` of the replicas of each key, owner first (vectorised).

        Shape ``(len(keys), r)`` with ``r = min(replicas, len(nodes))``; the ``r`` entries of a row
        are distinct. Column 0 is :meth:`indices`.
        """
        r = self.replica_count(replicas)
        if len(keys) == 0:
            return np.empty((0, r), dtype=np.int64)
        pos = key_positions(keys)
        at = np.searchsorted(self._points, pos, side="left")
        at[at == len(self._points)] = 0
        return self._successor_table(r)[at]

    def replicas(self, key: bytes, replicas: int) -> list[str]:
        """Names of the nodes that hold one key with ``replicas`` copies, owner first."""
        return [self.nodes[i] for i in self.replica_indices([key], replicas)[0].tolist()]

    def owners(self, keys: Sequence[bytes]) -> list[str]:
        """Name of the owner of each key."""
        return [self.nodes[i] for i in self.indices(keys).tolist()]

    def owner(self, key: bytes) -> str:
        """Name of the owner of one key."""
        return self.nodes[int(self.indices([key])[0])]

    def shares(self) -> dict[str, float]:
        """Fraction of the circle each node owns (1.0 in all)."""
        pts = self._points.astype(np.float64)
        span = 2.0**64
        arcs = np.diff(np.concatenate([pts[-1:] - span, pts]))  # arc ending at each point
        out = dict.fromkeys(self.nodes, 0.0)
        for owner, arc in zip(self._owner.tolist(), arcs.tolist(), strict=True):
            out[self.nodes[owner]] += arc / span
        return out

    def __repr__(self) -> str:
        return f"HashRing({self.nodes!r}, vnodes={self.vnodes})"
