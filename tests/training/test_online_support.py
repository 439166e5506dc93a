"""Helpers shared by the online-stage and serving-model tests (no tests here).

A small DeepFM over three slots (two single-id, one pooled multi-id) and two dense features,
random examples with event times, and a fresh event log per test on SQLite or a real redis-server.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from streamrec.embedding import EmbeddingCollection
from streamrec.models import ModelConfig, build_model
from streamrec.records import Example
from streamrec.training.snapshot import save_trainer
from streamrec.training.trainer import TrainConfig, Trainer

BACKENDS = ["sqlite", "redis"]
N_DENSE = 2
SLOTS = {
    "user": {"dim": 8, "ttl": "1000s", "optimizer": {"type": "adagrad", "lr": 0.1}},
    "item": {"dim": 8, "ttl": "1000s", "admit_after": 2, "optimizer": {"type": "adagrad", "lr": 0.1}},
    "tag": {"dim": 8, "pooling": "mean", "optimizer": {"type": "adagrad", "lr": 0.1}},
}
MODEL = ModelConfig(hidden=[16, 8], n_dense=N_DENSE)


def new_trainer(seed: int = 0) -> Trainer:
    import torch

    torch.manual_seed(seed)
    tables = EmbeddingCollection({"slots": SLOTS, "seed": seed})
    return Trainer(build_model(MODEL, tables), TrainConfig(batch_size=64, dense_lr=0.01, seed=seed))


def make_examples(n: int, start_time: float = 1_000.0, seed: int = 0, users: int = 50, items: int = 80) -> list:
    """``n`` examples, event time increasing by 1 s from ``start_time``; label depends on user+item."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        user, item = int(rng.integers(users)), int(rng.integers(items))
        tags = [int(t) for t in rng.integers(0, 20, size=int(rng.integers(0, 4)))]
        out.append(
            Example(
                sparse={"user": [user], "item": [item], "tag": tags},
                dense=[float(rng.normal()), float(rng.normal())],
                label=float((user + item) % 3 == 0),
                time=start_time + i,
            )
        )
    return out


def write_snapshot(path: Path, batch_examples: int = 256, seed: int = 0) -> int:
    """A batch-stage snapshot trained on ``batch_examples`` examples; returns its ``examples_seen``."""
    from streamrec.batch import ExampleBatch

    trainer = new_trainer(seed)
    if batch_examples:
        data = ExampleBatch.from_examples(make_examples(batch_examples, 0.0, seed=99), list(SLOTS), N_DENSE)
        trainer.train(data, batch_size=64)
    save_trainer(path, trainer, {"stage": "batch"})
    return trainer.examples_seen


def log_url_for(backend: str, folder: Path, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        return f"sqlite://{folder}/log-{uuid.uuid4().hex[:8]}.db"
    redis_url = request.getfixturevalue("redis_url")
    # Short leases: a trainer restarted after kill -9 waits out its dead predecessor's lease.
    return f"{redis_url}?prefix=t{uuid.uuid4().hex[:12]}:&session_s=2&rebalance_s=0.25"
