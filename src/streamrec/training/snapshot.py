"""Trainer snapshots: tables + dense parameters + optimizer state + the config, in one atomic file.

Same container and crash safety as the embedding snapshot (an ``.npz`` written to a temp file,
fsynced, renamed): the collection's arrays under ``emb/``, the head's parameters and the dense
optimizer's state as ``torch.save`` bytes (loaded back with ``weights_only=True``), and a JSON
``meta`` entry with the model, embedding and training configs, progress counters and anything
the caller adds (the online stage stores its committed log offsets there).

``load_trainer(path)`` rebuilds a :class:`~streamrec.training.trainer.Trainer` that continues
exactly where the saved one stopped.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import torch

from streamrec.config import convert
from streamrec.embedding import EmbeddingCollection
from streamrec.embedding.snapshot import (
    collection_arrays,
    collection_from_arrays,
    read_arrays,
    text_array,
    write_arrays_atomic,
)
from streamrec.models.ranking import ModelConfig, build_model
from streamrec.training.trainer import TrainConfig, Trainer

FORMAT = "streamrec-trainer-v1"


__all__ = ["load_trainer", "read_meta", "save_trainer"]


def save_trainer(path: str | Path, trainer: Trainer, extra: dict[str, Any] | None = None) -> None:
    """Snapshot ``trainer`` (collisionless tables only) to ``path``, atomically."""
    tables = trainer.model.embeddings.tables
    if not isinstance(tables, EmbeddingCollection):
        raise TypeError("only models on training EmbeddingCollections can be snapshotted")
    buffer = io.BytesIO()
    head = {k: v.detach().cpu() for k, v in trainer.model.head.state_dict().items()}  # host tensors, any device
    torch.save({"head": head, "optimizer": trainer.dense_optimizer.state_dict()}, buffer)
    meta = {
        "model": msgspec.to_builtins(trainer.model.config),
        "train": msgspec.to_builtins(trainer.config),
        "examples_seen": trainer.examples_seen,
        "steps": trainer.steps,
        "extra": extra or {},
    }
    arrays = {
        "format": text_array(FORMAT),
        "meta": text_array(json.dumps(meta)),
        "dense": np.frombuffer(buffer.getvalue(), dtype=np.uint8),
        **collection_arrays(tables, prefix="emb/"),
    }
    write_arrays_atomic(path, arrays)


def read_meta(path: str | Path) -> dict[str, Any]:
    """The ``meta`` entry of a trainer snapshot (configs, counters, ``extra``)."""
    return json.loads(bytes(read_arrays(path, FORMAT)["meta"]).decode())


def load_trainer(path: str | Path, device: str | None = None) -> tuple[Trainer, dict[str, Any]]:
    """Rebuild the trainer saved at ``path`` (tables and head on ``device`` when given, else
    where the snapshot's embedding config puts the tables); returns it and the ``extra`` dict."""
    arrays = read_arrays(path, FORMAT)
    meta = json.loads(bytes(arrays["meta"]).decode())
    tables = collection_from_arrays(arrays, prefix="emb/", device=device)
    model = build_model(convert(meta["model"], ModelConfig, "model"), tables)
    trainer = Trainer(model, convert(meta["train"], TrainConfig, "train"), device=device)
    dense = torch.load(io.BytesIO(bytes(arrays["dense"])), weights_only=True, map_location="cpu")
    model.head.load_state_dict(dense["head"])
    trainer.dense_optimizer.load_state_dict(dense["optimizer"])
    trainer.examples_seen = int(meta["examples_seen"])
    trainer.steps = int(meta["steps"])
    return trainer, meta["extra"]
