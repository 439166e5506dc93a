"""The SQL dialect for feature engineers, parsed by sqlglot.

A query reads one slot (the ``FROM`` table) of one or more entities over one window::

    SELECT value, sum(click) AS clicks, ratio(click, show, 1, 20) AS ctr
    FROM clicked_category
    WHERE entity = 'user:42' AND window = '7d'
    ORDER BY clicks DESC LIMIT 10

- ``WHERE`` is a conjunction of: ``entity = 'type:id'`` or ``entity IN (...)`` (required);
  ``window = '7d'`` or ``since = <epoch seconds>`` (default ``window = '7d'``); optionally
  ``value = '...'`` / ``value IN (...)`` (a filter) and ``now = <epoch seconds>`` (the clock).
- Selecting ``value`` (or grouping by it) gives one row per feature value seen in the window;
  otherwise one row per entity, aggregated over all values.
- Select items: ``value``, ``entity``, a counter (``click``: its reduce), ``f(counter)`` where
  ``f`` is the counter's reduce (``sum(click)``, ``max(dwell_ms)``; another function is an error,
  because slices keep only the reduced number), ``ratio(num, den[, alpha, beta])`` (smoothed),
  ``a / b`` of two counters (a ratio without smoothing), ``count(DISTINCT value)`` (distinct
  values; not with ``value`` selected) and ``count(*)``; each may have an ``AS`` alias.
- ``ORDER BY`` any output column or alias (``ASC``/``DESC``), ``LIMIT n``. Rows come first in the
  order of the slot's first counter (descending, then value); ORDER BY sorts stably from there.

The answer is a :class:`~streamrec.profiles.types.SqlResult` (``columns``, ``rows``). It is
computed with the same kernels as :meth:`ProfileStore.query` (one ``top_k`` over every value),
so SQL and structured queries agree exactly. Every error is a :class:`SqlError` that quotes the
bad part of the query (the token, the column, or the parser's line and column).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import sqlglot
from sqlglot import exp

from streamrec.errors import InvalidInputError
from streamrec.profiles.types import Feature, FeatureQuery, SqlResult

if TYPE_CHECKING:
    from streamrec.profiles.store import ProfileStore

__all__ = ["SqlError", "run_sql"]

_ALL = 1 << 30
# Limits on what is parsed at all: the dialect needs neither long texts nor deep nesting, and
# sqlglot's parser recurses per nesting level (3,000 parentheses exhaust the Python stack).
MAX_SQL_CHARS = 64 * 1024
MAX_SQL_DEPTH = 64


class SqlError(InvalidInputError):
    """A SQL query that cannot be answered; ``value`` is the offending part of the query."""

    def __init__(self, part: Any, reason: str) -> None:
        super().__init__("sql", part, reason)


def _literal(node: exp.Expression, what: str) -> Any:
    if isinstance(node, exp.Literal):
        return node.this if node.is_string else float(node.this)
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal) and not node.this.is_string:
        return -float(node.this.this)
    raise SqlError(node.sql(), f"{what} must be a literal")


def _conjuncts(node: exp.Expression | None) -> list[exp.Expression]:
    if node is None:
        return []
    if isinstance(node, exp.And):
        return _conjuncts(node.this) + _conjuncts(node.expression)
    if isinstance(node, exp.Paren):
        return _conjuncts(node.this)
    return [node]


class _Where:
    def __init__(self, where: exp.Where | None) -> None:
        self.entities: list[str] = []
        self.window: Any = "7d"
        self.since: float | None = None
        self.values: tuple[str, ...] | None = None
        self.now: float | None = None
        seen: set[str] = set()
        for cond in _conjuncts(where.this if where is not None else None):
            if isinstance(cond, exp.EQ | exp.In) and isinstance(cond.this, exp.Column):
                col = cond.this.name.lower()
                items = [cond.expression] if isinstance(cond, exp.EQ) else list(cond.expressions)
            else:
                raise SqlError(
                    cond.sql(), "WHERE takes conditions 'column = literal' or 'column IN (...)' joined by AND"
                )
            if col in seen:
                raise SqlError(cond.sql(), f"{col} is constrained twice")
            seen.add(col)
            vals = [_literal(i, col) for i in items]
            if col == "entity":
                self.entities = [str(v) for v in vals]
            elif col == "value":
                self.values = tuple(str(v) for v in vals)
            elif col in ("window", "since", "now"):
                if len(vals) != 1:
                    raise SqlError(cond.sql(), f"{col} takes one value")
                if col == "window":
                    self.window = vals[0]
                elif col == "since":
                    self.since = _number(vals[0], cond)
                else:
                    self.now = _number(vals[0], cond)
            else:
                raise SqlError(cond.this.sql(), "unknown column in WHERE; use entity, window, since, value or now")
        if not self.entities:
            raise SqlError(where.sql() if where is not None else "", "WHERE needs entity = 'type:id' (or IN (...))")
        if "window" in seen and "since" in seen:
            raise SqlError("since", "give window or since, not both")


def _number(v: Any, node: exp.Expression) -> float:
    if isinstance(v, str):
        raise SqlError(node.sql(), "expected a number")
    return float(v)


class _Item:
    """One select item, compiled: how to compute it from a row's counters."""

    def __init__(self, node: exp.Expression, spec, reduces: dict[str, str]) -> None:
        self.alias = node.alias if isinstance(node, exp.Alias) else None
        body = node.this if isinstance(node, exp.Alias) else node
        self.name = self.alias or body.sql()
        self.kind, self.args = self._compile(body, spec, reduces)

    @staticmethod
    def _counter(node: exp.Expression, spec, where: str) -> str:
        if not isinstance(node, exp.Column):
            raise SqlError(node.sql(), f"{where}: expected a counter name")
        name = node.name
        if name not in spec.counters:
            raise SqlError(name, f"unknown counter of slot {spec.name!r} ({', '.join(spec.counters)})")
        return name

    def _compile(self, body: exp.Expression, spec, reduces: dict[str, str]) -> tuple[str, tuple]:
        if isinstance(body, exp.Column):
            if body.name.lower() in ("value", "entity"):
                return body.name.lower(), ()
            return "counter", (self._counter(body, spec, body.sql()),)
        if isinstance(body, exp.Count):
            inner = body.this
            if isinstance(inner, exp.Star):
                return "rows", ()
            if (
                isinstance(inner, exp.Distinct)
                and len(inner.expressions) == 1
                and isinstance(inner.expressions[0], exp.Column)
                and inner.expressions[0].name.lower() == "value"
            ):
                return "distinct", ()
            raise SqlError(body.sql(), "count takes * or DISTINCT value")
        if isinstance(body, exp.Div):
            return "ratio", (
                self._counter(body.this, spec, body.sql()),
                self._counter(body.expression, spec, body.sql()),
                0.0,
                0.0,
            )
        if isinstance(body, exp.Anonymous) and body.name.lower() == "ratio":
            args = body.expressions
            if len(args) not in (2, 4):
                raise SqlError(body.sql(), "ratio takes (numerator, denominator[, alpha, beta])")
            alpha = beta = 0.0
            if len(args) == 4:
                alpha, beta = (_number(_literal(a, "ratio smoothing"), a) for a in args[2:])
            return "ratio", (
                self._counter(args[0], spec, body.sql()),
                self._counter(args[1], spec, body.sql()),
                alpha,
                beta,
            )
        if isinstance(body, exp.Func):
            fname = body.name.lower() if isinstance(body, exp.Anonymous) else body.key.lower()
            args = list(body.expressions) if isinstance(body, exp.Anonymous) else [body.this, *body.expressions]
            args = [a for a in args if a is not None]
            if len(args) != 1:
                raise SqlError(body.sql(), f"{fname} takes one counter")
            counter = self._counter(args[0], spec, body.sql())
            if fname != reduces[counter]:
                raise SqlError(
                    body.sql(),
                    f"counter {counter!r} is reduced by {reduces[counter]}; use {reduces[counter]}({counter})",
                )
            return "counter", (counter,)
        raise SqlError(body.sql(), "unsupported select item")


