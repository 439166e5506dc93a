"""``streamrec demo``: the collisionless table at work on MovieLens, in one command.

Until the recommender loop exists, the demo shows the part every model stands on. It streams
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

DEMO_SLOTS = {
    "user": {"dim": 16, "admit_after": 1, "ttl": "120d"},
    "item": {"dim": 16, "admit_after": 3, "ttl": "90d"},
    "genre": {"dim": 16, "pooling": "mean"},
    "occupation": {"dim": 16},
    "age": {"dim": 16},
}


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        data: Path | None = typer.Option(None, help="MovieLens directory (RecBole layout); default: shipped ml-100k."),
        batch_size: int = typer.Option(256, min=1, help="Examples per training step."),
        sync_every: int = typer.Option(20, min=1, help="Export a delta to the serving replica every N steps."),
        seed: int = typer.Option(0, help="Seed of the tables and the model."),
        as_json: bool = typer.Option(False, "--json", help="End with one JSON object of the results."),
    ) -> None:
        """Train a small model on MovieLens over the collisionless table, with live progress."""
        summary = run_demo(data, batch_size=batch_size, sync_every=sync_every, seed=seed, quiet=as_json)
        if as_json:
            print(json.dumps(summary))


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


def run_demo(data: Path | None, batch_size: int = 256, sync_every: int = 20, seed: int = 0, quiet: bool = False):
    import numpy as np
    import torch
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from streamrec.datasets import find_dataset, load_movielens
    from streamrec.embedding import EmbeddingCollection, EmbeddingModule
    from streamrec.errors import InvalidInputError
    from streamrec.metrics import auc
    from streamrec.models.fm import FactorizationMachine

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
    delta_bytes = 0
    deltas = 0
    evicted = 0

    progressive_scores, progressive_labels = [], []
    started = time.perf_counter()
    n_steps = (split + batch_size - 1) // batch_size
    with Progress(
        TextColumn("[bold]training"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
        TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=console, disable=quiet,
    ) as progress:  # fmt: skip
        task = progress.add_task("train", total=n_steps, status="")
        for step, batch in enumerate(_batches(ml, 0, split, batch_size, vocab), start=1):
            logits = model(module(batch.features, now=batch.now))
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch.labels)
            progressive_scores.append(logits.detach().numpy())
            progressive_labels.append(batch.labels.numpy())
            dense_opt.zero_grad()
            loss.backward()
            dense_opt.step()
            module.apply_gradients()
            if step % sync_every == 0:
                evicted += sum(tables.evict_expired(batch.now).values())
                delta = tables.export_delta()
                delta_bytes += len(delta.to_bytes())
                deltas += 1
                serving.apply(delta)
            if step % 10 == 0 or step == n_steps:
                recent = auc(np.concatenate(progressive_labels[-40:]), np.concatenate(progressive_scores[-40:]))
                progress.update(
                    task, completed=step,
                    status=f"loss {loss.item():.3f} · progressive AUC {recent:.3f} · items {len(tables['item'])}",
                )  # fmt: skip
    serving.apply(tables.export_delta())
    deltas += 1
    train_seconds = time.perf_counter() - started

    model.eval()
    module.eval()
    test_scores, test_labels = [], []
    with torch.no_grad():
        for batch in _batches(ml, split, len(ml), 4096, vocab):
            test_scores.append(model(module(batch.features)).numpy())
            test_labels.append(batch.labels.numpy())
    test_auc = auc(np.concatenate(test_labels), np.concatenate(test_scores))
    popularity_auc = _popularity_auc(ml, split)

    item_ids = np.array(sorted(ml.titles), dtype=np.int64)
    in_sync = all(
        np.array_equal(tables[slot].lookup(ids), serving.lookup(slot, ids))
        for slot, ids in (("item", item_ids), ("user", np.unique(ml.user)))
    )
    neighbours = _neighbours(tables["item"], ml, ["Star Wars", "Toy Story", "Pulp Fiction"])

    summary = {
        "examples": {"train": split, "test": len(ml) - split},
        "auc": {"test": round(test_auc, 4), "popularity_baseline": round(popularity_auc, 4)},
        "progressive_auc": round(auc(np.concatenate(progressive_labels), np.concatenate(progressive_scores)), 4),
        "train_examples_per_s": round(split / train_seconds),
        "tables": tables.stats(),
        "serving": {"deltas": deltas, "delta_bytes": delta_bytes, "in_sync": in_sync, "evicted_rows": evicted},
        "neighbours": neighbours,
    }
    if not quiet:
        _print_summary(console, summary, Table)
    return summary


def _popularity_auc(ml, split: int) -> float:
    """AUC of scoring each test rating by its item's smoothed positive rate in the training part."""
    import numpy as np

    from streamrec.metrics import auc

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
    a = summary["auc"]
    console.print(
        f"\n[bold]test AUC[/] (last 20 % of time): [bold green]{a['test']:.4f}[/]"
        f"   popularity baseline: {a['popularity_baseline']:.4f}"
        f"   progressive AUC while training: {summary['progressive_auc']:.4f}"
        f"   ({summary['train_examples_per_s']:,} examples/s)"
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
        f"serving replica: {sv['deltas']} deltas, {sv['delta_bytes'] / 2**20:.2f} MiB in all; "
        f"answers exactly as the training tables: [bold]{'yes' if sv['in_sync'] else 'NO'}[/]"
    )
    console.print("\n[bold]what the item embeddings learned[/] (nearest by cosine):")
    for movie, near in summary["neighbours"].items():
        console.print(f"  {movie}: {', '.join(near)}")
