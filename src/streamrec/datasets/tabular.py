"""Examples from CSV or Parquet files in one documented column convention.

A table of examples has:

* ``label`` (required): 1/0 (or a probability);
* ``time`` (optional): event time, unix seconds; rows are sorted by it (stable);
* ``sample_rate`` (optional): probability the row was kept by negative sampling (default 1);
* ``dense_*`` columns: float features, in column order;
* every other column is a sparse slot named after the column: integers are ids as they are,
  strings are hashed to stable int64 ids (BLAKE2b of ``"column=value"``), lists (Parquet) or
  ``|``-separated strings (CSV) give several ids per example, empty or null gives none.

Reading is columnar (pyarrow); conversion is per column, not per row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import torch

from streamrec.batch import ExampleBatch
from streamrec.datasets.movielens import feature_id
from streamrec.embedding import JaggedIds
from streamrec.errors import InvalidInputError

RESERVED = ("label", "time", "sample_rate")


def read_table(path: str | Path) -> pa.Table:
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError("path", str(path), "no such file")
    try:
        if path.suffix == ".parquet":
            return pq.read_table(path)
        return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(strings_can_be_null=True))
    except (pa.ArrowInvalid, OSError) as exc:
        raise InvalidInputError("path", str(path), f"not a readable {path.suffix or 'CSV'} table: {exc}") from None


def _ids(column: pa.ChunkedArray, name: str) -> JaggedIds:
    column = column.combine_chunks()
    t = column.type
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False)
        flat = pc.list_flatten(column)
    elif pa.types.is_string(t) or pa.types.is_large_string(t):
        lists = [[v for v in (text or "").split("|") if v] for text in column.to_pylist()]
        lengths = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
        flat = pa.array([v for x in lists for v in x], type=pa.string())
    else:
        valid = column.is_valid().to_numpy(zero_copy_only=False)
        lengths = valid.astype(np.int64)
        flat = column.filter(pa.array(valid))
    lengths = np.asarray(lengths, dtype=np.int64)
    ft = flat.type
    if pa.types.is_integer(ft):
        values = np.array(flat.to_numpy(zero_copy_only=False), dtype=np.int64)
    elif pa.types.is_string(ft) or pa.types.is_large_string(ft):
        values = np.array([feature_id(f"{name}={v}") for v in flat.to_pylist()], dtype=np.int64)
    else:
        raise InvalidInputError(f"{name}", str(ft), "sparse columns hold integers or strings (or lists of them)")
    offsets = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=offsets[1:])
    return JaggedIds(torch.from_numpy(values), torch.from_numpy(offsets))


def load_table_examples(path: str | Path) -> ExampleBatch:
    """Read a CSV or Parquet file of examples (see the module docstring for the columns)."""
    table = read_table(path)
    names = table.column_names
    if "label" not in names:
        raise InvalidInputError("columns", names, "a table of examples needs a 'label' column")
    n = table.num_rows

    def floats(name: str) -> np.ndarray:
        try:
            return np.array(pc.cast(pc.fill_null(table[name], 0), pa.float64()).to_numpy(zero_copy_only=False))
        except pa.ArrowInvalid as exc:
            raise InvalidInputError(name, str(table[name].type), f"must be numeric: {exc}") from None

    labels = floats("label")
    time = floats("time") if "time" in names else np.arange(n, dtype=np.float64)
    rate = floats("sample_rate") if "sample_rate" in names else np.ones(n)
    dense_cols = [c for c in names if c.startswith("dense_")]
    dense = np.column_stack([floats(c) for c in dense_cols]) if dense_cols else np.zeros((n, 0))
    sparse = {c: _ids(table[c], c) for c in names if c not in RESERVED and not c.startswith("dense_")}
    batch = ExampleBatch(
        sparse,
        torch.from_numpy(dense.astype(np.float32)),
        torch.from_numpy(labels.astype(np.float32)),
        torch.from_numpy(rate.astype(np.float32)),
        torch.from_numpy(time),
    )
    order = np.argsort(time, kind="stable")
    return batch if np.all(order == np.arange(n)) else batch.take(torch.from_numpy(order))
