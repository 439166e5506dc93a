"""Data as users have it: MovieLens as GroupLens ships it, Taobao UserBehavior, any CSV/Parquet.

Formats read here (each into the same :class:`~streamrec.datasets.resolve.Dataset` the RecBole
MovieLens and Criteo readers give, so every ``train``/``eval`` command takes them):

* **MovieLens, GroupLens layout**: a directory with ``ratings.csv`` (header
  ``userId,movieId,rating,timestamp``; ML-20M/25M/latest) and optional ``movies.csv``
  (``movieId,title,genres`` with ``|``-separated genres); ML-1M/10M ``ratings.dat`` (``::``
  separated ``UserID::MovieID::Rating::Timestamp``) with optional ``movies.dat`` and ``users.dat``;
  ML-100K ``u.data`` (tab separated, no header) with optional ``u.item`` (``|``-separated, 19 genre
  flags) and ``u.user``. Label ``rating >= 4`` unless ``--label`` says otherwise.
* **Taobao UserBehavior** (``UserBehavior.csv``, no header): ``user,item,category,behavior,timestamp``
  with behavior in ``pv, buy, cart, fav``. Slots ``user``, ``item``, ``category``; label
  ``behavior in (buy,cart,fav)`` unless ``--label`` says otherwise.
* **Any CSV or Parquet** with ``--label EXPR`` (``rating>=4``, ``behavior in (buy,cart,fav)``,
  ``clicked == 1``), ``--time COLUMN`` and ``--slots a,b,c``. Without ``--label`` the table
  convention of ``tabular.py`` applies (a ``label`` column).

A table with no time column has no event order: ``Dataset.has_time`` is False and the experiments
that replay time (``eval online``, ``eval recommend``) refuse it, naming ``--time``. A numeric
column that determines the label (the column the label is computed from, or one whose every value
maps to one label while it has few distinct values) is a leak: it is left out of the slots unless
``--slots`` names it, and it is reported in ``Dataset.warnings`` either way.

Conversion is per column (pyarrow compute), never per row.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from streamrec.errors import InvalidInputError

DOCS = "docs/eval.md#data-as-users-have-it"
TAOBAO_COLUMNS = ["user", "item", "category", "behavior", "timestamp"]

_EXPR = re.compile(
    r"^\s*(?P<col>[A-Za-z_][\w.]*)\s*(?:(?P<op>>=|<=|==|!=|>|<|=)\s*(?P<val>[^()<>=!\s][^()]*?)"
    r"|(?P<neg>not\s+)?in\s*\((?P<set>[^)]*)\))\s*$"
)


def parse_label(expr: str) -> tuple[str, str, list[str]]:
    """``(column, op, values)`` of a label expression; ``op`` one of ``>= <= == != > < in notin``."""
    m = _EXPR.match(expr or "")
    if m is None:
        raise InvalidInputError(
            "--label",
            expr,
            f"expected 'COLUMN OP VALUE' (OP one of >= > <= < == !=) or 'COLUMN in (a,b,c)'; see {DOCS}",
        )
    if m["set"] is not None:
        values = [v.strip().strip("'\"") for v in m["set"].split(",") if v.strip()]
        if not values:
            raise InvalidInputError("--label", expr, "an 'in' list needs at least one value")
        return m["col"], "notin" if m["neg"] else "in", values
    op = "==" if m["op"] == "=" else m["op"]
    return m["col"], op, [m["val"].strip().strip("'\"")]


def eval_label(table: pa.Table, expr: str) -> np.ndarray:
    """float32 labels (1/0) of every row of ``table`` under ``expr`` (vectorised, null → 0)."""
    column, op, values = parse_label(expr)
    if column not in table.column_names:
        raise InvalidInputError("--label", expr, f"no column {column!r}; the table has {table.column_names}")
    col = table[column]
    numeric = pa.types.is_integer(col.type) or pa.types.is_floating(col.type)
    if numeric:
        try:
            typed = [float(v) for v in values]
        except ValueError:
            raise InvalidInputError("--label", expr, f"column {column!r} is numeric; compare it with numbers") from None
        col = pc.cast(col, pa.float64())
        scalars = typed
    else:
        col = pc.cast(col, pa.string())
        scalars = values
    if op in ("in", "notin"):
        mask = pc.is_in(col, value_set=pa.array(scalars, type=col.type))
        if op == "notin":
            mask = pc.and_(pc.invert(mask), pc.is_valid(col))  # a missing value is in no set
    else:
        if not numeric and op not in ("==", "!="):
            raise InvalidInputError("--label", expr, f"column {column!r} holds text; only == != in apply")
        fn = {">=": pc.greater_equal, ">": pc.greater, "<=": pc.less_equal, "<": pc.less, "==": pc.equal,
              "!=": pc.not_equal}[op]  # fmt: skip
        mask = fn(col, pa.scalar(scalars[0], type=col.type))
    return np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=np.float32)


def leaky_columns(table: pa.Table, labels: np.ndarray, candidates: list[str]) -> list[str]:
    """Numeric columns among ``candidates`` that determine the label: every value maps to one label,
    with few distinct values (at most rows // 20, so an id column of a few rows each is not
    flagged). Vectorised: ``np.unique`` of (value, label) pairs against ``np.unique`` of values."""
    out = []
    n = table.num_rows
    for name in candidates:
        col = table[name]
        if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)) or n == 0:
            continue
        values = np.asarray(pc.fill_null(pc.cast(col, pa.float64()), np.nan).to_numpy(zero_copy_only=False))
        distinct = np.unique(values)
        if len(distinct) > n // 20 or len(np.unique(labels)) < 2:
            continue
        pairs = np.unique(np.stack([values, labels.astype(np.float64)], axis=1), axis=0)
        if len(pairs) == len(distinct):
            out.append(name)
    return out


def read_any_table(path: Path, header: list[str] | None = None, delimiter: str = ",") -> pa.Table:
    """A CSV (``header`` given: the file has none) or Parquet file as a pyarrow table."""
    if not path.is_file():
        raise InvalidInputError("--data", str(path), "no such file")
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path)
        read = pacsv.ReadOptions(column_names=header) if header else pacsv.ReadOptions()
        parse = pacsv.ParseOptions(delimiter=delimiter)
        return pacsv.read_csv(path, read_options=read, parse_options=parse)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InvalidInputError("--data", str(path), f"not a readable {path.suffix or 'CSV'} table: {exc}") from None


def _need(table: pa.Table, columns: list[str], where: str) -> None:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise InvalidInputError(
            f"{where}.columns", table.column_names, f"missing {missing}; the convention is {columns} (see {DOCS})"
        )


def _ints(table: pa.Table, name: str, where: str) -> np.ndarray:
    try:
        return np.asarray(pc.cast(table[name], pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InvalidInputError(
            f"{where}:{name}", str(table[name].type), f"must be integers ({exc}); see {DOCS}"
        ) from None


# -- MovieLens as GroupLens ships it ---------------------------------------------------------------


def _read_dat(path: Path, names: list[str]) -> pa.Table:
    """A ``::``-separated ML-1M/10M file: ``::`` is one byte wide for pyarrow after replacing it."""
    raw = path.read_bytes().replace(b"::", b"\x1f")
    try:
        import io

        return pacsv.read_csv(
            io.BytesIO(raw),
            read_options=pacsv.ReadOptions(column_names=names, encoding="latin-1"),
            parse_options=pacsv.ParseOptions(delimiter="\x1f", quote_char=False),
        )
    except pa.ArrowInvalid as exc:
        raise InvalidInputError(str(path), names, f"not a '::'-separated {path.name}: {exc}; see {DOCS}") from None


def is_grouplens(path: Path) -> bool:
    return path.is_dir() and any((path / f).is_file() for f in ("ratings.csv", "ratings.dat", "u.data"))


def load_grouplens(path: Path):
    """A :class:`~streamrec.datasets.movielens.MovieLens` from a GroupLens directory (see module doc)."""
    from streamrec.datasets.movielens import MovieLens

    titles: dict[int, str] = {}
    genres: dict[int, list[str]] = {}
    users: dict[int, dict[str, str]] = {}
    rating_cols = ["userId", "movieId", "rating", "timestamp"]
    if (path / "ratings.csv").is_file():
        where = "ratings.csv"
        table = read_any_table(path / where)
        _need(table, rating_cols, where)
        if (path / "movies.csv").is_file():
            movies = read_any_table(path / "movies.csv")
            _need(movies, ["movieId", "title", "genres"], "movies.csv")
            _movies(movies, "movieId", titles, genres)
    elif (path / "ratings.dat").is_file():
        where = "ratings.dat"
        table = _read_dat(path / where, rating_cols)
        if (path / "movies.dat").is_file():
            _movies(_read_dat(path / "movies.dat", ["movieId", "title", "genres"]), "movieId", titles, genres)
        if (path / "users.dat").is_file():
            u = _read_dat(path / "users.dat", ["userId", "gender", "age", "occupation", "zip_code"])
            _users(u, users)
    else:
        where = "u.data"
        table = read_any_table(path / where, header=rating_cols, delimiter="\t")
        if (path / "u.item").is_file():
            _u_item(path / "u.item", titles, genres)
        if (path / "u.user").is_file():
            u = read_any_table(path / "u.user", ["userId", "age", "gender", "occupation", "zip_code"], "|")
            _users(u, users)
    timestamp = _ints(table, "timestamp", where)
    order = np.argsort(timestamp, kind="stable")
    try:
        rating = np.asarray(pc.cast(table["rating"], pa.float32()).to_numpy(zero_copy_only=False))
    except pa.ArrowInvalid as exc:
        raise InvalidInputError(f"{where}:rating", str(table["rating"].type), f"must be numbers: {exc}") from None
    return MovieLens(
        user=_ints(table, "userId", where)[order],
        item=_ints(table, "movieId", where)[order],
        rating=rating[order],
        timestamp=timestamp[order],
        titles=titles,
        genres=genres,
        users=users,
    )


def _movies(table: pa.Table, key: str, titles: dict, genres: dict) -> None:
    for i, title, g in zip(
        table[key].to_pylist(), table["title"].to_pylist(), table["genres"].to_pylist(), strict=True
    ):
        titles[int(i)] = str(title)
        genres[int(i)] = [x for x in str(g or "").split("|") if x and x != "(no genres listed)"]


_U_ITEM_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
]  # fmt: skip


def _u_item(path: Path, titles: dict, genres: dict) -> None:
    names = ["movieId", "title", "release", "video", "url", *_U_ITEM_GENRES]
    table = pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(column_names=names, encoding="latin-1"),
        parse_options=pacsv.ParseOptions(delimiter="|", quote_char=False),
    )
    flags = np.column_stack([np.asarray(table[g].to_numpy(zero_copy_only=False)) for g in _U_ITEM_GENRES])
    for row, (i, title) in enumerate(zip(table["movieId"].to_pylist(), table["title"].to_pylist(), strict=True)):
        titles[int(i)] = str(title)
        genres[int(i)] = [g for g, f in zip(_U_ITEM_GENRES, flags[row], strict=True) if f and g != "unknown"]


def _users(table: pa.Table, users: dict) -> None:
    fields = [c for c in table.column_names if c != "userId"]
    cols = [table[c].to_pylist() for c in ["userId", *fields]]
    for row in zip(*cols, strict=True):
        users[int(row[0])] = {k: str(v) for k, v in zip(fields, row[1:], strict=True)}


# -- Taobao UserBehavior and any table -------------------------------------------------------------


def is_taobao(path: Path) -> bool:
    """A headerless 5-column CSV whose 4th field is a behavior (pv/buy/cart/fav)."""
    if path.suffix != ".csv" or not path.is_file():
        return False
    with path.open("rb") as f:
        first = f.readline().decode("utf-8", "replace").strip().split(",")
    return len(first) == 5 and first[3] in ("pv", "buy", "cart", "fav") and first[0].isdigit()


def load_taobao(path: Path, label: str | None = None):
    """Taobao UserBehavior as a Dataset: slots user, item, category; label ``behavior in (buy,cart,fav)``."""
    table = read_any_table(path, header=TAOBAO_COLUMNS)
    return table_dataset(
        table, path.stem, label or "behavior in (buy,cart,fav)", "timestamp", ["user", "item", "category"], path.name
    )


def table_dataset(
    table: pa.Table,
    name: str,
    label: str,
    time: str | None,
    slots: list[str] | None,
    where: str,
):
    """A Dataset from any table: label from ``label`` (an expression), ``time`` column, ``slots``."""
    import torch

    from streamrec.batch import ExampleBatch
    from streamrec.datasets.resolve import Dataset
    from streamrec.datasets.tabular import _ids

    labels = eval_label(table, label)
    label_column = parse_label(label)[0]
    names = table.column_names
    if time is not None and time not in names:
        raise InvalidInputError("--time", time, f"no such column in {where}; it has {names} (see {DOCS})")
    chosen_explicitly = slots is not None
    if slots is not None:
        unknown = [s for s in slots if s not in names]
        if unknown:
            raise InvalidInputError("--slots", unknown, f"not columns of {where}; it has {names} (see {DOCS})")
    else:
        slots = [c for c in names if c not in (label_column, time)]
    leaks = sorted(set(leaky_columns(table, labels, [c for c in names if c != time])) | {label_column})
    warnings = []
    for leak in leaks:
        if leak in slots:
            if chosen_explicitly:
                warnings.append(f"column {leak!r} determines the label ({label}); kept because --slots names it")
            else:
                slots.remove(leak)
                warnings.append(f"column {leak!r} determines the label ({label}); left out of the slots")
        elif leak == label_column:
            warnings.append(f"column {leak!r} is what the label is computed from ({label}); not a slot")
        else:
            warnings.append(f"column {leak!r} determines the label ({label}); not a slot")
    if not slots:
        raise InvalidInputError("--slots", slots, f"no feature column left in {where} (see {DOCS})")
    n = table.num_rows
    if time is not None:
        try:
            times = np.asarray(pc.cast(table[time], pa.float64()).to_numpy(zero_copy_only=False))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            times = None
        if times is None or np.isnan(times).any():
            raise InvalidInputError(f"--time {time}", str(table[time].type), f"must be numbers (unix seconds); {DOCS}")
    else:
        times = np.zeros(n)
    sparse = {s: _ids(table[s], s) for s in slots}
    batch = ExampleBatch(
        sparse,
        torch.zeros((n, 0)),
        torch.from_numpy(labels),
        torch.ones(n),
        torch.from_numpy(times.astype(np.float64)),
    )
    if time is not None:
        order = np.argsort(times, kind="stable")
        if not np.all(order[1:] > order[:-1]):
            batch = batch.take(torch.from_numpy(order))
    return Dataset(name, "table", batch, has_time=time is not None, warnings=warnings)
