"""The stored and exported form of a profile: msgspec msgpack of a :class:`ProfileBlob`, zstd-compressed.

:class:`ProfileCodec` turns a profile's slots into bytes and back for one store's slot specs:
profiles it flushed to LMDB (trusted, decoded without re-validation) and blobs from outside, given
to ``ProfileStore.import_profiles`` (untrusted: inflated within a byte cap while streaming, decoded
within bounds, each value checked against what a write could have made). Columns are matched by
name (:meth:`ProfileCodec.remap`), so a profile written under an older config still loads.

zstd contexts are not thread-safe, and flushes, exports and loads on a cache miss run on different
threads: each thread gets its own contexts.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np
import zstandard

from streamrec.errors import InvalidInputError
from streamrec.profiles.events import MAX_TIME, SlotSpec
from streamrec.profiles.profile import Profile, ProfileBlob, SlotData, blob_arrays, decode_untrusted, slot_to_blob

__all__ = ["DEFAULT_MAX_PROFILE_BYTES", "ProfileCodec"]

_FORMAT = 1
# Decompressed bytes one imported profile may inflate to. A profile is bounded by its slots' tiers
# and truncation (with the defaults ~50 x 225 rows a slot: well under a megabyte); a zstd blob that
# inflates past this is a bomb or garbage, refused while streaming, before it is allocated.
DEFAULT_MAX_PROFILE_BYTES = 64 << 20
_INFLATE_CHUNK = 1 << 20


class ProfileCodec:
    """Encode and decode the profiles of one store's slots (``specs``, in slot order)."""

    def __init__(self, specs: Sequence[SlotSpec], compression_level: int) -> None:
        self.specs = list(specs)
        self._spec_by_name = {s.name: s for s in self.specs}
        self._level = compression_level
        self._local = threading.local()

    def _thread_codecs(self) -> threading.local:
        codecs = self._local
        if not hasattr(codecs, "cctx"):
            codecs.cctx = zstandard.ZstdCompressor(level=self._level)
            codecs.dctx = zstandard.ZstdDecompressor()
            codecs.enc = msgspec.msgpack.Encoder()
            codecs.dec = msgspec.msgpack.Decoder(ProfileBlob)
        return codecs

    def encode(self, slots: list[SlotData | None]) -> bytes:
        """The stored form of a profile's slots (``None``: an empty slot, left out)."""
        blob = ProfileBlob(
            format=_FORMAT,
            slots={
                spec.name: slot_to_blob(s, spec.columns)
                for spec, s in zip(self.specs, slots, strict=True)
                if s is not None
            },
        )
        codecs = self._thread_codecs()
        return codecs.cctx.compress(codecs.enc.encode(blob))

    def decode(self, raw: bytes) -> Profile:
        """A profile from its stored form (LMDB: written by this store, so not re-validated)."""
        try:
            plain = self._thread_codecs().dctx.decompress(raw)
        except zstandard.ZstdError as exc:
            raise InvalidInputError("profile", raw[:16], f"not a stored profile: {exc}") from None
        return self.profile(plain, "profile", "")

    def inflate(self, raw: Any, index: int, left: int | None, total: int | None, max_profile_bytes: int) -> bytes:
        """Decompress one imported blob, refusing (before allocating) past ``max_profile_bytes`` or
        past ``left`` (what the call's ``max_total_bytes = total`` leaves)."""
        if not isinstance(raw, bytes | bytearray | memoryview):
            raise InvalidInputError("blobs", type(raw).__name__, f"blob {index}: expected bytes")
        cap = max_profile_bytes if left is None else min(max_profile_bytes, left)

        def too_big(size: Any) -> InvalidInputError:
            if left is not None and left <= max_profile_bytes and total is not None:
                what = f"the blobs of this import decompress past max_import_bytes = {_mib(total)}"
            else:
                what = f"decompresses past max_profile_bytes = {_mib(max_profile_bytes)}"
            return InvalidInputError("blobs", size, f"blob {index}: {what}")

        try:
            size = zstandard.frame_content_size(raw)
        except zstandard.ZstdError as exc:
            raise InvalidInputError("blobs", bytes(raw[:16]), f"blob {index}: not a zstd frame ({exc})") from None
        if size > cap:
            raise too_big(size)
        dctx = self._thread_codecs().dctx
        try:
            if size >= 0:  # the frame states its size (as every blob this store exports does)
                return dctx.decompress(raw)
            out = bytearray()  # size not stated: stream, and stop as soon as it is past the cap
            with dctx.stream_reader(raw) as reader:
                while chunk := reader.read(_INFLATE_CHUNK):
                    out += chunk
                    if len(out) > cap:
                        raise too_big(f">{len(out) - len(chunk)} bytes")
            return bytes(out)
        except zstandard.ZstdError as exc:
            raise InvalidInputError("blobs", bytes(raw[:16]), f"blob {index}: corrupt zstd data ({exc})") from None

    def profile(self, plain: bytes, field: str, where: str, check: bool = False) -> Profile:
        """A profile from its msgpack form; ``check``: from outside, decoded within bounds and validated."""
        try:
            blob = decode_untrusted(plain) if check else self._thread_codecs().dec.decode(plain)
        except (msgspec.DecodeError, UnicodeDecodeError, ValueError) as exc:
            raise InvalidInputError(field, bytes(plain[:16]), f"{where}not a stored profile: {exc}") from None
        if blob.format != _FORMAT:
            raise InvalidInputError(
                field, blob.format, f"{where}unknown profile format tag (this build reads format {_FORMAT})"
            )
        p = Profile(len(self.specs))
        for name, sb in blob.slots.items():
            spec = self._spec_by_name.get(name)
            if spec is None:
                continue  # a slot no longer configured
            try:
                starts, vals, data = blob_arrays(sb)
            except ValueError as exc:
                raise InvalidInputError(field, name, f"{where}slot {name!r}: corrupt slot: {exc}") from None
            data = self.remap(spec, sb.columns, data)
            if check:
                _check_slot_values(spec, starts, data, field, f"{where}slot {name!r}")
            slot = SlotData(starts, vals, data, list(sb.vocab))
            p.slots[spec.index] = slot
            p.nbytes += slot.nbytes()
        return p

    @staticmethod
    def remap(spec: SlotSpec, columns: list[str], data: np.ndarray) -> np.ndarray:
        """``data`` written with ``columns`` as the spec's columns (matched by name; new ones at the identity)."""
        if columns == spec.columns:
            return data
        out = np.tile(spec.identity, (data.shape[0], 1))
        pos = {c: i for i, c in enumerate(columns)}
        for j, c in enumerate(spec.columns):
            if c in pos:
                out[:, j] = data[:, pos[c]]
        return out


def _check_slot_values(spec, starts: np.ndarray, data: np.ndarray, field: str, where: str) -> None:
    """Values an imported slot may hold: those a write could have made (see ``import_profiles``)."""
    if starts.size and (int(starts.min()) < 0 or int(starts.max()) > MAX_TIME):
        bad = int(starts.min()) if int(starts.min()) < 0 else int(starts.max())
        raise InvalidInputError(field, bad, f"{where}: slice start outside [0, {MAX_TIME}]")
    if not data.size:
        return
    ident = spec.identity
    ok = np.isfinite(data) | (data == ident) | (np.isnan(data) & np.isnan(ident))
    if not ok.all():
        row, col = (int(i[0]) for i in np.nonzero(~ok))
        raise InvalidInputError(
            field,
            float(data[row, col]),
            f"{where} column {spec.columns[col]!r}: counters are finite, or the reduce's identity "
            f"({float(ident[col])!r}: NaN for max/min/last/first, -inf for a hidden time column)",
        )


def _mib(n: int) -> str:
    return f"{n} ({n / (1 << 20):g} MiB)"
