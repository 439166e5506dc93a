"""Expiry (issue 2, item 3), checked against a dict of last-seen event times."""

from __future__ import annotations

import numpy as np
import torch

from streamrec.embedding import SGD, Adagrad, EmbeddingCollection, EmbeddingTable, Normal, SlotConfig, Zeros


def _table(ttl, admit_after: int = 1, capacity: int = 64) -> EmbeddingTable:
    config = SlotConfig(
        dim=2,
        admit_after=admit_after,
        ttl=ttl,
        optimizer=SGD(lr=0.1),
        initializer=Zeros(),
        capacity=capacity,
        sketch_width=1 << 20,
    )
    return EmbeddingTable("s", config, seed=3)


def test_evict_expired_removes_exactly_the_rows_idle_longer_than_ttl():
    rng = np.random.default_rng(0)
    ttl = 50
    table = _table(ttl)
    last_seen: dict[int, int] = {}
    universe = rng.integers(-(2**63), 2**63 - 1, size=3_000, dtype=np.int64)
    now = 1_000
    for _ in range(60):
        for _ in range(3):
            t = now + int(rng.integers(-5, 20))  # events arrive slightly out of order
            batch = rng.choice(universe, size=int(rng.integers(1, 300)))
            table.admit(batch, now=t)
            for x in batch.tolist():
                last_seen[x] = max(last_seen.get(x, t), t)
        now += int(rng.integers(0, 30))
        expected_gone = {x for x, seen in last_seen.items() if now - seen > ttl}
        n = table.evict_expired(now)
        assert n == len(expected_gone)
        for x in expected_gone:
            del last_seen[x]
        assert len(table) == len(last_seen)
        present = table.rows_of(universe) >= 0
        assert present.tolist() == [x in last_seen for x in universe.tolist()]


def test_a_row_idle_exactly_ttl_seconds_stays_and_one_second_more_goes():
    table = _table("2h")
    table.admit(np.array([1, 2]), now=10_000)
    table.admit(np.array([2]), now=10_001)
    assert table.evict_expired(10_000 + 7_200) == 0
    assert table.evict_expired(10_000 + 7_201) == 1
    assert table.rows_of(np.array([1, 2])).tolist()[0] == -1
    assert table.rows_of(np.array([2]))[0] >= 0


def test_without_ttl_nothing_expires():
    table = _table(None)
    table.admit(np.arange(100), now=0)
    assert table.evict_expired(2**32 - 1) == 0
    assert len(table) == 100


def test_churning_ids_reuse_evicted_rows_so_row_capacity_stops_growing():
    table = _table(ttl=10, capacity=16)
    rng = np.random.default_rng(1)
    capacities = []
    for step in range(40):
        now = 100 + step * 20  # each generation is idle > ttl by the next round
        table.evict_expired(now)
        fresh = rng.integers(-(2**63), 2**63 - 1, size=2_000, dtype=np.int64)
        rows = table.admit(fresh, now=now)
        assert len(np.unique(rows)) == len(np.unique(fresh))
        assert len(table) == len(np.unique(fresh))
        capacities.append(table.row_capacity)
    assert capacities[-1] == capacities[2], capacities
    assert table.row_capacity < 2 * 2_000 + 16


def test_an_evicted_id_must_pass_admission_again():
    k = 3
    table = _table(ttl=5, admit_after=k)
    for i in range(k):
        rows = table.admit(np.array([42]), now=100 + i)
    assert rows[0] >= 0
    assert table.evict_expired(200) == 1
    for i in range(k - 1):
        assert table.admit(np.array([42]), now=201 + i)[0] == -1, f"re-admitted after {i + 1} sightings"
    assert table.admit(np.array([42]), now=210)[0] >= 0


def test_evictions_appear_in_the_next_delta_only():
    table = _table(ttl=5)
    table.admit(np.array([1, 2, 3]), now=100)
    table.export_delta()
    table.admit(np.array([3]), now=104)
    assert table.evict_expired(106) == 2  # 1 and 2 idle 6 s; 3 idle 2 s
    delta = table.export_delta()
    assert sorted(delta.evicted.tolist()) == [1, 2]
    assert delta.ids.tolist() == []  # 3 only had its timestamp raised: its vector did not change
    assert table.export_delta().evicted.tolist() == []


