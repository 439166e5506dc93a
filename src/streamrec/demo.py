"""``streamrec demo``: the loop (``streamrec.loop``) by default; ``--movielens``: the collisionless table on MovieLens.

The MovieLens mode shows the part every model stands on. It streams
the MovieLens ratings in time order (label: rating >= 4) through a small factorization-machine
model whose sparse features live in an :class:`~streamrec.embedding.EmbeddingCollection`:

* ids get rows only once seen ``admit_after`` times, idle rows expire after a TTL of event time;
* every batch is scored *before* it is trained on (progressive validation, as online training
  sees it), then trained on once;
* every few batches the touched rows are exported as a delta and applied to a serving replica,
  which must then answer exactly as the training table does;
* at the end: AUC on the last 20 % of time against a popularity baseline, how each table behaved
  (admitted, evicted, load, bytes), and what the item embeddings learned (nearest neighbours).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import typer

_ADAGRAD = {"type": "adagrad", "lr": 0.1}
_NORMAL = {"type": "normal", "std": 0.05}
DEMO_SLOTS = {
    "user": {"dim": 16, "admit_after": 1, "ttl": "180d", "optimizer": _ADAGRAD, "initializer": _NORMAL},
    "item": {"dim": 16, "admit_after": 3, "ttl": "60d", "optimizer": _ADAGRAD, "initializer": _NORMAL},
    "genre": {"dim": 16, "pooling": "mean", "optimizer": _ADAGRAD, "initializer": _NORMAL},
    "occupation": {"dim": 16, "optimizer": _ADAGRAD, "initializer": _NORMAL},
    "age": {"dim": 16, "optimizer": _ADAGRAD, "initializer": _NORMAL},
}


def demo(
    minutes: float = typer.Option(3.0, min=0.1, help="Wall minutes the three arms run (plus setup)."),
    seed: int = typer.Option(0, help="Seed of the world and the models."),
    out: Path = typer.Option(Path("runs/demo"), help="Folder of the stores, the report and the plots."),
    sim_minutes: float = typer.Option(90.0, min=1.0, help="Most simulated minutes the arms run."),
    users: int = typer.Option(500, min=10, help="Simulated users."),
    history_minutes: float = typer.Option(60.0, min=1.0, help="Simulated random-policy history (profiles)."),
    warmup_minutes: float = typer.Option(60.0, min=1.0, help="Simulated popularity traffic for the batch stage."),
    movielens: bool = typer.Option(False, "--movielens", help="The MovieLens embedding-table demo instead."),
    data: Path | None = typer.Option(None, help="--movielens: MovieLens dir (RecBole layout); default ml-100k."),
    batch_size: int = typer.Option(256, min=1, help="--movielens: examples per training step."),
    sync_every: int = typer.Option(20, min=1, help="--movielens: delta to the serving replica every N steps."),
    as_json: bool = typer.Option(False, "--json", help="End with one JSON object of the results."),
    retrieval: bool = typer.Option(
        False,
        help="The online and frozen arms retrieve with a two-tower model too (the ann source; off by "
        "default: a frozen retriever drags the frozen arm below popularity, docs/loop.md).",
    ),
) -> None:
    """The whole loop on a simulated world: online vs frozen vs popularity, live, then a report.

    With --movielens: train a small model on MovieLens over the collisionless table instead.
    """
    if movielens:
        summary = run_demo(data, batch_size=batch_size, sync_every=sync_every, seed=seed, quiet=as_json)
        if as_json:
            print(json.dumps(summary))
        return
    from streamrec.loop import LoopConfig
    from streamrec.loop.cli import run_demo_loop

    cfg = LoopConfig(
        seed=seed, n_users=users, history_minutes=history_minutes, warmup_minutes=warmup_minutes,
        sim_minutes=sim_minutes, wall_minutes=minutes, retrieval=retrieval,
    )  # fmt: skip
    run_demo_loop(cfg, out, as_json=as_json)


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Attach ``streamrec demo`` (a command of the root)."""
    app.command("demo")(demo)


@dataclass
class _Batch:
    features: dict
    labels: object
    now: float


