"""Answering features: windows as prefixes, one kernel pass per (profile, slot).

A request asks tens to hundreds of features, but only of a handful of slots and windows. So the
features are grouped by slot, the distinct window starts of a slot are sorted newest first, and
one Numba pass over the slot's rows (already sorted newest first) accumulates, for every window at
once, the reduced counters per value (``acc[window, value, column]``), the totals over values and
the number of distinct values: windows are nested, so window ``w+1`` starts as a copy of window
``w`` and adds the rows in between. Each feature is then a few array reads in Python (a top-k is a
partition plus a sort of the tied candidates). Nothing here loops over events or slices in
Python.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

from streamrec.config import parse_duration
from streamrec.errors import ConfigError, InvalidInputError, UnknownSlotError
from streamrec.profiles.events import SlotSpec
from streamrec.profiles.profile import SlotData
from streamrec.profiles.slices import combine_row
from streamrec.profiles.types import Feature, FeatureResult

__all__ = [
    "CompiledFeature",
    "SlotWindows",
    "answer",
    "plan_feature",
    "reduce_values",
    "single_number",
    "window_aggregate",
    "window_seconds",
]


@njit(cache=True)
def window_aggregate(
    starts: np.ndarray,
    vals: np.ndarray,
    data: np.ndarray,
    codes: np.ndarray,
    tcol: np.ndarray,
    identity: np.ndarray,
    cutoffs: np.ndarray,
    need: np.ndarray,
    upper: int,
    nvocab: int,
):
    """Per-window totals and distinct counts, and per-value reduces where asked. Hot path, Numba.

    ``cutoffs`` are window starts sorted descending (shortest window first); rows with a start
    after ``upper`` (the query's now) are skipped. One running per-value accumulator is
    snapshotted for the windows with ``need`` (top-k or value filters), so the cost is one pass
    over the rows plus one copy per window that needs per-value answers. Returns
    ``(acc[snapshot, value, column], present[snapshot, value], totals[window, column],
    distinct[window])``.
    """
    nw = cutoffs.shape[0]
    k = data.shape[1]
    nsnap = 0
    for w in range(nw):
        if need[w]:
            nsnap += 1
    run = np.empty((nvocab, k), dtype=np.float64)
    for v in range(nvocab):
        for c in range(k):
            run[v, c] = identity[c]
    seen = np.zeros(nvocab, dtype=np.bool_)
    acc = np.empty((nsnap, nvocab, k), dtype=np.float64)
    present = np.empty((nsnap, nvocab), dtype=np.bool_)
    tot = np.empty((nw, k), dtype=np.float64)
    distinct = np.zeros(nw, dtype=np.int64)
    cur = identity.copy()
    n = starts.shape[0]
    i = 0
    while i < n and starts[i] > upper:
        i += 1
    nd = 0
    snap = 0
    for w in range(nw):
        while i < n and starts[i] >= cutoffs[w]:
            v = vals[i]
            combine_row(run[v], data[i], codes, tcol)
            combine_row(cur, data[i], codes, tcol)
            if not seen[v]:
                seen[v] = True
                nd += 1
            i += 1
        tot[w] = cur
        distinct[w] = nd
        if need[w]:
            acc[snap] = run
            present[snap] = seen
            snap += 1
    return acc, present, tot, distinct


@njit(cache=True)
def reduce_values(acc: np.ndarray, mask: np.ndarray, codes: np.ndarray, tcol: np.ndarray, identity: np.ndarray):
    """Reduce the rows of ``acc`` (values x columns) selected by ``mask``. Hot path, Numba."""
    out = identity.copy()
    for v in range(acc.shape[0]):
        if mask[v]:
            combine_row(out, acc[v], codes, tcol)
    return out


_WINDOWS: dict[Any, float] = {}


def window_seconds(window: Any) -> float:
    """Seconds of a window (``"7d"`` or a number), memoised."""
    try:
        return _WINDOWS[window]
    except (KeyError, TypeError):
        pass
    try:
        seconds = parse_duration(window, "window")
    except ConfigError:
        raise InvalidInputError("window", window, "expected a duration such as '5m', '1h', '7d' or seconds") from None
    if seconds <= 0:
        raise InvalidInputError("window", window, "must be > 0")
    if isinstance(window, str | int | float):
        _WINDOWS[window] = seconds
    return seconds


class CompiledFeature:
    """A :class:`~streamrec.profiles.Feature` compiled against the config: column indices and the window's length.

    Internal to the store's query path (not the serving side's :class:`streamrec.serving.FeaturePlan`,
    which is the list of features a ranker asks for).
    """

    __slots__ = (
        "agg",
        "alpha",
        "beta",
        "by",
        "col_list",
        "cols",
        "columns",
        "den",
        "feature",
        "name",
        "num",
        "seconds",
        "since",
        "single",
        "spec",
        "top_k",
        "values",
    )

    def __init__(self, feature: Feature, spec: SlotSpec) -> None:
        self.feature = feature
        self.spec = spec
        self.name = feature.output_name()
        self.agg = feature.agg
        self.since = feature.since
        if feature.since is not None:
            if not math.isfinite(feature.since):
                raise InvalidInputError("since", feature.since, "must be a finite epoch time")
            self.seconds = 0.0
        else:
            self.seconds = window_seconds(feature.window)
        idx = {c: i for i, c in enumerate(spec.counters)}

        def col(field: str, name: str | None) -> int:
            if name not in idx:
                raise InvalidInputError(
                    field, name, f"not a counter of slot {spec.name!r} ({', '.join(spec.counters)})"
                )
            return idx[name]

        self.top_k = feature.top_k
        if self.top_k < 0:
            raise InvalidInputError("top_k", self.top_k, "must be >= 0")
        self.alpha, self.beta = float(feature.alpha), float(feature.beta)
        self.num = self.den = -1
        if self.agg == "counters":
            names = feature.counters if feature.counters is not None else spec.counters
            if not names:
                raise InvalidInputError("counters", names, "name at least one counter")
            self.cols = np.asarray([col("counters", c) for c in names], dtype=np.int64)
            self.columns = list(names)
            default_by = names[0]
        elif self.agg == "ratio":
            self.num = col("numerator", feature.numerator)
            self.den = col("denominator", feature.denominator)
            if not (math.isfinite(self.alpha) and math.isfinite(self.beta)):
                raise InvalidInputError("alpha", (self.alpha, self.beta), "smoothing must be finite")
            self.cols = np.empty(0, dtype=np.int64)
            self.columns = ["ratio"]
            default_by = feature.numerator
        elif self.agg == "distinct":
            if self.top_k:
                raise InvalidInputError("top_k", self.top_k, "top-k does not apply to 'distinct'")
            self.cols = np.empty(0, dtype=np.int64)
            self.columns = ["distinct"]
            default_by = spec.counters[0]
        else:
            raise InvalidInputError("agg", self.agg, "expected 'counters', 'ratio' or 'distinct'")
        self.col_list: list[int] = self.cols.tolist()
        # One number over the whole window (:func:`single_number`): entities may share the answer.
        self.single = feature.top_k == 0 and feature.values is None and len(self.columns) == 1
        by = feature.by or default_by
        if by == "ratio" and self.agg == "ratio":
            self.by = -1
        else:
            self.by = col("by", by)
        self.values = feature.values

    @property
    def per_value(self) -> bool:
        """Whether the answer needs per-value reduces (top-k or a value filter)."""
        return self.top_k > 0 or self.values is not None

    def window_start(self, now: float) -> int:
        start = self.since if self.since is not None else now - self.seconds
        return self.spec.plan.window_start(start, now)


def plan_feature(feature: Any, specs_by_name: dict[str, SlotSpec]) -> CompiledFeature:
    if not isinstance(feature, Feature):
        raise InvalidInputError("features", feature, "expected a Feature")
    spec = specs_by_name.get(feature.slot)
    if spec is None:
        raise UnknownSlotError(feature.slot, list(specs_by_name))
    return CompiledFeature(feature, spec)


class WindowPlan:
    """The windows one slot is asked for in a query: sorted starts, which need per-value answers."""

    __slots__ = ("cutoffs", "need", "snap", "win")

    def __init__(self, cutoffs: list[int], needs: list[bool]) -> None:
        ordered = sorted(set(cutoffs), reverse=True)
        need_of = dict.fromkeys(ordered, False)
        for c, nd in zip(cutoffs, needs, strict=True):
            need_of[c] = need_of[c] or nd
        self.cutoffs = np.asarray(ordered, dtype=np.int64)
        self.need = np.asarray([need_of[c] for c in ordered], dtype=np.bool_)
        self.win = {c: i for i, c in enumerate(ordered)}
        snaps = np.cumsum(self.need) - 1
        self.snap = {c: int(snaps[i]) if need_of[c] else -1 for i, c in enumerate(ordered)}


class SlotWindows:
    """The kernel's output for one (profile, slot) and its windows."""

    __slots__ = ("acc", "distinct", "present", "rows", "slot", "tot")

    def __init__(self, slot: SlotData | None, spec: SlotSpec, wp: WindowPlan, now: float) -> None:
        self.slot = slot
        if slot is None or slot.starts.shape[0] == 0:
            nw, ns = wp.cutoffs.shape[0], int(wp.need.sum())
            self.acc = np.empty((ns, 0, len(spec.columns)))
            self.present = np.zeros((ns, 0), dtype=np.bool_)
            self.tot = np.tile(spec.identity, (nw, 1))
            self.distinct = np.zeros(nw, dtype=np.int64)
            self.rows = self.tot.tolist()
            return
        self.acc, self.present, self.tot, self.distinct = window_aggregate(
            slot.starts,
            slot.vals,
            slot.data,
            spec.codes,
            spec.tcol,
            spec.identity,
            wp.cutoffs,
            wp.need,
            math.floor(now),
            len(slot.vocab),
        )
        # Whole-window answers read Python lists: indexing a list is ~10x cheaper than a NumPy
        # fancy index, and a query makes one such read per (entity, feature).
        self.rows = self.tot.tolist()


