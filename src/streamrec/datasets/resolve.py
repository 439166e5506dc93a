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
    has_time: bool = True

    @property
    def slots(self) -> list[str]:
        return list(self.examples.sparse)

    @property
    def n_dense(self) -> int:
        return self.examples.n_dense


def load_dataset(spec: str | Path) -> Dataset:
    """``ml-100k`` / ``criteo-sample`` (shipped) or a path: a MovieLens directory (``*.inter``),
    a Criteo ``.tsv``/``.txt`` file or directory, or a ``.csv``/``.parquet`` table of examples."""
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
    if path.is_dir() and (path / "train.tsv").exists():
        from streamrec.datasets.criteo import load_criteo

        train = load_criteo(path / "train.tsv")
        held_out = [path / name for name in ("dev.tsv", "test.tsv") if (path / name).exists()]
        test = ExampleBatch.concat([load_criteo(p) for p in held_out]) if held_out else None
        return Dataset(path.name, "criteo", train, test=test, has_time=False)
    if path.suffix in (".tsv", ".txt") or path.is_dir():
        from streamrec.datasets.criteo import load_criteo

        return Dataset(path.name, "criteo", load_criteo(path), has_time=False)
    if path.suffix in (".csv", ".parquet"):
        from streamrec.datasets.tabular import load_table_examples

        return Dataset(path.stem, "table", load_table_examples(path))
    raise InvalidInputError("--data", str(spec), "unknown format: expected MovieLens dir, Criteo TSV, CSV or Parquet")
