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


MOVIELENS_SLOTS = ["user", "item", "genre", "user_genre", "occupation", "age", "gender"]


def feature_id(text: str) -> int:
    """A stable int64 id of a categorical value (production features are hashes, not vocabularies)."""
    import hashlib

    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little", signed=True)


def movielens_examples(ml: MovieLens):
    """The ratings as an :class:`~streamrec.training.ExampleBatch` in time order.

    Label: rating >= 4. Slots: ``user``, ``item``, ``genre`` (the item's genres, pooled),
    ``user_genre`` (user × each genre of the item, pooled: the cross the issue asks for),
    ``occupation``, ``age`` (decade) and ``gender``. No dense features.
    """
    import torch

    from streamrec.batch import ExampleBatch
    from streamrec.embedding import JaggedIds

    genre_ids = {i: np.array([feature_id(f"genre={g}") for g in gs], dtype=np.int64) for i, gs in ml.genres.items()}
    empty = np.empty(0, dtype=np.int64)
    item_genres = [genre_ids.get(int(i), empty) for i in ml.item]
    lengths = np.fromiter((len(g) for g in item_genres), dtype=np.int64, count=len(ml))
    offsets = np.zeros(len(ml), dtype=np.int64)
    np.cumsum(lengths[:-1], out=offsets[1:])
    genres = np.concatenate(item_genres) if len(ml) else empty
    users_rep = np.repeat(ml.user, lengths)
    crosses = _cross(users_rep, genres)

    users, user_index = np.unique(ml.user, return_inverse=True)

    def attribute(name: str, transform=lambda v: v) -> np.ndarray:
        per_user = [feature_id(f"{name}={transform(ml.users.get(int(u), {}).get(name, ''))}") for u in users]
        return np.array(per_user, dtype=np.int64)[user_index]

    def single(values: np.ndarray) -> JaggedIds:
        return JaggedIds(torch.from_numpy(np.ascontiguousarray(values, dtype=np.int64)), torch.arange(len(values)))

    sparse = {
        "user": single(ml.user),
        "item": single(ml.item),
        "genre": JaggedIds(torch.from_numpy(genres), torch.from_numpy(offsets)),
        "user_genre": JaggedIds(torch.from_numpy(crosses), torch.from_numpy(offsets.copy())),
        "occupation": single(attribute("occupation")),
        "age": single(attribute("age", lambda a: int(a or 0) // 10)),
        "gender": single(attribute("gender")),
    }
    n = len(ml)
    return ExampleBatch(
        sparse,
        torch.zeros((n, 0)),
        torch.from_numpy((ml.rating >= 4).astype(np.float32)),
        torch.ones(n),
        torch.from_numpy(ml.timestamp.astype(np.float64)),
    )


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Ids of the crossed feature (a, b): a 64-bit mix of both, vectorized."""
    x = (a.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ b.astype(np.uint64)
    x ^= x >> np.uint64(33)
    x *= np.uint64(0xFF51AFD7ED558CCD)
    x ^= x >> np.uint64(33)
    return x.view(np.int64)