def _ratio(n: float, d: float, alpha: float, beta: float) -> float:
    n = 0.0 if n != n else n
    d = 0.0 if d != d else d
    den = d + beta
    return (n + alpha) / den if den != 0 else 0.0


def answer(plan: CompiledFeature, sw: SlotWindows, w: int, snap: int) -> FeatureResult:
    """One feature from the slot's window aggregates (``w``: its window, ``snap``: its per-value snapshot)."""
    spec = plan.spec
    if plan.values is not None:
        mask = _filter_mask(plan.values, sw)
        mask &= sw.present[snap]
        if plan.top_k == 0:
            if plan.agg == "distinct":
                return FeatureResult(None, [[float(mask.sum())]])
            tot = (
                reduce_values(sw.acc[snap], mask, spec.codes, spec.tcol, spec.identity) if mask.any() else spec.identity
            )
            return _whole(plan, tot)
        return _top(plan, sw, snap, mask)
    if plan.top_k == 0:
        if plan.agg == "distinct":
            return FeatureResult(None, [[float(sw.distinct[w])]])
        row = sw.rows[w]  # == sw.tot[w].tolist()
        if plan.agg == "ratio":
            return FeatureResult(None, [[_ratio(row[plan.num], row[plan.den], plan.alpha, plan.beta)]])
        return FeatureResult(None, [[row[c] for c in plan.col_list]])
    return _top(plan, sw, snap, sw.present[snap])


