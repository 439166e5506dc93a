"""Defaults of the batch stage: the slot config, model and train configs a data set gets when no
TOML says otherwise, and the time split it is evaluated on. Shared by ``streamrec train batch``
and the experiments (``streamrec eval``), so both train the same model the same way.
"""

from __future__ import annotations

from pathlib import Path


def default_slot(pooling: str = "sum") -> dict:
    """The slot config streamrec uses when none is given (dim 16, Adagrad 0.05, N(0, 0.05))."""
    return {
        "dim": 16,
        "pooling": pooling,
        "optimizer": {"type": "adagrad", "lr": 0.05},
        "initializer": {"type": "normal", "std": 0.05},
    }


def configs_for(dataset, model_kind: str = "deepfm", config_path: Path | None = None):
    """(embedding config dict, ModelConfig, TrainConfig) for a dataset, overridden by a TOML file."""
    from streamrec.config import convert, load_toml
    from streamrec.models import ModelConfig
    from streamrec.training.trainer import TrainConfig

    data = load_toml(config_path) if config_path else {}
    embedding = data.get("embedding") or {
        "slots": {slot: default_slot(dataset.pooling.get(slot, "sum")) for slot in dataset.slots}
    }
    model = {"kind": model_kind, "n_dense": dataset.n_dense, **data.get("model", {})}
    if model["kind"] == "two_tower" and not model.get("user_slots"):
        item_like = {"item", "genre"} if dataset.kind == "movielens" else set(dataset.slots[len(dataset.slots) // 2 :])
        model["item_slots"] = [s for s in dataset.slots if s in item_like]
        model["user_slots"] = [s for s in dataset.slots if s not in item_like]
    return embedding, convert(model, ModelConfig, "model"), convert(data.get("train", {}), TrainConfig, "train")


def split_for(dataset, test_fraction: float):
    """(train, test) examples: the shipped test file if any, else the last ``test_fraction`` of time."""
    if dataset.test is not None:
        return dataset.examples, dataset.test
    cut = int(len(dataset.examples) * (1 - test_fraction))
    return dataset.examples[:cut], dataset.examples[cut:]
