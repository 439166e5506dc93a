"""``streamrec train online`` and ``streamrec bench training``.

The online stage is a long-running process (a cluster runs one per model), so the command is thin:
parse the schedules (``10s``, ``5m``), restore the snapshot, run :class:`OnlineTrainer` with a live
status line (examples/s, syncs, snapshots, how far event time lags the wall clock), stop cleanly on
SIGTERM/Ctrl-C with a final snapshot, and print a summary (one JSON object with ``--json``).
``register`` attaches ``train online`` to the ``train`` group that ``streamrec.training.cli`` owns.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer


def train_online(
    log: str = typer.Option(..., "--log", help="Event log URL: sqlite:///path.db or redis://host:port/db."),
    snapshot: Path = typer.Option(..., "--snapshot", help="Trainer snapshot to start from; rewritten in place."),
    sparse_sync_interval: str = typer.Option("10s", help="How often touched rows are published (10s, 500ms)."),
    dense_sync_interval: str = typer.Option("5m", help="How often the dense parameters are published."),
    snapshot_interval: str = typer.Option("10m", help="How often to snapshot (offsets commit after each)."),
    expiry_interval: str = typer.Option("1m", help="How often idle rows are expired (event time)."),
    batch_size: int = typer.Option(512, min=1, help="Most examples per training step."),
    group: str = typer.Option("trainer", help="Consumer group on topic 'examples'."),
    max_seconds: float | None = typer.Option(None, min=0, help="Stop after this many seconds (default: never)."),
    until_drained: bool = typer.Option(False, "--until-drained", help="Stop when no example is waiting."),
    threads: int = typer.Option(0, min=0, help="Torch intra-op threads (0: torch default; 1 suits small steps)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object with the summary at the end."),
    ranks: int = typer.Option(
        1, "--ranks", min=1, help="Train as W local ranks (sharded tables; like torchrun, which also works)."
    ),
    device: str = typer.Option(
        "cpu", "--device", help='"cuda" or "cuda:N": restore tables and head onto that GPU (one process).'
    ),
    retrieval: bool = typer.Option(
        False, "--retrieval", help="A two-tower snapshot trained as a retriever (in-batch softmax, log-Q)."
    ),
    updates_topic: str = typer.Option("model-updates", help="Topic the updates are published to."),
) -> None:
    """Continue a snapshot online: train from 'examples', publish updates to 'model-updates'.

    With --ranks W (or under torchrun, which sets RANK/WORLD_SIZE), W processes share the
    partitions of 'examples', each holding one shard of the tables; snapshots become sharded
    directories (beside a one-file snapshot: <snapshot>.shards/). If a rank dies, the job stops
    with its exit code; run it again to resume from the last snapshot and committed offsets.
    """
    import sys

    from streamrec.training.launch import launch_local, rank_from_env

    if device != "cpu":
        from streamrec.embedding.cuda_table import torch_device
        from streamrec.errors import InvalidInputError

        torch_device(device)  # no GPU: one line now
        if ranks > 1 or rank_from_env() is not None:
            raise InvalidInputError("--device", device, "the GPU placement trains in one process (no --ranks)")
    if ranks > 1 and rank_from_env() is None:
        raise typer.Exit(launch_local(sys.argv[1:], ranks, threads=threads or 1))
    if rank_from_env() is not None:
        from streamrec.training.distributed import init_from_env

        rank, _ = init_from_env()
        as_json = as_json and rank == 0  # one summary for the job: rank 0's
    summary = run_online(
        log, snapshot, sparse_sync_interval, dense_sync_interval, snapshot_interval, expiry_interval,
        batch_size, group, max_seconds, until_drained, threads=threads, quiet=as_json or _not_rank_0(),
        device=device, retrieval=retrieval, updates_topic=updates_topic,
    )  # fmt: skip
    if as_json:
        print(json.dumps(summary))


def bench_training(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
    quick: bool = typer.Option(False, "--quick", help="Smaller sizes (under a minute), for a smoke test."),
    threads: int = typer.Option(1, min=0, help="Torch intra-op threads for both contenders (0: torch default)."),
    ranks: str | None = typer.Option(
        None,
        "--ranks",
        help="Also train on W local ranks for each W listed (e.g. 1,2; one thread per rank, the same examples "
        "and global batches): examples/s, ratios vs the first W, all-to-all bytes per example, parameter "
        "difference from the first W, and TorchRec's sharded EmbeddingBagCollection where it installs.",
    ),
    ranks_batch_size: int = typer.Option(
        4096, min=2, help="Global batch of the --ranks phase (split over the ranks; the same for every W)."
    ),
    device: str = typer.Option(
        "cpu", "--device", help='"cuda" or "cuda:N": the training step on GPU tables vs EmbeddingBag on that GPU.'
    ),
) -> None:
    """Training throughput on collisionless tables vs modulo hashing (batch and online), sync lag;
    with --ranks, distributed training's scaling, bytes and equivalence."""
    from streamrec.training.bench import run_benchmark

    run_benchmark(
        as_json=as_json, quick=quick, threads=threads, ranks=ranks, ranks_batch_size=ranks_batch_size, device=device
    )


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Attach ``streamrec train online`` (to ``train_app`` of ``streamrec.training.cli``) and ``bench training``."""
    from streamrec.training.cli import train_app

    train_app.command("online")(train_online)
    bench_app.command("training")(bench_training)


def _not_rank_0() -> bool:
    from streamrec.training.launch import rank_from_env

    found = rank_from_env()
    return found is not None and found[0] != 0


def _duration(seconds: float) -> str:
    """``12.3 s``, ``5.2 min``, ``3.1 h`` or ``412 d``: how far event time trails the wall clock."""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= 2 * size:
            return f"{seconds / size:,.1f} {unit}"
    return f"{seconds:.1f} s"


def run_online(
    log: str,
    snapshot: Path,
    sparse_sync_interval: str = "10s",
    dense_sync_interval: str = "5m",
    snapshot_interval: str = "10m",
    expiry_interval: str = "1m",
    batch_size: int = 512,
    group: str = "trainer",
    max_seconds: float | None = None,
    until_drained: bool = False,
    threads: int = 0,
    quiet: bool = False,
    device: str = "cpu",
    retrieval: bool = False,
    updates_topic: str = "model-updates",
) -> dict:
    """Run the online stage as the CLI does; returns the summary."""
    import msgspec
    import torch
    from rich.console import Console
    from rich.live import Live

    from streamrec.config import parse_duration
    from streamrec.embedding.warmup import warm_embedding
    from streamrec.errors import SnapshotError
    from streamrec.training.online import OnlineConfig, OnlineStats, OnlineTrainer

    if not snapshot.is_file() and not (snapshot / "manifest.json").is_file():
        raise SnapshotError(f"--snapshot: {str(snapshot)!r} does not exist (write one with `streamrec train batch`)")
    config = OnlineConfig(
        sparse_sync_interval=parse_duration(sparse_sync_interval, "--sparse-sync-interval", positive=True),
        dense_sync_interval=parse_duration(dense_sync_interval, "--dense-sync-interval", positive=True),
        snapshot_interval=parse_duration(snapshot_interval, "--snapshot-interval", positive=True),
        expiry_interval=parse_duration(expiry_interval, "--expiry-interval", positive=True),
        batch_size=batch_size,
        group=group,
        updates_topic=updates_topic,
    )
    if threads:
        torch.set_num_threads(threads)
    console = Console(stderr=True, quiet=quiet)
    online = OnlineTrainer.from_snapshot(snapshot, log, config, device=device)
    if retrieval:  # the same loop, syncs and snapshots; the step is the retriever's (training/retrieval.py)
        if device != "cpu":
            raise typer.BadParameter("the retriever trains on the CPU only (for now)", param_hint="--device")
        from streamrec.training.retrieval import RetrievalTrainer

        online.trainer = RetrievalTrainer.from_trainer(online.trainer)
    online.install_signal_handlers()
    # Compiled (or loaded) before the first poll, so the first examples do not wait for LLVM.
    console.print(f"train online: kernels ready in {warm_embedding():.1f} s")
    if threads:  # Numba's OpenMP pool, started by the warm-up, resets torch's thread count to the cores
        torch.set_num_threads(threads)

    def line(s: OnlineStats) -> str:
        return (
            f"[bold]train online[/] {s.examples:,} examples · {s.examples_per_s:,.0f}/s · "
            f"syncs {s.sparse_syncs} sparse / {s.dense_syncs} dense · snapshots {s.snapshots} · "
            f"evicted {s.evicted:,} · {s.bytes_published / 1e6:.1f} MB published · "
            f"event lag {_duration(s.event_lag_s)} · version {s.version}"
        )

    try:
        with Live("[bold]train online[/] starting…", console=console, transient=False) as live:
            stats = online.run(
                max_seconds=max_seconds, until_drained=until_drained, on_progress=lambda s: live.update(line(s))
            )
            live.update(line(stats))
        if not console.is_terminal:
            console.line()  # Live leaves its last line open when it is not drawing on a terminal
    finally:
        online.close()
    summary = {
        **msgspec.to_builtins(stats),
        "snapshot": str(online.snapshot_path),
        "examples_offset": online.examples_offset,
        "schedule_s": {
            "sparse_sync_interval": config.sparse_sync_interval,
            "dense_sync_interval": config.dense_sync_interval,
            "snapshot_interval": config.snapshot_interval,
            "expiry_interval": config.expiry_interval,
        },
    }
    if not quiet:
        console.print(
            f"trained on {stats.examples:,} examples ({stats.replayed_skipped:,} replayed ones skipped, "
            f"{stats.rejected:,} rejected) in {stats.elapsed_s:.1f} s; {stats.sparse_syncs} sparse and "
            f"{stats.dense_syncs} dense syncs; last snapshot at offset {online.examples_offset:,} → {snapshot}"
        )
    return summary
