"""The write-ahead log: what makes an acknowledged write survive ``kill -9``.

``ProfileStore.write`` appends one record per batch and fsyncs before it returns; the merge and
the LMDB flush happen later. Each record carries a sequence number. LMDB stores the highest
sequence number its profiles include, so replay skips what is already there; after a flush the
segments it covers are deleted. Segments are files ``NNNNNNNNNNNN.wal`` in ``<store>/wal``; a
flush (and every open) starts a new one.

Record format, version 2 (16-byte header, then the payload)::

    magic b"\\xc1WL" | version u8 = 2 | length u32 | crc32(payload) u32 | crc32(first 12 bytes) u32 | payload

Why two checksums: the header checksum makes the *length* trustworthy, which is what tells a torn
tail from corruption and what lets replay step over a damaged record. Replay reads a segment
record by record:

- a record whose header and payload both check out is replayed;
- a valid header whose payload runs past the end of the file, or fewer than 16 bytes left that
  start like a header, is a **torn tail**: a crash in the middle of an append, never
  acknowledged. It is cut off the segment and counted (``torn_tails``), not reported as damage;
- anything else is **corruption**: a valid header with a bad payload checksum (the length is
  trusted, so exactly that record is skipped), or a bad header, after which replay
  **resynchronises** on the next offset that holds a valid header (``0xc1`` never occurs in
  msgpack, and the header checksum makes a false match a 2^-32 event). The damaged bytes are
  copied to ``<segment>.corrupt-<UTC time>-<offset>`` next to the segment, the segment is
  rewritten without them (atomically: a temporary file renamed over it), a warning is logged, and
  the damage is counted. Every record that validates is salvaged, before and after the damage.

A record found by resynchronising must also carry a sequence number after the last good one (and
no further ahead than the skipped bytes could hold), so a record-shaped string inside a damaged
payload is not replayed.

Version 1 segments (``length u32 | crc32 u32 | payload``, no header checksum) are still read:
they replay up to the first bad record; a short last record is a torn tail, anything else from a
bad record on is moved aside and reported like corruption (without resynchronising: without a
header checksum the length of a bad record cannot be trusted). A record whose header checks out
but announces a version this build does not know stops the open with :class:`WalFormatError`.
Any later version keeps the first 16 bytes as they are, so this check stays possible.

Only hashed entity keys are written here, never raw ids.
"""

from __future__ import annotations

import logging
import os
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from streamrec.errors import StreamrecError

__all__ = ["WalBatch", "WalDamage", "WalFormatError", "WalReport", "WalSlotRows", "WriteAheadLog"]

log = logging.getLogger(__name__)

MAGIC = b"\xc1WL"  # 0xc1 is the one byte msgpack never uses
VERSION = 2
_HEADER = struct.Struct("<3sBIII")  # magic, version, length, crc32(payload), crc32(header[:12])
_V1_HEADER = struct.Struct("<II")  # version 1: length, crc32(payload)
_MIN_RECORD = _HEADER.size + 4  # the smallest msgpack WalBatch is 4 bytes


class WalFormatError(StreamrecError):
    """A WAL segment holds records of a format version this build cannot read; nothing was replayed."""


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


@dataclass
class WalDamage:
    """One damaged stretch of a segment: ``kind`` is ``"corrupt"`` or ``"torn"``."""

    segment: Path
    offset: int
    length: int
    kind: str
    moved_to: Path | None = None


@dataclass
class WalReport:
    """What the last :meth:`WriteAheadLog.replay` found besides good records."""

    corruptions: int = 0  # damaged stretches in the middle (moved aside, reported)
    corrupt_bytes: int = 0
    salvaged: int = 0  # good records replayed after a damaged stretch of the same segment
    torn_tails: int = 0  # incomplete last records (cut off, never acknowledged)
    torn_bytes: int = 0
    damages: list[WalDamage] = field(default_factory=list)


def encode_record(payload: bytes) -> bytes:
    """One version-2 record (header + payload)."""
    head = struct.pack("<3sBII", MAGIC, VERSION, len(payload), zlib.crc32(payload))
    return head + struct.pack("<I", zlib.crc32(head)) + payload