def _batches(ml, lo: int, hi: int, batch_size: int, vocab: dict):
    import numpy as np
    import torch

    from streamrec.embedding import JaggedIds

    for start in range(lo, hi, batch_size):
        stop = min(start + batch_size, hi)
        users = ml.user[start:stop]
        items = ml.item[start:stop]
        genre_lists = [vocab["genres"].get(int(i), []) for i in items]
        features = {
            "user": torch.from_numpy(users),
            "item": torch.from_numpy(items),
            "genre": JaggedIds.from_lists(genre_lists),
            "occupation": torch.from_numpy(np.array([vocab["occupation"].get(int(u), 0) for u in users])),
            "age": torch.from_numpy(np.array([vocab["age"].get(int(u), 0) for u in users])),
        }
        labels = torch.from_numpy((ml.rating[start:stop] >= 4).astype(np.float32))
        yield _Batch(features, labels, float(ml.timestamp[stop - 1]))


def _vocab(ml) -> dict:
    """Raw attributes -> int64 ids (a stable hash of the string, as production features are)."""
    import zlib

    def fid(text: str) -> int:
        return zlib.crc32(text.encode())

    genres = {i: [fid(g) for g in gs] for i, gs in ml.genres.items()}
    occupation = {u: fid(a.get("occupation", "")) for u, a in ml.users.items()}
    age = {u: int(a.get("age", "0")) // 10 for u, a in ml.users.items()}
    return {"genres": genres, "occupation": occupation, "age": age}


def run_demo(
    data: Path | None, batch_size: int = 256, sync_every: int = 20, seed: int = 0, quiet: bool = False, epochs: int = 1
):
    import numpy as np
    import torch
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from streamrec.datasets import find_dataset, load_movielens
    from streamrec.embedding import EmbeddingCollection, EmbeddingModule
    from streamrec.errors import InvalidInputError
    from streamrec.models.fm import FactorizationMachine
    from streamrec.quality import auc

    console = Console(stderr=quiet)
    path = data or find_dataset("ml-100k")
    if path is None:
        raise InvalidInputError("--data", None, "ml-100k not found; pass --data DIR or set STREAMREC_DATA")
    ml = load_movielens(path)
    vocab = _vocab(ml)
    split = int(len(ml) * 0.8)
    torch.manual_seed(seed)

    tables = EmbeddingCollection({"slots": DEMO_SLOTS, "seed": seed})
    module = EmbeddingModule(tables)
    model = FactorizationMachine(list(DEMO_SLOTS), dim=16)
    dense_opt = torch.optim.Adam(model.parameters(), lr=0.003)
    serving = tables.serving_replica()

    state = {"delta_bytes": 0, "deltas": 0, "evicted": 0}

    def train_step(batch, step: int) -> np.ndarray:
        """Score the batch with the current model, then train on it (progressive validation)."""
        logits = model(module(batch.features, now=batch.now))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch.labels)
        dense_opt.zero_grad()
        loss.backward()
        dense_opt.step()
        module.apply_gradients()
        if step % sync_every == 0:
            state["evicted"] += sum(tables.evict_expired(batch.now).values())
            delta = tables.export_delta()
            state["delta_bytes"] += len(delta.to_bytes())
            state["deltas"] += 1
            serving.apply(delta)
        return logits.detach().numpy()

    def stream(title: str, lo: int, hi: int) -> float:
        scores, labels = [], []
        passes = epochs if lo == 0 else 1
        n_steps = passes * ((hi - lo + batch_size - 1) // batch_size)
        with Progress(
            TextColumn(f"[bold]{title}"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
            TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=console, disable=quiet,
        ) as progress:  # fmt: skip
            task = progress.add_task(title, total=n_steps, status="")
            batches = (b for _ in range(passes) for b in _batches(ml, lo, hi, batch_size, vocab))
            for step, batch in enumerate(batches, start=1):
                scores.append(train_step(batch, step))
                labels.append(batch.labels.numpy())
                if step % 10 == 0 or step == n_steps:
                    recent = auc(np.concatenate(labels[-40:]), np.concatenate(scores[-40:]))
                    progress.update(
                        task, completed=step,
                        status=f"progressive AUC {recent:.3f} · items held {len(tables['item'])}",
                    )  # fmt: skip
        return auc(np.concatenate(labels), np.concatenate(scores))

    started = time.perf_counter()
    progressive_auc = stream("batch stage (first 80 % of time)", 0, split)
    train_seconds = time.perf_counter() - started

    model.eval()
    module.eval()
    test_scores, test_labels = [], []
    with torch.no_grad():
        for batch in _batches(ml, split, len(ml), 4096, vocab):
            test_scores.append(model(module(batch.features)).numpy())
            test_labels.append(batch.labels.numpy())
    frozen_auc = auc(np.concatenate(test_labels), np.concatenate(test_scores))
    popularity_auc = _popularity_auc(ml, split)
    model.train()
    module.train()
    online_auc = stream("online stage (last 20 %)", split, len(ml))
    serving.apply(tables.export_delta())
    state["deltas"] += 1

    item_ids = np.array(sorted(ml.titles), dtype=np.int64)
    in_sync = all(
        np.array_equal(tables[slot].lookup(ids), serving.lookup(slot, ids))
        for slot, ids in (("item", item_ids), ("user", np.unique(ml.user)))
    )
    neighbours = _neighbours(tables["item"], ml, ["Star Wars", "Toy Story", "Pulp Fiction"])

    summary = {
        "examples": {"train": split, "test": len(ml) - split},
        "auc_last_20pct": {
            "online": round(online_auc, 4),
            "frozen": round(frozen_auc, 4),
            "popularity": round(popularity_auc, 4),
        },
        "online_beats_frozen": online_auc > frozen_auc,
        "batch_stage_progressive_auc": round(progressive_auc, 4),
        "train_examples_per_s": round(split / train_seconds),
        "tables": tables.stats(),
        "serving": {**state, "in_sync": in_sync},
        "neighbours": neighbours,
    }
    if not quiet:
        _print_summary(console, summary, Table)
    return summary


def _popularity_auc(ml, split: int) -> float:
    """AUC of scoring each test rating by its item's smoothed positive rate in the training part."""
    import numpy as np

    from streamrec.quality import auc

    labels = ml.rating >= 4
    n_items = int(ml.item.max()) + 1
    pos = np.bincount(ml.item[:split], weights=labels[:split], minlength=n_items)
    cnt = np.bincount(ml.item[:split], minlength=n_items)
    prior = labels[:split].mean()
    rate = (pos + 10 * prior) / (cnt + 10)
    return auc(labels[split:], rate[ml.item[split:]])


def _neighbours(table, ml, queries: list[str], k: int = 5) -> dict[str, list[str]]:
    """Nearest items by cosine similarity of their learned vectors (admitted items only)."""
    import numpy as np

    ids = np.array(sorted(ml.titles), dtype=np.int64)
    ids = ids[table.rows_of(ids) >= 0]
    vectors = table.lookup(ids)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-12
    out = {}
    for query in queries:
        matches = [i for i in ids.tolist() if ml.titles[i].startswith(query)]
        if not matches:
            continue
        q = vectors[np.searchsorted(ids, matches[0])]
        order = np.argsort(-(vectors @ q))
        out[ml.titles[matches[0]]] = [ml.titles[int(ids[j])] for j in order[1 : k + 1]]
    return out


def _print_summary(console, summary: dict, Table) -> None:
    a = summary["auc_last_20pct"]
    console.print(
        f"\n[bold]AUC on the last 20 % of time[/]: online (scored before training on each batch) "
        f"[bold green]{a['online']:.4f}[/] · frozen after the batch stage {a['frozen']:.4f} · "
        f"item popularity {a['popularity']:.4f}"
    )
    held = a["online"] > a["frozen"]
    console.print(f"online training beats the frozen model: [bold]{'yes' if held else 'no'}[/]")
    console.print(
        f"batch stage: progressive AUC {summary['batch_stage_progressive_auc']:.4f} "
        f"at {summary['train_examples_per_s']:,} examples/s"
    )
    table = Table(title="how the collisionless tables behaved")
    for col in ("slot", "ids held", "admitted", "evicted", "default-vector lookups", "load factor", "MiB"):
        table.add_column(col, justify="right" if col != "slot" else "left")
    for slot, s in summary["tables"].items():
        table.add_row(
            slot, f"{s['ids']:,}", f"{s['admitted']:,}", f"{s['evicted']:,}", f"{s['unadmitted_lookups']:,}",
            f"{s['load_factor']:.2f}", f"{s['bytes'] / 2**20:.2f}",
        )  # fmt: skip
    console.print(table)
    sv = summary["serving"]
    console.print(
        f"serving replica: {sv['deltas']} deltas, {sv['delta_bytes'] / 2**20:.2f} MiB in all, "
        f"{sv['evicted']} rows expired; "
        f"answers exactly as the training tables: [bold]{'yes' if sv['in_sync'] else 'NO'}[/]"
    )
    console.print("\n[bold]what the item embeddings learned[/] (nearest by cosine):")
    for movie, near in summary["neighbours"].items():
        console.print(f"  {movie}: {', '.join(near)}")
