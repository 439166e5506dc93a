"""Commands of the profiles part: ``streamrec profiles ingest | load | sql | stats``.

``profiles_app`` is the ``profiles`` sub-command group; the service adds ``profiles serve`` to it.
Imports of the store (Numba, LMDB) stay inside the commands so ``streamrec --help`` is instant.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import typer

profiles_app = typer.Typer(
    help="The profile service (IPS): ingest actions, load history, query features.",
    no_args_is_help=True,
)

_STORE = typer.Option(Path("data/profiles"), "--store", help="Directory of the profile store (WAL + LMDB).")
_CONFIG = typer.Option(None, "--config", help="TOML file with a \\[profiles] section (default: built-in slots).")


def _open_store(store: Path, config: Path | None, event_clock: bool = False):
    from streamrec.profiles.config import load_profiles_config, profiles_config
    from streamrec.profiles.store import ProfileStore

    cfg = load_profiles_config(str(config)) if config is not None else profiles_config(None)
    if event_clock:
        cfg.clock = "event"
    return ProfileStore(cfg, path=store)


@profiles_app.command("ingest")
def ingest_cmd(
    log: str = typer.Option(
        "sqlite://streamrec-data/log.db", "--log", help="Event log URL (sqlite://, redis://, kafka://)."
    ),
    store: Path | None = typer.Option(
        None,
        "--store",
        help="Directory of a local profile store (WAL + LMDB); data/profiles if neither this nor --profiles.",
    ),
    profiles: str | None = typer.Option(
        None,
        "--profiles",
        help="Comma-separated host:port profile nodes to write to (cluster mode; instead of --store).",
    ),
    config: Path | None = _CONFIG,
    topic: str = typer.Option("actions", help="Topic of action events."),
    group: str = typer.Option("profiles", help="Consumer group (resumes from its committed offset)."),
    batch: int = typer.Option(1000, min=1, help="Records per write."),
    idle_exit: float | None = typer.Option(None, "--idle-exit", help="Stop after this many idle seconds."),
    max_records: int | None = typer.Option(None, "--max-records", min=1, help="Stop after this many records."),
    event_clock: bool = typer.Option(False, "--event-clock", help="Clock = latest event time (replaying history)."),
    ready_file: Path | None = typer.Option(
        None, "--ready-file", help="Write {pid, topic, group} as JSON here once the consumer is open."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object at the end."),
) -> None:
    """Consume action events from the log into profiles (offsets committed after durable writes).

    Writes a local store (--store) or, in a cluster, the profile nodes (--profiles) through a
    ProfileClient; give it the nodes' own --config (the same secret and slots). Several ingest
    processes of one --group share the topic's partitions (profile nodes only: a local store takes
    one ingest process and refuses a second).
    """
    from rich.console import Console

    from streamrec.profiles.ingest import ingest, lock_store

    store_lock = None
    if profiles is None:  # one ingest per local store: refuse a second before opening it
        store_lock = lock_store(store if store is not None else Path("data/profiles"))
    try:
        sink = _open_sink(store, profiles, config, event_clock)
    except BaseException:
        if store_lock is not None:
            store_lock.close()
        raise
    if profiles is None:  # a local store: its kernels compile (or load) now, not in the first batch
        from streamrec.profiles.warmup import warm_profiles

        warm_profiles(sink.cfg)
    if log.startswith("sqlite://"):  # the embedded log's folder, as `streamrec serve` does
        Path(log.removeprefix("sqlite://").split("?", 1)[0]).parent.mkdir(parents=True, exist_ok=True)
    console = Console(stderr=True)
    stopping = {"flag": False}
    signal.signal(signal.SIGTERM, lambda *_: stopping.__setitem__("flag", True))
    last = {"n": 0}

    def progress(st) -> None:
        if not as_json and st.polled - last["n"] >= 10_000:
            last["n"] = st.polled
            console.print(f"ingested {st.polled:,} events ({st.events_per_s:,.0f}/s), rejected {st.rejected:,}")

    def ready() -> None:
        if ready_file is not None:
            _write_atomic(ready_file, json.dumps({"pid": os.getpid(), "topic": topic, "group": group}))
        target = f"nodes {profiles}" if profiles else f"store {store}"
        console.print(f"profile ingest: {topic!r} as group {group!r} -> {target}")

    try:
        stats = ingest(
            sink,
            log,
            topic=topic,
            group=group,
            batch=batch,
            idle_exit_s=idle_exit,
            max_records=max_records,
            on_batch=progress,
            stop=lambda: stopping["flag"],
            on_ready=ready,
        )
    except KeyboardInterrupt:
        stats = None
    finally:
        sink.close()
        if store_lock is not None:
            store_lock.close()
    if stats is None:
        return
    out = {**_struct(stats), "events_per_s": round(stats.events_per_s, 1)}
    if as_json:
        typer.echo(json.dumps(out))
    else:
        console.print(
            f"done: {stats.polled:,} events, {stats.accepted:,} accepted, {stats.rejected:,} rejected, "
            f"{stats.too_old:,} too old, {stats.events_per_s:,.0f}/s; partitions owned "
            f"{stats.partitions_owned} (at the end {stats.partitions}, revoked {stats.revoked}, lost {stats.lost})"
        )


def _open_sink(store: Path | None, profiles: str | None, config: Path | None, event_clock: bool):
    """The ingest's sink: a local store, or a ProfileClient over the nodes named by ``--profiles``."""
    from streamrec.errors import InvalidInputError

    if profiles is None:
        return _open_store(store if store is not None else Path("data/profiles"), config, event_clock)
    if store is not None:
        raise InvalidInputError("--profiles", profiles, "give either --store (local) or --profiles (nodes), not both")
    if event_clock:
        raise InvalidInputError("--event-clock", True, "the clock of a profile node is its own [profiles] clock")
    nodes = [a.strip() for a in profiles.split(",") if a.strip()]
    bad = [a for a in nodes if a.rpartition(":")[0] == "" or not a.rpartition(":")[2].isdigit()]
    if not nodes or bad:
        raise InvalidInputError("--profiles", profiles, "expected comma-separated host:port addresses")
    from streamrec.profiles.client import ProfileClient
    from streamrec.profiles.config import load_profiles_config, profiles_config

    cfg = load_profiles_config(str(config)) if config is not None else profiles_config(None)
    return ProfileClient(nodes, cfg)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


