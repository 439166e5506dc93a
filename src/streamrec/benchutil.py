"""The timing harness of the ``streamrec bench ...`` commands: one definition of each number.

Every bench reports the same few kinds of figure, and each is computed here, one way:

* :func:`timed` / :func:`seconds`: wall seconds of one call (``time.perf_counter``).
* :func:`rate`: items per second (a zero duration counts as 1 ns, never a division by zero).
* :func:`speedup`: ``baseline_seconds / seconds``; :func:`rate_ratio`: ``rate / baseline_rate``.
  Both read the same way: above 1, the measured side is faster than its baseline.
  :func:`time_ratio`: ``seconds / baseline_seconds``, for the figures that compare latencies (a
  p99 against a baseline's p99, or against its own p50): below 1, the measured side takes less time.
* :func:`median` and :func:`percentiles`: percentiles by linear interpolation between the order
  statistics (NumPy's default, "type 7"): ``p`` of ``n`` sorted values sits at rank
  ``p / 100 * (n - 1)``; the median is ``p50``.
* :func:`race`: contenders run alternately, in a rotating order, ``reps`` times each after one
  warm-up, so a noisy neighbour on a shared machine slows every side of a ratio alike;
  :func:`paired_speedup`, :func:`paired_time_ratio` and :func:`paired_rate_ratio` are the median
  of the per-repetition ratios (where a ratio of two medians would let one slow repetition of
  one side move the result).

Examples
--------
>>> percentiles([4.0, 1.0, 3.0, 2.0, 5.0], (50, 75))
{'p50': 3.0, 'p75': 4.0}
>>> speedup(0.5, baseline_seconds=2.0), rate_ratio(300.0, baseline_rate=100.0)
(4.0, 3.0)
>>> paired_speedup([1.0, 2.0, 1.0], baseline_seconds=[2.0, 2.0, 3.0])
2.0
>>> time_ratio(0.5, baseline_seconds=2.0), paired_time_ratio([1.0, 2.0, 1.0], [2.0, 2.0, 4.0])
(0.25, 0.5)
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import numpy as np

from streamrec.errors import InvalidInputError

__all__ = [
    "median",
    "paired_rate_ratio",
    "paired_speedup",
    "paired_time_ratio",
    "percentiles",
    "race",
    "rate",
    "rate_ratio",
    "seconds",
    "speedup",
    "time_ratio",
    "timed",
]

T = TypeVar("T")
_TINY = 1e-9  # the shortest duration a rate divides by


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """``fn()``'s result and the wall seconds it took."""
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def seconds(fn: Callable[[], Any]) -> float:
    """Wall seconds of one call of ``fn``."""
    return timed(fn)[1]


def rate(count: float, seconds: float) -> float:
    """``count`` items in ``seconds``, per second."""
    return count / max(seconds, _TINY)


def speedup(seconds: float, baseline_seconds: float) -> float:
    """How many times faster than its baseline a measured side is, from the two durations."""
    return baseline_seconds / max(seconds, _TINY)


def rate_ratio(rate: float, baseline_rate: float) -> float:
    """How many times faster than its baseline a measured side is, from the two rates."""
    return rate / baseline_rate


def time_ratio(seconds: float, baseline_seconds: float) -> float:
    """How many times its baseline's time (or latency) a measured side takes: below 1, it is faster."""
    return seconds / max(baseline_seconds, _TINY)


def _values(xs: Iterable[float], what: str) -> np.ndarray:
    arr = np.asarray(list(xs), dtype=np.float64)
    if arr.size == 0:
        raise InvalidInputError(what, [], "needs at least one measurement")
    return arr


def median(xs: Iterable[float]) -> float:
    """The median (the mean of the two middle values of an even count)."""
    return float(np.median(_values(xs, "median")))


def percentiles(xs: Iterable[float], qs: Sequence[float] = (50, 99)) -> dict[str, float]:
    """``{"p50": ..., "p99": ...}``: each percentile in ``qs`` (0..100) by linear interpolation."""
    arr = _values(xs, "percentiles")
    for q in qs:
        if not 0 <= q <= 100:
            raise InvalidInputError("percentiles", q, "a percentile is in [0, 100]")
    got = np.percentile(arr, list(qs))
    return {f"p{q:g}": float(v) for q, v in zip(qs, got, strict=True)}


def race(
    contenders: dict[str, Callable[[], Any]],
    reps: int,
    *,
    collect: bool = True,
    sync: Callable[[], Any] | None = None,
) -> dict[str, list[float]]:
    """Seconds of each contender in each of ``reps`` repetitions, run alternately after one warm-up each.

    Repetition ``r`` starts at contender ``r mod len(contenders)`` (a rotating order, so none always
    runs first after the warm-up); ``collect`` runs the garbage collector before every timed call.
    ``sync`` (e.g. ``torch.cuda.synchronize``) is called before the clock starts and again before it
    stops, so a timed call's asynchronous work (GPU kernels it queued) is inside its time and no one
    else's is.
    """
    if reps < 1:
        raise InvalidInputError("reps", reps, "must be at least 1")
    for fn in contenders.values():
        fn()
    names = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(reps):
        for i in range(len(names)):
            name = names[(r + i) % len(names)]
            if collect:
                gc.collect()
            times[name].append(_synced_seconds(contenders[name], sync))
    return times


def _synced_seconds(fn: Callable[[], Any], sync: Callable[[], Any] | None) -> float:
    if sync is None:
        return seconds(fn)
    sync()
    started = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - started


def _paired(
    ratio: Callable[[float, float], float], xs: Sequence[float], baselines: Sequence[float], what: str
) -> float:
    if len(xs) != len(baselines):
        raise InvalidInputError(what, len(baselines), f"expected {len(xs)} repetitions")
    return median(ratio(x, b) for x, b in zip(xs, baselines, strict=True))


def paired_speedup(seconds: Sequence[float], baseline_seconds: Sequence[float]) -> float:
    """The median over repetitions of ``baseline / measured`` (pairs timed side by side, as by :func:`race`)."""
    return _paired(speedup, seconds, baseline_seconds, "baseline_seconds")


def paired_time_ratio(seconds: Sequence[float], baseline_seconds: Sequence[float]) -> float:
    """The median over repetitions of ``measured / baseline`` seconds: :func:`time_ratio`, paired."""
    return _paired(time_ratio, seconds, baseline_seconds, "baseline_seconds")


def paired_rate_ratio(rates: Sequence[float], baseline_rates: Sequence[float]) -> float:
    """The median over repetitions of ``rate / baseline_rate``: :func:`rate_ratio`, paired."""
    return _paired(rate_ratio, rates, baseline_rates, "baseline_rates")
