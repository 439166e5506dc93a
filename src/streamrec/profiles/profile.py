"""A profile: one entity's slots, each a small set of NumPy arrays, and its stored form.

Readers never lock. A merge never changes a :class:`SlotData` in place: it builds new arrays and
swaps the reference in ``Profile.slots`` (one list store, atomic under the GIL), so a reader holds
either the old slot or the new one, whole. The same immutability makes a flush snapshot a shallow
copy of the list.

Stored form: ``msgspec`` msgpack of :class:`ProfileBlob` (per slot: raw little-endian arrays, the
column names, the value vocabulary) compressed with zstd. Column names are stored so that a
profile written under an older config (a counter added or removed) still loads: columns are
matched by name, new ones start at their reduce's identity.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
import numpy as np

__all__ = ["Profile", "ProfileBlob", "SlotBlob", "SlotData", "decode_untrusted"]

# Bounds on a blob from outside (an import): a profile has a few slots of a few columns. The vocabulary
# of an installed slot never exceeds 2 x rows + 64 (``ProfileStore._install`` rebuilds it past that);
# an import allows twice that, so a newer writer has room.
MAX_SLOTS = 1024
MAX_COLUMNS = 1024


class SlotData:
    """One slot of one profile (immutable once built).

    Attributes
    ----------
    starts: int64 slice start of each row, newest first.
    vals: int32 index of each row's value in ``vocab``.
    data: float64 ``rows x columns``.
    vocab: the feature values this slot has seen (strings).
    """

    __slots__ = ("_rank_order", "_vindex", "data", "sliced_at", "starts", "vals", "vocab")

    def __init__(self, starts: np.ndarray, vals: np.ndarray, data: np.ndarray, vocab: list[str]) -> None:
        self.starts = starts
        self.vals = vals
        self.data = data
        self.vocab = vocab
        self._vindex: dict[str, int] | None = None
        self._rank_order: np.ndarray | None = None
        # The tier bounds the rows were last sliced with; compaction is a no-op until they move
        # (boundaries are aligned to the next tier's width: hourly, daily).
        self.sliced_at: tuple | None = None

    @property
    def vindex(self) -> dict[str, int]:
        """Value -> index in ``vocab`` (built on first use)."""
        if self._vindex is None:
            self._vindex = {v: i for i, v in enumerate(self.vocab)}
        return self._vindex

    @property
    def rank_order(self) -> np.ndarray:
        """Indices of ``vocab`` in string order (ties of a top-k go to the smaller string)."""
        order = self._rank_order
        if order is None or order.shape[0] != len(self.vocab):
            n = len(self.vocab)
            order = np.asarray(sorted(range(n), key=self.vocab.__getitem__), dtype=np.int64)
            self._rank_order = order
        return order

    def nbytes(self) -> int:
        """Approximate memory held."""
        return self.starts.nbytes + self.vals.nbytes + self.data.nbytes + sum(len(v) + 56 for v in self.vocab)


class Profile:
    """One entity's profile: a slot list indexed like the store's slots (``None`` = empty slot).

    ``version`` grows at every change; the profile is clean when ``version == flushed``.
    ``stored`` tells whether LMDB holds a version of it.
    """

    __slots__ = ("flushed", "nbytes", "slots", "stored", "version")

    def __init__(self, nslots: int) -> None:
        self.slots: list[SlotData | None] = [None] * nslots
        self.version = 0
        self.flushed = 0
        self.nbytes = 0
        self.stored = False

    @property
    def dirty(self) -> bool:
        return self.version != self.flushed


class SlotBlob(msgspec.Struct, array_like=True):
    """Stored form of a slot: raw arrays and their column names."""

    columns: list[str]
    starts: bytes
    vals: bytes
    data: bytes
    vocab: list[str]


class ProfileBlob(msgspec.Struct, array_like=True):
    """Stored form of a profile (before zstd): format version and slots by name."""

    format: int
    slots: dict[str, SlotBlob]


class _UntrustedSlot(msgspec.Struct, array_like=True):
    columns: Annotated[list[str], msgspec.Meta(max_length=MAX_COLUMNS)]
    starts: bytes
    vals: bytes
    data: bytes
    vocab: msgspec.Raw  # counted before a Python string is made of it


class _UntrustedBlob(msgspec.Struct, array_like=True):
    format: int
    slots: Annotated[dict[str, _UntrustedSlot], msgspec.Meta(max_length=MAX_SLOTS)]


_UNTRUSTED = msgspec.msgpack.Decoder(_UntrustedBlob)
_VOCAB = msgspec.msgpack.Decoder(list[str])


def decode_untrusted(plain: bytes) -> ProfileBlob:
    """:class:`ProfileBlob` from msgpack that did not come from this store, decoded within bounds.

    Decoded, msgpack of short strings takes ~20x its size in Python objects; so every container is
    bounded before its elements are made: slots and columns by constants (msgspec checks a length
    constraint from the header), the vocabulary by the slot's rows (``4 x rows + 128``: what any
    export holds, with room). Raises ``msgspec.DecodeError`` / ``ValueError`` naming the part.
    """
    blob = _UNTRUSTED.decode(plain)
    slots = {}
    for name, sb in blob.slots.items():
        rows = len(sb.starts) // 8
        n = _array_length(bytes(sb.vocab))
        if n > 4 * rows + 128:
            raise ValueError(f"slot {name!r}: vocabulary of {n} values for {rows} rows (at most 4 x rows + 128)")
        slots[name] = SlotBlob(sb.columns, sb.starts, sb.vals, sb.data, _VOCAB.decode(sb.vocab))
    return ProfileBlob(format=blob.format, slots=slots)


def _array_length(raw: bytes) -> int:
    """Element count of the msgpack array ``raw`` starts with (from its header alone)."""
    if not raw:
        raise ValueError("vocabulary: empty")
    head = raw[0]
    if 0x90 <= head <= 0x9F:
        return head & 0x0F
    if head == 0xDC and len(raw) >= 3:
        return int.from_bytes(raw[1:3], "big")
    if head == 0xDD and len(raw) >= 5:
        return int.from_bytes(raw[1:5], "big")
    raise ValueError(f"vocabulary: expected a msgpack array (got header byte {head:#04x})")


def slot_to_blob(slot: SlotData, columns: list[str]) -> SlotBlob:
    return SlotBlob(
        columns=columns,
        starts=slot.starts.astype("<i8").tobytes(),
        vals=slot.vals.astype("<i4").tobytes(),
        data=slot.data.astype("<f8").tobytes(),
        vocab=slot.vocab,
    )


def blob_arrays(blob: SlotBlob) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Arrays of a stored slot (in its own columns)."""
    starts = np.frombuffer(blob.starts, dtype="<i8").astype(np.int64)
    vals = np.frombuffer(blob.vals, dtype="<i4").astype(np.int32)
    ncol = max(len(blob.columns), 1)
    data = np.frombuffer(blob.data, dtype="<f8").astype(np.float64).reshape(-1, ncol)
    if starts.shape[0] != vals.shape[0] or starts.shape[0] != data.shape[0]:
        raise ValueError("slot arrays disagree in length")
    if vals.size and (vals.min() < 0 or vals.max() >= len(blob.vocab)):
        raise ValueError("slot value index out of range")
    return starts, vals, data
