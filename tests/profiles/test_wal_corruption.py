"""A damaged write-ahead log loses at most the damaged batch, and says so.

The reference is brute force: ten batches are written, one event each (a click of user ``u<i>``),
and the byte range each batch occupies in the WAL is read off the file size after each write (an
acknowledged write is one appended record). Then every byte of the WAL is flipped in turn (one
reopen per position) and the reopened store must hold every batch whose bytes were untouched,
have lost at most the batch the byte belonged to, and have reported the damage: a counter in
``stats()``, a warning in the log, the bad bytes in a file beside the segment. Truncating the file
anywhere (a torn tail: ``kill -9`` in the middle of an append) must lose only the cut record, be
counted as a torn tail and not as corruption.
"""

from __future__ import annotations

import logging
import shutil
import struct
import time
import zlib
from pathlib import Path

import msgspec
import pytest

from streamrec.profiles import Feature, FeatureQuery, ProfileStore
from streamrec.profiles.wal import WalBatch, WalFormatError, WalSlotRows

NOW = 1_700_000_000.0
BATCHES = 10
# One slot, one counter: each batch is one small record, so the full sweep stays fast.
CFG = {
    "fsync": False,
    "merge_interval": "0s",
    "slots": {"clicks": {"entity": "user", "value": "item", "counters": ["click"]}},
}


def _open(path: Path) -> ProfileStore:
    return ProfileStore(CFG, path=path, clock=lambda: NOW, background=False)


def _write_batches(path: Path) -> tuple[bytes, list[tuple[int, int]]]:
    """Write BATCHES one-event batches; return the WAL segment's bytes and each batch's byte range."""
    store = _open(path)
    (segment,) = [p for p in store._wal.segments() if p.stat().st_size == 0]
    ranges = []
    for i in range(BATCHES):
        start = segment.stat().st_size
        res = store.write([{"user": f"u{i}", "item": "m", "action": "click", "time": NOW - 60 - i}])
        assert res.accepted == 1
        ranges.append((start, segment.stat().st_size))
    data = segment.read_bytes()
    _crash(store)
    return data, ranges


def _crash(store: ProfileStore) -> None:
    """Leave the WAL as the only copy of the batches: no close (which would flush them to LMDB)."""
    store._wal.close()
    store._storage.close()
    store._closed = True


