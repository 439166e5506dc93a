"""``streamrec train batch``: the batch stage — train over history, evaluate on a later split, snapshot.

The online stage (``streamrec train online``) registers itself on the same ``train`` sub-app from
``online_cli.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

train_app = typer.Typer(help="Train ranking models: the batch stage over history, then online from the log.")


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    app.add_typer(train_app, name="train")


@train_app.command("batch")
def train_batch(
    data: str = typer.Option("ml-100k", help="ml-100k, criteo-sample, or a path (MovieLens, Criteo, CSV, Parquet)."),
    model: str = typer.Option("deepfm", help="deepfm, dcnv2 or two_tower."),
    epochs: int = typer.Option(1, min=1, help="Passes over the training part, in time order."),
    batch_size: int = typer.Option(512, min=1),
    test_fraction: float = typer.Option(0.2, min=0.01, max=0.9, help="Last part of time held out for evaluation."),
    out: Path = typer.Option(Path("runs/batch.npz"), help="Snapshot to write (tables, dense, optimizer, config)."),
    config: Path | None = typer.Option(None, help="TOML with [embedding], [model], [train] sections."),
    seed: int = typer.Option(0),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object with the results."),
) -> None:
    """Train over historical examples with progress, evaluate AUC/log loss on a later split, snapshot."""
    summary = run_batch(data, model, epochs, batch_size, test_fraction, out, config, seed, quiet=as_json)
    if as_json:
        print(json.dumps(summary))


def run_batch(
    data: str,
    model_kind: str = "deepfm",
    epochs: int = 1,
    batch_size: int = 512,
    test_fraction: float = 0.2,
    out: Path | None = None,
    config: Path | None = None,
    seed: int = 0,
    quiet: bool = False,
) -> dict:
    import time

    import torch
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from streamrec.datasets.resolve import load_dataset
    from streamrec.embedding import EmbeddingCollection
    from streamrec.models import build_model
    from streamrec.training.defaults import configs_for, split_for
    from streamrec.training.snapshot import save_trainer
    from streamrec.training.trainer import Trainer

    console = Console(stderr=True)
    dataset = load_dataset(data)
    embedding, model_config, train_config = configs_for(dataset, model_kind, config)
    torch.manual_seed(seed)
    tables = EmbeddingCollection(embedding, seed=seed)
    trainer = Trainer(build_model(model_config, tables), train_config)
    train, test = split_for(dataset, test_fraction)
    steps_per_epoch = (len(train) + batch_size - 1) // batch_size
    history = []
    started = time.perf_counter()
    with Progress(
        TextColumn("[bold]train batch"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
        TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=console, disable=quiet,
    ) as progress:  # fmt: skip
        task = progress.add_task("train", total=steps_per_epoch * epochs, status="")
        for epoch in range(1, epochs + 1):
            result = trainer.train(
                train, epochs=1, batch_size=batch_size,
                on_step=lambda step, batch, logits: progress.advance(task),
            )  # fmt: skip
            metrics = trainer.evaluate(test)
            history.append({"epoch": epoch, **result, "test_auc": metrics["auc"], "test_logloss": metrics["logloss"]})
            progress.update(task, status=f"epoch {epoch}: test AUC {metrics['auc']:.4f}")
    seconds = time.perf_counter() - started
    if out is not None:
        save_trainer(out, trainer, {"dataset": dataset.name, "trained_until": float(train.max_time)})
    summary = {
        "data": dataset.name,
        "model": model_config.kind,
        "examples": {"train": len(train), "test": len(test)},
        "epochs": history,
        "test_auc": round(history[-1]["test_auc"], 4),
        "test_logloss": round(history[-1]["test_logloss"], 4),
        "examples_per_s": round(len(train) * epochs / seconds),
        "tables": tables.stats(),
        "snapshot": str(out) if out else None,
    }
    if not quiet:
        console.print(
            f"[bold]{dataset.name}[/] {model_config.kind}: test AUC [bold green]{summary['test_auc']:.4f}[/], "
            f"log loss {summary['test_logloss']:.4f} on {len(test):,} later examples; "
            f"{summary['examples_per_s']:,} examples/s; snapshot: {out}"
        )
    return summary
