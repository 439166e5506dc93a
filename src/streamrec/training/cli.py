"""``streamrec train batch``: the batch stage — train over history, evaluate on a later split, snapshot.

With ``--ranks W`` (W > 1) the command starts itself again as W local ranks (``launch_local``, the
part ``torchrun`` plays across machines) and exits with the job's code. Each rank holds one shard
of every table (``ShardedEmbeddingModule``) and a copy of the head, and takes its
``global_slice`` of every global batch — the same batches, in the same order, as one process — so
the job trains the parameters one process would (to float rounding). Evaluation is collective,
the snapshot is a sharded directory (``training/shards.py``), and rank 0 alone prints.

The commands are module-level functions on ``train_app`` (one ``typer.Typer()`` for the part); the
online stage's ``streamrec train online`` is defined in ``online_cli.py``, whose ``register``
attaches it to the same ``train_app``.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

train_app = typer.Typer(help="Train ranking models: the batch stage over history, then online from the log.")


@train_app.command("batch")
def train_batch(
    data: str = typer.Option("ml-100k", help="ml-100k, criteo-sample, or a path (MovieLens, Criteo, CSV, Parquet)."),
    model: str = typer.Option("deepfm", help="deepfm, dcnv2 or two_tower."),
    epochs: int = typer.Option(1, min=1, help="Passes over the training part, in time order."),
    batch_size: int = typer.Option(512, min=1, help="Examples per step (the global batch, split over --ranks)."),
    test_fraction: float = typer.Option(0.2, min=0.01, max=0.9, help="Last part of time held out for evaluation."),
    out: Path | None = typer.Option(
        None,
        help="Snapshot to write (tables, dense, optimizer, config): one file, default runs/batch.npz; "
        "with --ranks W > 1 a sharded snapshot directory (a file per shard + manifest.json), default runs/batch.",
    ),
    config: Path | None = typer.Option(None, help="TOML with [embedding], [model], [train] sections."),
    seed: int = typer.Option(0),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object with the results."),
    device: str = typer.Option(
        "cpu", "--device", help='"cuda" or "cuda:N": tables, head and batches on that GPU (one process).'
    ),
    ranks: int = typer.Option(
        1,
        "--ranks",
        min=1,
        help="Train as W local processes, one thread each: tables sharded row-wise, the head data parallel, "
        "every global batch split over the ranks (the result equals one process). Under torchrun "
        "(RANK/WORLD_SIZE set) the world size comes from there.",
    ),
    threads: int = typer.Option(1, min=0, help="torch (and Numba) intra-op threads (0: one per core); one process."),
) -> None:
    """Train over historical examples with progress, evaluate AUC/log loss on a later split, snapshot."""
    from streamrec.errors import InvalidInputError
    from streamrec.training.launch import launch_local, rank_from_env

    found = rank_from_env()
    world = found[1] if found else ranks
    if device != "cpu":
        from streamrec.embedding.cuda_table import torch_device

        torch_device(device)  # no GPU: one line now, before any data is read
        if world > 1:
            raise InvalidInputError("--device", device, "the GPU placement trains in one process (no --ranks)")
    if found and ranks > 1 and ranks != world:
        raise InvalidInputError("--ranks", ranks, f"this process is a rank of WORLD_SIZE={world}; they must agree")
    if out is None:
        out = Path("runs/batch.npz") if world == 1 else Path("runs/batch")
    if world > 1 and out.is_file():
        raise InvalidInputError("--out", str(out), "with --ranks W > 1 the snapshot is a directory; this is a file")
    if found is None and world > 1:
        args = ["train", "batch", "--data", data, "--model", model, "--epochs", str(epochs)]
        args += ["--batch-size", str(batch_size), "--test-fraction", repr(test_fraction), "--out", str(out)]
        args += ["--seed", str(seed), "--ranks", str(world)]
        args += (["--config", str(config)] if config else []) + (["--json"] if as_json else [])
        raise typer.Exit(launch_local(args, world))
    if world == 1:
        if threads:  # as serve and train online do: torch's default (a thread per core) starves neighbours
            import numba
            import torch

            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
            torch.set_num_threads(threads)
        summary = run_batch(
            data, model, epochs, batch_size, test_fraction, out, config, seed, quiet=as_json, device=device
        )
    else:
        summary = run_batch_rank(data, model, epochs, batch_size, test_fraction, out, config, seed, quiet=as_json)
    if as_json and summary is not None:
        print(json.dumps(summary))


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Attach ``streamrec train`` (``train batch``; ``online_cli`` adds ``train online``)."""
    app.add_typer(train_app, name="train")


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
    device: str = "cpu",
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
    tables = EmbeddingCollection(embedding, seed=seed, device=device)
    trainer = Trainer(build_model(model_config, tables), train_config, device=device)
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