def _ratio(n: float, d: float, alpha: float, beta: float) -> float:
    n = 0.0 if math.isnan(n) else n
    d = (0.0 if math.isnan(d) else d) + beta
    return (n + alpha) / d if d != 0 else 0.0


def run_sql(store: ProfileStore, text: str, now: float | None = None) -> SqlResult:
    """Parse, plan and answer ``text`` against ``store`` (see the module docstring)."""
    if not isinstance(text, str) or not text.strip():
        raise SqlError(text, "expected a SELECT statement")
    if len(text) > MAX_SQL_CHARS:
        raise SqlError(text[:40] + "...", f"longer than {MAX_SQL_CHARS} characters ({len(text)})")
    depth = _nesting(text)
    if depth > MAX_SQL_DEPTH:
        raise SqlError(text[:40] + "...", f"parentheses nested {depth} deep; at most {MAX_SQL_DEPTH}")
    try:
        return _run(store, text, now)
    except RecursionError:  # a long operator chain (a AND b AND ...) nests without parentheses
        raise SqlError(text[:40] + "...", "expression nested too deeply to parse") from None


def _nesting(text: str) -> int:
    """Deepest parenthesis nesting outside quoted strings and identifiers."""
    depth = deepest = 0
    quote = ""
    for ch in text:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"`":
            quote = ch
        elif ch == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif ch == ")":
            depth -= 1
    return deepest


