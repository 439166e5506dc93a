"""The record of the ``model-updates`` topic: :class:`ModelUpdate`, and the dense-parameter codec.

The online trainer talks to serving replicas only through the log, so the update is data, not
code: a small msgpack envelope (``kind``, ``version``, times, counters) around an opaque
``payload`` whose layout depends on ``kind``:

* ``"sparse"``: :meth:`CollectionDelta.to_bytes` of the rows touched (and ids evicted) since the
  previous sparse sync.
* ``"dense"``: :func:`encode_dense` of the head's ``state_dict`` (every parameter and buffer as
  raw little-endian bytes with its dtype and shape; no pickle, so a replica never runs code from
  the log).
* ``"full"``: a :class:`FullPayload` holding a delta of *every* row plus the dense state; a replica
  that applies it replaces its tables and head instead of patching them. The trainer publishes one
  when it starts (after a restore the replicas may hold rows the restored model never had).

Why one envelope type: any number of replicas follow one topic in order, and the order of sparse
and dense updates is the order in which the trainer made them. ``version`` counts the updates of
one trainer lineage and is restored from the snapshot, so after a crash the versions published
after the snapshot are reused by the replayed work; a replica's position in the topic is the
unambiguous progress marker, and the ``full`` update that opens every trainer run resets it.
"""

from __future__ import annotations

from typing import Literal

import msgspec
import numpy as np
import torch

from streamrec.errors import InvalidInputError

__all__ = ["UPDATES_TOPIC", "FullPayload", "ModelUpdate", "decode_dense", "encode_dense"]

UPDATES_TOPIC = "model-updates"
UpdateKind = Literal["sparse", "dense", "full"]


class ModelUpdate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One update of the serving model, as published on topic ``model-updates``.

    Parameters
    ----------
    kind
        ``"sparse"`` (a collection delta), ``"dense"`` (the head's state) or ``"full"`` (both, all rows).
    version
        Position of this update among the trainer's updates (1, 2, ...).
    created_at
        Wall-clock unix seconds when the trainer made it (export time); replicas measure their lag from it.
    changes_since
        Wall-clock seconds of the oldest training step whose changes it carries (``created_at`` when
        none): ``applied - changes_since`` is how stale a row could be at a replica.
    examples_seen
        The training model's ``examples_seen`` when it was made.
    payload
        The bytes described in the module docstring.
    shard, shards
        With W training ranks, a sparse or full version is published in ``shards`` parts, one per
        rank (``shard``), each holding that rank's rows; a replica has a version once it applied
        every part. Part 0 of a full update carries the dense state and resets the replica, so it
        is published before the others. One trainer: ``0`` of ``1``.

    Examples
    --------
    >>> update = ModelUpdate(kind="dense", version=3, created_at=1.0, payload=b"x")
    >>> msgspec.msgpack.decode(msgspec.msgpack.encode(update), type=ModelUpdate) == update
    True
    >>> ModelUpdate(kind="dense", version=0, created_at=1.0, payload=b"")
    Traceback (most recent call last):
    ...
    streamrec.errors.InvalidInputError: version: must be >= 1 (got 0)
    """

    kind: UpdateKind
    version: int
    created_at: float
    changes_since: float | None = None
    examples_seen: int = 0
    payload: bytes
    shard: int = 0
    shards: int = 1

    def __post_init__(self) -> None:
        if self.version < 1:
            raise InvalidInputError("version", self.version, "must be >= 1")
        if not 1 <= self.shards <= 65536 or not 0 <= self.shard < self.shards:
            raise InvalidInputError("shard", (self.shard, self.shards), "must be a part 0..shards-1 of 1..65536")
        if not np.isfinite(self.created_at):
            raise InvalidInputError("created_at", self.created_at, "must be finite")


class FullPayload(msgspec.Struct, array_like=True, frozen=True):
    """Payload of a ``"full"`` update: every row (a collection delta), the dense state, and each
    slot's pooling (a replica built from this update alone needs it)."""

    sparse: bytes
    dense: bytes
    pooling: dict[str, str]


class _Tensor(msgspec.Struct, array_like=True, frozen=True):
    dtype: str
    shape: list[int]
    data: bytes


def encode_dense(state: dict[str, torch.Tensor]) -> bytes:
    """A ``state_dict`` as msgpack: name -> (numpy dtype, shape, little-endian bytes)."""
    wire = {}
    for name, tensor in state.items():
        array = tensor.detach().cpu().contiguous().numpy()
        little = array.dtype.newbyteorder("<")
        wire[name] = _Tensor(little.str, list(array.shape), array.astype(little).tobytes())
    return msgspec.msgpack.encode(wire)


def decode_dense(data: bytes) -> dict[str, torch.Tensor]:
    """The ``state_dict`` encoded by :func:`encode_dense` (new tensors, bit-identical values)."""
    try:
        wire = msgspec.msgpack.decode(data, type=dict[str, _Tensor])
    except msgspec.DecodeError as exc:
        raise InvalidInputError("payload", f"{len(data)} bytes", f"not a dense state: {exc}") from None
    state = {}
    for name, t in wire.items():
        try:
            array = np.frombuffer(t.data, dtype=np.dtype(t.dtype)).reshape(t.shape)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"payload.{name}", (t.dtype, t.shape, len(t.data)), str(exc)) from None
        state[name] = torch.from_numpy(array.astype(array.dtype.newbyteorder("="), copy=True))
    return state
