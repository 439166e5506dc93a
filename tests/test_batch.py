import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from streamrec.batch import ExampleBatch
from streamrec.errors import InvalidInputError
from streamrec.records import Example

ids = st.lists(st.integers(-(2**63), 2**63 - 1), max_size=4)
examples = st.lists(
    st.builds(
        lambda a, b, d, y, t: Example(sparse={"a": a, "b": b}, dense=[d], label=y, time=t),
        ids,
        ids,
        st.floats(-5, 5),
        st.sampled_from([0.0, 1.0]),
        st.floats(0, 1e9),
    ),
    min_size=1,
    max_size=30,
)


def bags(batch: ExampleBatch, slot: str) -> list[list[int]]:
    j = batch.sparse[slot]
    lengths = j.lengths().tolist()
    values = j.values.tolist()
    out, pos = [], 0
    for n in lengths:
        out.append(values[pos : pos + n])
        pos += n
    return out


@settings(max_examples=60, deadline=None)
@given(examples, st.data())
def test_from_examples_slices_take_and_concat_keep_every_examples_ids(records, data):
    batch = ExampleBatch.from_examples(records, ["a", "b"], n_dense=1)
    assert bags(batch, "a") == [r.sparse["a"] for r in records]
    assert batch.labels.tolist() == [r.label for r in records]
    lo = data.draw(st.integers(0, len(records)))
    hi = data.draw(st.integers(lo, len(records)))
    assert bags(batch[lo:hi], "b") == [r.sparse["b"] for r in records[lo:hi]]
    index = data.draw(st.lists(st.integers(0, len(records) - 1), max_size=10))
    taken = batch.take(torch.tensor(index, dtype=torch.int64))
    assert bags(taken, "a") == [records[i].sparse["a"] for i in index]
    joined = ExampleBatch.concat([batch[:lo], batch[lo:]])
    assert bags(joined, "a") == bags(batch, "a") and torch.equal(joined.dense, batch.dense)


def test_missing_slots_become_empty_bags_and_bad_dense_length_names_the_record():
    records = [Example(sparse={"a": [1]}, label=1.0, time=0.0), Example(sparse={}, label=0.0, time=1.0)]
    batch = ExampleBatch.from_examples(records, ["a"], n_dense=0)
    assert bags(batch, "a") == [[1], []]
    with pytest.raises(InvalidInputError, match=r"examples\[1\]\.dense"):
        ExampleBatch.from_examples([records[0], Example(sparse={}, dense=[1.0], label=0, time=0)], ["a"], 0)


def test_mismatched_lengths_are_refused():
    from streamrec.embedding import JaggedIds

    with pytest.raises(InvalidInputError, match=r"sparse\.a"):
        ExampleBatch({"a": JaggedIds.from_lists([[1]])}, torch.zeros((2, 0)), torch.zeros(2))
    with pytest.raises(InvalidInputError, match="dense"):
        ExampleBatch({}, torch.zeros((3, 1)), torch.zeros(2))
    assert np.all(ExampleBatch({}, torch.zeros((2, 0)), torch.zeros(2)).sample_rate.numpy() == 1)