@profiles_app.command("load")
def load_cmd(
    file: Path = typer.Argument(..., help="Parquet or CSV file of actions."),
    store: Path = _STORE,
    config: Path | None = _CONFIG,
    user: str = typer.Option("user", help="Column of the user id."),
    item: str = typer.Option("item", help="Column of the item id."),
    time_col: str = typer.Option("time", "--time", help="Column of the event time (epoch seconds or timestamp)."),
    action_col: str = typer.Option("action", "--action-col", help="Column of the action name."),
    action: str | None = typer.Option(None, "--action", help="Constant action for files without an action column."),
    batch: int = typer.Option(10_000, min=1, help="Rows per write."),
    event_clock: bool = typer.Option(False, "--event-clock", help="Clock = latest event time (needed for history)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object at the end."),
) -> None:
    """Load historical actions from Parquet or CSV (counter-named numeric columns: counters; others: attributes)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from streamrec.profiles.loader import load_file, total_rows

    s = _open_store(store, config, event_clock)
    try:
        with Progress(
            TextColumn("loading {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            disable=as_json,
            transient=False,
        ) as bar:
            task = bar.add_task(file.name, total=total_rows(file), rate="")
            stats = load_file(
                s,
                file,
                user=user,
                item=item,
                time_col=time_col,
                action_col=action_col,
                action=action,
                batch=batch,
                on_batch=lambda st: bar.update(task, completed=st.rows, rate=f"{st.events_per_s:,.0f} rows/s"),
            )
    finally:
        s.close()
    out = {**_struct(stats), "events_per_s": round(stats.events_per_s, 1)}
    if as_json:
        typer.echo(json.dumps(out))
    else:
        typer.echo(
            f"{stats.rows:,} rows: {stats.accepted:,} accepted, {stats.rejected:,} rejected, "
            f"{stats.too_old:,} too old ({stats.events_per_s:,.0f} rows/s)"
        )
        for line in stats.first_errors:
            typer.echo(f"  {line}")


@profiles_app.command("sql")
def sql_cmd(
    query: str = typer.Argument(..., help="SELECT ... FROM <slot> WHERE entity = 'user:42' AND window = '7d' ..."),
    store: Path = _STORE,
    config: Path | None = _CONFIG,
    as_json: bool = typer.Option(False, "--json", help="Print {columns, rows} as JSON."),
) -> None:
    """Answer a SQL query against a profile store."""
    s = _open_store(store, config)
    try:
        res = s.sql(query)
    finally:
        s.close()
    if as_json:
        typer.echo(json.dumps({"columns": res.columns, "rows": res.rows}))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(*res.columns)
    for row in res.rows:
        table.add_row(*(f"{v:.6g}" if isinstance(v, float) else str(v) for v in row))
    Console().print(table)


@profiles_app.command("stats")
def stats_cmd(store: Path = _STORE, config: Path | None = _CONFIG) -> None:
    """Print the store's counters and sizes as JSON."""
    s = _open_store(store, config)
    try:
        typer.echo(json.dumps(s.stats()))
    finally:
        s.close()


def _struct(obj) -> dict:
    import msgspec

    return msgspec.to_builtins(obj)


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Attach ``streamrec profiles ...``."""
    app.add_typer(profiles_app, name="profiles")
