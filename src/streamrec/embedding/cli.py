"""Commands of the embedding part: ``streamrec bench embedding``.

The part has no group of its own: its one command sits under ``bench``, and ``register`` only
attaches it.
"""

from __future__ import annotations

import typer


def bench_embedding(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
    large: bool = typer.Option(False, "--large", help="Also measure a 10M-row table (minutes)."),
    quick: bool = typer.Option(False, "--quick", help="Smaller sizes, for a smoke test."),
    device: str = typer.Option(
        "cpu", "--device", help='"cuda" or "cuda:N": the table in GPU memory vs F.embedding on that GPU.'
    ),
) -> None:
    """Collisionless table vs modulo hashing, a Python dict, and EmbeddingBag + sparse Adagrad."""
    if device != "cpu":
        from streamrec.embedding.cuda_bench import run_embedding

        run_embedding(device, as_json=as_json, quick=quick)
        return
    from streamrec.embedding.bench import run_benchmark

    run_benchmark(as_json=as_json, large=large, quick=quick)


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Attach ``streamrec bench embedding``."""
    bench_app.command("embedding")(bench_embedding)
