"""Snapshots (issue 2, item 7): bit-identical restore, identical continuation, crash-safe saves."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from streamrec.embedding import (
    FTRL,
    SGD,
    Adagrad,
    Adam,
    EmbeddingCollection,
    EmbeddingModule,
    JaggedIds,
    SlotConfig,
    Uniform,
    load_collection,
    save_collection,
)
from streamrec.embedding.snapshot import FORMAT, collection_arrays, text_array, write_arrays_atomic
from streamrec.errors import SnapshotError

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _collection() -> EmbeddingCollection:
    return EmbeddingCollection(
        {
            "user": SlotConfig(dim=8, admit_after=2, ttl=30, optimizer=Adagrad(lr=0.1, lr_decay=0.01), capacity=8),
            "item": SlotConfig(dim=4, ttl=20, optimizer=Adam(lr=0.01), initializer=Uniform(), capacity=8),
            "genres": SlotConfig(dim=3, pooling="mean", optimizer=FTRL(l1=0.001), sketch_width=64),
            "city": SlotConfig(dim=2, admit_after=3, optimizer=SGD(lr=0.2), sketch_width=64, sketch_depth=2),
        },
        seed=9,
    )


class _Feed:
    """A reproducible stream of training batches (with event times) for a collection."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.users = self.rng.integers(INT64_MIN, INT64_MAX, size=300, dtype=np.int64)
        self.now = 1_000

    def step(self, module: EmbeddingModule, tables: EmbeddingCollection) -> None:
        rng, batch = self.rng, 24
        features = {
            "user": torch.from_numpy(rng.choice(self.users, size=batch)),
            "item": torch.from_numpy(rng.integers(-50, 50, size=batch)),
            "genres": JaggedIds.from_lists([rng.integers(0, 40, size=int(rng.integers(0, 4))) for _ in range(batch)]),
            "city": torch.from_numpy(rng.integers(0, 30, size=batch) << 33),
        }
        out = module(features, now=self.now)
        y = torch.from_numpy(rng.normal(size=batch).astype(np.float32))
        pred = out["user"][:, :4].mul(out["item"]).sum(1) + out["genres"].sum(1) + out["city"].sum(1)
        (pred - y).pow(2).mean().backward()
        module.apply_gradients()
        self.now += int(rng.integers(0, 6))
        if rng.random() < 0.2:
            tables.evict_expired(self.now)

    def probes(self) -> np.ndarray:
        extra = self.rng.integers(INT64_MIN, INT64_MAX, size=50, dtype=np.int64)
        return np.concatenate([self.users, np.arange(-60, 60), np.arange(30) << 33, extra]).astype(np.int64)


def _assert_identical(a: EmbeddingCollection, b: EmbeddingCollection, probes: np.ndarray) -> None:
    assert a.slots == b.slots
    for slot in a.slots:
        assert np.array_equal(a[slot].lookup(probes), b[slot].lookup(probes)), slot
        assert len(a[slot]) == len(b[slot]) and a[slot].step == b[slot].step
        assert a[slot].stats == b[slot].stats
        sa, sb = a[slot].state_arrays(), b[slot].state_arrays()
        assert sa.keys() == sb.keys()
        for name in sa:
            assert np.array_equal(sa[name], sb[name]), (slot, name)


def _trained(steps: int, seed: int = 0) -> tuple[EmbeddingCollection, EmbeddingModule, _Feed]:
    tables = _collection()
    module = EmbeddingModule(tables)
    feed = _Feed(seed)
    for _ in range(steps):
        feed.step(module, tables)
    return tables, module, feed


def test_a_restored_collection_answers_lookups_bit_for_bit(tmp_path):
    tables, _, feed = _trained(40)
    path = tmp_path / "snap.npz"
    save_collection(tables, path)
    restored = load_collection(path)
    probes = feed.probes()
    for slot in tables.slots:
        assert np.array_equal(restored[slot].lookup(probes), tables[slot].lookup(probes))
        assert restored[slot].config == tables[slot].config
    _assert_identical(tables, restored, probes)


