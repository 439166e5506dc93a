"""Time slices: the tier rule, and the Numba kernel that merges, compacts and truncates a slot.

A slot of a profile is held as three arrays sorted newest first: ``starts`` (int64 start of each
row's slice), ``vals`` (int32 index of the feature value in the slot's vocabulary) and ``data``
(float64 ``rows x columns``: the counters, then one hidden event-time column per ``last`` counter).
One row is one (slice, value) pair. Keeping rows sorted by start descending makes a window a
*prefix* of the arrays, so a query never searches.

Which slice a time belongs to depends on its age (``config.py`` states the rule): the tier
boundaries are aligned to the next tier's width, so coarse slices are exact unions of fine ones,
and recomputing every row's canonical start with a later clock is all compaction is. One kernel,
:func:`merge_rows`, therefore does the merge of new events, compaction, retention and truncation
in a single pass over (old rows + new rows): canonical starts, a stable sort, a reduce per
(start, value) group, then top-N per slice. It runs per touched (profile, slot) at every merge —
this is the write path's hot loop and it is Numba.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from streamrec.profiles.reduce import REDUCE_FIRST, REDUCE_LAST, REDUCE_MAX, REDUCE_MIN, REDUCE_SUM

__all__ = ["TierPlan", "combine_row", "merge_rows"]

TIME_COLUMN = -1  # code of a hidden time column (belongs to a `last` counter)


class TierPlan:
    """The tier rule of one slot, as arrays for the kernels.

    Parameters
    ----------
    widths: slice width of each tier, finest first (seconds, dividing one another).
    untils: age until which each tier but the last holds data.
    retention: seconds of history kept.
    """

    __slots__ = ("_memo", "retention", "untils", "widths")

    def __init__(self, widths: list[float], untils: list[float], retention: float) -> None:
        self.widths = np.asarray(widths, dtype=np.int64)
        self.untils = np.asarray(untils, dtype=np.float64)
        self.retention = float(retention)
        self._memo: tuple[float, np.ndarray, int] = (float("nan"), np.empty(0, dtype=np.int64), 0)

    def bounds(self, now: float) -> tuple[np.ndarray, int]:
        """Tier boundaries at ``now`` (``bounds[k]``: oldest time of tier ``k``) and the retention cutoff."""
        memo = self._memo  # one entry: the queries of one instant share it
        if memo[0] == now:
            return memo[1], memo[2]
        w = self.widths
        b = np.empty(len(w) - 1, dtype=np.int64)
        for k in range(len(w) - 1):
            b[k] = math.floor((now - self.untils[k]) / w[k + 1]) * w[k + 1]
        cutoff = int(math.floor((now - self.retention) / w[-1]) * int(w[-1]))
        self._memo = (now, b, cutoff)
        return b, cutoff

    def width_at(self, t: float, now: float) -> int:
        """Width of the slice that holds time ``t`` at clock ``now``."""
        b, _ = self.bounds(now)
        for k, bk in enumerate(b.tolist()):
            if t >= bk:
                return int(self.widths[k])
        return int(self.widths[-1])

    def window_start(self, start: float, now: float) -> int:
        """The first time a window beginning at ``start`` covers: ``start`` rounded down to its slice."""
        width = self.width_at(start, now)
        return math.floor(start / width) * width


@njit(cache=True)
def canonical_start(t: float, bounds: np.ndarray, widths: np.ndarray, cutoff: int) -> int:
    """Start of the slice holding ``t`` (or ``-2**62`` if it is past retention). Hot path, Numba."""
    k = 0
    while k < bounds.shape[0] and t < bounds[k]:
        k += 1
    w = widths[k]
    s = np.int64(math.floor(t / w)) * w
    if s < cutoff:
        return -(2**62)
    return s


@njit(cache=True)
def combine_row(acc: np.ndarray, new: np.ndarray, codes: np.ndarray, tcol: np.ndarray) -> None:
    """``acc = reduce(acc, new)`` column by column (in place). Hot path, Numba.

    ``sum`` adds; ``max``/``min`` ignore NaN (a counter nobody set); ``last`` keeps the value with
    the latest hidden time, a tie going to ``new`` (the later arrival); ``first`` the earliest, a
    tie staying with ``acc``. A new reduce is a new branch here (see ``reduce.py``).
    """
    for c in range(codes.shape[0]):
        code = codes[c]
        x = new[c]
        if code == REDUCE_SUM:
            acc[c] += x
        elif code == REDUCE_MAX:
            if not math.isnan(x) and (math.isnan(acc[c]) or x > acc[c]):
                acc[c] = x
        elif code == REDUCE_MIN:
            if not math.isnan(x) and (math.isnan(acc[c]) or x < acc[c]):
                acc[c] = x
        elif code == REDUCE_LAST:
            tc = tcol[c]
            if not math.isnan(x) and (math.isnan(acc[c]) or new[tc] >= acc[tc]):
                acc[c] = x
                acc[tc] = new[tc]
        elif code == REDUCE_FIRST:
            tc = tcol[c]
            if not math.isnan(x) and (math.isnan(acc[c]) or new[tc] < acc[tc]):
                acc[c] = x
                acc[tc] = new[tc]


@njit(cache=True)
def merge_rows(
    times: np.ndarray,
    vals: np.ndarray,
    data: np.ndarray,
    codes: np.ndarray,
    tcol: np.ndarray,
    bounds: np.ndarray,
    widths: np.ndarray,
    cutoff: int,
    truncate: int,
    trunc_col: int,
):
    """Merge rows into canonical, reduced, truncated rows sorted newest first. Hot path, Numba.

    ``times``/``vals``/``data`` are the old rows (their slice starts as times) followed by the new
    rows (event times), in arrival order. Returns ``(starts, vals, data, dropped)`` where
    ``dropped`` counts input rows past retention.
    """
    n = times.shape[0]
    k = data.shape[1]
    st = np.empty(n, dtype=np.int64)
    dropped = 0
    for i in range(n):
        st[i] = canonical_start(times[i], bounds, widths, cutoff)
        if st[i] == -(2**62):
            dropped += 1
    # Sort by start descending, then value ascending, then arrival (stable, so `last` ties go late).
    o1 = np.argsort(vals, kind="mergesort")
    neg = np.empty(n, dtype=np.int64)
    for i in range(n):
        neg[i] = -st[o1[i]]
    o2 = np.argsort(neg, kind="mergesort")
    order = o1[o2]
    out_s = np.empty(n, dtype=np.int64)
    out_v = np.empty(n, dtype=np.int32)
    out_d = np.empty((n, k), dtype=np.float64)
    m = 0
    for j in range(n):
        i = order[j]
        if st[i] == -(2**62):
            continue
        if m > 0 and out_s[m - 1] == st[i] and out_v[m - 1] == vals[i]:
            combine_row(out_d[m - 1], data[i], codes, tcol)
        else:
            out_s[m] = st[i]
            out_v[m] = vals[i]
            for c in range(k):
                out_d[m, c] = data[i, c]
            m += 1
    if truncate > 0:
        keep = np.ones(m, dtype=np.bool_)
        g = 0
        any_cut = False
        while g < m:
            h = g
            while h < m and out_s[h] == out_s[g]:
                h += 1
            if h - g > truncate:
                score = np.empty(h - g, dtype=np.float64)
                for r in range(g, h):
                    x = out_d[r, trunc_col]
                    score[r - g] = -np.inf if math.isnan(x) else -x
                rank = np.argsort(score, kind="mergesort")  # ties: smaller value index first
                for r in range(truncate, h - g):
                    keep[g + rank[r]] = False
                any_cut = True
            g = h
        if any_cut:
            w = 0
            for r in range(m):
                if keep[r]:
                    out_s[w] = out_s[r]
                    out_v[w] = out_v[r]
                    for c in range(k):
                        out_d[w, c] = out_d[r, c]
                    w += 1
            m = w
    return out_s[:m].copy(), out_v[:m].copy(), out_d[:m].copy(), dropped
