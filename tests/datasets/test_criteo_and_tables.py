import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streamrec.datasets import find_dataset
from streamrec.datasets.criteo import DENSE, SLOTS, load_criteo
from streamrec.datasets.resolve import load_dataset
from streamrec.datasets.tabular import load_table_examples
from streamrec.errors import InvalidInputError

CRITEO = find_dataset("criteo-sample")


def plain_parse(line: str):
    fields = line.rstrip("\n").split("\t")
    label = float(fields[0])
    dense = [math.log1p(max(float(x), 0.0)) if x else 0.0 for x in fields[1:14]]
    cats = [int(x, 16) if x else None for x in fields[14:40]]
    return label, dense, cats


@pytest.mark.skipif(CRITEO is None, reason="criteo-sample not present")
def test_criteo_rows_match_a_plain_python_parse():
    path = CRITEO / "dev.tsv"
    batch = load_criteo(path)
    lines = path.read_text().splitlines(keepends=True)
    assert len(batch) == len(lines)
    for row in (0, 1, 17, len(lines) - 1):
        label, dense, cats = plain_parse(lines[row])
        assert batch.labels[row].item() == label
        assert np.allclose(batch.dense[row].numpy(), dense, atol=1e-5)
        for slot, expected in zip(SLOTS, cats, strict=True):
            ids = batch[row : row + 1].sparse[slot].values.tolist()
            assert ids == ([] if expected is None else [np.int64(np.uint64(expected).view(np.int64))])
    assert len(DENSE) == 13 and len(SLOTS) == 26


@pytest.mark.skipif(CRITEO is None, reason="criteo-sample not present")
def test_the_shipped_sample_resolves_to_train_and_later_held_out_rows():
    ds = load_dataset("criteo-sample")
    assert (len(ds.examples), len(ds.test)) == (7200, 800)
    assert ds.n_dense == 13 and not ds.has_time


def test_a_file_in_another_format_is_refused_naming_the_path(tmp_path):
    bad = tmp_path / "x.tsv"
    bad.write_text("1\tnot-a-number\n")
    with pytest.raises(InvalidInputError, match="path"):
        load_criteo(bad)


def test_csv_examples_follow_the_column_convention_and_sort_by_time(tmp_path):
    path = tmp_path / "examples.csv"
    path.write_text("label,time,user,genres,dense_age\n1,5,7,a|b,0.5\n0,3,8,,0.1\n1,4,,c,\n")
    batch = load_table_examples(path)
    assert batch.time.tolist() == [3.0, 4.0, 5.0]
    assert batch.labels.tolist() == [0.0, 1.0, 1.0]
    assert batch.sparse["user"].values.tolist() == [8, 7] and batch.sparse["user"].lengths().tolist() == [1, 0, 1]
    assert batch.sparse["genres"].lengths().tolist() == [0, 1, 2]
    assert batch.dense[:, 0].tolist() == pytest.approx([0.1, 0.0, 0.5])


def test_parquet_lists_give_several_ids_and_strings_are_hashed_stably(tmp_path):
    path = tmp_path / "examples.parquet"
    pq.write_table(pa.table({"label": [1, 0], "tags": [[1, 2], []], "item": ["x", "x"]}), path)
    batch = load_table_examples(path)
    assert batch.sparse["tags"].values.tolist() == [1, 2]
    item = batch.sparse["item"].values.tolist()
    assert item[0] == item[1]


def test_a_table_without_labels_is_refused(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("user\n1\n")
    with pytest.raises(InvalidInputError, match="label"):
        load_table_examples(path)
