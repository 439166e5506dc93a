"""Brute-force reference joiners the tests compare the real joiner with.

They restate the join semantics of ``docs/joiner.md`` per impression, with no state machine, no
LMDB, no buffering: for each impression they look at *all* the actions and ask which ones count.

* :func:`offline_join` ignores arrival order entirely. It is the answer whenever each topic is out
  of event-time order by at most the allowed lateness and the input is drained at the end.
* :func:`arrival_join` replays the exact arrival schedule (which records came in which step, and
  which topics were caught up) to know when each window closed, then decides each impression from
  the list of actions that had arrived by then. It is the answer for arbitrarily late input.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from streamrec.records import ActionEvent, Impression

POSITIVE = frozenset({"click", "like", "share", "purchase"})


def keep(request_id: str, item: str, rate: float) -> bool:
    """The sampling rule, restated: BLAKE2b-64 of ``request_id \\x1f item`` below ``rate * 2**64``."""
    h = int.from_bytes(hashlib.blake2b(f"{request_id}\x1f{item}".encode(), digest_size=8).digest(), "big")
    return rate >= 1.0 or h / 2**64 < rate


@dataclass(frozen=True)
class Expected:
    label: float
    sample_rate: float
    times: frozenset[float]  # acceptable example times (any matching action's, or the deadline)


def _matches(imp: Impression, act: ActionEvent, window: float, lateness: float) -> bool:
    return (
        act.request_id == imp.request_id
        and act.item == imp.item
        and act.action in POSITIVE
        and imp.time - lateness <= act.time <= imp.time + window
    )


def offline_join(
    impressions: list[Impression], actions: list[ActionEvent], *, window: float, lateness: float, rate: float
) -> dict[tuple[str, str], Expected]:
    """Every distinct impression, labelled by whether any matching action exists at all."""
    out: dict[tuple[str, str], Expected] = {}
    for imp in impressions:
        key = (imp.request_id, imp.item)
        if key in out:
            continue
        hits = frozenset(a.time for a in actions if _matches(imp, a, window, lateness))
        if hits:
            out[key] = Expected(1.0, 1.0, hits)
        elif keep(imp.request_id, imp.item, rate):
            out[key] = Expected(0.0, rate, frozenset({imp.time + window}))
    return out


@dataclass
class Step:
    impressions: list[Impression]
    actions: list[ActionEvent]
    caught_up: tuple[bool, bool] = (False, False)
    drain: bool = False


def arrival_join(
    steps: list[Step], *, window: float, lateness: float, rate: float
) -> dict[tuple[str, str], tuple[float, float, float]]:
    """``(label, sample_rate, time)`` per impression key, for this exact arrival schedule."""
    # The watermark before and after each step, straight from its definition.
    before, after = [], []
    wm, max_i, max_a = float("-inf"), float("-inf"), float("-inf")
    for step in steps:
        before.append(wm)
        max_i = max([max_i] + [i.time for i in step.impressions])
        max_a = max([max_a] + [a.time for a in step.actions])
        holding = [m for m, idle in zip((max_i, max_a), step.caught_up, strict=True) if not idle]
        front = min(holding) if holding else max(max_i, max_a)
        wm = float("inf") if step.drain else max(wm, front - lateness)
        after.append(wm)
    arrivals = [(s, a) for s, step in enumerate(steps) for a in step.actions]  # in arrival order
    first: dict[tuple[str, str], tuple[int, Impression]] = {}
    for s, step in enumerate(steps):
        for imp in step.impressions:
            first.setdefault((imp.request_id, imp.item), (s, imp))
    out: dict[tuple[str, str], tuple[float, float, float]] = {}
    for key, (s_i, imp) in first.items():
        deadline = imp.time + window
        if deadline < before[s_i]:
            continue  # arrived after its window closed
        closed = next((s for s in range(s_i, len(steps)) if after[s] > deadline), None)
        last = closed if closed is not None else len(steps) - 1
        hits = [(s, a) for s, a in arrivals if s <= last and _matches(imp, a, window, lateness)]
        early = [a.time for s, a in hits if s < s_i]
        if early:
            out[key] = (1.0, 1.0, min(early))
        elif hits:
            out[key] = (1.0, 1.0, hits[0][1].time)
        elif closed is not None and keep(imp.request_id, imp.item, rate):
            out[key] = (0.0, rate, deadline)
    return out
