"""``streamrec eval collisions|online``: run the paper's experiments, print a table, write PNG plots."""

from __future__ import annotations

import json
from pathlib import Path

import typer

eval_app = typer.Typer(help="The Monolith paper's experiments on real data (tables, PNG plots, --json).")


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    app.add_typer(eval_app, name="eval")


@eval_app.command("collisions")
def eval_collisions(
    data: list[str] = typer.Option(["ml-100k", "criteo-sample"], help="Data sets or paths (repeatable)."),
    epochs: int = typer.Option(4, min=1),
    out: Path = typer.Option(Path("runs/eval"), help="Folder for the PNG plots."),
    seed: int = typer.Option(0),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object: results, expectations_met."),
) -> None:
    """The same DeepFM on the collisionless table vs modulo-hashed tables at 1/2, 1/8, 1/32 of the ids."""
    from streamrec.eval.experiments import collisions
    from streamrec.eval.plots import plot_collisions

    def run(dataset, progress):
        return collisions(dataset, epochs=epochs, seed=seed, progress=progress)

    _run("collisions", data, run, plot_collisions, out, as_json)


@eval_app.command("online")
def eval_online(
    data: list[str] = typer.Option(["ml-100k", "criteo-sample"], help="Data sets or paths with event times."),
    out: Path = typer.Option(Path("runs/eval"), help="Folder for the PNG plots."),
    seed: int = typer.Option(0),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object: results, expectations_met."),
) -> None:
    """Batch-train on 70 % of time; progressive AUC on the rest for frozen vs sync every 1d, 1h, 10m, immediate."""
    from streamrec.eval.experiments import online
    from streamrec.eval.plots import plot_online

    _run("online", data, lambda ds, p: online(ds, seed=seed, progress=p), plot_online, out, as_json)


def _run(experiment: str, data: list[str], run, plot, out: Path, as_json: bool) -> None:
    import warnings

    from rich.console import Console
    from rich.table import Table

    from streamrec.datasets.resolve import load_dataset
    from streamrec.eval.experiments import expectations

    warnings.filterwarnings("ignore", message="Sparse invariant checks")  # torch Adagrad on the hashed baseline
    console = Console(stderr=True)
    results, skipped = [], {}
    with console.status(f"eval {experiment}") as status:
        for spec in data:
            dataset = load_dataset(spec)
            if experiment == "online" and not dataset.has_time:
                skipped[dataset.name] = "the format has no event times, so sync intervals of event time do not apply"
                continue
            results += run(dataset, status.update)
    out.mkdir(parents=True, exist_ok=True)
    plots = [str(p) for p in plot(results, out)]
    met = expectations(results)
    if as_json:
        print(json.dumps({"results": [r.as_dict() for r in results], "expectations_met": met, "skipped": skipped,
                          "plots": plots}))  # fmt: skip
        return
    table = Table(title=f"streamrec eval {experiment}")
    for col in ("data", "variant", "epoch", "metric", "value"):
        table.add_column(col, justify="right" if col in ("epoch", "value") else "left")
    for r in results:
        table.add_row(r.dataset, r.variant, str(r.epoch or ""), r.metric, f"{r.value:.4f}")
    Console().print(table)
    for name, ok in met.items():
        Console().print(f"{'[green]held[/]' if ok else '[red]did not hold[/]'}: {name}")
    for name, why in skipped.items():
        Console().print(f"skipped {name}: {why}")
    Console().print(f"plots: {', '.join(plots)}")
