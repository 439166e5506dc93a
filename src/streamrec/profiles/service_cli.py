"""Commands of the profile service: ``streamrec profiles serve`` and ``streamrec bench profiles``.

``profiles serve`` is also runnable as ``python -m streamrec.profiles.service_cli`` (the benchmark
starts its node that way, so it does not depend on how the root CLI is assembled).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer


def serve_command(
    config: Path | None = typer.Option(None, "--config", "-c", help="TOML file with the profiles table."),
    path: Path | None = typer.Option(None, "--path", help="Data directory (WAL + LMDB); omit for memory only."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(50051, "--port", help="gRPC port (0: any free port)."),
    metrics_port: int = typer.Option(9464, "--metrics-port", help="Prometheus /metrics port (-1: none, 0: any)."),
    workers: int = typer.Option(8, "--workers", help="gRPC handler threads."),
    ready_file: Path | None = typer.Option(None, "--ready-file", help="Write the address as JSON here once serving."),
) -> None:
    """Run a profile node: gRPC (ProfileNode + grpc.health.v1), Prometheus metrics; SIGTERM drains and flushes.

    The size caps of imports come from the config: ``max_profile_bytes`` and ``max_import_bytes``.
    """
    from streamrec.profiles.config import load_profiles_config, profiles_config
    from streamrec.profiles.service import ProfileNodeServer, serve
    from streamrec.profiles.store import ProfileStore
    from streamrec.profiles.warmup import warm_profiles

    cfg = load_profiles_config(str(config)) if config is not None else profiles_config()
    store = ProfileStore(cfg, path, max_profile_bytes=cfg.max_profile_bytes)
    typer.echo(f"profile node: kernels ready in {warm_profiles(cfg):.1f} s", err=True)

    def ready(node: ProfileNodeServer) -> None:
        info = {"address": node.address, "port": node.port, "metrics_port": node.metrics_port}
        if ready_file is not None:
            tmp = ready_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(info))
            tmp.replace(ready_file)
        typer.echo(f"profile node serving on {node.address} (metrics: {node.metrics_port})", err=True)

    metrics = None if metrics_port < 0 else metrics_port
    serve(store, host, port, metrics, workers, on_ready=ready, max_import_bytes=cfg.max_import_bytes)


def bench_command(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
    quick: bool = typer.Option(False, "--quick", help="Small data, for a smoke test (under ~30 s)."),
    events: int | None = typer.Option(None, "--events", help="Number of events (default 1,000,000; quick 20,000)."),
    requests: int | None = typer.Option(None, "--requests", help="Timed query requests per system."),
    clients: int | None = typer.Option(
        None, "--clients", help="Clients querying the node at once for the throughput ratio (default 8)."
    ),
) -> None:
    """streamrec (gRPC node) vs the same features kept in Redis hashes: query QPS/p99, ingest rate, size."""
    from streamrec.profiles.bench import run_benchmark

    run_benchmark(as_json=as_json, quick=quick, events=events, requests=requests, clients=clients)


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    from streamrec.profiles.cli import profiles_app

    profiles_app.command("serve")(serve_command)
    bench_app.command("profiles")(bench_command)


if __name__ == "__main__":  # pragma: no cover - exercised by the benchmark's node subprocess
    typer.run(serve_command)