def single_number(plan: CompiledFeature, sw: SlotWindows, w: int) -> float:
    """The number of a :attr:`CompiledFeature.single` feature: what :func:`answer` holds in ``data[0][0]``."""
    if plan.agg == "distinct":
        return float(sw.distinct[w])
    row = sw.rows[w]
    if plan.agg == "ratio":
        return _ratio(row[plan.num], row[plan.den], plan.alpha, plan.beta)
    return row[plan.col_list[0]]


def _filter_mask(values: list[str], sw: SlotWindows) -> np.ndarray:
    n = sw.present.shape[1]
    mask = np.zeros(n, dtype=np.bool_)
    if sw.slot is not None:
        vindex = sw.slot.vindex
        for v in values:
            i = vindex.get(v)
            if i is not None and i < n:
                mask[i] = True
    return mask


def _whole(plan: CompiledFeature, tot: np.ndarray) -> FeatureResult:
    if plan.agg == "ratio":
        return FeatureResult(None, [[_ratio(float(tot[plan.num]), float(tot[plan.den]), plan.alpha, plan.beta)]])
    return FeatureResult(None, [tot[plan.cols].tolist()])


def _top(plan: CompiledFeature, sw: SlotWindows, w: int, mask: np.ndarray) -> FeatureResult:
    slot = sw.slot
    if slot is None:
        return FeatureResult([], [])
    chosen, data = top_values(
        sw.acc[w], mask, slot.rank_order, plan.by, plan.num, plan.den, plan.alpha, plan.beta, plan.top_k, plan.cols
    )
    vocab = slot.vocab
    return FeatureResult([vocab[i] for i in chosen.tolist()], data.tolist())


