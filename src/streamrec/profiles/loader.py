"""The batch writer (IPS application layer): historical actions from Parquet or CSV.

Files are read with pyarrow in record batches, so a file larger than memory streams through.
Columns map to :class:`~streamrec.records.ActionEvent` fields: ``user``, ``item``, ``action`` and
``time`` (names configurable, e.g. MovieLens' ``userId``, ``movieId``, ``timestamp``; a missing
``action`` column takes a constant action), every numeric column named like a declared counter
becomes a counter, and every other column an attribute (as text). Rows go through
``ProfileStore.write`` like streamed events: the same validation, the same WAL. A row that is
bad is counted and reported, the rest of its batch loads.

Loading history needs a clock at the data's time: open the store with ``clock = "event"``
(``--event-clock``), or events older than retention at wall time are dropped as too old.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from streamrec.errors import InvalidInputError
from streamrec.profiles.store import ProfileStore

__all__ = ["LoadStats", "load_file"]


class LoadStats(msgspec.Struct):
    """What a load did."""

    rows: int = 0
    accepted: int = 0
    rejected: int = 0
    too_old: int = 0
    seconds: float = 0.0
    first_errors: list[str] = []

    @property
    def events_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def total_rows(path: Path) -> int | None:
    """Rows in a Parquet file (from its footer); ``None`` for CSV."""
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    return None


def _batches(path: Path, batch: int) -> Iterator[Any]:
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        yield from pq.ParquetFile(path).iter_batches(batch_size=batch)
    elif suffix in (".csv", ".tsv", ".txt") or path.name.endswith((".csv.gz", ".csv.zst")):
        import pyarrow.csv as pcsv

        parse = pcsv.ParseOptions(delimiter="\t" if suffix == ".tsv" else ",")
        reader = pcsv.open_csv(path, read_options=pcsv.ReadOptions(block_size=1 << 20), parse_options=parse)
        yield from reader
    else:
        raise InvalidInputError("path", str(path), "expected a .parquet or .csv file")


def load_file(
    store: ProfileStore,
    path: str | Path,
    *,
    user: str = "user",
    item: str = "item",
    time_col: str = "time",
    action_col: str = "action",
    action: str | None = None,
    batch: int = 10_000,
    on_batch: Callable[[LoadStats], None] | None = None,
) -> LoadStats:
    """Load every row of ``path`` into ``store`` (see the module docstring for the column rule)."""
    path = Path(path)
    if not path.exists():
        raise InvalidInputError("path", str(path), "no such file")
    counters = {c for s in store.specs for c in s.counters}
    stats = LoadStats()
    start = time.monotonic()
    for rb in _batches(path, batch):
        names = rb.schema.names
        for need in (user, item, time_col):
            if need not in names:
                raise InvalidInputError("columns", names, f"missing column {need!r}")
        if action is None and action_col not in names:
            raise InvalidInputError("columns", names, f"missing column {action_col!r} (or pass a constant action)")
        cols = {n: rb.column(i).to_pylist() for i, n in enumerate(names)}
        types = {n: rb.schema.field(n).type for n in names}
        fixed = {user, item, time_col, action_col}
        counter_cols = [n for n in names if n in counters and n not in fixed and _numeric(types[n])]
        attr_cols = [n for n in names if n not in fixed and n not in counter_cols]
        n = rb.num_rows
        events = []
        for r in range(n):
            c = {k: float(cols[k][r]) for k in counter_cols if cols[k][r] is not None}
            a = {k: str(cols[k][r]) for k in attr_cols if cols[k][r] is not None}
            t = cols[time_col][r]
            events.append(
                {
                    "user": _text(cols[user][r]),
                    "item": _text(cols[item][r]),
                    "action": action if action is not None else _text(cols[action_col][r]),
                    "time": t.timestamp() if hasattr(t, "timestamp") else t,
                    "counters": c,
                    "attributes": a,
                }
            )
        res = store.write(events)
        stats.rows += n
        stats.accepted += res.accepted
        stats.rejected += len(res.rejected)
        stats.too_old += res.too_old
        for i, reason in res.rejected[: max(0, 10 - len(stats.first_errors))]:
            stats.first_errors.append(f"row {stats.rows - n + i}: {reason}")
        stats.seconds = time.monotonic() - start
        if on_batch is not None:
            on_batch(stats)
    stats.seconds = time.monotonic() - start
    return stats


def _numeric(t: Any) -> bool:
    import pyarrow as pa

    return pa.types.is_integer(t) or pa.types.is_floating(t)


def _text(v: Any) -> Any:
    if isinstance(v, float) and math.isfinite(v) and v == int(v):
        return str(int(v))
    return str(v) if isinstance(v, int) and not isinstance(v, bool) else v