def test_a_restored_copy_and_the_original_stay_identical_when_fed_the_same_batches(tmp_path):
    tables, module, feed = _trained(30)
    path = tmp_path / "snap.npz"
    save_collection(tables, path)
    restored = load_collection(path)
    restored_module = EmbeddingModule(restored)
    restored_feed = _Feed(0)
    restored_feed.rng.bit_generator.state = feed.rng.bit_generator.state
    restored_feed.now = feed.now
    for _ in range(30):
        feed.step(module, tables)
        restored_feed.step(restored_module, restored)
    probes = feed.probes()
    _assert_identical(tables, restored, probes)
    # pending deltas (dirty rows, evictions not yet exported) were restored too
    a, b = tables.export_delta(), restored.export_delta()
    for slot in tables.slots:
        assert np.array_equal(a.tables[slot].ids, b.tables[slot].ids)
        assert np.array_equal(a.tables[slot].vectors, b.tables[slot].vectors)
        assert np.array_equal(a.tables[slot].evicted, b.tables[slot].evicted)


def test_saving_again_replaces_the_snapshot(tmp_path):
    tables, module, feed = _trained(5)
    path = tmp_path / "snap.npz"
    save_collection(tables, path)
    for _ in range(5):
        feed.step(module, tables)
    save_collection(tables, path)
    _assert_identical(tables, load_collection(path), feed.probes())
    assert [p.name for p in tmp_path.iterdir()] == ["snap.npz"]


_WRITER = textwrap.dedent(
    """
    import sys, time
    import numpy as np, torch
    from streamrec.embedding import SGD, Adagrad, EmbeddingCollection, SlotConfig, Zeros
    from streamrec.embedding import load_collection, save_collection
    from streamrec.errors import SnapshotError

    path, n = sys.argv[1], int(sys.argv[2])
    ids = {"a": np.arange(n, dtype=np.int64), "b": (np.arange(n // 2, dtype=np.int64) << 40) - 5}
    try:
        tables = load_collection(path)
    except SnapshotError:
        tables = EmbeddingCollection({
            "a": SlotConfig(dim=16, optimizer=SGD(lr=1.0), initializer=Zeros(), capacity=n),
            "b": SlotConfig(dim=8, optimizer=Adagrad(lr=0.1), initializer=Zeros(), capacity=n // 2),
        })
        for slot, x in ids.items():
            tables[slot].admit(x, now=1)
    rows = {s: torch.from_numpy(tables[s].rows_of(x).astype(np.int64)) for s, x in ids.items()}
    while True:
        for slot, r in rows.items():  # one version = one step of gradient -1 on every row
            tables[slot].apply_gradients(r, -torch.ones(len(r), tables[slot].dim))
        start = time.perf_counter()
        save_collection(tables, path)
        print(tables["a"].step, time.perf_counter() - start, flush=True)
    """
)