def _present(store: ProfileStore) -> list[int]:
    q = FeatureQuery(
        entities=[f"user:u{i}" for i in range(BATCHES)],
        features=[Feature(slot="clicks", window="1d", counters=("click",))],
        now=NOW,
    )
    counts = [row[0].scalar() for row in store.query(q).results]
    assert set(counts) <= {0.0, 1.0}, counts  # a batch is applied once or not at all
    return [i for i, c in enumerate(counts) if c == 1.0]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A store directory whose WAL holds the ten batches (and nothing in LMDB)."""
    path = tmp_path_factory.mktemp("pristine")
    data, ranges = _write_batches(path)
    assert ranges[-1][1] == len(data)
    return path, data, ranges


def _copy(pristine_path: Path, dest: Path) -> Path:
    shutil.copytree(pristine_path, dest)
    return dest


def _wal_file(path: Path) -> Path:
    segs = sorted((path / "wal").glob("*.wal"))
    return next(s for s in segs if s.stat().st_size)


def test_intact_wal_replays_every_batch(pristine, tmp_path):
    path = _copy(pristine[0], tmp_path / "s")
    store = _open(path)
    assert _present(store) == list(range(BATCHES))
    stats = store.stats()
    assert stats["wal_corruptions"] == 0 and stats["wal_torn_tails"] == 0
    store.close()


def test_a_flipped_byte_in_record_3_loses_only_record_3_and_is_reported(pristine, tmp_path, caplog):
    pristine_path, data, ranges = pristine
    path = _copy(pristine_path, tmp_path / "s")
    lo, hi = ranges[3]
    buf = bytearray(data)
    buf[(lo + hi) // 2] ^= 0xFF
    _wal_file(path).write_bytes(bytes(buf))
    with caplog.at_level(logging.WARNING, logger="streamrec.profiles.wal"):
        store = _open(path)
    assert _present(store) == [i for i in range(BATCHES) if i != 3]
    stats = store.stats()
    assert stats["wal_corruptions"] == 1
    assert stats["wal_corrupt_bytes"] == hi - lo
    assert stats["wal_torn_tails"] == 0
    assert any("corrupt" in r.getMessage() for r in caplog.records), caplog.text
    # The bad bytes were moved aside, byte for byte, next to the segment.
    (aside,) = sorted((path / "wal").glob("*.corrupt-*"))
    assert aside.read_bytes() == bytes(buf[lo:hi])
    store.close()
    # Reopening does not report it again, and loses nothing more.
    again = _open(path)
    assert _present(again) == [i for i in range(BATCHES) if i != 3]
    assert again.stats()["wal_corruptions"] == 0
    again.close()


@pytest.mark.parametrize("mask", [0xFF, 0x01, 0x80])
def test_every_flipped_byte_loses_at_most_its_own_batch_and_is_reported(pristine, tmp_path, mask):
    """The full sweep: one reopen per byte position of the ten-batch WAL (all bits, lowest, highest)."""
    pristine_path, data, ranges = pristine
    base = tmp_path / "s"
    t0 = time.perf_counter()
    for pos in range(len(data)):
        path = _copy(pristine_path, base)
        buf = bytearray(data)
        buf[pos] ^= mask
        _wal_file(path).write_bytes(bytes(buf))
        store = _open(path)
        present = _present(store)
        stats = store.stats()
        store.close()
        # Brute-force reference: the batch that owns the byte is the only one that may be lost.
        owner = next(i for i, (lo, hi) in enumerate(ranges) if lo <= pos < hi)
        expected = [i for i in range(BATCHES) if i != owner]
        assert present == expected, (pos, owner, present)  # a CRC catches every one-byte change
        assert stats["wal_corruptions"] == 1, (pos, stats)  # reported, never silent
        assert stats["wal_corrupt_bytes"] == ranges[owner][1] - ranges[owner][0], (pos, stats)
        assert stats["wal_torn_tails"] == 0, (pos, stats)
        assert len(list((path / "wal").glob("*.corrupt-*"))) == 1, pos
        shutil.rmtree(base)
    elapsed = time.perf_counter() - t0
    print(f"xor {mask:#04x}: flipped {len(data)} byte positions of a {BATCHES}-batch WAL in {elapsed:.1f} s")


def test_a_torn_tail_anywhere_is_truncated_and_counted_not_reported_as_corruption(pristine, tmp_path):
    """Cut the WAL at every length: only whole records survive, the partial one is a torn tail."""
    pristine_path, data, ranges = pristine
    base = tmp_path / "s"
    for cut in range(len(data) + 1):
        path = _copy(pristine_path, base)
        _wal_file(path).write_bytes(data[:cut])
        store = _open(path)
        present = _present(store)
        stats = store.stats()
        store.close()
        whole = [i for i, (_, hi) in enumerate(ranges) if hi <= cut]
        torn = cut not in {0, *(hi for _, hi in ranges)}
        assert present == whole, (cut, present)
        assert stats["wal_corruptions"] == 0, (cut, stats)
        assert stats["wal_torn_tails"] == int(torn), (cut, stats)
        assert not list((path / "wal").glob("*.corrupt-*")), cut
        shutil.rmtree(base)


def test_corrupt_record_then_torn_tail_are_told_apart(pristine, tmp_path):
    pristine_path, data, ranges = pristine
    path = _copy(pristine_path, tmp_path / "s")
    buf = bytearray(data[: ranges[9][0] + 5])  # the last record cut in its header
    buf[ranges[2][0] + 20] ^= 0x01
    _wal_file(path).write_bytes(bytes(buf))
    store = _open(path)
    assert _present(store) == [0, 1, 3, 4, 5, 6, 7, 8]
    stats = store.stats()
    assert (stats["wal_corruptions"], stats["wal_torn_tails"]) == (1, 1)
    store.close()


def test_damage_in_an_older_segment_keeps_the_later_segments(tmp_path):
    """Two crashes without a flush leave two segments; a bad record in the first costs only itself."""
    path = tmp_path / "s"
    for part in range(2):
        store = _open(path)
        for i in range(5 * part, 5 * part + 5):
            store.write([{"user": f"u{i}", "item": "m", "action": "click", "time": NOW - 60 - i}])
        _crash(store)
    first, _second = [p for p in sorted((path / "wal").glob("*.wal")) if p.stat().st_size]
    buf = bytearray(first.read_bytes())
    record = len(buf) // 5
    buf[2 * record + record // 2] ^= 0xFF  # the payload of the third record (batch 2)
    first.write_bytes(bytes(buf))
    store = _open(path)
    assert _present(store) == [0, 1, 3, 4, 5, 6, 7, 8, 9]
    assert store.stats()["wal_corruptions"] == 1
    assert store.stats()["wal_salvaged_records"] == 2  # batches 3 and 4 of the same segment
    store.close()


def test_corruption_is_exported_as_a_prometheus_counter(pristine, tmp_path):
    from prometheus_client import generate_latest

    from streamrec.profiles.service import NodeMetrics

    pristine_path, data, ranges = pristine
    path = _copy(pristine_path, tmp_path / "s")
    buf = bytearray(data)
    buf[ranges[5][0] + 2] ^= 0x40
    _wal_file(path).write_bytes(bytes(buf))
    store = _open(path)
    text = generate_latest(NodeMetrics(store).registry).decode()
    assert "streamrec_profiles_store_wal_corruptions_total 1.0" in text
    assert "streamrec_profiles_store_wal_torn_tails_total 0.0" in text
    store.close()


def _legacy_record(batch: WalBatch) -> bytes:
    """A record of the version-1 format (no header checksum): u32 length | u32 crc32 | msgpack."""
    payload = msgspec.msgpack.encode(batch)
    return struct.pack("<II", len(payload), zlib.crc32(payload)) + payload


def _legacy_batch(store: ProfileStore, seq: int, user: str) -> WalBatch:
    key = store.entity_key("user", user)
    rows = WalSlotRows(
        slot="clicks",
        columns=["click"],
        keys=[key],
        times=struct.pack("<d", NOW - 60),
        values=["m"],
        data=struct.pack("<d", 1.0),
    )
    return WalBatch(seq=seq, rows=[rows])


def test_a_version_1_segment_is_still_replayed(tmp_path):
    store = _open(tmp_path / "s")
    legacy = b"".join(_legacy_record(_legacy_batch(store, i + 1, f"u{i}")) for i in range(3))
    store.close()
    (tmp_path / "s" / "wal" / "000000000000.wal").write_bytes(legacy)
    store = _open(tmp_path / "s")
    assert _present(store) == [0, 1, 2]
    assert store.stats()["wal_corruptions"] == 0
    store.close()


def test_a_record_of_an_unknown_format_version_is_refused_clearly(pristine, tmp_path):
    pristine_path, data, ranges = pristine
    path = _copy(pristine_path, tmp_path / "s")
    # A well-formed record header (its own checksum valid) that announces format version 9.
    head = bytearray(data[: ranges[0][1]])
    head[3] = 9
    head[12:16] = struct.pack("<I", zlib.crc32(bytes(head[:12])))
    _wal_file(path).write_bytes(bytes(head) + data[ranges[0][1] :])
    with pytest.raises(WalFormatError, match="version 9"):
        _open(path)
