"""Commands of the event log: ``streamrec log tail``, ``streamrec log lag``, ``streamrec bench log``.

``tail`` decodes payloads without a record type (msgpack maps become JSON objects), so it can read
any topic, including records added after this file was written; raw payloads that are not msgpack
are shown as base64.
"""

from __future__ import annotations

import typer


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    log_app = typer.Typer(help="Inspect the event log (topics, consumer groups, offsets).", no_args_is_help=True)
    app.add_typer(log_app, name="log")

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

    @log_app.command("lag")
    def lag(
        url: str = typer.Argument(..., help="Event log URL"),
        topic: str = typer.Argument(..., help="Topic"),
        groups: list[str] = typer.Argument(..., help="Consumer groups"),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    ) -> None:
        """Committed offset and lag (records not yet committed) of consumer groups."""
        import json

        from streamrec.log import open_log

        with open_log(url) as log:
            end = log.end_offset(topic)
            rows = {g: {"committed": (c := log.committed(topic, g)), "lag": end - c} for g in groups}
        if as_json:
            typer.echo(json.dumps({"topic": topic, "end_offset": end, "groups": rows}))
        else:
            typer.echo(f"{topic}: end offset {end}")
            for name, row in rows.items():
                typer.echo(f"  {name}: committed {row['committed']}, lag {row['lag']}")

    @bench_app.command("log")
    def bench_log(
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
        quick: bool = typer.Option(False, "--quick", help="Smaller sizes, for a smoke test."),
    ) -> None:
        """Batched appends vs one append per record, and vs the raw store (SQLite, Redis)."""
        from streamrec.log.bench import run_benchmark

        run_benchmark(as_json=as_json, quick=quick)
