"""Deltas and serving replicas (issue 2, item 7): a replica fed every delta answers like training."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest
import torch

from streamrec.embedding import (
    FTRL,
    SGD,
    Adagrad,
    Adam,
    CollectionDelta,
    EmbeddingCollection,
    EmbeddingModule,
    JaggedIds,
    Normal,
    ServingCollection,
    SlotConfig,
    TableDelta,
    Uniform,
)
from streamrec.errors import InvalidInputError, UnknownSlotError

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _collection() -> EmbeddingCollection:
    return EmbeddingCollection(
        {
            "user": SlotConfig(dim=8, admit_after=2, ttl=40, optimizer=Adagrad(lr=0.1), capacity=16),
            "item": SlotConfig(dim=4, ttl=25, optimizer=Adam(lr=0.01), initializer=Uniform(), capacity=8),
            "genres": SlotConfig(dim=3, pooling="mean", optimizer=FTRL(l1=0.001), initializer=Normal(std=0.1)),
            "city": SlotConfig(dim=2, admit_after=3, optimizer=SGD(lr=0.2), sketch_width=64, sketch_depth=2),
        },
        seed=5,
    )


def _assert_same_answers(serving: ServingCollection, training: EmbeddingCollection, probes: dict) -> None:
    for slot, ids in probes.items():
        got = serving.lookup(slot, ids)
        expected = training[slot].lookup(ids)
        assert got.dtype == np.float32 and np.array_equal(got, expected), slot
        assert len(serving[slot]) == len(training[slot]), slot


def test_a_replica_fed_every_delta_answers_every_lookup_like_training_over_random_rounds():
    rng = np.random.default_rng(0)
    training = _collection()
    module = EmbeddingModule(training)
    fed_from_start = ServingCollection({s: t.dim for s, t in training.tables.items()})
    fed_from_middle = None
    universes = {
        "user": rng.integers(INT64_MIN, INT64_MAX, size=400, dtype=np.int64),
        "item": np.concatenate([np.arange(-100, 100), [INT64_MIN, INT64_MAX]]).astype(np.int64),
        "genres": np.arange(60, dtype=np.int64) << 40,
        "city": (np.arange(30, dtype=np.int64) << 32) | 7,
    }
    seen = {slot: set() for slot in universes}
    now = 1_000
    evictions = 0
    for rnd in range(60):
        for _ in range(int(rng.integers(0, 3))):
            batch = 32
            user = rng.choice(universes["user"][: 50 + 6 * rnd], size=batch)
            item = rng.choice(universes["item"], size=batch)
            bags = [rng.choice(universes["genres"], size=int(rng.integers(0, 4))).tolist() for _ in range(batch)]
            city = rng.choice(universes["city"], size=batch)
            out = module(
                {
                    "user": torch.from_numpy(user),
                    "item": torch.from_numpy(item),
                    "genres": JaggedIds.from_lists(bags),
                    "city": torch.from_numpy(city),
                },
                now=now,
            )
            y = torch.from_numpy(rng.normal(size=batch).astype(np.float32))
            pred = out["user"][:, :4].mul(out["item"]).sum(1) + out["genres"].sum(1) + out["city"].sum(1)
            (pred - y).pow(2).mean().backward()
            module.apply_gradients()
            for slot, ids in (("user", user), ("item", item), ("city", city)):
                seen[slot].update(ids.tolist())
            seen["genres"].update(g for bag in bags for g in bag)
        now += int(rng.integers(0, 15))
        if rng.random() < 0.4:
            evictions += sum(training.evict_expired(now).values())
        delta = training.export_delta()
        wire = CollectionDelta.from_bytes(delta.to_bytes())
        fed_from_start.apply(wire)
        if fed_from_middle is not None:
            fed_from_middle.apply(delta)
        elif rnd == 20:
            fed_from_middle = training.serving_replica()
        unseen = rng.integers(INT64_MIN, INT64_MAX, size=20, dtype=np.int64)
        probes = {
            slot: np.concatenate([np.array(sorted(seen[slot]), dtype=np.int64), universes[slot], unseen])
            for slot in universes
        }
        _assert_same_answers(fed_from_start, training, probes)
        if fed_from_middle is not None:
            _assert_same_answers(fed_from_middle, training, probes)
    assert evictions > 50, "the rounds should exercise eviction"
    assert training["user"].stats.admitted > len(training["user"])  # ids came back after eviction


def test_a_delta_holds_vectors_changed_since_the_last_export_and_not_optimizer_state():
    training = EmbeddingCollection({"s": SlotConfig(dim=2, optimizer=Adagrad(lr=0.5))})
    module = EmbeddingModule(training)
    out = module({"s": torch.tensor([1, 2])}, now=1)
    out["s"].sum().backward()
    module.apply_gradients()
    first = training.export_delta().tables["s"]
    assert sorted(first.ids.tolist()) == [1, 2]
    order = np.argsort(first.ids)
    assert np.array_equal(first.vectors[order], training["s"].lookup(np.array([1, 2])))
    out = module({"s": torch.tensor([2, 3])}, now=2)
    out["s"].sum().backward()
    module.apply_gradients()
    assert sorted(training.export_delta().tables["s"].ids.tolist()) == [2, 3]
    assert training.export_delta().tables["s"].ids.tolist() == []
    assert {f.name for f in TableDelta.__dataclass_fields__.values()} == {"slot", "ids", "vectors", "evicted"}


def test_collection_delta_round_trips_through_bytes():
    rng = np.random.default_rng(1)
    delta = CollectionDelta(
        {
            "a": TableDelta(
                "a",
                np.array([INT64_MIN, -1, 0, INT64_MAX], dtype=np.int64),
                rng.normal(size=(4, 3)).astype(np.float32),
                np.array([5, INT64_MIN + 1], dtype=np.int64),
            ),
            "b": TableDelta("b", np.empty(0, np.int64), np.empty((0, 7), np.float32), np.empty(0, np.int64)),
            "c": TableDelta(
                "c",
                np.array([3], dtype=np.int64),
                np.array([[np.float32(1e-45), -0.0]], dtype=np.float32),
                np.empty(0, np.int64),
            ),
        }
    )
    back = CollectionDelta.from_bytes(delta.to_bytes())
    assert list(back.tables) == ["a", "b", "c"]
    for slot, t in delta.tables.items():
        u = back.tables[slot]
        assert u.slot == slot
        for x, y in ((t.ids, u.ids), (t.vectors, u.vectors), (t.evicted, u.evicted)):
            assert x.dtype == y.dtype and x.shape == y.shape
            assert x.tobytes() == y.tobytes()  # bit for bit, signed zeros and subnormals included
    assert len(back) == len(delta) and back.nbytes == delta.nbytes


def _wire(dim: int, ids: bytes, vectors: bytes, evicted: bytes = b"") -> bytes:
    return msgspec.msgpack.encode([1, [["a", dim, ids, vectors, evicted]]])


GARBAGE = {
    "empty": b"",
    "not msgpack": b"\x00garbage",
    "other version": b"\x92\x02\x90",
    "ids not whole int64": _wire(2, b"x", b""),
    "vectors shorter than ids x dim": _wire(2, bytes(8), bytes(4)),
    "zero dim": _wire(0, bytes(8), b""),
    "negative dim": _wire(-1, bytes(8), bytes(8)),
    "evicted not whole int64": _wire(1, b"", b"", b"abc"),
}


@pytest.mark.parametrize("data", list(GARBAGE.values()), ids=list(GARBAGE))
def test_garbage_delta_bytes_raise_invalid_input(data):
    with pytest.raises(InvalidInputError) as err:
        CollectionDelta.from_bytes(data)
    assert err.value.field.startswith("delta")


def test_applying_a_delta_with_an_unknown_slot_changes_nothing():
    serving = ServingCollection({"a": 2})
    good = TableDelta("a", np.array([1], np.int64), np.ones((1, 2), np.float32), np.empty(0, np.int64))
    bad = TableDelta("zz", np.array([1], np.int64), np.ones((1, 2), np.float32), np.empty(0, np.int64))
    with pytest.raises(UnknownSlotError, match="zz"):
        serving.apply(CollectionDelta({"a": good, "zz": bad}))
    assert len(serving["a"]) == 0


def test_applying_a_delta_of_the_wrong_dim_changes_nothing():
    serving = ServingCollection({"a": 2, "b": 3})
    good = TableDelta("a", np.array([1], np.int64), np.ones((1, 2), np.float32), np.empty(0, np.int64))
    bad = TableDelta("b", np.array([1], np.int64), np.ones((1, 2), np.float32), np.empty(0, np.int64))
    with pytest.raises(InvalidInputError) as err:
        serving.apply(CollectionDelta({"a": good, "b": bad}))
    assert err.value.field == "delta.vectors"
    assert len(serving["a"]) == 0 and len(serving["b"]) == 0
