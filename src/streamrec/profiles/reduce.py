"""Reduce functions: how two values of one counter combine.

Compaction (minute slices into an hour), the merge of the write table into the read table and the
aggregation of a window all combine counter values with the counter's reduce. The hot kernels
(``slices.combine_row``, used by the merge and the query kernels) are Numba code that switch on a
small integer *code*, so a reduce is a registry entry (name, code, identity) plus one branch in
``combine_row``. Adding a reduce is exactly that: one entry in ``_REGISTRY`` and one branch, and
every path (merge, compaction, query, SQL) gets it. A reduce must be commutative and
associative, or order-defined by the hidden time column as ``last``/``first`` are, because
slices are combined in whatever order compaction meets them.

Built in: ``sum`` (identity 0), ``max`` and ``min`` (identity NaN: a counter never set stays NaN
and NaN is ignored when combining), ``last`` and ``first`` (the value of the latest / earliest
event, by event time, ties to the later / earlier arrival; the store keeps a hidden time column
beside each such counter).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "REDUCE_FIRST",
    "REDUCE_LAST",
    "REDUCE_MAX",
    "REDUCE_MIN",
    "REDUCE_SUM",
    "Reduce",
    "get_reduce",
    "known_reduces",
]

REDUCE_SUM = 0
REDUCE_MAX = 1
REDUCE_MIN = 2
REDUCE_LAST = 3
REDUCE_FIRST = 4
TIMED = (REDUCE_LAST, REDUCE_FIRST)  # reduces that keep a hidden event-time column


@dataclass(frozen=True)
class Reduce:
    """A registered reduce function.

    Attributes
    ----------
    name: the name used in config (``reduce = { dwell_ms = "max" }``) and in SQL (``max(dwell_ms)``).
    code: the integer ``slices.combine_row`` switches on.
    identity: the value of a counter that saw nothing (0 for sums, NaN otherwise).
    """

    name: str
    code: int
    identity: float

    @property
    def timed(self) -> bool:
        """Whether the reduce needs the event time of each value (``last``, ``first``)."""
        return self.code in TIMED


_REGISTRY: dict[str, Reduce] = {
    "sum": Reduce("sum", REDUCE_SUM, 0.0),
    "max": Reduce("max", REDUCE_MAX, float("nan")),
    "min": Reduce("min", REDUCE_MIN, float("nan")),
    "last": Reduce("last", REDUCE_LAST, float("nan")),
    "first": Reduce("first", REDUCE_FIRST, float("nan")),
}


def known_reduces() -> dict[str, Reduce]:
    """Name -> :class:`Reduce` of every registered reduce function."""
    return _REGISTRY


def get_reduce(name: str) -> Reduce:
    """The reduce called ``name``; ``KeyError`` if none."""
    return _REGISTRY[name]
