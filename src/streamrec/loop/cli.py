"""``streamrec demo`` (the loop): live progress while the arms run, then the summary and the report.

Kept apart from :mod:`streamrec.loop.run` so the loop is usable from Python without rich or typer,
and the progress line is only a view of the ``on_tick`` dictionaries the loop hands out.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from streamrec.loop.report import print_summary, write_report
from streamrec.loop.run import LoopConfig, run_loop

__all__ = ["run_demo_loop"]


def _line(tick: dict) -> str:
    ctr = "  ".join(f"{arm} {100 * c:.2f}%" for arm, c in tick["ctr"].items())
    auc = "n/a" if math.isnan(tick["auc"]) else f"{tick['auc']:.3f}"
    lag = "n/a" if math.isnan(tick["sync_lag_s"]) else f"{tick['sync_lag_s']:.0f}s"
    return (
        f"sim {tick['sim_minutes']:5.1f} min | {tick['events_per_s']:6.0f} events/s | CTR {ctr} | "
        f"online AUC {auc} | sync lag {lag} (sim) | updates {tick['syncs']}"
    )


def run_demo_loop(cfg: LoopConfig, out: Path, as_json: bool = False) -> dict:
    """Run the loop with a live status line (stderr under ``--json``); returns the summary."""
    from rich.console import Console

    console = Console(stderr=as_json)
    with console.status("warming up (history, popularity traffic, batch DeepFM)...") as status:
        result = run_loop(cfg, out, say=console.print, on_tick=lambda tick: status.update(_line(tick)))
    paths = write_report(result, out)
    print_summary(console, result.summary)
    console.print(f"report: {paths['html']} (plots {paths['ctr'].name}, {paths['auc'].name})")
    if as_json:
        print(json.dumps(result.summary, default=str))
    return result.summary
