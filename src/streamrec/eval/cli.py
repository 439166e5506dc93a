"""``streamrec eval collisions|online|recommend``: run the experiments, print a table (PNG plots, --json).

The commands are module-level functions on ``eval_app``, which ``register`` attaches. Every
command sets torch's (and Numba's) thread count (``--threads``, default 1), as ``serve`` and
``train online`` do: on a shared machine torch's default of one thread per core made the same
``eval collisions`` take 369 s instead of 8 s next to one busy process.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

eval_app = typer.Typer(help="Experiments on real data: the Monolith paper's, and top-k recommendation quality.")

THREADS_HELP = "torch (and Numba) intra-op threads (0: the libraries' default, one per core)."


def set_threads(threads: int) -> None:
    """Pin torch's and Numba's thread pools (Numba's OpenMP pool would reset torch's when it starts)."""
    if threads <= 0:
        return
    import numba
    import torch

    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(threads)


@eval_app.command("collisions")
def eval_collisions(
    data: list[str] = typer.Option(["ml-100k", "criteo-sample"], help="Data sets or paths (repeatable)."),
    epochs: int = typer.Option(4, min=1),
    out: Path = typer.Option(Path("runs/eval"), help="Folder for the PNG plots."),
    seed: int = typer.Option(0),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object: results, expectations_met."),
    threads: int = typer.Option(1, min=0, help=THREADS_HELP),
) -> None:
    """The same DeepFM on the collisionless table vs modulo-hashed tables at 1/2, 1/8, 1/32 of the ids."""
    set_threads(threads)
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
    threads: int = typer.Option(1, min=0, help=THREADS_HELP),
) -> None:
    """Batch-train on 70 % of time; progressive AUC on the rest for frozen vs sync every 1d, 1h, 10m, immediate."""
    set_threads(threads)
    from streamrec.eval.experiments import online
    from streamrec.eval.plots import plot_online

    _run("online", data, lambda ds, p: online(ds, seed=seed, progress=p), plot_online, out, as_json)


@eval_app.command("recommend")
def eval_recommend(
    data: list[str] = typer.Option(["ml-100k"], help="Data sets or paths in event order (repeatable)."),
    k: str = typer.Option("10,50", "--k", help="Cut-offs, comma separated."),
    label: str | None = typer.Option(
        None, help="CSV/Parquet: the label, e.g. 'rating>=4' or 'behavior in (buy,cart)'."
    ),
    time: str | None = typer.Option(None, help="CSV/Parquet: the event-time column (unix seconds)."),
    slots: str | None = typer.Option(None, help="CSV/Parquet: the feature columns, comma separated."),
    user_slot: str | None = typer.Option(None, help="The slot that identifies users (default: user; Criteo: C3)."),
    item_slot: str | None = typer.Option(None, help="The slot that identifies items (default: item; Criteo: C15)."),
    test_fraction: float = typer.Option(0.2, min=0.01, max=0.9, help="Last part of the log held out."),
    step: int | None = typer.Option(
        None, min=1, help="Prequential: rows per step, learned after they are predicted (default: a tenth of the part)."
    ),
    retrieval_epochs: int = typer.Option(8, min=1, help="Batch-stage epochs of the retrieval model."),
    ranker_epochs: int = typer.Option(1, min=1, help="Batch-stage epochs of the ranker."),
    prequential: bool = typer.Option(True, help="Also replay the held-out part prequentially."),
    seed: int = typer.Option(0),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object: results, expectations_met."),
    threads: int = typer.Option(1, min=0, help=THREADS_HELP),
) -> None:
    """Top-k quality of the whole recommender, each source, the retrieval model, vs popularity and random."""
    import warnings

    from rich.console import Console
    from rich.table import Table

    from streamrec.datasets.resolve import load_dataset
    from streamrec.errors import InvalidInputError
    from streamrec.eval.recommend import RecommendConfig, recommend, recommend_expectations

    set_threads(threads)
    warnings.filterwarnings("ignore", message="Sparse invariant checks")
    try:
        ks = tuple(sorted({int(x) for x in k.split(",") if x.strip()}))
    except ValueError:
        raise InvalidInputError("--k", k, "expected comma-separated integers such as 10,50") from None
    if not ks or min(ks) < 1:
        raise InvalidInputError("--k", k, "cut-offs must be integers >= 1")
    cfg = RecommendConfig(ks=ks, test_fraction=test_fraction, step=step, retrieval_epochs=retrieval_epochs,
                          ranker_epochs=ranker_epochs, prequential=prequential, seed=seed)  # fmt: skip
    slot_list = [s.strip() for s in slots.split(",") if s.strip()] if slots else None
    console = Console(stderr=True)
    rows, notes = [], []
    with console.status("eval recommend") as status:
        for spec in data:
            dataset = load_dataset(spec, label=label, time=time, slots=slot_list)
            notes += [f"{dataset.name}: {w}" for w in dataset.warnings]
            criteo = dataset.kind == "criteo"
            user = user_slot or ("C3" if criteo else "user")
            item = item_slot or ("C15" if criteo else "item")
            rows += recommend(dataset, cfg, user, item, status.update)
    met = recommend_expectations(rows)
    if as_json:
        print(json.dumps({"results": [r.as_dict() for r in rows], "expectations_met": met, "warnings": notes}))
        return
    out = Console(width=max(Console().width, 150))  # ten columns: a narrower console cuts the names
    for name, variant in dict.fromkeys((r.dataset, r.variant) for r in rows):
        table = Table(title=f"streamrec eval recommend · {name} · {variant}")
        for col in ("group", "method", "k", "recall", "95% CI", "NDCG", "95% CI ", "hit", "coverage", "users"):
            table.add_column(col, justify="left" if col in ("group", "method") else "right")
        for r in rows:
            if (r.dataset, r.variant) != (name, variant):
                continue
            s = r.scores
            table.add_row(r.group, r.method, str(r.k), f"{s.recall:.4f}", f"{s.recall_ci[0]:.4f}-{s.recall_ci[1]:.4f}",
                          f"{s.ndcg:.4f}", f"{s.ndcg_ci[0]:.4f}-{s.ndcg_ci[1]:.4f}", f"{s.hit:.4f}",
                          f"{s.coverage:.4f}", str(s.users))  # fmt: skip
        out.print(table)
    for name, ok in met.items():
        out.print(f"{'[green]held[/]' if ok else '[red]did not hold[/]'}: {name}")
    for note in notes:
        out.print(f"[yellow]warning[/]: {note}")


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Attach ``streamrec eval collisions|online|recommend``."""
    app.add_typer(eval_app, name="eval")


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