class WriteAheadLog:
    """Append-only segments of :class:`WalBatch` records under ``directory``."""

    def __init__(self, directory: Path, fsync: bool = True) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self._enc = msgspec.msgpack.Encoder()
        for stale in self.dir.glob("*.wal.tmp"):  # a repair interrupted by a crash
            stale.unlink(missing_ok=True)
        segments = self.segments()
        self._number = (int(segments[-1].stem) + 1) if segments else 1
        self._fh = self._open_new()
        self.report = WalReport()

    def segments(self) -> list[Path]:
        return sorted(self.dir.glob("*.wal"))

    def _open_new(self):
        path = self.dir / f"{self._number:012d}.wal"
        fh = open(path, "ab", buffering=0)  # noqa: SIM115 - kept open for the store's lifetime
        self._sync_dir()
        return fh

    def _sync_dir(self) -> None:
        if self.fsync:
            fd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def append(self, batch: WalBatch) -> None:
        """Append one record and (if ``fsync``) make it durable before returning."""
        self._fh.write(encode_record(self._enc.encode(batch)))
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
        """Every record that validates, of every segment, oldest first; damage goes to :attr:`report`.

        Once a segment has been read, its torn tail is cut off and its corrupt stretches are moved
        aside (see the module docstring), so the next open finds a clean segment.
        """
        self.report = WalReport()
        dec = msgspec.msgpack.Decoder(WalBatch)
        last_seq: int | None = None
        for path in self.segments():
            buf = path.read_bytes()
            scan = _Scan(path, buf, dec, last_seq)
            yield from scan.records()
            last_seq = scan.last_seq
            self._repair(path, buf, scan)

    def _repair(self, path: Path, buf: bytes, scan: _Scan) -> None:
        rep = self.report
        rep.salvaged += scan.salvaged
        corrupt = [d for d in scan.damages if d.kind == "corrupt"]
        torn = [d for d in scan.damages if d.kind == "torn"]
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        for d in corrupt:
            d.moved_to = path.with_name(f"{path.name}.corrupt-{stamp}-{d.offset}")
            _write_durably(d.moved_to, buf[d.offset : d.offset + d.length], self.fsync)
            rep.corruptions += 1
            rep.corrupt_bytes += d.length
            log.warning(
                "WAL segment %s: %d corrupt bytes at offset %d (checksum mismatch) moved to %s; "
                "%d good records after them salvaged",
                path,
                d.length,
                d.offset,
                d.moved_to.name,
                scan.salvaged,
            )
        for d in torn:
            rep.torn_tails += 1
            rep.torn_bytes += d.length
        rep.damages.extend(scan.damages)
        if corrupt:
            tmp = path.with_name(path.name + ".tmp")
            _write_durably(tmp, b"".join(buf[a:b] for a, b in scan.good), self.fsync)
            os.replace(tmp, path)
            self._sync_dir()
        elif torn:
            with open(path, "r+b") as fh:
                fh.truncate(torn[0].offset)
                if self.fsync:
                    os.fsync(fh.fileno())

    def close(self) -> None:
        self._fh.close()


