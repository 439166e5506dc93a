"""Per-slot configuration of the embedding collection (the ``[embedding]`` TOML section).

A *slot* is a family of sparse ids with its own table (``user_id``, ``item_id``, ``genre``...).
Each slot chooses its dim, admission threshold, TTL, optimizer and initializer. Everything is a
``msgspec.Struct`` with unknown keys forbidden, validated through :func:`streamrec.config.convert`,
so a bad key or value is an error that names it::

    [embedding]
    seed = 7

    [embedding.slots.user]
    dim = 16
    admit_after = 2                      # a row only once the id was seen twice
    ttl = "30d"                          # rows idle for 30 days of event time are evicted
    optimizer = { type = "adagrad", lr = 0.05 }
    initializer = { type = "normal", std = 0.01 }

    [embedding.slots.genres]
    dim = 16
    pooling = "mean"                     # several ids per example, averaged

A table lives in host memory unless ``device = "cuda"`` (or ``"cuda:N"``) is set for the whole
section or for one slot (``streamrec[cuda]``; see ``cuda_table.py``).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from streamrec.config import convert_keyed, load_toml, parse_duration
from streamrec.embedding.admission import DEFAULT_DEPTH, DEFAULT_WIDTH


class _Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class SGD(_Strict, tag="sgd", tag_field="type"):
    """Plain SGD: ``w -= lr * g``."""

    lr: float = 0.01

    def __post_init__(self) -> None:
        _positive("lr", self.lr)


class Adagrad(_Strict, tag="adagrad", tag_field="type"):
    """Adagrad as ``torch.optim.Adagrad``: ``s += g*g; w -= lr / (1 + (t-1)*lr_decay) * g / (sqrt(s) + eps)``."""

    lr: float = 0.05
    eps: float = 1e-10
    initial_accumulator_value: float = 0.0
    lr_decay: float = 0.0

    def __post_init__(self) -> None:
        _positive("lr", self.lr)
        _nonnegative("eps", self.eps)
        _nonnegative("initial_accumulator_value", self.initial_accumulator_value)
        _nonnegative("lr_decay", self.lr_decay)


class Adam(_Strict, tag="adam", tag_field="type"):
    """Lazy Adam as ``torch.optim.SparseAdam``: moments of touched rows only, bias by the table's step."""

    lr: float = 0.001
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    def __post_init__(self) -> None:
        _positive("lr", self.lr)
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"`{name}` must be in [0, 1), got {value!r}")
        _positive("eps", self.eps)


class FTRL(_Strict, tag="ftrl", tag_field="type"):
    """FTRL-Proximal (McMahan et al. 2013), per coordinate; ``alpha`` is the learning rate."""

    alpha: float = 0.05
    beta: float = 1.0
    l1: float = 0.0
    l2: float = 0.0

    def __post_init__(self) -> None:
        _positive("alpha", self.alpha)
        for name in ("beta", "l1", "l2"):
            _nonnegative(name, getattr(self, name))


OptimizerConfig = SGD | Adagrad | Adam | FTRL


class Zeros(_Strict, tag="zeros", tag_field="type"):
    """Every new row starts at 0."""


class Uniform(_Strict, tag="uniform", tag_field="type"):
    """New rows drawn uniformly from ``[low, high)``."""

    low: float = -0.01
    high: float = 0.01

    def __post_init__(self) -> None:
        if not self.low < self.high:
            raise ValueError(f"`low` must be < high, got low={self.low!r} high={self.high!r}")


class Normal(_Strict, tag="normal", tag_field="type"):
    """New rows drawn from N(mean, std**2)."""

    mean: float = 0.0
    std: float = 0.01

    def __post_init__(self) -> None:
        _nonnegative("std", self.std)


InitializerConfig = Zeros | Uniform | Normal


