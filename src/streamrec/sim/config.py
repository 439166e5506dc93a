"""Parameters of the simulated world, with defaults, validated once when the world is built.

They live in one frozen dataclass so that a world is described by ``(WorldConfig, seed)`` alone:
two worlds built from the same pair evolve identically (see ``docs/sim.md``). Every value is
checked here, where it is first seen, and a bad one raises
:class:`~streamrec.errors.InvalidInputError` naming the field.

The defaults are tuned so that within tens of simulated minutes the things online training is
for actually happen: a share of users changes interest, new items arrive and old ones fade.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from streamrec.errors import InvalidInputError

__all__ = ["WorldConfig"]


@dataclass(frozen=True)
class WorldConfig:
    """Everything that defines a simulated world except its seed (times are in seconds).

    Examples
    --------
    >>> WorldConfig(n_users=100).n_users
    100
    >>> WorldConfig(position_bias=-1.0)
    Traceback (most recent call last):
    ...
    streamrec.errors.InvalidInputError: position_bias: must be >= 0 (got -1.0)
    """

    n_users: int = 1000
    """Number of users."""
    n_topics: int = 8
    """Latent topics; each item's category is its main topic."""
    n_authors: int = 200
    """Item creators; each has a home topic that most of their items share."""
    n_items: int = 400
    """Live items at the start; births keep the live pool near this size."""
    item_lifetime_s: float = 7200.0
    """Mean item lifetime; each item lives uniform(0.5, 1.5) times this, then retires."""
    age_scale_s: float = 3600.0
    """Appeal decays by one logit per ``age_scale_s`` of item age."""
    interest_strength: float = 2.5
    """Weight of a user's favourite topic in their interest vector."""
    interest_noise: float = 0.5
    """Scale of the Gaussian (slowly drifting) part of a user's interest vector."""
    author_topic_share: float = 0.8
    """Probability an item's topic is its author's home topic (else a random topic)."""
    item_topic_noise: float = 0.3
    """Scale of the Gaussian part of an item's topic vector."""
    quality_std: float = 0.5
    """Standard deviation of item quality (a per-item logit offset)."""
    bias: float = -3.0
    """Global click logit offset."""
    drift_tau_s: float = 3 * 3600.0
    """Correlation time of the slow drift (Ornstein-Uhlenbeck) of the Gaussian interest part."""
    trend_strength: float = 0.5
    """Scale of the topic trends: a logit offset per topic shared by all users (0 turns trends off)."""
    trend_tau_s: float = 3600.0
    """Correlation time of the topic trends (Ornstein-Uhlenbeck, stationary N(0, 1) before scaling)."""
    shift_rate_per_day: float = 2.0
    """Rate of random sudden shifts per user per day (a new favourite topic)."""
    shift_every_s: float = 1800.0
    """Period of scheduled shifts, counted from the world start; 0 turns them off."""
    shift_fraction: float = 0.1
    """Share of users that jump at each scheduled shift."""
    shift_times: tuple[float, ...] = ()
    """Extra scheduled shifts, in seconds after the world start."""
    mean_request_interval_s: float = 600.0
    """Mean time between two requests of the average user."""
    activity_zipf: float = 0.8
    """Zipf exponent of user activity (rate of the r-th most active user is proportional to r^-s)."""
    position_bias: float = 0.8
    """Examination probability at 0-based rank r is (1 + r) ** -position_bias."""
    like_offset: float = -1.0
    """Logit offset of a like given a click."""
    dwell_mean_s: float = 20.0
    """Median dwell time after a click, for an affinity of zero."""
    start_time: float = 1_700_000_000.0
    """Unix time of the world start."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "shift_times":
                if not isinstance(value, tuple | list):
                    raise InvalidInputError(f.name, value, "must be a tuple of seconds after the start")
                for t in value:
                    _finite(f.name, t)
                    if t < 0:
                        raise InvalidInputError(f.name, value, "every time must be >= 0")
                object.__setattr__(self, f.name, tuple(float(t) for t in value))
                continue
            _finite(f.name, value)
        for name in ("n_users", "n_topics", "n_authors", "n_items"):
            value = getattr(self, name)
            if isinstance(value, float) or value < 1:
                raise InvalidInputError(name, value, "must be a positive integer")
        if self.n_topics < 2:
            raise InvalidInputError("n_topics", self.n_topics, "must be >= 2 (a shift moves to another topic)")
        for name in (
            "item_lifetime_s",
            "age_scale_s",
            "drift_tau_s",
            "trend_tau_s",
            "mean_request_interval_s",
            "dwell_mean_s",
        ):
            if getattr(self, name) <= 0:
                raise InvalidInputError(name, getattr(self, name), "must be > 0")
        for name in (
            "interest_strength",
            "interest_noise",
            "item_topic_noise",
            "quality_std",
            "trend_strength",
            "shift_rate_per_day",
            "shift_every_s",
            "activity_zipf",
            "position_bias",
            "start_time",
        ):
            if getattr(self, name) < 0:
                raise InvalidInputError(name, getattr(self, name), "must be >= 0")
        for name in ("shift_fraction", "author_topic_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InvalidInputError(name, getattr(self, name), "must be in [0, 1]")


def _finite(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInputError(name, value, "must be a finite number")
