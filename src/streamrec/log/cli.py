"""Commands of the event log: ``streamrec log tail``, ``log lag``, ``log create-topics``, ``bench log``.

``tail`` decodes payloads without a record type (msgpack maps become JSON objects), so it can read
any topic, including records added after this file was written; raw payloads that are not msgpack
are shown as base64.
"""

from __future__ import annotations

import typer

log_app = typer.Typer(help="Inspect the event log (topics, consumer groups, offsets).", no_args_is_help=True)


@log_app.command("tail")
def tail(
    url: str = typer.Argument(..., help="Event log URL, e.g. sqlite:///var/streamrec/log.db"),
    topic: str = typer.Argument(..., help="Topic to read, e.g. actions"),
    group: str = typer.Option("streamrec-tail", help="Consumer group to read as (never committed)."),
    start: str = typer.Option("earliest", help="Where a new group starts: earliest or latest."),
    limit: int = typer.Option(20, "-n", "--limit", help="Stop after this many records (0: no limit)."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep waiting for new records."),
) -> None:
    """Print records of a topic as JSON lines ({"offset": ..., "record": ...}); commits nothing."""
    import base64
    import json

    import msgspec

    from streamrec.log import open_log

    shown = 0
    with open_log(url) as log, log.consumer(topic, group, bytes, start=start) as consumer:  # type: ignore[arg-type]
        while limit == 0 or shown < limit:
            batch = consumer.poll(max_records=1000 if limit == 0 else limit - shown, timeout_s=1.0)
            if not batch and not follow:
                break
            for envelope in batch:
                try:
                    record = msgspec.msgpack.decode(envelope.record)
                except msgspec.DecodeError:
                    record = {"base64": base64.b64encode(envelope.record).decode()}
                typer.echo(json.dumps({"offset": envelope.offset, "record": record}, default=repr))
            shown += len(batch)


@log_app.command("create-topics")
def create_topics(
    url: str = typer.Argument(..., help="Event log URL"),
    topics: list[str] = typer.Argument(..., help="TOPIC or TOPIC:PARTITIONS (default 1 partition)"),
) -> None:
    """Create topics with their partition counts; an existing topic must have that count already."""
    from streamrec.errors import InvalidInputError
    from streamrec.log import open_log

    wanted = []
    for spec in topics:
        name, _, count = spec.partition(":")
        if not name or (count and not count.isdigit()) or (count and int(count) < 1):
            raise InvalidInputError("topics", spec, "expected TOPIC or TOPIC:PARTITIONS with PARTITIONS >= 1")
        wanted.append((name, int(count or 1)))
    with open_log(url) as log:
        for name, count in wanted:
            log.create_topic(name, partitions=count)  # refuses a topic made with another count
            typer.echo(f"{name}: {count} partition(s)")


@log_app.command("lag")
def lag(
    url: str = typer.Argument(..., help="Event log URL"),
    topic: str = typer.Argument(..., help="Topic"),
    groups: list[str] = typer.Argument(..., help="Consumer groups"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (with the per-partition vectors)."),
) -> None:
    """Committed offset and lag (records not yet committed) of consumer groups, per partition and in all."""
    import json

    from streamrec.log import open_log

    with open_log(url) as log:
        ends = log.end_offsets(topic)
        rows = {}
        for group in groups:
            done = log.committed_offsets(topic, group)
            lags = [end - c for end, c in zip(ends, done, strict=True)]
            rows[group] = {"committed": sum(done), "lag": sum(lags), "committed_offsets": done, "lags": lags}
    end = sum(ends)
    if as_json:
        typer.echo(
            json.dumps(
                {"topic": topic, "partitions": len(ends), "end_offset": end, "end_offsets": ends, "groups": rows}
            )
        )
        return
    typer.echo(f"{topic}: {len(ends)} partition(s), end offset {end}")
    for name, row in rows.items():
        typer.echo(f"  {name}: committed {row['committed']}, lag {row['lag']}")
        if len(ends) > 1:
            for part, (end_p, done_p, lag_p) in enumerate(
                zip(ends, row["committed_offsets"], row["lags"], strict=True)
            ):
                typer.echo(f"    partition {part}: end {end_p}, committed {done_p}, lag {lag_p}")


def bench_log(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
    quick: bool = typer.Option(False, "--quick", help="Smaller sizes, for a smoke test."),
    backend: list[str] = typer.Option(
        None, "--backend", help="Only these backends (repeatable): sqlite, redis, kafka. Default: all three."
    ),
) -> None:
    """Appends (batched, per record, raw store) and consume throughput at 1/2/4 partitions with
    1 and 2 consumer processes, on SQLite, Redis (own redis-server) and Kafka (own Tansu broker)."""
    from streamrec.errors import InvalidInputError
    from streamrec.log.bench import BACKENDS, run_benchmark

    chosen = tuple(backend) if backend else BACKENDS
    for name in chosen:
        if name not in BACKENDS:
            raise InvalidInputError("--backend", name, f"must be one of {', '.join(BACKENDS)}")
    result = run_benchmark(as_json=as_json, quick=quick, backends=chosen)
    if result["failed"]:
        raise typer.Exit(1)


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Attach ``streamrec log ...`` and ``streamrec bench log``."""
    app.add_typer(log_app, name="log")
    bench_app.command("log")(bench_log)
