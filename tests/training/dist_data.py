"""Seeded examples, model and tables for the distributed-training tests (shared by the test and its workers)."""

from __future__ import annotations

import numpy as np

from streamrec.batch import ExampleBatch
from streamrec.embedding import EmbeddingCollection, SlotConfig
from streamrec.embedding.config import FTRL, SGD, Adagrad, Adam
from streamrec.models.ranking import ModelConfig, build_model
from streamrec.records import Example

SLOTS = ["user", "item", "tag"]
N_DENSE = 3
OPTIMIZERS = {"sgd": SGD(lr=0.1), "adagrad": Adagrad(lr=0.1), "adam": Adam(lr=0.01), "ftrl": FTRL()}


def examples(n: int, seed: int = 0) -> list[Example]:
    """Zipf-ish users and items, 0-3 tags per example, labels from a fixed logistic rule."""
    rng = np.random.default_rng(seed)
    users = rng.zipf(1.3, n) % 400
    items = rng.zipf(1.2, n) % 300
    out = []
    for i in range(n):
        tags = rng.integers(0, 50, size=int(rng.integers(0, 4))).tolist()
        dense = rng.normal(size=N_DENSE).astype(np.float32)
        logit = 0.8 * np.sin(users[i]) + 0.5 * np.cos(items[i]) + 0.3 * dense[0]
        label = float(rng.random() < 1 / (1 + np.exp(-logit)))
        out.append(Example(sparse={"user": [int(users[i])], "item": [int(items[i])], "tag": tags},
                           dense=dense.tolist(), label=label, time=1000.0 + i))  # fmt: skip
    return out


def tables(optimizer: str, admit_after: int = 1) -> EmbeddingCollection:
    slot = SlotConfig(dim=8, admit_after=admit_after, optimizer=OPTIMIZERS[optimizer], capacity=64)
    return EmbeddingCollection({name: slot for name in SLOTS}, seed=7)


def model(optimizer: str, admit_after: int = 1):
    import torch

    torch.manual_seed(0)
    return build_model(ModelConfig(kind="deepfm", hidden=[16], n_dense=N_DENSE), tables(optimizer, admit_after))


def batch(records: list[Example]) -> ExampleBatch:
    return ExampleBatch.from_examples(records, SLOTS, N_DENSE)


def parameters(model) -> dict[str, np.ndarray]:
    """Dense parameters and, per slot, every stored id's row and optimizer state, keyed by id."""
    out = {f"dense/{k}": v.detach().numpy().copy() for k, v in model.head.state_dict().items()}
    for slot in SLOTS:
        table = model.embeddings.tables[slot]
        ids, rows = table.index.items()
        order = np.argsort(ids)
        ids, rows = ids[order], rows[order]
        out[f"{slot}/ids"] = ids
        out[f"{slot}/weights"] = table.weight.numpy()[rows]
        for name, array in table.state_arrays().items():
            if name.startswith("state."):
                out[f"{slot}/{name}"] = array[rows]
    return out
