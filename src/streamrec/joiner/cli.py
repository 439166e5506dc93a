"""Commands of the joiner part: ``streamrec joiner`` and ``streamrec bench joiner``.

The command is a thin shell over :class:`streamrec.joiner.Joiner`: parse durations, build the
config, run until interrupted (or ``--once`` / ``--max-seconds``), print progress to stderr and a
summary (a table, or one JSON object with ``--json``) to stdout.
"""

from __future__ import annotations

import json
import sys

import typer


def joiner_command(
    log: str = typer.Option(..., "--log", help="Event log URL: sqlite:///path.db or redis://host:port/db."),
    window: str = typer.Option("10m", "--window", help="Join window in event time (e.g. 10m, 90s)."),
    lateness: str = typer.Option("60s", "--lateness", help="Allowed out-of-order lateness per topic."),
    negative_rate: float = typer.Option(0.1, "--negative-rate", help="Fraction r of negatives kept, in (0, 1]."),
    positive_actions: str = typer.Option(
        "click,like,share,purchase", "--positive-actions", help="Comma-separated label actions."
    ),
    state_dir: str = typer.Option(
        "joiner-state", "--state-dir", help="LMDB join states (p<N>/ per partition), shared by a group's joiners."
    ),
    memory_budget: int = typer.Option(100_000, "--memory-budget", help="Waiting impressions kept in memory."),
    batch_size: int = typer.Option(1000, "--batch-size", help="Records per topic per step."),
    group: str = typer.Option(
        "joiner", "--group", help="Consumer group on the input topics; its joiner processes share the partitions."
    ),
    config_file: str | None = typer.Option(None, "--config", help="TOML file; its [joiner] section wins."),
    once: bool = typer.Option(False, "--once", help="Stop when both topics are read to the end."),
    drain: bool = typer.Option(False, "--drain", help="With --once: then close every window (end of input)."),
    max_seconds: float | None = typer.Option(None, "--max-seconds", help="Stop after this many seconds."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object of counters at the end."),
    ready_file: str | None = typer.Option(
        None, "--ready-file", help="Write this JSON file (pid, partitions) once the consumers are open."
    ),
) -> None:
    """Join impressions with actions into labelled, negative-sampled training examples."""
    from streamrec.joiner import Joiner, joiner_config, load_joiner_config

    if config_file is not None:
        config = load_joiner_config(config_file)
    else:
        config = joiner_config(
            {
                "window": window,
                "allowed_lateness": lateness,
                "negative_rate": negative_rate,
                "positive_actions": [a.strip() for a in positive_actions.split(",") if a.strip()],
                "memory_budget": memory_budget,
                "batch_size": batch_size,
            }
        )

    def progress(stats) -> None:  # type: ignore[no-untyped-def]
        print(
            f"joiner: {stats.impressions} impressions, {stats.actions} actions -> "
            f"{stats.positives} positives, {stats.negatives_kept} negatives "
            f"({stats.negatives_dropped} dropped), {stats.pending} waiting, "
            f"{stats.late_actions} late actions, watermark {stats.watermark:.1f}",
            file=sys.stderr,
            flush=True,
        )

    with Joiner(log, state_dir, config, group=group) as j:
        if ready_file is not None:
            import os
            from pathlib import Path

            target = Path(ready_file)
            temp = target.with_name(target.name + ".tmp")
            temp.write_text(json.dumps({"pid": os.getpid(), "partitions": j.assignment()}))
            os.replace(temp, target)
        stats = j.run(once=once, drain=drain, max_seconds=max_seconds, progress=None if as_json else progress)
    if as_json:
        print(json.dumps({**stats.as_dict(), "partitions": j.assignment()}, allow_nan=False))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="joiner")
        table.add_column("counter")
        table.add_column("value", justify="right")
        for name, value in stats.as_dict().items():
            table.add_row(name, f"{value:.1f}" if isinstance(value, float) else str(value))
        Console().print(table)


def bench_joiner(
    events: int = typer.Option(200_000, "--events", help="Impressions to join (actions are ~10% more)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """Durable LMDB join state vs an in-memory dict join of the same events; events/s and ratio."""
    from streamrec.joiner.bench import run_benchmark

    run_benchmark(events=events, as_json=as_json)


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Attach ``streamrec joiner`` (a command of the root: the part is one command) and ``streamrec bench joiner``."""
    app.command("joiner")(joiner_command)
    bench_app.command("joiner")(bench_joiner)