def test_evicted_then_readmitted_within_one_interval_is_in_both_lists():
    table = _table(ttl=5)
    table.admit(np.array([1, 2]), now=100)
    table.export_delta()
    table.evict_expired(200)
    table.admit(np.array([1]), now=200)
    delta = table.export_delta()
    assert sorted(delta.evicted.tolist()) == [1, 2]
    assert delta.ids.tolist() == [1]


def test_admitted_and_evicted_within_one_interval_is_only_an_eviction():
    table = _table(ttl=5)
    table.admit(np.array([9]), now=100)
    table.evict_expired(200)
    delta = table.export_delta()
    assert delta.evicted.tolist() == [9]
    assert delta.ids.tolist() == []


def test_collection_expires_each_slot_with_its_own_ttl():
    tables = EmbeddingCollection(
        {
            "short": SlotConfig(dim=2, ttl="1m", initializer=Zeros()),
            "long": SlotConfig(dim=2, ttl="1d", initializer=Zeros()),
            "forever": SlotConfig(dim=2, initializer=Zeros()),
        }
    )
    for slot in tables.slots:
        tables[slot].admit(np.arange(10), now=1_000)
    assert tables.evict_expired(1_000 + 3_600) == {"short": 10, "long": 0, "forever": 0}
    assert tables.evict_expired(1_000 + 86_401) == {"short": 0, "long": 10, "forever": 0}


def test_admission_and_expiry_over_random_rounds_match_an_exact_model():
    """Model: an absent id counts its occurrences since it last left (or since the start) and
    gets a row at the ``k``-th; a present id only refreshes its last-seen time."""
    rng = np.random.default_rng(5)
    k, ttl = 3, 20
    table = _table(ttl=ttl, admit_after=k)  # a 2**20-wide sketch: no collisions among 300 ids
    universe = rng.integers(-(2**63), 2**63 - 1, size=300, dtype=np.int64)
    count: dict[int, int] = {}
    last_seen: dict[int, int] = {}  # present ids only
    now = 0
    for _ in range(150):
        now += int(rng.integers(0, 6))
        batch = rng.choice(universe[: int(rng.integers(20, 300))], size=int(rng.integers(1, 60)))
        table.admit(batch, now=now)
        for x in batch.tolist():
            if x in last_seen:
                last_seen[x] = now
                continue
            count[x] = count.get(x, 0) + 1
            if count[x] >= k:
                last_seen[x] = now
                count[x] = 0
        if rng.random() < 0.3:
            gone = [x for x, t in last_seen.items() if now - t > ttl]
            assert table.evict_expired(now) == len(gone)
            for x in gone:
                del last_seen[x]
        assert (table.rows_of(universe) >= 0).tolist() == [x in last_seen for x in universe.tolist()]
    assert table.stats.evicted > 50 and table.stats.admitted > len(table) + 50


def test_a_reused_row_starts_with_the_new_ids_initial_vector_and_fresh_optimizer_state():
    config = SlotConfig(dim=3, ttl=5, optimizer=Adagrad(lr=0.5, initial_accumulator_value=0.2), initializer=Normal())
    grad = torch.tensor([[1.0, -2.0, 0.5]])

    def train(table: EmbeddingTable, ids, now: int) -> None:
        rows = torch.from_numpy(table.admit(np.array(ids), now=now).astype(np.int64))
        table.apply_gradients(rows, grad.expand(len(ids), 3))

    churned = EmbeddingTable("s", config, seed=1)
    for now in range(10):
        train(churned, [1], now)  # id 1 builds up a large accumulator
    churned.evict_expired(100)
    train(churned, [2], 100)  # id 2 takes id 1's freed row
    assert churned.row_capacity == config.capacity and churned.rows_of(np.array([2]))[0] == 0
    fresh = EmbeddingTable("s", config, seed=1)
    train(fresh, [2], 100)
    assert np.array_equal(churned.lookup(np.array([2])), fresh.lookup(np.array([2])))

    train(churned, [1], 101)  # id 1 returns: from its initial vector again, on a fresh row state
    again = EmbeddingTable("s", config, seed=1)
    train(again, [1], 0)
    assert np.array_equal(churned.lookup(np.array([1])), again.lookup(np.array([1])))
