"""The end of a demo run: the summary table (rich), PNG plots and an HTML page that embeds them.

Why static files: the report must open anywhere after the run (a browser, a CI artifact), with no
server; the PNGs are drawn with matplotlib's headless Agg backend, and the HTML only references
them and repeats the summary numbers.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

from streamrec.loop.run import ARMS, LoopResult

__all__ = ["print_summary", "write_report"]

_COLORS = {"online": "tab:green", "frozen": "tab:blue", "popularity": "tab:gray"}


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def _fmt(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def write_report(result: LoopResult, out: Path) -> dict[str, Path]:
    """Write ``ctr.png``, ``auc.png``, ``summary.json`` and ``report.html`` under ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    paths = {"ctr": out / "ctr.png", "auc": out / "auc.png", "json": out / "summary.json", "html": out / "report.html"}
    fig, ax = plt.subplots(figsize=(7, 4))
    for arm in ARMS:
        ax.plot(result.times, [100 * c for c in result.ctr[arm]], marker="o", label=arm, color=_COLORS[arm])
    if result.times:
        ax.axvspan(result.times[-1] * 2 / 3, result.times[-1], color="k", alpha=0.05, label="last third")
    ax.set(title="CTR per arm (same simulated users)", xlabel="simulated minutes", ylabel="CTR (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(paths["ctr"], dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(result.auc_times, result.auc, marker="o", color=_COLORS["online"])
    ax.set(title="online arm: progressive AUC (served score vs joined label)", xlabel="simulated minutes")
    ax.set(ylabel="AUC (cumulative)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(paths["auc"], dpi=100)
    plt.close(fig)
    paths["json"].write_text(json.dumps(result.summary, indent=2, default=str))
    paths["html"].write_text(_html(result.summary))
    return paths


def _html(s: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{arm}</td><td>{_pct(a['ctr'])}</td><td>{_pct(a['ctr_last_third'])}</td><td>{a['impressions']}</td></tr>"
        for arm, a in s["arms"].items()
    )
    o = s["online"]
    held = "held" if s["expectations_met"] else "did NOT hold"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>streamrec demo</title>
<style>body{{font-family:sans-serif;max-width:900px;margin:2em auto}}td,th{{padding:4px 12px;text-align:right}}</style>
</head><body>
<h1>streamrec demo: online vs frozen vs popularity</h1>
<p>{s["simulated_minutes"]:.1f} simulated minutes in {s["wall_seconds"]:.0f} s, seed {s["seed"]}.
Expectation online &gt; frozen &gt; popularity (CTR, last third): <b>{held}</b>.</p>
<table><tr><th>arm</th><th>CTR</th><th>CTR last third</th><th>impressions</th></tr>{rows}</table>
<p>Online model: progressive AUC {_fmt(o["auc"])} over {o["auc_examples"]} examples;
{o["examples_joined"]} examples joined, {o["examples_trained"]} trained;
{o["sparse_syncs"]} sparse + {o["dense_syncs"]} dense syncs applied by the serving model;
table sizes {html.escape(json.dumps(o["tables"]))}.</p>
<img src="ctr.png" alt="CTR per arm"><br><img src="auc.png" alt="online AUC">
</body></html>
"""


def print_summary(console: Any, s: dict[str, Any]) -> None:
    """The closing table of ``streamrec demo``."""
    from rich.table import Table

    table = Table(title="streamrec demo: three arms on the same simulated users")
    for col in ("arm", "CTR", "CTR last third", "impressions", "clicks"):
        table.add_column(col, justify="right")
    for arm, a in s["arms"].items():
        table.add_row(arm, _pct(a["ctr"]), _pct(a["ctr_last_third"]), str(a["impressions"]), str(a["clicks"]))
    console.print(table)
    o = s["online"]
    console.print(
        f"online model: AUC {_fmt(o['auc'])} ({o['auc_examples']} examples), {o['examples_joined']} joined, "
        f"{o['examples_trained']} trained, {o['sparse_syncs']} sparse / {o['dense_syncs']} dense syncs, "
        f"tables {o['tables']}"
    )
    verdict = "[green]held[/]" if s["expectations_met"] else "[red]did not hold[/]"
    console.print(f"expectation online > frozen > popularity (last third): {verdict}")
