"""Serving concurrency (issue 2, item 8): lookups from several threads while deltas are applied.

Every delta writes rows whose every coordinate equals the delta's version number, so a torn row
(half old, half new) shows up as a row with unequal coordinates.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import numpy as np

from streamrec.embedding import ServingTable, TableDelta
from streamrec.embedding.cuckoo import PARALLEL_MIN
from streamrec.embedding.serving import APPLY_CHUNK, RWLock

DIM = 16
VERSIONS = 40


def _delta(ids: np.ndarray, version: int, evicted: np.ndarray | None = None) -> TableDelta:
    vectors = np.full((len(ids), DIM), float(version), dtype=np.float32)
    return TableDelta("s", ids, vectors, np.empty(0, np.int64) if evicted is None else evicted)


def test_lookups_during_delta_application_see_whole_rows_and_never_go_back_in_time():
    rng = np.random.default_rng(0)
    stable = rng.integers(-(2**63), 2**63 - 1, size=APPLY_CHUNK + 4_000, dtype=np.int64)  # two chunks per delta
    fresh = [rng.integers(-(2**63), 2**63 - 1, size=3_000, dtype=np.int64) for _ in range(VERSIONS)]
    churn = np.arange(2_000, dtype=np.int64) << 40
    table = ServingTable("s", DIM, capacity=64)  # tiny: the index and rows grow under the readers
    table.apply(_delta(stable, 1))

    done = threading.Event()
    errors: list[BaseException] = []
    reads = [0]

    def read(ids: np.ndarray, monotonic: bool) -> None:
        last = np.zeros(len(ids), dtype=np.float32)
        while not done.is_set():
            out = table.lookup(ids)
            assert out.shape == (len(ids), DIM) and out.dtype == np.float32
            torn = ~(out == out[:, :1]).all(axis=1)
            assert not torn.any(), f"torn rows: {out[torn][:2]}"
            if monotonic:
                assert (out[:, 0] >= last).all(), "a reader saw a row go back to an older version"
                last = out[:, 0].copy()
            reads[0] += 1

    def reader(kind: int) -> None:
        try:
            if kind == 0:  # one big batch: the parallel lookup kernel
                read(stable, monotonic=True)
            elif kind == 1:  # small batches of stable ids
                read(stable[np.random.default_rng(kind).integers(0, len(stable), size=64)], monotonic=True)
            else:  # ids being inserted, evicted and re-inserted
                read(np.concatenate([stable, *fresh, churn])[::7], monotonic=False)
        except BaseException as exc:
            errors.append(exc)
            done.set()

    def writer() -> None:
        try:
            for v in range(2, VERSIONS + 1):
                evicted = churn if v % 2 else None
                ids = np.concatenate([stable, fresh[v - 1], churn] if not v % 2 else [stable, fresh[v - 1]])
                table.apply(_delta(ids, v, evicted))
                time.sleep(0.002)
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    assert len(stable) >= PARALLEL_MIN
    threads = [threading.Thread(target=reader, args=(k % 3,)) for k in range(4)]
    for t in threads:
        t.start()
    w = threading.Thread(target=writer)
    w.start()
    w.join(timeout=120)
    done.set()
    for t in threads:
        t.join(timeout=60)
    assert not w.is_alive() and not any(t.is_alive() for t in threads)
    if errors:
        raise errors[0]
    assert table.applied == VERSIONS
    assert np.all(table.lookup(stable) == VERSIONS)
    assert reads[0] > 20, "the readers should have read while deltas were applied"
    # the last delta (even version) re-inserted the churned ids
    assert np.all(table.lookup(churn) == VERSIONS)


def test_many_readers_of_a_quiet_table_get_identical_answers():
    rng = np.random.default_rng(1)
    ids = rng.integers(-(2**63), 2**63 - 1, size=PARALLEL_MIN * 2, dtype=np.int64)
    table = ServingTable("s", DIM)
    table.apply(TableDelta("s", ids, rng.normal(size=(len(ids), DIM)).astype(np.float32), np.empty(0, np.int64)))
    expected = table.lookup(ids)
    results: list[np.ndarray] = []
    lock = threading.Lock()

    def read() -> None:
        for _ in range(10):
            out = table.lookup(ids)
            with lock:
                results.append(out)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 40 and all(np.array_equal(r, expected) for r in results)


def test_an_id_evicted_and_readmitted_in_one_delta_never_reads_as_absent(monkeypatch):
    """Such an id goes from its old row to its new row; a reader must not see the default between.

    The writer pauses after each locked section, as a preempted thread may, so readers do run
    between the steps of one ``apply``.
    """
    locked_write = RWLock.write

    @contextmanager
    def write_then_pause(self):
        with locked_write(self):
            yield
        time.sleep(0.0005)

    monkeypatch.setattr(RWLock, "write", write_then_pause)
    rng = np.random.default_rng(2)
    ids = rng.integers(-(2**63), 2**63 - 1, size=3_000, dtype=np.int64)
    table = ServingTable("s", DIM)
    table.apply(_delta(ids, 1))
    done = threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            last = np.ones(len(ids), dtype=np.float32)
            while not done.is_set():
                out = table.lookup(ids)[:, 0]
                assert (out >= last).all(), f"{int((out < last).sum())} re-admitted ids read as absent"
                last = out
        except BaseException as exc:
            errors.append(exc)
            done.set()

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for v in range(2, 100):
            if done.is_set():
                break
            table.apply(_delta(ids, v, evicted=ids))
    finally:
        done.set()
        for t in threads:
            t.join(timeout=60)
    if errors:
        raise errors[0]
    assert np.all(table.lookup(ids) == v)
