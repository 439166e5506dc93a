"""``streamrec demo``: the loop on one machine (for now: the embedding table at work)."""

from __future__ import annotations

import typer


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    @app.command("demo")
    def demo() -> None:
        """Run streamrec end to end on embedded defaults."""
        typer.echo("demo: not built yet")
