"""``streamrec cluster up``, the launcher of cluster mode in the foreground, and ``cluster status`` /
``cluster down`` to look at it and stop it from another terminal (``control.py``).

The command is a shell over :class:`streamrec.cluster.Cluster`: build the config from the options,
start everything, print a table of processes (or one JSON object with ``--json``, for a machine),
then supervise until Ctrl-C / SIGTERM (a clean stop, exit 0) or until a process dies (its name and
the tail of its log, the rest stopped, exit 1).
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import typer

cluster_app = typer.Typer(
    help="Cluster mode: every part of the loop as its own process over Redis Streams and gRPC.",
    no_args_is_help=True,
)


@cluster_app.command("up")
def up(
    directory: Path = typer.Option(
        Path("streamrec-cluster"), "--dir", help="The cluster's folder: config, stores, snapshot, logs (reused)."
    ),
    redis: str | None = typer.Option(
        None, "--redis", help="Redis URL (redis://host:port/db); default: start a redis-server in --dir."
    ),
    log: str | None = typer.Option(
        None, "--log", help="Event log URL (redis://... or kafka://host:port); default: Redis Streams on --redis."
    ),
    partitions: int = typer.Option(
        1, "--partitions", min=1, max=256, help="Partitions of actions, impressions and examples (created at start)."
    ),
    joiners: int = typer.Option(1, "--joiners", min=1, help="Joiner processes sharing the partitions (<= partitions)."),
    ingest: int = typer.Option(1, "--ingest", min=1, help="Profile ingest processes (<= partitions)."),
    trainers: int = typer.Option(1, "--trainers", min=1, help="Ranks of the online trainer (sharded tables)."),
    nodes: int = typer.Option(2, "--nodes", min=1, max=64, help="Profile nodes (fixed at the first start of --dir)."),
    replicas: int = typer.Option(
        2, "--replicas", min=1, max=64, help="Copies of each profile on the nodes (fixed at the first start of --dir)."
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface every process binds."),
    api_port: int = typer.Option(8000, "--api-port", help="Port of the HTTP API (0: any free port)."),
    sparse_sync_interval: str = typer.Option("10s", help="Trainer → API: how often touched rows are published."),
    dense_sync_interval: str = typer.Option("5m", help="Trainer → API: how often the dense parameters are published."),
    snapshot_interval: str = typer.Option("10m", help="How often the trainer snapshots (then commits offsets)."),
    negative_rate: float = typer.Option(0.1, help="Fraction of negatives the joiner keeps (scores corrected by it)."),
    window: str = typer.Option("10m", help="The joiner's window: how long a click may follow its impression."),
    snapshot: Path | None = typer.Option(
        None, "--snapshot", help="Trainer snapshot to start from (default: an untrained model of the plan's shape)."
    ),
    config: Path | None = typer.Option(
        None, "--config", help="TOML file with \\[profiles], \\[serving] and \\[joiner] sections."
    ),
    startup_timeout: float = typer.Option(180.0, "--startup-timeout", help="Seconds every process may take to start."),
    grace: float = typer.Option(10.0, "--grace", help="Seconds a process may take to stop before SIGKILL."),
    as_json: bool = typer.Option(False, "--json", help="Print the endpoints as one JSON object once ready."),
    print_units: str | None = typer.Option(
        None,
        "--print",
        help="Start nothing: prepare --dir and print the processes as units for a supervisor "
        "(systemd), also written to DIR/systemd/.",
    ),
    unit_prefix: str = typer.Option("streamrec", "--unit-prefix", help="With --print: the units' name prefix."),
) -> None:
    """Start Redis, the profile nodes, the profile ingest, the joiner, the online trainer and the API.

    With --partitions N the stream topics have N partitions, and --joiners/--ingest M start M
    processes of each stage sharing them; --log kafka://host:port runs the loop over Kafka.

    Stays in the foreground: Ctrl-C or SIGTERM stops every process (SIGTERM, then SIGKILL after
    --grace); if one dies, it says which with the tail of its log, stops the rest and exits 1.

    With --print systemd it starts nothing: it prepares --dir as a start would and writes one
    systemd unit per process (the same command lines) and a target (docs/cluster.md).
    """
    from rich.console import Console

    from streamrec.cluster import Cluster, ClusterConfig, ProcessDiedError

    console = Console(stderr=True)
    cfg = ClusterConfig(
        dir=directory, redis_url=redis, log_url=log, partitions=partitions, joiners=joiners, ingest=ingest,
        trainers=trainers,
        nodes=nodes, replicas=replicas, host=host, api_port=api_port,
        sparse_sync_interval=sparse_sync_interval, dense_sync_interval=dense_sync_interval,
        snapshot_interval=snapshot_interval, negative_rate=negative_rate, window=window, snapshot=snapshot,
        config=config, startup_timeout_s=startup_timeout, grace_s=grace,
    )  # fmt: skip
    cluster = Cluster(cfg, say=lambda msg: console.print(f"[dim]cluster:[/] {msg}"))
    if print_units is not None:
        _print_units(cluster, print_units, unit_prefix)
        return
    stopping = {"flag": False}

    def on_term(*_: object) -> None:
        if not cluster.started:
            raise KeyboardInterrupt  # abandon the start-up: Cluster.start stops what it started
        stopping["flag"] = True

    signal.signal(signal.SIGTERM, on_term)
    try:
        with console.status("starting the cluster…", spinner="dots") if not as_json else _nothing():
            cluster.start()
        if as_json:
            typer.echo(json.dumps(cluster.endpoints()))
        else:
            _table(console, cluster)
        cluster.supervise(lambda: stopping["flag"])
        console.print("cluster: stopping (SIGTERM)…")
    except ProcessDiedError as exc:
        console.print(f"[red]cluster: {exc.name} exited with code {exc.returncode}[/] (log {exc.log}); last lines:")
        console.print(exc.tail, markup=False, highlight=False)
        console.print("cluster: stopping the other processes…")
        cluster.stop()
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        console.print("cluster: stopping (Ctrl-C)…")
    finally:
        cluster.stop()
    console.print("cluster: stopped")


def _print_units(cluster, kind: str, prefix: str) -> None:
    from streamrec.cluster.units import systemd_units
    from streamrec.errors import InvalidInputError

    if kind != "systemd":
        raise InvalidInputError("--print", kind, "the one format is 'systemd' (no container image ships for compose)")
    if not prefix or not prefix.replace("-", "").replace("_", "").isalnum():
        raise InvalidInputError("--unit-prefix", prefix, "letters, digits, '-' and '_' only")
    units = systemd_units(cluster.plan(), cluster.dir, prefix=prefix, grace_s=cluster.config.grace_s)
    folder = cluster.dir / "systemd"
    folder.mkdir(exist_ok=True)
    for name, text in units.items():
        (folder / name).write_text(text)
        typer.echo(f"# ==> {name} <==\n{text}")
    typer.echo(
        f"# Install: sudo cp {folder}/* /etc/systemd/system/ && sudo systemctl daemon-reload "
        f"&& sudo systemctl start {prefix}.target"
    )


@cluster_app.command("status")
def status_command(
    directory: Path = typer.Option(Path("streamrec-cluster"), "--dir", help="The cluster's folder."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """What runs from --dir: each process, its health, and the consumer groups' lag.

    Exit code 0 when every process runs and answers, 1 when one does not, 3 when nothing runs.
    """
    from streamrec.cluster.control import status

    report = status(directory)
    if as_json:
        typer.echo(json.dumps(report))
    elif not report["running"]:
        typer.echo(f"cluster: nothing runs from {report['dir']}")
    else:
        _status_table(report)
    if not report["running"]:
        raise typer.Exit(3)
    if not report["healthy"]:
        raise typer.Exit(1)


@cluster_app.command("down")
def down_command(
    directory: Path = typer.Option(Path("streamrec-cluster"), "--dir", help="The cluster's folder."),
    timeout: float = typer.Option(120.0, "--timeout", help="Seconds to wait for every process to be gone."),
) -> None:
    """Stop the cluster running from --dir (as Ctrl-C in its terminal would) and wait until it is gone."""
    from streamrec.cluster.control import down

    result = down(directory, timeout)
    if not result["was_running"]:
        typer.echo(f"cluster: nothing runs from {directory.resolve()}")
    else:
        typer.echo(f"cluster: stopped after {result['stopped_after_s']:.1f} s")


def _status_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"streamrec cluster in {report['dir']} (launcher pid {report['launcher_pid']})")
    for column in ("process", "pid", "address", "state", "detail"):
        table.add_column(column)
    for p in report["processes"]:
        state = "[green]ok[/]" if p["healthy"] else ("[yellow]unhealthy[/]" if p["alive"] else "[red]down[/]")
        table.add_row(p["name"], str(p["pid"]), p["address"], state, p["detail"])
    console.print(table)
    lags = Table(title="consumer groups (lag = appended, not yet committed)")
    for column in ("process", "topic", "group", "records", "lag"):
        lags.add_column(column)
    for row in report["lag"]:
        if "error" in row:
            lags.add_row("?", "", "", "", row["error"])
        else:
            lags.add_row(row["process"], row["topic"], row["group"], str(row["end"]), str(row["lag"]))
    console.print(lags)
    console.print(f"API {report['api']} · Redis {report['redis']} · up since {report['up_since']}")


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _table(console, cluster) -> None:  # type: ignore[no-untyped-def]
    from rich.table import Table

    table = Table(title=f"streamrec cluster in {cluster.dir}")
    for column in ("process", "pid", "address", "ready after", "log"):
        table.add_column(column)
    for child in cluster.children:
        ready = "" if child.ready_after_s is None else f"{child.ready_after_s:.1f} s"
        table.add_row(child.name, str(child.pid), child.address, ready, str(child.log))
    console.print(table)
    console.print(
        f"API {cluster.api_url} (dashboard at {cluster.api_url}/, docs at /docs) · log {cluster.log_url} "
        f"({cluster.config.partitions} partitions) · "
        f"config {cluster.config_file}\nCtrl-C (or `streamrec cluster down --dir {cluster.dir}`) stops every process."
    )


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Attach ``streamrec cluster ...``."""
    app.add_typer(cluster_app, name="cluster")
