"""Reduce functions: how two values of one counter combine.

Compaction (minute slices into an hour), the merge of the write table into the read table and the
aggregation of a window all combine counter values with the counter's reduce. The hot kernels
(``slices.py``, ``query.py``) are Numba code that switch on a small integer *code*, so every reduce
is a registry entry with a code, an identity (the value of "nothing seen") and a NumPy ufunc used by
the non-Numba paths and by custom reduces.

Built in: ``sum`` (identity 0), ``max`` and ``min`` (identity NaN: a counter never seen stays NaN,
and NaN is ignored when combining), and ``last`` (the value of the latest event, ordered by event
time then arrival; the store keeps a hidden time column beside each ``last`` counter).

:func:`register_reduce` adds a reduce built from any commutative, associative binary NumPy ufunc
(say ``np.logaddexp``); it gets the next code and runs through the same kernels, which call back
into NumPy for codes they do not know — slower, but exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["REDUCE_LAST", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_SUM", "Reduce", "known_reduces", "register_reduce"]

REDUCE_SUM = 0
REDUCE_MAX = 1
REDUCE_MIN = 2
REDUCE_LAST = 3


@dataclass(frozen=True)
class Reduce:
    """A registered reduce function.

    Attributes
    ----------
    name: the name used in config (``reduce = { dwell_ms = "max" }``) and in SQL (``max(dwell_ms)``).
    code: small integer the Numba kernels switch on.
    identity: the value of a counter that saw nothing (0 for sums, NaN otherwise).
    ufunc: NumPy binary ufunc combining two values (NaN-ignoring for max/min); ``None`` for ``last``.
    """

    name: str
    code: int
    identity: float
    ufunc: np.ufunc | None


_REGISTRY: dict[str, Reduce] = {
    "sum": Reduce("sum", REDUCE_SUM, 0.0, np.add),
    "max": Reduce("max", REDUCE_MAX, float("nan"), np.fmax),
    "min": Reduce("min", REDUCE_MIN, float("nan"), np.fmin),
    "last": Reduce("last", REDUCE_LAST, float("nan"), None),
}


def known_reduces() -> dict[str, Reduce]:
    """Name -> :class:`Reduce` of every registered reduce function."""
    return _REGISTRY


def get_reduce(name: str) -> Reduce:
    """The reduce called ``name``; ``KeyError`` if none."""
    return _REGISTRY[name]


def register_reduce(name: str, ufunc: np.ufunc, identity: float) -> Reduce:
    """Register a reduce built from a commutative, associative binary ufunc.

    Examples
    --------
    >>> import numpy as np
    >>> r = register_reduce("logsumexp", np.logaddexp, float("-inf"))
    >>> r.code >= 4
    True
    """
    if name in _REGISTRY:
        existing = _REGISTRY[name]
        if existing.ufunc is ufunc and (existing.identity == identity or np.isnan(identity)):
            return existing
        raise ValueError(f"reduce {name!r} is already registered")
    if not isinstance(ufunc, np.ufunc) or ufunc.nin != 2:
        raise ValueError(f"reduce {name!r}: need a binary numpy ufunc, got {ufunc!r}")
    entry = Reduce(name, max(r.code for r in _REGISTRY.values()) + 1, float(identity), ufunc)
    _REGISTRY[name] = entry
    return entry


def reduce_by_code(code: int) -> Reduce:
    """The :class:`Reduce` with ``code``."""
    for entry in _REGISTRY.values():
        if entry.code == code:
            return entry
    raise KeyError(code)
