"""The write-ahead log: what makes an acknowledged write survive ``kill -9``.

``ProfileStore.write`` appends one record per batch and fsyncs before it returns; the merge and
the LMDB flush happen later. A record is ``length (u32) | crc32 (u32) | msgpack payload``; replay
stops at the first short or corrupt record (a torn tail from a crash mid-append, never
acknowledged). Each record carries a sequence number. LMDB stores the highest sequence number its
profiles include, so replay skips what is already there; after a flush the segments it covers are
deleted. Segments are files ``NNNNNNNNNNNN.wal`` in ``<store>/wal``; a flush starts a new one.

Only hashed entity keys are written here, never raw ids.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import msgspec

__all__ = ["WalBatch", "WalSlotRows", "WriteAheadLog"]

_HEADER = struct.Struct("<II")


class WalSlotRows(msgspec.Struct, array_like=True):
    """Rows of one slot, by slot name and column names (so replay survives a config change)."""

    slot: str
    columns: list[str]
    keys: list[bytes]
    times: bytes
    values: list[str]
    data: bytes


class WalBatch(msgspec.Struct, array_like=True):
    """One WAL record: rows to merge, or keys to delete."""

    seq: int
    rows: list[WalSlotRows] = []
    deletes: list[bytes] = []


class WriteAheadLog:
    """Append-only segments of :class:`WalBatch` records under ``directory``."""

    def __init__(self, directory: Path, fsync: bool = True) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self._enc = msgspec.msgpack.Encoder()
        segments = self.segments()
        self._number = (int(segments[-1].stem) + 1) if segments else 1
        self._fh = self._open_new()

    def segments(self) -> list[Path]:
        return sorted(self.dir.glob("*.wal"))

    def _open_new(self):
        path = self.dir / f"{self._number:012d}.wal"
        fh = open(path, "ab", buffering=0)  # noqa: SIM115 - kept open for the store's lifetime
        if self.fsync:
            fd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        return fh

    def append(self, batch: WalBatch) -> None:
        """Append one record and (if ``fsync``) make it durable before returning."""
        payload = self._enc.encode(batch)
        self._fh.write(_HEADER.pack(len(payload), zlib.crc32(payload)) + payload)
        if self.fsync:
            os.fsync(self._fh.fileno())

    def rotate(self) -> list[Path]:
        """Start a new segment; return the older ones (deletable once their contents are flushed)."""
        old = self.segments()
        self._fh.close()
        self._number += 1
        self._fh = self._open_new()
        return old

    @staticmethod
    def remove(paths: list[Path]) -> None:
        for p in paths:
            p.unlink(missing_ok=True)

    def replay(self) -> Iterator[WalBatch]:
        """Every intact record of every segment, oldest first."""
        dec = msgspec.msgpack.Decoder(WalBatch)
        for path in self.segments():
            buf = path.read_bytes()
            pos = 0
            while pos + _HEADER.size <= len(buf):
                size, crc = _HEADER.unpack_from(buf, pos)
                payload = buf[pos + _HEADER.size : pos + _HEADER.size + size]
                if len(payload) < size or zlib.crc32(payload) != crc:
                    break
                try:
                    yield dec.decode(payload)
                except msgspec.DecodeError:
                    break
                pos += _HEADER.size + size

    def close(self) -> None:
        self._fh.close()
