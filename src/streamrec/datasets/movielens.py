"""MovieLens in the RecBole atomic-file layout (``*.inter``, ``*.item``, ``*.user``).

``load_movielens(dir)`` reads the ratings (sorted by time, as a stream would deliver them), the
items (title, year, genres) and the users (age, gender, occupation) into NumPy arrays with
pyarrow's CSV reader. Any directory holding files in that layout works, e.g. the full ML-1M
converted by RecBole; the 100K set ships in ``../shared/datasets/ml-100k``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv

from streamrec.errors import InvalidInputError


@dataclass(frozen=True)
class MovieLens:
    """Ratings sorted by timestamp, plus item and user attributes keyed by their raw ids."""

    user: np.ndarray  # int64 [n]
    item: np.ndarray  # int64 [n]
    rating: np.ndarray  # float32 [n]
    timestamp: np.ndarray  # int64 [n], unix seconds, non-decreasing
    titles: dict[int, str]
    genres: dict[int, list[str]]
    users: dict[int, dict[str, str]]

    def __len__(self) -> int:
        return len(self.user)


def find_dataset(name: str) -> Path | None:
    """Where the shipped data set ``name`` lives: ``$STREAMREC_DATA/name``, ``./shared/datasets/name``,
    ``../shared/datasets/name`` (relative to the working directory or to the source checkout)."""
    candidates = []
    if env := os.environ.get("STREAMREC_DATA"):
        candidates.append(Path(env) / name)
    here = Path(__file__).resolve()
    for base in (Path.cwd(), Path.cwd().parent, here.parents[3], here.parents[4]):
        candidates.append(base / "shared" / "datasets" / name)
    return next((c for c in candidates if c.is_dir()), None)


def _read_tsv(path: Path) -> dict[str, list]:
    options = pacsv.ParseOptions(delimiter="\t", quote_char=False)
    convert = pacsv.ConvertOptions(strings_can_be_null=False)
    table = pacsv.read_csv(path, parse_options=options, convert_options=convert)
    return {name.split(":")[0]: column for name, column in zip(table.column_names, table.columns, strict=True)}


def load_movielens(path: str | Path) -> MovieLens:
    """Read a MovieLens directory in RecBole's atomic layout (``<name>.inter`` required)."""
    path = Path(path)
    inter = next(iter(sorted(path.glob("*.inter"))), None) if path.is_dir() else None
    if inter is None:
        raise InvalidInputError("path", str(path), "expected a directory holding a MovieLens *.inter file")
    cols = _read_tsv(inter)
    for needed in ("user_id", "item_id", "rating", "timestamp"):
        if needed not in cols:
            raise InvalidInputError(f"{inter.name}.columns", list(cols), f"missing column {needed!r}")
    timestamp = np.asarray(cols["timestamp"].to_numpy(), dtype=np.int64)
    order = np.argsort(timestamp, kind="stable")
    titles: dict[int, str] = {}
    genres: dict[int, list[str]] = {}
    if (item_file := inter.with_suffix(".item")).exists():
        items = _read_tsv(item_file)
        for i, title, classes in zip(
            items["item_id"].to_pylist(), items["movie_title"].to_pylist(), items["class"].to_pylist(), strict=True
        ):
            titles[int(i)] = str(title)
            genres[int(i)] = str(classes).split() if classes else []
    users: dict[int, dict[str, str]] = {}
    if (user_file := inter.with_suffix(".user")).exists():
        table = _read_tsv(user_file)
        fields = [k for k in table if k != "user_id"]
        rows = zip(*(table[k].to_pylist() for k in ["user_id", *fields]), strict=True)
        users = {int(r[0]): {k: str(v) for k, v in zip(fields, r[1:], strict=True)} for r in rows}
    return MovieLens(
        user=np.asarray(cols["user_id"].to_numpy(), dtype=np.int64)[order],
        item=np.asarray(cols["item_id"].to_numpy(), dtype=np.int64)[order],
        rating=np.asarray(cols["rating"].to_numpy(), dtype=np.float32)[order],
        timestamp=timestamp[order],
        titles=titles,
        genres=genres,
        users=users,
    )
