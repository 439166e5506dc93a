"""What a cluster's processes must agree on, written once into its folder: one config, one model.

Why a file and not options: the profile nodes, the profile ingest and the API must use the *same*
``[profiles]`` section (the entity hash's ``secret`` places entities on nodes; the slots decide
which rows an event feeds), and the API reads slots the default config lacks
(``serving_profiles_config``). ``profiles serve`` and ``profiles ingest`` take a TOML file, so the
launcher writes ``cluster.toml`` with the *complete* ``[profiles]`` (every slot spelled out,
durations in seconds), the ``[serving]`` section and the ``[joiner]`` section, and hands that one
file to every process (written with ``tomli_w``: the standard library reads TOML but does not
write it).

The online trainer continues a snapshot, and the API's model must score the serving plan's
columns. When the user gives no snapshot, :func:`initial_snapshot` saves an *untrained* DeepFM of
the plan's shape (its slots, ``n_dense``); the cluster then learns from its own traffic. A
user-given snapshot is checked against the plan before anything starts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
import tomli_w

from streamrec.errors import ConfigError, InvalidInputError

__all__ = ["check_snapshot", "cluster_config", "initial_retrieval_snapshot", "initial_snapshot", "to_toml"]


def _plain(value: Any, key: str) -> Any:
    """``value`` ready for ``tomli_w``: ``None`` left out, non-finite floats and other types refused by key."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{key}.{k}" if key else str(k)) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_plain(v, key) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(key, f"cannot write a non-finite number to TOML (got {value!r})")
    if not isinstance(value, bool | int | float | str):
        raise ConfigError(key, f"cannot write {type(value).__name__} to TOML")
    return value


def to_toml(data: Mapping[str, Any]) -> str:
    """``data`` as TOML (written by ``tomli_w``): nested tables, arrays of tables, scalars and lists;
    ``None`` values left out (TOML has no null).

    Examples
    --------
    >>> print(to_toml({"joiner": {"window": "10m", "positive_actions": ["click"], "seed": None}}).strip())
    [joiner]
    window = "10m"
    positive_actions = [
        "click",
    ]
    """
    return tomli_w.dumps(_plain(data, ""))


def cluster_config(
    user: Mapping[str, Any] | None, *, negative_rate: float, window: str, merge_interval: float
) -> dict[str, Any]:
    """The ``cluster.toml`` content: complete ``[profiles]``, ``[serving]``, ``[joiner]``.

    ``user`` is the parsed ``--config`` file (or ``None``): its sections win over the launcher's
    defaults, except that ``serving.sample_rate`` always equals the joiner's ``negative_rate``
    (the API corrects scores by the rate the joiner kept negatives at).
    """
    from streamrec.joiner import joiner_config
    from streamrec.serving.recommender import RecommenderConfig
    from streamrec.serving.slots import serving_profiles_config

    user = dict(user or {})
    unknown = sorted(set(user) - {"profiles", "serving", "joiner"})
    if unknown:
        raise ConfigError(unknown[0], "the cluster's --config takes [profiles], [serving] and [joiner] sections")
    profiles_in = {"merge_interval": merge_interval, **user.get("profiles", {})}
    profiles = msgspec.to_builtins(serving_profiles_config(profiles_in))
    joiner_in = {"window": window, "negative_rate": negative_rate, **user.get("joiner", {})}
    joiner = joiner_config(joiner_in)  # validated here, so a bad key fails before any process starts
    serving_in = {**user.get("serving", {}), "sample_rate": joiner.negative_rate}
    RecommenderConfig.from_dict(serving_in)
    return {"profiles": profiles, "serving": serving_in, "joiner": joiner_in}


def _plan(config: Mapping[str, Any]):
    from streamrec.serving.recommender import RecommenderConfig

    return RecommenderConfig.from_dict(dict(config.get("serving", {}))).features


def initial_snapshot(path: Path, config: Mapping[str, Any], *, dim: int = 16, seed: int = 0) -> None:
    """Save an untrained DeepFM over the serving plan of ``config`` (its slots and ``n_dense``) at ``path``.

    Rows start as N(0, 0.05) with Adagrad (lr 0.05), as ``streamrec train batch`` does; a bag slot
    (the user's top categories) is mean-pooled, single-id slots summed.
    """
    import torch

    from streamrec.embedding import EmbeddingCollection
    from streamrec.models import ModelConfig, build_model
    from streamrec.training.snapshot import save_trainer
    from streamrec.training.trainer import TrainConfig, Trainer

    plan = _plan(config)
    slot = {"dim": dim, "optimizer": {"type": "adagrad", "lr": 0.05}, "initializer": {"type": "normal", "std": 0.05}}
    slots = {s.name: {**slot, "pooling": "mean" if s.kind == "user_top" else "sum"} for s in plan.sparse}
    torch.manual_seed(seed)
    tables = EmbeddingCollection({"slots": slots}, seed=seed)
    model = build_model(ModelConfig(kind="deepfm", hidden=[64, 32], n_dense=plan.n_dense), tables)
    save_trainer(path, Trainer(model, TrainConfig(seed=seed)), {"cluster": {"origin": "untrained"}})


def initial_retrieval_snapshot(path: Path, config: Mapping[str, Any], *, dim: int = 16, seed: int = 0) -> None:
    """Save an untrained two-tower retriever over the serving plan's ids at ``path`` (the ann source's
    model; ``train online --retrieval`` trains it): user tower on the user's slots, item tower on the
    item's, no dense input (an example's dense columns describe its item), unit vectors / 0.1."""
    import torch

    from streamrec.embedding import EmbeddingCollection
    from streamrec.models import ModelConfig, build_model
    from streamrec.training.snapshot import save_trainer
    from streamrec.training.trainer import TrainConfig, Trainer

    plan = _plan(config)
    slot = {"dim": dim, "optimizer": {"type": "adagrad", "lr": 0.05}, "initializer": {"type": "normal", "std": 0.05}}
    user = [s.name for s in plan.sparse if s.kind in ("user", "user_top")]
    item = [s.name for s in plan.sparse if s.kind in ("item", "category")]
    pooling = {s.name: "mean" if s.kind == "user_top" else "sum" for s in plan.sparse}
    torch.manual_seed(seed)
    tables = EmbeddingCollection({"slots": {s: {**slot, "pooling": pooling[s]} for s in user + item}}, seed=seed)
    model_cfg = ModelConfig(
        kind="two_tower", hidden=[32], out_dim=16, n_dense=plan.n_dense, user_dense=False, user_slots=user,
        item_slots=item, temperature=0.1,
    )  # fmt: skip
    trainer = Trainer(build_model(model_cfg, tables), TrainConfig(seed=seed, dense_lr=0.003))
    save_trainer(path, trainer, {"cluster": {"origin": "untrained"}})


def check_snapshot(path: Path, config: Mapping[str, Any]) -> None:
    """Raise :class:`InvalidInputError` naming ``--snapshot`` if its model does not fit the serving plan."""
    from streamrec.training.snapshot import read_meta

    if not path.is_file():
        raise InvalidInputError("--snapshot", str(path), "no such file")
    n_dense = int(read_meta(path)["model"].get("n_dense", 0))
    plan = _plan(config)
    if n_dense != plan.n_dense:
        raise InvalidInputError(
            "--snapshot", str(path), f"its model takes {n_dense} dense columns; the serving plan has {plan.n_dense}"
        )