class SlotConfig(_Strict):
    """One slot's table.

    Attributes
    ----------
    dim: length of each row (float32).
    admit_after: occurrences before an id gets a row (1 = at first sight, at most 255).
    ttl: seconds (or ``"30d"``-style string) of event time a row may stay idle; ``None`` = forever.
    optimizer, initializer: see the tagged structs above (``{type = "adagrad", lr = 0.05}``).
    pooling: how several ids of one example combine (``sum`` or ``mean``).
    capacity: ids to size the first arrays for; the table grows past it.
    sketch_width, sketch_depth: size of the admission filter (bytes = width * depth).
    device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; unset = the collection's ``device``.
    """

    dim: int
    admit_after: int = 1
    ttl: float | str | None = None
    optimizer: OptimizerConfig = msgspec.field(default_factory=Adagrad)
    initializer: InitializerConfig = msgspec.field(default_factory=Normal)
    pooling: Literal["sum", "mean"] = "sum"
    capacity: int = 1024
    sketch_width: int = DEFAULT_WIDTH
    sketch_depth: int = DEFAULT_DEPTH
    device: str | None = None

    def __post_init__(self) -> None:
        if self.device is not None:
            _device("device", self.device)
        if not 1 <= self.dim <= 4096:
            raise ValueError(f"`dim` must be in 1..4096, got {self.dim!r}")
        if not 1 <= self.admit_after <= 255:
            raise ValueError(f"`admit_after` must be in 1..255, got {self.admit_after!r}")
        if self.ttl is not None:
            try:
                self.ttl = parse_duration(self.ttl, "ttl")
            except Exception as exc:
                raise ValueError("`ttl` " + str(exc).removeprefix("config key 'ttl': ")) from None
            if self.ttl <= 0:
                raise ValueError(f"`ttl` must be > 0 (or omitted for no expiry), got {self.ttl!r}")
        if not 1 <= self.capacity <= 2**31 - 1:
            raise ValueError(f"`capacity` must be in 1..2**31-1, got {self.capacity!r}")
        if not 16 <= self.sketch_width <= 2**31:
            raise ValueError(f"`sketch_width` must be in 16..2**31, got {self.sketch_width!r}")
        if not 1 <= self.sketch_depth <= 16:
            raise ValueError(f"`sketch_depth` must be in 1..16, got {self.sketch_depth!r}")


class EmbeddingConfig(_Strict):
    """The ``[embedding]`` section: a seed and the slots by name."""

    slots: dict[str, SlotConfig]
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        _device("device", self.device)
        if not self.slots:
            raise ValueError("declare at least one slot under [embedding.slots.NAME]")
        for name in self.slots:
            if not name or not name.replace("_", "").replace("-", "").isalnum():
                raise ValueError(f"`slots` names are letters, digits, '_' or '-', got {name!r}")


def _device(name: str, value: str) -> None:
    if not (value in ("cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit())):
        raise ValueError(f'`{name}` must be "cpu", "cuda" or "cuda:N", got {value!r}')


def slot_device(config: EmbeddingConfig, slot: str) -> str:
    """Where ``slot``'s table lives: its own ``device``, else the collection's."""
    own = config.slots[slot].device
    return own if own is not None else config.device


def _positive(name: str, value: float) -> None:
    if not value > 0 or value == float("inf"):
        raise ValueError(f"`{name}` must be a finite number > 0, got {value!r}")


def _nonnegative(name: str, value: float) -> None:
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"`{name}` must be a finite number >= 0, got {value!r}")


def embedding_config(data: dict[str, Any] | EmbeddingConfig) -> EmbeddingConfig:
    """Validate a plain dict (the ``[embedding]`` table) into :class:`EmbeddingConfig`."""
    if isinstance(data, EmbeddingConfig):
        return data
    return convert_keyed(data, EmbeddingConfig, "embedding", "slots", SlotConfig)


def load_embedding_config(path: str) -> EmbeddingConfig:
    """Read the ``[embedding]`` section of a TOML file."""
    from streamrec.errors import ConfigError

    data = load_toml(path)
    if "embedding" not in data:
        raise ConfigError("embedding", f"{path} has no [embedding] section")
    return embedding_config(data["embedding"])
