"""``streamrec bench joiner``: what durability costs the join, measured side by side.

The join state machine is per-event Python over LMDB (a hash lookup per record, one write
transaction per batch). The baseline is the same join in plain dicts and a heap, with no
durability: the ratio says what the crash-safe state costs. A third number runs the whole joiner
over an SQLite log (decode, join, outbox, append, commit) for the end-to-end rate.
"""

from __future__ import annotations

import json
import random
import tempfile
from typing import Any

from streamrec.benchutil import rate, speedup, timed
from streamrec.joiner.baselines import dict_join
from streamrec.joiner.config import JoinConfig
from streamrec.records import ActionEvent, Impression

__all__ = ["make_events", "run_benchmark"]


def make_events(n: int, *, ctr: float = 0.1, seed: int = 0) -> tuple[list[Impression], list[ActionEvent]]:
    """``n`` impressions (10 per request, one per 0.01 s, 3 sparse slots) and their clicks."""
    rng = random.Random(seed)
    imps: list[Impression] = []
    acts: list[ActionEvent] = []
    for k in range(n):
        t = k * 0.01
        req, item = f"r{k // 10}", f"i{rng.randrange(100_000)}"
        imps.append(
            Impression(
                request_id=req,
                user=f"u{k // 10 % 5000}",
                item=item,
                time=t,
                sparse={"user": [k // 10 % 5000], "item": [int(item[1:])], "hour": [int(t // 3600)]},
                dense=[0.5, 1.0],
                position=k % 10,
            )
        )
        if rng.random() < ctr:
            acts.append(ActionEvent(user="u", item=item, action="click", time=t + rng.uniform(0, 30), request_id=req))
    acts.sort(key=lambda a: a.time)
    return imps, acts


def _steps(
    imps: list[Impression], acts: list[ActionEvent], batch: int
) -> list[tuple[list[Impression], list[ActionEvent]]]:
    """Cut both topics at the same event times, ``batch`` impressions per step."""
    steps, a = [], 0
    for start in range(0, len(imps), batch):
        chunk = imps[start : start + batch]
        end = a
        while end < len(acts) and (start + batch >= len(imps) or acts[end].time < imps[start + batch].time):
            end += 1
        steps.append((chunk, acts[a:end]))
        a = end
    return steps


def _state_join(steps: list[tuple[list[Impression], list[ActionEvent]]], config: JoinConfig) -> int:
    from streamrec.joiner.state import JoinState

    n = 0
    with tempfile.TemporaryDirectory() as tmp, JoinState(tmp, config) as state:
        for ib, ab in steps:
            n += len(state.step(ib, ab, caught_up=(False, True)))
        n += len(state.step([], [], drain=True))
    return n


def _log_join(imps: list[Impression], acts: list[ActionEvent], config: JoinConfig) -> int:
    from streamrec.joiner.runner import Joiner
    from streamrec.log import open_log

    with tempfile.TemporaryDirectory() as tmp, open_log(f"sqlite://{tmp}/log.db") as log:
        for start in range(0, len(imps), 10_000):
            log.append("impressions", imps[start : start + 10_000], key="user")
        for start in range(0, len(acts), 10_000):
            log.append("actions", acts[start : start + 10_000], key="user")

        def join() -> int:
            with Joiner(log, f"{tmp}/state", config) as joiner:
                return joiner.run(once=True, drain=True).examples

        return timed(join)  # type: ignore[return-value]


def run_benchmark(events: int = 200_000, *, as_json: bool = False, batch: int = 1000) -> dict[str, Any]:
    """Time the three joins on the same events; print and return the results."""
    config = JoinConfig(window_s=60.0, allowed_lateness_s=30.0, negative_rate=0.1, batch_size=batch)
    imps, acts = make_events(events)
    steps = _steps(imps, acts, batch)
    total = len(imps) + len(acts)
    base_n, base_s = timed(lambda: len(dict_join(steps, config)))
    state_n, state_s = timed(lambda: _state_join(steps, config))
    log_n, log_s = _log_join(imps, acts, config)
    ratios = {"lmdb_state_vs_dict": speedup(state_s, base_s), "sqlite_joiner_vs_dict": speedup(log_s, base_s)}
    result = {
        "events": total,
        "examples": state_n,
        "dict_join_events_per_s": rate(total, base_s),
        "lmdb_state_events_per_s": rate(total, state_s),
        "sqlite_joiner_events_per_s": rate(total, log_s),
        "ratios": ratios,
        "examples_baseline": base_n,
        "examples_sqlite_joiner": log_n,
        "same_examples": base_n == state_n == log_n,
    }
    if as_json:
        print(json.dumps(result))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"joiner: {total} events ({len(imps)} impressions, {len(acts)} actions)")
        for col in ("join", "events/s", "vs dict"):
            table.add_column(col, justify="right" if col != "join" else "left")
        table.add_row("in-memory dict (baseline, not durable)", f"{result['dict_join_events_per_s']:,.0f}", "1.00")
        table.add_row(
            "JoinState on LMDB (durable)",
            f"{result['lmdb_state_events_per_s']:,.0f}",
            f"{ratios['lmdb_state_vs_dict']:.2f}",
        )
        table.add_row(
            "Joiner over SQLite log (end to end)",
            f"{result['sqlite_joiner_events_per_s']:,.0f}",
            f"{ratios['sqlite_joiner_vs_dict']:.2f}",
        )
        Console().print(table)
        print(f"examples: {state_n} (baseline {base_n}, end to end {log_n})")
    return result
