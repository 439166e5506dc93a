"""The types that cross the profile service's boundary: what a query asks and what it answers.

They are ``msgspec.Struct`` so the gRPC node, the HTTP API and the client encode them with one
call (msgpack or JSON) and no hand-written conversion; ``QueryResult`` and ``FeatureResult`` are
``array_like`` and untracked by the GC because a 100-feature answer is built per request.

A *feature* is one number (or one small table) computed from one slot of one profile over one
window: ``slot`` + window (``window`` or ``since``) + aggregation (``agg``) + optional top-k +
optional value filter. The semantics, including the time granularity a window is exact at, are in
``docs/profiles.md``; the short version is in the docstrings below.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

__all__ = ["Feature", "FeatureQuery", "FeatureResult", "QueryResult", "SqlResult", "WriteResult"]


class Feature(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One feature to compute from one slot of a profile.

    Attributes
    ----------
    slot: a slot declared in ``[profiles.slots]``.
    window: how far back from the query's ``now``: a duration (``"5m"``, ``"1h"``, ``"1d"``,
        ``"7d"``, ``"30d"``, any ``parse_duration`` string, or seconds). The window starts at
        ``now - window`` rounded *down* to the width of the slices that hold that time, so it is
        exact at that granularity (minute for ages under 2h, hour under 3d, day beyond, with the
        default tiers). Slices that start after ``now`` are not counted.
    since: an absolute start time (epoch seconds) instead of ``window``; rounded the same way.
    agg: what to compute:

        - ``"counters"``: each counter's reduce over the window (sum of ``click``, max of
          ``dwell_ms``...); numbers in the order of ``counters``.
        - ``"ratio"``: ``(reduce(numerator) + alpha) / (reduce(denominator) + beta)``, or ``0.0``
          when the denominator term is 0 (e.g. a smoothed click-through rate).
        - ``"distinct"``: the number of distinct values seen in the window.
    counters: for ``"counters"``, which counters, in order (default: all of the slot's).
    numerator, denominator, alpha, beta: for ``"ratio"``.
    top_k: if > 0, answer per value: the ``top_k`` values with the largest ``by`` (ties by value,
        ascending), each with its numbers (its counters, or its ratio). Not with ``"distinct"``.
    by: counter ranking values for ``top_k`` (default: the first of ``counters``, or the
        numerator of a ratio), or ``"ratio"`` to rank by the ratio itself.
    values: if set, only these feature values count (a filter applied before everything else).
    name: the output name (default ``slot:agg:window``, e.g. ``clicked_item:counters:7d``).

    ``counters`` and ``values`` are tuples so that a ``Feature`` is hashable: the store caches
    the resolved form of each feature it has seen (lists work too, uncached).
    """

    slot: str
    window: str | float = "7d"
    since: float | None = None
    agg: Literal["counters", "ratio", "distinct"] = "counters"
    counters: tuple[str, ...] | None = None
    numerator: str | None = None
    denominator: str | None = None
    alpha: float = 0.0
    beta: float = 0.0
    top_k: int = 0
    by: str | None = None
    values: tuple[str, ...] | None = None
    name: str | None = None

    def output_name(self) -> str:
        """``name`` or the default ``slot:agg:window`` (``slot:agg:since=T`` with ``since``)."""
        if self.name:
            return self.name
        span = f"since={self.since:g}" if self.since is not None else str(self.window)
        return f"{self.slot}:{self.agg}:{span}"


class FeatureQuery(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Many features of one or many entities.

    Attributes
    ----------
    features: the features; each is computed for every entity (a feature of a slot that belongs
        to another entity type answers as an empty profile would: zeros, no values).
    entities: entity labels ``"type:id"`` (``"user:42"``, ``"item:1193"``); hashed with the
        store's secret, never stored.
    keys: entities given by their hashed key (:meth:`ProfileStore.entity_key`) instead; answered
        after ``entities``.
    now: the query's clock in epoch seconds (default: the store's clock). Deterministic tests
        pass it.
    """

    features: list[Feature]
    entities: list[str] = []
    keys: list[bytes] = []
    now: float | None = None


class FeatureResult(msgspec.Struct, array_like=True, gc=False):
    """The answer of one feature for one entity.

    Attributes
    ----------
    values: ``None`` for a whole-window answer; with ``top_k``, the feature values in rank order.
    data: the numbers: one row for a whole-window answer, else one row per entry of ``values``.
        Columns are :attr:`QueryResult.columns` of the feature: the counters for ``"counters"``,
        ``["ratio"]`` or ``["distinct"]``.
    """

    values: list[str] | None
    data: list[list[float]]

    def scalar(self) -> float:
        """The single number of a whole-window answer with one column."""
        return self.data[0][0]


class QueryResult(msgspec.Struct, array_like=True, gc=False):
    """The answer to a :class:`FeatureQuery`.

    Attributes
    ----------
    names: output name of each feature, in query order.
    columns: per feature, the names of its numbers (see :class:`FeatureResult`).
    keys: the hashed key of each entity answered (``entities`` then ``keys`` of the query).
    results: ``results[i][j]`` is feature ``j`` of entity ``i``.
    now: the clock the query was answered at.
    """

    names: list[str]
    columns: list[list[str]]
    keys: list[bytes]
    results: list[list[FeatureResult]]
    now: float = 0.0

    def get(self, entity: int, name: str) -> FeatureResult:
        """Feature ``name`` of the ``entity``-th entity."""
        return self.results[entity][self.names.index(name)]

    def to_dicts(self) -> list[dict[str, Any]]:
        """Per entity, ``{name: number}`` for one-number features, else ``{name: {value or column: numbers}}``."""
        out = []
        for row in self.results:
            entity: dict[str, Any] = {}
            for name, cols, res in zip(self.names, self.columns, row, strict=True):
                if res.values is None:
                    entity[name] = res.data[0][0] if len(cols) == 1 else dict(zip(cols, res.data[0], strict=True))
                else:
                    entity[name] = {
                        v: (d[0] if len(cols) == 1 else dict(zip(cols, d, strict=True)))
                        for v, d in zip(res.values, res.data, strict=True)
                    }
            out.append(entity)
        return out


class WriteResult(msgspec.Struct, array_like=True, gc=False):
    """What :meth:`ProfileStore.write` did with a batch.

    Attributes
    ----------
    accepted: events applied (durable when ``write`` returned).
    rejected: ``(index in the batch, reason)`` of each bad event; the reason names the field and
        the bad value. Nothing of a rejected event was applied.
    too_old: valid events older than every slot's retention, counted and dropped.
    """

    accepted: int
    rejected: list[tuple[int, str]] = []
    too_old: int = 0


class SqlResult(msgspec.Struct, array_like=True, gc=False):
    """A table answered by :meth:`ProfileStore.sql`: column names and rows (strings and floats)."""

    columns: list[str]
    rows: list[list[Any]]
