"""Brute-force reference for profile queries: recomputes every feature from the raw events.

Independent of the store's code: it walks the events one by one with plain Python, applying the
counter rule, the window rounding rule and the reduce functions as ``docs/profiles.md`` states
them.
"""

from __future__ import annotations

import math
from typing import Any

NAN = float("nan")


def tier_bounds(tiers: list[tuple[float, float | None]], now: float) -> list[float]:
    return [math.floor((now - tiers[k][1]) / tiers[k + 1][0]) * tiers[k + 1][0] for k in range(len(tiers) - 1)]


def window_start(tiers: list[tuple[float, float | None]], start: float, now: float) -> float:
    bounds = tier_bounds(tiers, now)
    width = tiers[-1][0]
    for k, b in enumerate(bounds):
        if start >= b:
            width = tiers[k][0]
            break
    return math.floor(start / width) * width


def counter_values(slot: dict[str, Any], event: dict[str, Any]) -> dict[str, float]:
    out = {}
    for c in slot["counters"]:
        if c in event.get("counters", {}):
            out[c] = float(event["counters"][c])
        elif event["action"] == c or (c == "count" and "count" not in event.get("counters", {})):
            out[c] = 1.0
    return out


def field(event: dict[str, Any], name: str) -> str | None:
    if name in ("user", "item", "action"):
        return event[name]
    return event.get("attributes", {}).get(name)


def reduce_all(fn: str, items: list[tuple[float, int, float]]) -> float:
    """items: (time, arrival, value) of the events that set the counter."""
    if fn == "sum":
        return float(sum(v for _, _, v in items))
    if not items:
        return NAN
    if fn == "max":
        return max(v for _, _, v in items)
    if fn == "min":
        return min(v for _, _, v in items)
    if fn == "last":
        return max(items)[2]
    if fn == "first":
        return min(items)[2]
    raise ValueError(fn)


def expected(
    events: list[dict[str, Any]],
    slots: dict[str, dict[str, Any]],
    tiers: list[tuple[float, float | None]],
    entity: str,
    feature: dict[str, Any],
    now: float,
) -> tuple[list[str] | None, list[list[float]]]:
    """(values or None, data) of one feature for one entity label, as the store should answer."""
    slot = slots[feature["slot"]]
    etype, eid = entity.split(":", 1)
    start = feature["since"] if feature.get("since") is not None else now - feature["window_s"]
    ws = window_start(tiers, start, now)
    w0 = tiers[0][0]
    per_value: dict[str, dict[str, list]] = {}
    for arrival, ev in enumerate(events):
        if slot.get("actions") is not None and ev["action"] not in slot["actions"]:
            continue
        if slot["entity"] != etype or field(ev, slot["entity"]) != eid:
            continue
        value = field(ev, slot["value"])
        if not value:
            continue
        cv = counter_values(slot, ev)
        if not cv:
            continue
        t = ev["time"]
        if t < ws or math.floor(t / w0) * w0 > now:
            continue
        if feature.get("values") is not None and value not in feature["values"]:
            continue
        d = per_value.setdefault(value, {c: [] for c in slot["counters"]})
        for c, x in cv.items():
            d[c].append((t, arrival, x))
    reduces = {c: slot.get("reduce", {}).get(c, "sum") for c in slot["counters"]}

    def counters_of(lists: dict[str, list]) -> dict[str, float]:
        return {c: reduce_all(reduces[c], lists[c]) for c in slot["counters"]}

    def ratio(cs: dict[str, float]) -> float:
        n, d = cs[feature["numerator"]], cs[feature["denominator"]]
        n = 0.0 if math.isnan(n) else n
        d = (0.0 if math.isnan(d) else d) + feature.get("beta", 0.0)
        return (n + feature.get("alpha", 0.0)) / d if d != 0 else 0.0

    agg = feature.get("agg", "counters")
    cols = feature.get("counters") or slot["counters"]
    if agg == "distinct":
        return None, [[float(len(per_value))]]
    if not feature.get("top_k"):
        merged = {c: [x for d in per_value.values() for x in d[c]] for c in slot["counters"]}
        cs = counters_of(merged)
        if agg == "ratio":
            return None, [[ratio(cs)]]
        return None, [[cs[c] for c in cols]]
    rows = []
    by = feature.get("by") or (feature["numerator"] if agg == "ratio" else cols[0])
    for value, lists in per_value.items():
        cs = counters_of(lists)
        score = ratio(cs) if by == "ratio" else cs[by]
        score = -math.inf if math.isnan(score) else score
        rows.append((-score, value, [ratio(cs)] if agg == "ratio" else [cs[c] for c in cols]))
    rows.sort(key=lambda r: (r[0], r[1]))
    rows = rows[: feature["top_k"]]
    return [r[1] for r in rows], [r[2] for r in rows]
