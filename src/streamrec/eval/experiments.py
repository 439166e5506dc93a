"""The Monolith paper's two experiments, on real data, as functions that return plain results.

``collisions``: the same DeepFM on the collisionless table and on modulo-hashed tables sized at a
fraction (1/2, 1/8, 1/32) of each slot's distinct ids; test AUC after every epoch. The head is
built from the same seed for every variant and the hashed bags start from the same
distribution as the collisionless rows, so the embedding table is the only difference.

``online``: batch-train on the first 70 % of time, snapshot, then replay the remaining 30 % in
time order. Each example is scored by a *serving* model before the training model learns from
it (progressive validation); the serving model receives the training model's sparse delta and
dense parameters whenever the configured interval of event time has passed since its last sync.
Variants: frozen (never trains online), sync every 1 day / 1 hour / 10 minutes, and immediate
(sync after every mini-batch). All variants restore the same snapshot.
"""

from __future__ import annotations

import itertools
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from streamrec.datasets.resolve import Dataset
from streamrec.embedding import EmbeddingCollection
from streamrec.models import ModelConfig, build_hashed_model, build_model
from streamrec.quality import auc
from streamrec.training.defaults import configs_for, split_for
from streamrec.training.snapshot import load_trainer, save_trainer
from streamrec.training.trainer import Trainer


@dataclass
class Result:
    experiment: str
    dataset: str
    variant: str
    metric: str
    value: float
    epoch: int | None = None

    def as_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if v is not None}
        out["value"] = round(float(self.value), 5)
        return out


def distinct_ids(dataset: Dataset) -> dict[str, int]:
    """Distinct ids per slot over all of the data set's examples."""
    parts = [dataset.examples] + ([dataset.test] if dataset.test is not None else [])
    return {
        slot: int(torch.unique(torch.cat([p.sparse[slot].values for p in parts])).numel()) for slot in dataset.slots
    }


def collisions(
    dataset: Dataset,
    epochs: int = 4,
    fractions: tuple[float, ...] = (1 / 2, 1 / 8, 1 / 32),
    batch_size: int = 512,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> list[Result]:
    embedding, model_config, train_config = configs_for(dataset, "deepfm")
    train, test = split_for(dataset, 0.2)
    distinct = distinct_ids(dataset)
    variants: dict[str, Callable[[], object]] = {"collisionless": lambda: _collisionless(embedding, model_config, seed)}
    for fraction in fractions:
        rows = {slot: max(1, math.ceil(n * fraction)) for slot, n in distinct.items()}
        label = f"hashed 1/{round(1 / fraction)}"
        variants[label] = lambda rows=rows: _hashed(embedding, model_config, rows, seed)
    results = []
    for variant, build in variants.items():
        trainer = Trainer(build(), train_config)
        for epoch in range(1, epochs + 1):
            if progress:
                progress(f"collisions · {dataset.name} · {variant} · epoch {epoch}/{epochs}")
            trainer.train(train, epochs=1, batch_size=batch_size)
            value = trainer.evaluate(test)["auc"]
            results.append(Result("collisions", dataset.name, variant, "test_auc", value, epoch))
    return results


def _collisionless(embedding: dict, config: ModelConfig, seed: int):
    tables = EmbeddingCollection(embedding, seed=seed)
    torch.manual_seed(seed)
    return build_model(config, tables)


def _hashed(embedding: dict, config: ModelConfig, rows: dict[str, int], seed: int):
    """The hashed variant: bags drawn like the collisionless rows, the head from the same seed."""
    from streamrec.models.ranking import build_head

    slots = embedding["slots"]
    dims = {slot: cfg["dim"] for slot, cfg in slots.items()}
    pooling = {slot: cfg.get("pooling", "sum") for slot, cfg in slots.items()}
    model = build_hashed_model(config, dims, rows, pooling)
    torch.manual_seed(seed + 1)
    for slot, bag in model.embeddings.bags.items():
        torch.nn.init.normal_(bag.weight, std=slots[slot]["initializer"]["std"])
    torch.manual_seed(seed)
    model.head = build_head(config, list(dims), next(iter(dims.values())))
    return model


ONLINE_VARIANTS: dict[str, float | None] = {
    "frozen": None,
    "sync 1d": 86_400.0,
    "sync 1h": 3_600.0,
    "sync 10m": 600.0,
    "immediate": 0.0,
}


def online(
    dataset: Dataset,
    batch_fraction: float = 0.7,
    batch_epochs: int = 1,
    online_batch_size: int = 64,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> list[Result]:
    embedding, model_config, train_config = configs_for(dataset, "deepfm")
    data = dataset.examples
    cut = int(len(data) * batch_fraction)
    trainer = Trainer(_collisionless(embedding, model_config, seed), train_config)
    if progress:
        progress(f"online · {dataset.name} · batch stage on the first {batch_fraction:.0%} of time")
    trainer.train(data[:cut], epochs=batch_epochs)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        snapshot = Path(tmp) / "batch.npz"
        save_trainer(snapshot, trainer)
        for variant, interval in ONLINE_VARIANTS.items():
            if progress:
                progress(f"online · {dataset.name} · {variant}")
            scores = _replay(snapshot, data[cut:], interval, online_batch_size)
            value = auc(data[cut:].labels.numpy(), scores)
            results.append(Result("online", dataset.name, variant, "progressive_auc", value))
    return results


def _replay(snapshot: Path, stream, interval: float | None, batch_size: int) -> np.ndarray:
    """Progressive serving scores over ``stream`` for one sync interval (None = frozen)."""
    trainer, _ = load_trainer(snapshot)
    tables = trainer.model.embeddings.tables
    replica = tables.serving_replica()
    serving = build_model(trainer.model.config, replica)
    serving.head.load_state_dict(trainer.model.head.state_dict())
    serving.eval()
    last_sync = float(stream.time[0]) if len(stream) else 0.0
    scores = []
    for batch in stream.batches(batch_size):
        with torch.no_grad():
            scores.append(serving(batch).numpy())
        if interval is None:
            continue
        trainer.train_step(batch)
        now = batch.max_time
        if now - last_sync >= interval:
            replica.apply(tables.export_delta())
            serving.head.load_state_dict(trainer.model.head.state_dict())
            last_sync = now
    return np.concatenate(scores)


def expectations(results: list[Result]) -> dict[str, bool]:
    """Did the paper's expectations hold? Keys name each expectation per data set."""
    met: dict[str, bool] = {}
    by = {}
    for r in results:
        by.setdefault((r.experiment, r.dataset), []).append(r)
    for (experiment, name), rs in by.items():
        if experiment == "collisions":
            ours = {r.epoch: r.value for r in rs if r.variant == "collisionless"}
            hashed = [r for r in rs if r.variant != "collisionless"]
            met[f"collisions/{name}: collisionless >= every hashed variant at every epoch"] = all(
                ours[r.epoch] >= r.value for r in hashed
            )
        else:
            v = {r.variant: r.value for r in rs}
            online_variants = [k for k in ONLINE_VARIANTS if k != "frozen"]
            met[f"online/{name}: every online variant > frozen"] = all(v[k] > v["frozen"] for k in online_variants)
            ordered = ["sync 1d", "sync 1h", "sync 10m", "immediate"]
            met[f"online/{name}: shorter sync >= longer"] = all(v[b] >= v[a] for a, b in itertools.pairwise(ordered))
    return met