@njit(cache=True)
def top_values(
    acc: np.ndarray,
    mask: np.ndarray,
    rank_order: np.ndarray,
    by: int,
    num: int,
    den: int,
    alpha: float,
    beta: float,
    k: int,
    cols: np.ndarray,
):
    """The ``k`` values of ``mask`` with the largest score, ties by value string. Hot path, Numba.

    ``by >= 0`` ranks by that column, ``by == -1`` by the smoothed ratio ``num/den``. A partition
    finds the k-th score, then only the values scoring at least that are sorted: ``rank_order``
    lists value indices in string order, so a stable sort by score breaks ties by string.
    Returns ``(indices, rows)``; rows hold ``cols``, or the ratio when ``cols`` is empty.
    """
    nv = mask.shape[0]
    score = np.empty(nv, dtype=np.float64)  # negated: smaller is better; NaN and absent rank last
    n = 0
    for v in range(nv):
        if mask[v]:
            x = acc[v, by] if by >= 0 else _ratio_nb(acc[v, num], acc[v, den], alpha, beta)
            score[v] = np.inf if math.isnan(x) else -x
            n += 1
        else:
            score[v] = np.nan
    kk = min(k, n)
    chosen = np.empty(kk, dtype=np.int64)
    ncol = cols.shape[0] if cols.shape[0] > 0 else 1
    rows = np.empty((kk, ncol), dtype=np.float64)
    if kk == 0:
        return chosen, rows
    packed = np.empty(n, dtype=np.float64)
    m = 0
    for v in range(nv):
        if mask[v]:
            packed[m] = score[v]
            m += 1
    kth = np.partition(packed, kk - 1)[kk - 1] if n > kk else np.inf
    cand = np.empty(n, dtype=np.int64)
    neg = np.empty(n, dtype=np.float64)
    m = 0
    for i in range(rank_order.shape[0]):
        v = rank_order[i]
        if v < nv and mask[v] and score[v] <= kth:
            cand[m] = v
            neg[m] = score[v]
            m += 1
    order = np.argsort(neg[:m], kind="mergesort")
    for r in range(kk):
        v = cand[order[r]]
        chosen[r] = v
        if cols.shape[0] > 0:
            for c in range(ncol):
                rows[r, c] = acc[v, cols[c]]
        else:
            rows[r, 0] = _ratio_nb(acc[v, num], acc[v, den], alpha, beta)
    return chosen, rows


@njit(cache=True)
def _ratio_nb(n: float, d: float, alpha: float, beta: float) -> float:
    if math.isnan(n):
        n = 0.0
    if math.isnan(d):
        d = 0.0
    den = d + beta
    return (n + alpha) / den if den != 0 else 0.0
