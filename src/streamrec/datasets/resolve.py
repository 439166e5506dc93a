"""Turn what a user types (``ml-100k``, ``criteo-sample``, or a path) into examples and defaults.

Each format comes with the slots it produces and the defaults that suit it (pooling of
multi-valued slots, number of dense features, the time split to evaluate on), so
``streamrec train batch --data PATH`` and ``streamrec eval ... --data PATH`` work on any file in a
supported format without a config file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from streamrec.batch import ExampleBatch
from streamrec.errors import InvalidInputError


@dataclass
class Dataset:
    """Examples in time order, plus what a model needs to know about them."""

    name: str
    kind: str  # movielens | criteo | table
    examples: ExampleBatch
    pooling: dict[str, str] = field(default_factory=dict)
    test: ExampleBatch | None = None  # a separate later split, when the data ships one
    has_time: bool = True  # event times in seconds (windows and sync intervals of time apply)
    ordered: bool | None = None  # rows in event order (None: as has_time; Criteo: row order is time order)
    warnings: list[str] = field(default_factory=list)  # e.g. a column that leaks the label

    def __post_init__(self) -> None:
        if self.ordered is None:
            self.ordered = self.has_time

    @property
    def slots(self) -> list[str]:
        return list(self.examples.sparse)

    @property
    def n_dense(self) -> int:
        return self.examples.n_dense


def load_dataset(
    spec: str | Path, label: str | None = None, time: str | None = None, slots: list[str] | None = None
) -> Dataset:
    """``ml-100k`` / ``criteo-sample`` (shipped) or a path: a MovieLens directory (RecBole ``*.inter``
    or GroupLens ``ratings.csv`` / ``ratings.dat`` / ``u.data``), a Criteo ``.tsv``/``.txt`` file or
    directory, Taobao ``UserBehavior.csv``, or a ``.csv``/``.parquet`` table (``label``/``time``/
    ``slots``: the column convention of ``datasets/formats.py``; see docs/eval.md)."""
    from streamrec.datasets import formats
    from streamrec.datasets.movielens import find_dataset

    path = Path(spec)
    if not path.exists() and (found := find_dataset(str(spec))) is not None:
        path = found
    if not path.exists():
        raise InvalidInputError("--data", str(spec), "no such data set or path (try ml-100k or criteo-sample)")
    if path.is_dir() and any(path.glob("*.inter")):
        from streamrec.datasets.movielens import load_movielens, movielens_examples

        examples = movielens_examples(load_movielens(path))
        return Dataset(path.name, "movielens", examples, {"genre": "mean", "user_genre": "mean"})
    if formats.is_grouplens(path):
        from streamrec.datasets.movielens import movielens_examples

        ml = formats.load_grouplens(path)
        return Dataset(path.name, "movielens", movielens_examples(ml), {"genre": "mean", "user_genre": "mean"})
    if formats.is_taobao(path):
        return formats.load_taobao(path, label)
    if path.suffix in (".csv", ".parquet") and (label is not None or time is not None or slots is not None):
        table = formats.read_any_table(path)
        expr = label or "label >= 0.5"
        if time is None and "time" in table.column_names:
            time = "time"
        return formats.table_dataset(table, path.stem, expr, time, slots, path.name)
    if path.is_dir() and (path / "train.tsv").exists():
        from streamrec.datasets.criteo import load_criteo

        train = load_criteo(path / "train.tsv")
        held_out = [path / name for name in ("dev.tsv", "test.tsv") if (path / name).exists()]
        test = ExampleBatch.concat([load_criteo(p) for p in held_out]) if held_out else None
        return Dataset(path.name, "criteo", train, test=test, has_time=False, ordered=True)
    if path.suffix in (".tsv", ".txt") or path.is_dir():
        from streamrec.datasets.criteo import load_criteo

        return Dataset(path.name, "criteo", load_criteo(path), has_time=False, ordered=True)
    if path.suffix in (".csv", ".parquet"):
        from streamrec.datasets.tabular import load_table_examples, read_table

        # Without a time column the rows have no event time: experiments that replay time refuse it.
        has_time = "time" in read_table(path).column_names
        return Dataset(path.stem, "table", load_table_examples(path), has_time=has_time)
    raise InvalidInputError("--data", str(spec), "unknown format: expected MovieLens dir, Criteo TSV, CSV or Parquet")