def run_batch_rank(
    data: str,
    model_kind: str = "deepfm",
    epochs: int = 1,
    batch_size: int = 512,
    test_fraction: float = 0.2,
    out: Path | None = None,
    config: Path | None = None,
    seed: int = 0,
    quiet: bool = False,
) -> dict | None:
    """:func:`run_batch` as one rank of a job (``RANK``/``WORLD_SIZE`` set); rank 0 returns the summary.

    Collective: every rank loads the data, builds the same model, trains its ``global_slice`` of
    each global batch of ``batch_size``, evaluates its slice of the test part, and writes its shard
    of the sharded snapshot at ``out``. Metrics are computed over every rank's logits, put back in
    the order one process would have produced them.
    """
    import time

    import numba
    import numpy as np
    import torch
    import torch.distributed as dist
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from streamrec.datasets.resolve import load_dataset
    from streamrec.embedding import EmbeddingCollection
    from streamrec.models import build_model
    from streamrec.quality import auc, log_loss
    from streamrec.training.defaults import configs_for, split_for
    from streamrec.training.distributed import DistributedTrainer, global_slice, init_from_env
    from streamrec.training.shards import save_sharded
    from streamrec.training.trainer import Trainer

    rank, world = init_from_env()
    # A rank keeps to the threads it was given (OMP_NUM_THREADS=1 from the launcher). Starting
    # Numba's OpenMP pool (its parallel lookups, as evaluation does, or set_num_threads) sets the
    # process's OpenMP threads to the core count, and torch follows unless it was set explicitly:
    # two ranks then ran 4 threads on 2 cores, every torch op 30x slower. So both, explicitly.
    threads = torch.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(threads)
    quiet = quiet or rank != 0
    console = Console(stderr=True)
    dataset = load_dataset(data)
    embedding, model_config, train_config = configs_for(dataset, model_kind, config)
    torch.manual_seed(seed)
    tables = EmbeddingCollection(embedding, seed=seed)
    trainer = DistributedTrainer.from_trainer(Trainer(build_model(model_config, tables), train_config))
    train, test = split_for(dataset, test_fraction)
    steps_per_epoch = (len(train) + batch_size - 1) // batch_size

    def gathered(parts: list) -> list:
        everyone: list = [None] * world
        dist.all_gather_object(everyone, parts)
        return everyone

    history = []
    started = time.perf_counter()
    with Progress(
        TextColumn(f"[bold]train batch[/] ({world} ranks)"), BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"), TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
        console=console, disable=quiet,
    ) as progress:  # fmt: skip
        task = progress.add_task("train", total=steps_per_epoch * epochs, status="")
        for epoch in range(1, epochs + 1):
            scores, labels = [], []
            for batch in train.batches(batch_size):
                lo, hi = global_slice(len(batch), rank, world)
                part = batch[lo:hi]
                scores.append(trainer.train_step(part).numpy())
                labels.append(part.labels.numpy())
                progress.advance(task)
            # Step by step, rank by rank: the logits in the order one process would list them.
            per_rank = gathered([scores, labels])
            y = np.concatenate([p[1][k] for k in range(len(scores)) for p in per_rank])
            s = np.concatenate([p[0][k] for k in range(len(scores)) for p in per_rank])
            lo, hi = global_slice(len(test), rank, world)
            logits = np.concatenate(gathered(trainer.predict_logits(test[lo:hi])))
            y_test = test.labels.numpy()
            history.append(
                {
                    "epoch": epoch,
                    "progressive_auc": auc(y, s),
                    "progressive_logloss": log_loss(y, 1 / (1 + np.exp(-s))),
                    "test_auc": auc(y_test, logits),
                    "test_logloss": log_loss(y_test, 1 / (1 + np.exp(-logits))),
                }
            )
            progress.update(task, status=f"epoch {epoch}: test AUC {history[-1]['test_auc']:.4f}")
    seconds = time.perf_counter() - started
    if out is not None:
        save_sharded(out, trainer, {"dataset": dataset.name, "trained_until": float(train.max_time)})
    shard_stats = gathered(tables.stats())
    dist.barrier()
    dist.destroy_process_group()
    if rank != 0:
        return None
    summary = {
        "data": dataset.name,
        "model": model_config.kind,
        "examples": {"train": len(train), "test": len(test)},
        "epochs": history,
        "test_auc": round(history[-1]["test_auc"], 4),
        "test_logloss": round(history[-1]["test_logloss"], 4),
        "examples_per_s": round(len(train) * epochs / seconds),
        "tables": _merge_stats(shard_stats),
        "snapshot": str(out) if out else None,
        "ranks": world,
        "snapshot_format": "sharded",
    }
    if not quiet:
        console.print(
            f"[bold]{dataset.name}[/] {model_config.kind} on {world} ranks: test AUC "
            f"[bold green]{summary['test_auc']:.4f}[/], log loss {summary['test_logloss']:.4f} on {len(test):,} "
            f"later examples; {summary['examples_per_s']:,} examples/s; sharded snapshot ({world} shards): {out}"
        )
    return summary


def _merge_stats(shards: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """The tables' stats over all shards: counts and bytes summed, the fullest shard's load factor."""
    out = {}
    for slot in shards[0]:
        parts = [shard[slot] for shard in shards]
        out[slot] = {
            key: max(p[key] for p in parts) if key == "load_factor" else sum(p[key] for p in parts) for key in parts[0]
        }
    return out