def _check_one_complete_version(path, n: int) -> int:
    tables = load_collection(path)
    version = tables["a"].step
    assert tables["b"].step == version
    a, b = tables["a"], tables["b"]
    assert len(a) == n and len(b) == n // 2
    assert np.all(a.lookup(np.arange(n)) == version)  # SGD lr=1, gradient -1 per version
    b_rows = b.rows_of((np.arange(n // 2) << 40) - 5)
    assert (b_rows >= 0).all()
    assert np.all(b._state["sum"][b_rows] == version)  # Adagrad: one squared unit gradient per version
    weights = b.lookup((np.arange(n // 2) << 40) - 5)
    assert np.all(weights == weights[0, 0])
    return version


def test_killing_a_save_midway_leaves_the_previous_snapshot_readable(tmp_path):
    """A real writer process saves a ~20 MB collection in a loop and is SIGKILLed at random moments."""
    path = tmp_path / "snap.npz"
    n = 150_000
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    rng = random.Random(1234)
    version = 0
    for round_ in range(4):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(path), str(n)], stdout=subprocess.PIPE, text=True, cwd=tmp_path
        )
        try:
            line = proc.stdout.readline()  # the first save of this process is complete
            assert line, "writer died before saving"
            saved, seconds = int(line.split()[0]), float(line.split()[1])
            assert saved == version + 1
            if round_ % 2:  # at a random moment, which may fall between saves
                time.sleep(rng.uniform(0, 3 * seconds))
            else:  # inside a save: once its temporary file exists
                tmp = tmp_path / f"{path.name}.tmp-{proc.pid}"
                deadline = time.monotonic() + 30
                while not tmp.exists() and time.monotonic() < deadline:
                    time.sleep(0.001)
                time.sleep(rng.uniform(0, 0.3 * seconds))
            proc.send_signal(signal.SIGKILL)
            rest = proc.communicate(timeout=30)[0].split()
            last_printed = int(rest[-2]) if rest else saved
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == -signal.SIGKILL
        version = _check_one_complete_version(path, n)
        # the kill may land after a save finished but before its line was printed
        assert version in (last_printed, last_printed + 1)
    leftovers = sorted(p.name for p in tmp_path.iterdir() if ".tmp-" in p.name)
    print(f"\nkilled 4 writers, reached version {version}; {len(leftovers)} kills landed inside a save")
    assert leftovers, "no kill landed inside a save"
    assert version >= 4


def test_a_leftover_temporary_file_does_not_disturb_loading(tmp_path):
    tables, _, feed = _trained(3)
    path = tmp_path / "snap.npz"
    save_collection(tables, path)
    (tmp_path / "snap.npz.tmp-99999").write_bytes(b"PK\x03\x04 half a zip")
    _assert_identical(tables, load_collection(path), feed.probes())


def _damaged_files(good: bytes) -> dict[str, bytes]:
    rng = random.Random(0)
    files = {
        "empty": b"",
        "garbage": bytes(rng.randrange(256) for _ in range(4096)),
        "truncated to a few bytes": good[:10],
        "truncated by half": good[: len(good) // 2],
        "last byte missing": good[:-1],
    }
    for k in range(3):
        flipped = bytearray(good)
        flipped[rng.randrange(len(good) // 4, len(good) // 2)] ^= 0xFF  # inside array data: bad CRC
        files[f"flipped byte {k}"] = bytes(flipped)
    return files


def _npz(tmp_path, arrays) -> bytes:
    path = tmp_path / "built.npz"
    write_arrays_atomic(path, arrays)
    return path.read_bytes()


def test_truncated_garbage_or_incomplete_files_raise_snapshot_error(tmp_path):
    tables, _, _ = _trained(10)
    path = tmp_path / "snap.npz"
    save_collection(tables, path)
    good = path.read_bytes()
    arrays = {"format": text_array(FORMAT), **collection_arrays(tables)}
    cases = _damaged_files(good)
    cases["another format"] = _npz(tmp_path, {**arrays, "format": text_array("something-else")})
    cases["no format entry"] = _npz(tmp_path, {k: v for k, v in arrays.items() if k != "format"})
    cases["a slot's arrays missing"] = _npz(tmp_path, {k: v for k, v in arrays.items() if "slot/item/" not in k})
    cases["weights shorter than rows in use"] = _npz(
        tmp_path, {k: (v[:2] if k.endswith("/weights") else v) for k, v in arrays.items()}
    )
    cases["config not json"] = _npz(tmp_path, {**arrays, "config": text_array("{not json")})
    cases["config invalid"] = _npz(tmp_path, {**arrays, "config": text_array('{"slots": {"user": {"dim": 0}}}')})
    for name, data in cases.items():
        bad = tmp_path / "bad.npz"
        bad.write_bytes(data)
        with pytest.raises(SnapshotError):
            load_collection(bad)
            pytest.fail(f"{name}: loaded without error")
    with pytest.raises(SnapshotError, match="no snapshot"):
        load_collection(tmp_path / "missing.npz")


def test_a_damaged_zip_directory_raises_snapshot_error_or_loads_the_right_data(tmp_path):
    """Flipping any byte of the zip's central directory never escapes as a foreign exception."""
    tables, _, feed = _trained(5)
    path = tmp_path / "snap.npz"
    save_collection(tables, path)
    good = path.read_bytes()
    probes = feed.probes()
    start = good.rfind(b"PK\x01\x02", 0, len(good) - 2000)  # somewhere in the central directory
    bad = tmp_path / "bad.npz"
    for pos in range(start, len(good), 7):
        flipped = bytearray(good)
        flipped[pos] ^= 0x55
        bad.write_bytes(bytes(flipped))
        try:
            restored = load_collection(bad)
        except SnapshotError:
            continue
        _assert_identical(tables, restored, probes)  # an ignored field (time, comment...) was hit


def test_saving_where_no_file_can_be_written_raises_snapshot_error(tmp_path):
    tables, _, _ = _trained(2)
    (tmp_path / "a-directory").mkdir()
    (tmp_path / "a-file").write_text("x")
    for target in (tmp_path / "a-directory", tmp_path / "a-file" / "snap.npz"):
        with pytest.raises(SnapshotError, match="cannot write"):
            save_collection(tables, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-directory", "a-file"]  # no temporary left behind