def _run(store: ProfileStore, text: str, now: float | None) -> SqlResult:
    try:
        tree = sqlglot.parse_one(text)
    except sqlglot.errors.ParseError as exc:
        err = exc.errors[0] if exc.errors else {}
        part = err.get("highlight") or text
        raise SqlError(
            part, f"syntax error at line {err.get('line')}, column {err.get('col')}: {err.get('description', exc)}"
        ) from None
    except sqlglot.errors.SqlglotError as exc:
        raise SqlError(text, f"cannot parse: {exc}") from None
    if not isinstance(tree, exp.Select):
        raise SqlError(tree.sql()[:60], "only SELECT is supported")
    for key in ("joins", "having", "windows", "distinct"):
        if tree.args.get(key):
            raise SqlError(key.upper(), "not supported in this dialect")
    tables = list(tree.find_all(exp.Table))
    if len(tables) != 1:
        raise SqlError(tree.sql()[:60], "FROM names exactly one slot")
    slot_name = tables[0].name
    spec = store.slot_spec(slot_name)
    if spec is None:
        raise SqlError(slot_name, f"unknown slot; known: {', '.join(sorted(s.name for s in store.specs))}")
    reduces = {c: r.name for c, r in zip(spec.counters, spec.reduces, strict=True)}
    where = _Where(tree.args.get("where"))
    items = [_Item(node, spec, reduces) for node in tree.expressions]
    if not items:
        raise SqlError(text, "select at least one column")
    group = tree.args.get("group")
    per_value = any(i.kind == "value" for i in items)
    if group is not None:
        keys = [g.name.lower() if isinstance(g, exp.Column) else g.sql() for g in group.expressions]
        if any(k not in ("value", "entity") for k in keys):
            raise SqlError(group.sql(), "GROUP BY takes value (and entity)")
        per_value = per_value or "value" in keys
    if per_value and any(i.kind == "distinct" for i in items):
        raise SqlError("count(DISTINCT value)", "not with value selected or grouped")

    base = {"slot": slot_name, "values": where.values}
    if where.since is not None:
        base["since"] = where.since
    else:
        base["window"] = where.window
    counters = tuple(spec.counters)
    features = [Feature(**base, counters=counters, top_k=_ALL if per_value else 0)]
    if not per_value:
        features.append(Feature(**base, agg="distinct"))
    q_now = where.now if where.now is not None else now
    result = store.query(FeatureQuery(entities=where.entities, features=features, now=q_now))

    columns = [i.name for i in items]
    rows: list[list[Any]] = []
    for label, res in zip(where.entities, result.results, strict=True):
        if per_value:
            for value, data in zip(res[0].values or [], res[0].data, strict=True):
                rows.append([_cell(i, label, value, dict(zip(counters, data, strict=True)), 1.0, None) for i in items])
        else:
            data = dict(zip(counters, res[0].data[0], strict=True))
            distinct = res[1].scalar()
            rows.append([_cell(i, label, None, data, distinct, distinct) for i in items])
    order = tree.args.get("order")
    if order is not None:
        for o in reversed(order.expressions):
            col = o.this
            name = col.name if isinstance(col, exp.Column) else col.sql()
            if name in columns:
                idx = columns.index(name)
            else:
                probe = _Item(col, spec, reduces)
                matches = [j for j, i in enumerate(items) if (i.kind, i.args) == (probe.kind, probe.args)]
                if not matches:
                    raise SqlError(name, "ORDER BY must name a selected column or alias")
                idx = matches[0]
            desc = bool(o.args.get("desc"))
            rows.sort(key=lambda r, k=idx, d=desc: _sort_key(r[k], d))
    limit = tree.args.get("limit")
    if limit is not None:
        n = _literal(limit.expression, "LIMIT")
        if isinstance(n, str) or not math.isfinite(n) or n < 0 or n != int(n):
            raise SqlError(limit.sql(), "LIMIT takes a non-negative integer")
        rows = rows[: int(n)]
    return SqlResult(columns=columns, rows=rows)


def _sort_key(v: Any, desc: bool) -> tuple:
    if isinstance(v, float):
        if math.isnan(v):
            return (1, 0.0)
        return (0, -v if desc else v)
    return (0, v) if not desc else (0, _Reversed(v))


class _Reversed:
    __slots__ = ("v",)

    def __init__(self, v: Any) -> None:
        self.v = v

    def __lt__(self, other: _Reversed) -> bool:
        return self.v > other.v

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Reversed) and self.v == other.v


def _cell(item: _Item, label: str, value: str | None, data: dict[str, float], rows: float, distinct) -> Any:
    kind = item.kind
    if kind == "value":
        return value
    if kind == "entity":
        return label
    if kind == "counter":
        return data[item.args[0]]
    if kind == "ratio":
        n, d, a, b = item.args
        return _ratio(data[n], data[d], a, b)
    if kind == "distinct":
        return distinct
    if kind == "rows":
        return rows if value is not None else distinct
    raise AssertionError(kind)
