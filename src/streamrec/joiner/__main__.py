"""``python -m streamrec.joiner``: the ``streamrec joiner`` command alone.

The same command as ``streamrec joiner``, without the other parts' command modules, so a joiner
process (and the kill -9 tests that restart it many times) starts in a fraction of a second.
"""

from __future__ import annotations

import typer

from streamrec.errors import StreamrecError
from streamrec.joiner.cli import register

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
register(app, typer.Typer())

if __name__ == "__main__":
    try:
        app()
    except StreamrecError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise SystemExit(2) from None