class _Scan:
    """Reads one segment: good records (as byte ranges and batches) and damaged stretches."""

    def __init__(self, path: Path, buf: bytes, dec: msgspec.msgpack.Decoder, last_seq: int | None) -> None:
        self.path = path
        self.buf = buf
        self.dec = dec
        self.last_seq = last_seq
        self.good: list[tuple[int, int]] = []
        self.damages: list[WalDamage] = []
        self.salvaged = 0

    def records(self) -> Iterator[WalBatch]:
        if self._is_v1():
            yield from self._records_v1()
        else:
            yield from self._records_v2()

    # ---------------------------------------------------------------- version 2

    def _header(self, pos: int) -> tuple[int, int] | None:
        """``(version, length)`` if a header with a valid checksum starts at ``pos``."""
        buf = self.buf
        if pos + _HEADER.size > len(buf) or buf[pos : pos + 3] != MAGIC:
            return None
        _, version, size, _, hcrc = _HEADER.unpack_from(buf, pos)
        if zlib.crc32(buf[pos : pos + 12]) != hcrc:
            return None
        if version != VERSION:
            raise WalFormatError(
                f"WAL segment {self.path} offset {pos}: record format version {version} is not known to "
                f"this build (it reads versions 1 and {VERSION}); open the store with the streamrec "
                "that wrote it"
            )
        return version, size

    def _payload(self, pos: int, size: int) -> WalBatch | None:
        """The batch of the record at ``pos`` if its payload is whole and checks out."""
        start = pos + _HEADER.size
        payload = self.buf[start : start + size]
        if zlib.crc32(payload) != _HEADER.unpack_from(self.buf, pos)[3]:
            return None
        try:
            return self.dec.decode(payload)
        except (msgspec.DecodeError, UnicodeDecodeError):
            return None

    def _records_v2(self) -> Iterator[WalBatch]:
        buf, n = self.buf, len(self.buf)
        pos = 0
        while pos < n:
            if n - pos < _HEADER.size and MAGIC.startswith(buf[pos : pos + 3][: n - pos]):
                self._damage(pos, n, "torn")  # an append cut inside its header
                return
            head = self._header(pos)
            if head is not None and pos + _HEADER.size + head[1] > n:
                self._damage(pos, n, "torn")  # an append cut inside its payload
                return
            if head is not None:
                end = pos + _HEADER.size + head[1]
                batch = self._payload(pos, head[1])
                if batch is not None:
                    self._keep(pos, end, batch)
                    yield batch
                else:
                    self._damage(pos, end, "corrupt")  # the length is trusted: skip exactly this record
                pos = end
                continue
            # A bad header: resynchronise on the next record that validates.
            nxt = self._resync(pos)
            if nxt is None:
                self._damage(pos, n, "corrupt")
                return
            self._damage(pos, nxt, "corrupt")
            pos = nxt

    def _resync(self, bad: int) -> int | None:
        """Offset of the next valid record header after ``bad`` (``None``: none up to the end)."""
        buf = self.buf
        pos = bad
        while True:
            pos = buf.find(MAGIC, pos + 1)
            if pos < 0:
                return None
            head = self._header(pos)
            if head is None:
                continue
            if pos + _HEADER.size + head[1] > len(buf):
                return pos  # a torn tail after the damage: the main loop cuts it
            batch = self._payload(pos, head[1])
            if batch is None:
                return pos  # a record whose header is sound: the main loop skips exactly it
            if self._plausible_seq(batch.seq, pos - bad):
                return pos

    def _plausible_seq(self, seq: int, skipped: int) -> bool:
        # Sequence numbers grow by one per record; a record found by resynchronising must come
        # after the last good one and within what the skipped bytes could have held.
        if self.last_seq is None:
            return True
        return self.last_seq < seq <= self.last_seq + 1 + skipped // _MIN_RECORD

    def _keep(self, start: int, end: int, batch: WalBatch) -> None:
        self.good.append((start, end))
        if any(d.kind == "corrupt" for d in self.damages):
            self.salvaged += 1
        self.last_seq = batch.seq if self.last_seq is None else max(self.last_seq, batch.seq)

    def _damage(self, start: int, end: int, kind: str) -> None:
        last = self.damages[-1] if self.damages else None
        if last is not None and last.kind == kind == "corrupt" and last.offset + last.length == start:
            last.length += end - start  # adjacent stretches are one damage
        else:
            self.damages.append(WalDamage(self.path, start, end - start, kind))

    # ---------------------------------------------------------------- version 1

    def _is_v1(self) -> bool:
        """A segment without any version-2 header that starts with a valid version-1 record."""
        buf = self.buf
        if len(buf) < _V1_HEADER.size or buf[:3] == MAGIC:
            return False
        pos = buf.find(MAGIC)
        while pos >= 0:
            if pos + _HEADER.size <= len(buf):
                _, _, _, _, hcrc = _HEADER.unpack_from(buf, pos)
                if zlib.crc32(buf[pos : pos + 12]) == hcrc:
                    return False
            pos = buf.find(MAGIC, pos + 1)
        size, crc = _V1_HEADER.unpack_from(buf, 0)
        payload = buf[_V1_HEADER.size : _V1_HEADER.size + size]
        return len(payload) == size and zlib.crc32(payload) == crc

    def _records_v1(self) -> Iterator[WalBatch]:
        buf, n = self.buf, len(self.buf)
        pos = 0
        while pos < n:
            if n - pos < _V1_HEADER.size:
                self._damage(pos, n, "torn")
                return
            size, crc = _V1_HEADER.unpack_from(buf, pos)
            end = pos + _V1_HEADER.size + size
            if end > n:
                self._damage(pos, n, "torn")
                return
            payload = buf[pos + _V1_HEADER.size : end]
            batch = None
            if zlib.crc32(payload) == crc:
                try:
                    batch = self.dec.decode(payload)
                except (msgspec.DecodeError, UnicodeDecodeError):
                    batch = None
            if batch is None:
                self._damage(pos, n, "corrupt")
                return
            self._keep(pos, end, batch)
            yield batch
            pos = end


def _write_durably(path: Path, data: bytes, fsync: bool) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        if fsync:
            os.fsync(fh.fileno())
