"""The joiner's settings (the ``[joiner]`` section of the TOML config), validated on load.

One frozen struct, so a running joiner cannot have its window changed under it; durations are
seconds here and may be written ``"10m"`` in TOML or on the command line (:func:`joiner_config`
parses them with :func:`streamrec.config.parse_duration`). Every default works embedded.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

from streamrec.config import convert, load_toml, parse_duration
from streamrec.errors import ConfigError

__all__ = ["DEFAULT_POSITIVE_ACTIONS", "JoinConfig", "joiner_config", "load_joiner_config"]

DEFAULT_POSITIVE_ACTIONS = ("click", "like", "share", "purchase")
# Action names that record the impression itself; they can never be a label.
NOT_LABELS = frozenset({"impression", "show"})


class JoinConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """How impressions are joined with actions.

    Parameters
    ----------
    window_s
        Event-time length of the join window: an action at most this long after the impression
        labels it positive. Default 10 minutes.
    allowed_lateness_s
        How far out of event-time order a topic may be: the watermark trails the newest event time
        seen by this much (``docs/joiner.md``). Also the clock skew tolerated between an impression
        and an action stamped slightly before it. Default 60 s.
    negative_rate
        Fraction ``r`` of negatives kept, in ``(0, 1]``; every example records it as ``sample_rate``.
    positive_actions
        Action names that make an impression positive. ``impression``/``show`` are not allowed.
    memory_budget
        Most waiting impressions whose features are held decoded in memory; the rest are read from
        LMDB when needed (counted as ``spilled``). Default 100 000.
    memory_budget_bytes
        Also bound the encoded size of those impressions (0: no byte bound). Default 256 MiB.
    batch_size
        Most records taken from each topic per step (one LMDB transaction, one append).
    map_size_mb
        Initial size of the LMDB memory map (address space, not memory); doubled whenever a step
        would not fit.
    sync
        Flush each step's LMDB transaction to disk (survives power loss). ``False`` still survives
        ``kill -9`` of the joiner (the OS keeps the written pages), not a crash of the machine.
    """

    window_s: float = 600.0
    allowed_lateness_s: float = 60.0
    negative_rate: float = 0.1
    positive_actions: tuple[str, ...] = DEFAULT_POSITIVE_ACTIONS
    memory_budget: int = 100_000
    memory_budget_bytes: int = 256 << 20
    batch_size: int = 1000
    map_size_mb: int = 4096
    sync: bool = True

    def __post_init__(self) -> None:
        if not (math.isfinite(self.window_s) and self.window_s > 0):
            raise ValueError(f"`window_s` must be a finite number > 0, got {self.window_s!r}")
        if not (math.isfinite(self.allowed_lateness_s) and self.allowed_lateness_s >= 0):
            raise ValueError(f"`allowed_lateness_s` must be a finite number >= 0, got {self.allowed_lateness_s!r}")
        if not 0.0 < self.negative_rate <= 1.0:
            raise ValueError(f"`negative_rate` must be in (0, 1], got {self.negative_rate!r}")
        if not self.positive_actions:
            raise ValueError("`positive_actions` must name at least one action, got ()")
        for name in self.positive_actions:
            if name in NOT_LABELS or not name or name != name.strip().lower():
                raise ValueError(f"`positive_actions` cannot contain {name!r} (not a lowercase label action)")
        if self.memory_budget < 0:
            raise ValueError(f"`memory_budget` must be >= 0, got {self.memory_budget!r}")
        if self.memory_budget_bytes < 0:
            raise ValueError(f"`memory_budget_bytes` must be >= 0, got {self.memory_budget_bytes!r}")
        if self.batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1, got {self.batch_size!r}")
        if self.map_size_mb < 1:
            raise ValueError(f"`map_size_mb` must be >= 1, got {self.map_size_mb!r}")


_DURATIONS = {"window": "window_s", "allowed_lateness": "allowed_lateness_s"}


def joiner_config(data: dict[str, Any] | JoinConfig | None = None) -> JoinConfig:
    """Validate a plain dict (the ``[joiner]`` table) into :class:`JoinConfig`.

    ``window`` and ``allowed_lateness`` may be given as durations (``"10m"``); errors are
    :class:`~streamrec.errors.ConfigError` naming ``joiner.<key>``.

    Examples
    --------
    >>> joiner_config({"window": "5m", "negative_rate": 0.2}).window_s
    300.0
    >>> joiner_config({"negative_rate": 2.0})
    Traceback (most recent call last):
    ...
    streamrec.errors.ConfigError: config key 'joiner.negative_rate': negative_rate must be in (0, 1], got 2.0
    """
    if data is None:
        return JoinConfig()
    if isinstance(data, JoinConfig):
        return data
    if not isinstance(data, dict):
        raise ConfigError("joiner", f"expected a table, got {type(data).__name__}")
    data = dict(data)
    for short, full in _DURATIONS.items():
        if short in data:
            if full in data:
                raise ConfigError(f"joiner.{short}", f"give either {short} or {full}, not both")
            data[full] = parse_duration(data.pop(short), f"joiner.{short}")
    return convert(data, JoinConfig, "joiner")


def load_joiner_config(path: str) -> JoinConfig:
    """Read the ``[joiner]`` section of a TOML file (defaults if the section is absent)."""
    return joiner_config(load_toml(path).get("joiner", {}))
