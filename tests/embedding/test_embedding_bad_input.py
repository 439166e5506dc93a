"""Bad input (issue 2, item 9): a typed error naming the field, and nothing changed."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from streamrec.embedding import (
    FTRL,
    Adagrad,
    Adam,
    EmbeddingCollection,
    EmbeddingModule,
    JaggedIds,
    SlotConfig,
    TableDelta,
)
from streamrec.errors import InvalidInputError, NonFiniteGradientError, StreamrecError, UnknownSlotError


def _collection() -> EmbeddingCollection:
    return EmbeddingCollection(
        {
            "user": SlotConfig(dim=4, admit_after=2, ttl=100, optimizer=Adam(lr=0.1)),
            "item": SlotConfig(dim=3, optimizer=FTRL()),
            "genres": SlotConfig(dim=2, pooling="mean", optimizer=Adagrad(initial_accumulator_value=0.1)),
        },
        seed=3,
    )


def _warm(tables: EmbeddingCollection) -> EmbeddingModule:
    module = EmbeddingModule(tables)
    for now in (10, 11):
        out = module(
            {
                "user": torch.tensor([1, 2, 2, 3]),
                "item": torch.tensor([5, 6, 5, 7]),
                "genres": JaggedIds.from_lists([[1, 2], [], [3], [1]]),
            },
            now=now,
        )
        sum(v.sum() for v in out.values()).backward()
        module.apply_gradients()
    return module


def _state(tables: EmbeddingCollection) -> dict:
    """Everything a table holds: vectors, optimizer state, index, sketch, timestamps, counters."""
    out = {}
    for slot, table in tables.tables.items():
        for name, array in table.state_arrays().items():
            out[f"{slot}/{name}"] = np.array(array, copy=True)
        out[f"{slot}/stats"] = copy.copy(table.stats)
    return out


def _assert_unchanged(tables: EmbeddingCollection, before: dict) -> None:
    after = _state(tables)
    assert after.keys() == before.keys()
    for key, value in before.items():
        if isinstance(value, np.ndarray):
            assert np.array_equal(after[key], value), f"{key} changed"
        else:
            assert after[key] == value, f"{key} changed"


BAD_IDS = {
    "float array": np.array([1.0, 2.0]),
    "float list": [1.5, 2.0],
    "float tensor": torch.tensor([1.0]),
    "uint64 array": np.array([1, 2], dtype=np.uint64),
    "uint64 tensor": torch.tensor([1], dtype=torch.uint64),
    "bool array": np.array([True, False]),
    "bool tensor": torch.tensor([True]),
    "2-D array": np.zeros((2, 2), dtype=np.int64),
    "2-D tensor": torch.zeros((2, 3), dtype=torch.int64),
    "scalar": np.int64(5),
    "too large for int64": [2**64 - 1],
    "strings": ["7"],
}


@pytest.mark.parametrize("ids", list(BAD_IDS.values()), ids=list(BAD_IDS))
def test_bad_ids_raise_invalid_input_naming_the_field_and_change_nothing(ids):
    tables = _collection()
    _warm(tables)
    before = _state(tables)
    table = tables["user"]
    for call in (
        lambda: table.admit(ids, now=20),
        lambda: table.lookup(ids),
        lambda: table.rows_of(ids),
    ):
        with pytest.raises(InvalidInputError) as err:
            call()
        assert err.value.field == "ids"
        assert "ids" in str(err.value)
    with pytest.raises(InvalidInputError) as err:
        tables.serving_replica().lookup("user", ids)
    assert err.value.field == "ids"
    _assert_unchanged(tables, before)


@pytest.mark.parametrize("ids", list(BAD_IDS.values()), ids=list(BAD_IDS))
def test_bad_ids_in_any_slot_of_a_batch_change_no_table(ids):
    tables = _collection()
    module = _warm(tables)
    before = _state(tables)
    features = {"user": torch.tensor([1, 2, 9]), "item": torch.tensor([5, 8]), "genres": ids}
    with pytest.raises(InvalidInputError) as err:
        module(features, now=20)
    assert err.value.field == "genres.ids"
    _assert_unchanged(tables, before)
    module.apply_gradients()  # nothing half-collected from the failed batch
    _assert_unchanged(tables, before)


@pytest.mark.parametrize(
    "offsets",
    [
        torch.tensor([1, 2]),  # does not start at 0
        torch.tensor([0, 3, 2]),  # decreases
        torch.tensor([0, 9]),  # past the end of values
        torch.tensor([0.0, 1.0]),  # not integers
        torch.tensor([[0, 1]]),  # not 1-D
    ],
)
def test_bad_offsets_raise_invalid_input_naming_the_slot_and_change_nothing(offsets):
    tables = _collection()
    module = _warm(tables)
    before = _state(tables)
    with pytest.raises(InvalidInputError) as err:
        module({"user": torch.tensor([1]), "genres": JaggedIds(torch.tensor([1, 2, 3]), offsets)}, now=20)
    assert err.value.field == "genres.offsets"
    _assert_unchanged(tables, before)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("slot", ["user", "item", "genres"])
def test_non_finite_gradients_raise_naming_the_slot_and_change_no_table(bad, slot):
    tables = _collection()
    module = _warm(tables)
    features = {
        "user": torch.tensor([1, 2, 2]),
        "item": torch.tensor([5, 6, 7]),
        "genres": JaggedIds.from_lists([[1], [2, 3], []]),
    }
    out = module(features, now=30)
    before = _state(tables)  # after the forward (which admits and stamps), before the update
    loss = sum(v.sum() for v in out.values()) + out[slot][1, 0] * bad
    loss.backward()
    with pytest.raises(NonFiniteGradientError) as err:
        module.apply_gradients()
    assert err.value.field == f"{slot}.grads"
    assert "NaN or infinity" in str(err.value)
    _assert_unchanged(tables, before)  # the other slots' good gradients were not applied either


def test_bad_gradients_handed_to_a_table_directly_raise_and_change_nothing():
    tables = _collection()
    _warm(tables)
    table = tables["item"]
    before = _state(tables)
    rows = torch.from_numpy(table.rows_of(np.array([5, 6])).astype(np.int64))
    good = torch.ones(2, 3)
    cases = [
        (rows, torch.full((2, 3), float("nan")), "item.grads", NonFiniteGradientError),
        (rows, torch.ones(2, 4), "item.grads", InvalidInputError),
        (rows, torch.ones(3, 3), "item.grads", InvalidInputError),
        (rows, torch.ones(2, 3, dtype=torch.int64), "item.grads", InvalidInputError),
        (rows, good.numpy(), "item.grads", InvalidInputError),
        (rows.to(torch.int32), good, "item.rows", InvalidInputError),
        (rows.reshape(1, 2), good, "item.rows", InvalidInputError),
        (torch.tensor([0, 10_000]), good, "item.rows", InvalidInputError),
        (torch.tensor([-1, 0]), good, "item.rows", InvalidInputError),
    ]
    for r, g, field, error in cases:
        with pytest.raises(error) as err:
            table.apply_gradients(r, g)
        assert err.value.field == field
    _assert_unchanged(tables, before)


BAD_NOW = {
    "string": "10",
    "None": None,
    "NaN": float("nan"),
    "inf": float("inf"),
    "negative": -1,
    "past 2106": 2**32,
    "bool": True,
    "tensor": torch.tensor(5),
}


@pytest.mark.parametrize("now", list(BAD_NOW.values()), ids=list(BAD_NOW))
def test_bad_event_time_raises_invalid_input_naming_now_and_changes_nothing(now):
    tables = _collection()
    module = _warm(tables)
    before = _state(tables)
    calls = [
        lambda: tables["user"].admit(np.array([1, 4]), now=now),
        lambda: tables["user"].evict_expired(now),
        lambda: tables.evict_expired(now),
    ]
    if now is not None:  # the module reads the wall clock when no time is given
        calls.append(lambda: module({"item": torch.tensor([5]), "user": torch.tensor([4])}, now=now))
    for call in calls:
        with pytest.raises(InvalidInputError) as err:
            call()
        assert err.value.field == "now"
    _assert_unchanged(tables, before)


def test_an_unknown_slot_raises_unknown_slot_error_naming_it_and_changes_nothing():
    tables = _collection()
    module = _warm(tables)
    serving = tables.serving_replica()
    before = _state(tables)
    calls = [
        lambda: tables["usr"],
        lambda: module({"user": torch.tensor([1, 4]), "usr": torch.tensor([1])}, now=20),
        lambda: serving.lookup("usr", np.array([1])),
        lambda: EmbeddingModule(serving)({"usr": torch.tensor([1])}),
    ]
    for call in calls:
        with pytest.raises(UnknownSlotError) as err:
            call()
        assert "'usr'" in str(err.value) and "user" in str(err.value)  # names it and lists the known ones
        assert isinstance(err.value, KeyError) and isinstance(err.value, StreamrecError)
    _assert_unchanged(tables, before)
    assert "usr" not in tables


def test_a_non_finite_delta_is_refused_by_a_replica_and_changes_nothing():
    tables = _collection()
    _warm(tables)
    serving = tables.serving_replica()
    ids = np.array([1, 2, 3], dtype=np.int64)
    before = serving.lookup("user", ids)
    vectors = np.ones((1, 4), dtype=np.float32)
    vectors[0, 2] = np.nan
    delta = TableDelta("user", np.array([2], dtype=np.int64), vectors, np.array([1], dtype=np.int64))
    with pytest.raises(InvalidInputError) as err:
        serving["user"].apply(delta)
    assert err.value.field == "delta.vectors"
    assert np.array_equal(serving.lookup("user", ids), before)
