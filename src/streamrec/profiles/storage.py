"""The storage layer: compressed profiles in LMDB.

LMDB is a memory-mapped B+tree with one writer and lock-free readers, crash-safe by design
(copy-on-write pages, a meta page switched at commit), which is what a cache's backing store
needs: loads on a miss never wait for a flush. Two named databases: ``profiles`` (16-byte entity
key -> zstd(msgpack(ProfileBlob))) and ``meta`` (``seq``: the last WAL sequence number the stored
profiles include; ``clock``: the event-time watermark). A flush writes all its profiles and the new
``seq`` in one transaction, so the store on disk is always a state the WAL can be replayed onto.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

import lmdb

__all__ = ["ProfileStorage"]


class ProfileStorage:
    """An LMDB environment holding profiles and the store's meta values."""

    def __init__(self, path: Path, map_size_mb: int) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.env = lmdb.open(str(path), map_size=map_size_mb << 20, max_dbs=4, subdir=True, lock=True)
        self.profiles = self.env.open_db(b"profiles")
        self.meta = self.env.open_db(b"meta")

    def get(self, key: bytes) -> bytes | None:
        with self.env.begin(db=self.profiles, buffers=False) as txn:
            return txn.get(key)

    def commit(self, puts: Iterable[tuple[bytes, bytes]], deletes: Iterable[bytes], seq: int, clock: float) -> None:
        """Write profiles, delete others and record ``seq`` and ``clock``, atomically."""
        with self.env.begin(write=True) as txn:
            for key, blob in puts:
                txn.put(key, blob, db=self.profiles)
            for key in deletes:
                txn.delete(key, db=self.profiles)
            txn.put(b"seq", struct.pack("<q", seq), db=self.meta)
            txn.put(b"clock", struct.pack("<d", clock), db=self.meta)

    def seq(self) -> int:
        with self.env.begin(db=self.meta) as txn:
            raw = txn.get(b"seq")
        return struct.unpack("<q", raw)[0] if raw else 0

    def clock(self) -> float:
        with self.env.begin(db=self.meta) as txn:
            raw = txn.get(b"clock")
        return struct.unpack("<d", raw)[0] if raw else 0.0

    def iter_keys(self) -> Iterator[bytes]:
        with self.env.begin(db=self.profiles) as txn:
            yield from txn.cursor().iternext(keys=True, values=False)

    def entries_and_bytes(self) -> tuple[int, int]:
        """Profiles stored and the bytes of the pages holding them (from LMDB's own counters: O(1))."""
        with self.env.begin() as txn:
            st = txn.stat(self.profiles)
        pages = st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]
        return int(st["entries"]), int(pages * st["psize"])

    def close(self) -> None:
        self.env.close()
