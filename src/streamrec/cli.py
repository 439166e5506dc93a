"""The ``streamrec`` command line.

The root command only wires sub-commands together. Each part of the loop owns its commands in
``streamrec/<part>/cli.py`` and exposes ``register(app, bench_app)``; heavy imports (torch, numba)
stay inside the command functions so ``streamrec --help`` answers at once.
"""

from __future__ import annotations

import importlib

import typer

from streamrec import __version__

# Parts that add commands; each module defines register(app, bench_app).
_PARTS = (
    "streamrec.embedding.cli",
    "streamrec.log.cli",
    "streamrec.profiles.cli",
    "streamrec.profiles.service_cli",
    "streamrec.training.cli",
    "streamrec.training.online_cli",
    "streamrec.eval.cli",
    "streamrec.demo",
    "streamrec.joiner.cli",
    "streamrec.sim.cli",
    "streamrec.serving.cli",
    "streamrec.cluster.cli",
)

app = typer.Typer(
    name="streamrec",
    help="A real-time recommendation engine: collisionless embeddings, online training, profiles.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(
    help="Benchmarks that run their baselines side by side in the same process and print ratios.",
    no_args_is_help=True,
)
app.add_typer(bench_app, name="bench")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"streamrec {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """streamrec: run the whole recommendation loop on one machine, or scale it out."""


for _module in _PARTS:
    importlib.import_module(_module).register(app, bench_app)


def main() -> None:
    """Entry point of the ``streamrec`` console script."""
    from streamrec.errors import StreamrecError

    try:
        app()
    except StreamrecError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise SystemExit(2) from None
