"""Configuration of the profile service (the ``[profiles]`` TOML section).

A *slot* is a feature family kept in every profile of one entity type: which entity it belongs to,
where its feature value comes from, the counters it keeps and how each counter combines (its
*reduce*), how long history is kept (retention), how many values a slice keeps (truncation) and how
slices coarsen with age (tiers). Everything is a ``msgspec.Struct`` with unknown keys forbidden and
validated through :func:`streamrec.config.convert`, so a typo is an error naming the dotted key::

    [profiles]
    secret = "change-me"                 # key of the entity hash; raw ids are never stored
    merge_interval = "1s"                # write table -> read table
    memory_budget_mb = 512

    [[profiles.tiers]]                   # slice granularities, finest first
    width = "1m"
    until = "2h"                         # minute slices younger than 2h, then hour slices
    [[profiles.tiers]]
    width = "1h"
    until = "3d"
    [[profiles.tiers]]
    width = "1d"                         # day slices until the slot's retention

    [profiles.slots.clicked_category]
    entity = "user"                      # key from event.user ("item": event.item, else an attribute)
    value = "category"                   # value from event.attributes["category"] ("item", "user", "action")
    counters = ["show", "click", "like", "dwell_ms"]
    reduce = { dwell_ms = "max" }        # default "sum"
    retention = "30d"
    truncate = 50                        # keep the 50 values with most `truncate_by` per slice
    truncate_by = "click"

The tier rule (see ``docs/profiles.md``): for a clock ``now``, tier ``k`` holds the times
``t >= boundary_k = floor((now - until_k) / width_{k+1}) * width_{k+1}`` not held by a finer tier;
a time before ``floor((now - retention) / width_last) * width_last`` is dropped. Widths must divide
one another so that coarse slices are exact unions of fine ones.
"""

from __future__ import annotations

import itertools
from typing import Any, Literal

import msgspec

from streamrec.config import convert_keyed, load_toml, parse_duration
from streamrec.errors import ConfigError

__all__ = ["ProfileSlotConfig", "ProfilesConfig", "Tier", "load_profiles_config", "profiles_config"]

# Names a slot's `entity` / `value` may take that read a fixed field of the event; any other
# name reads event.attributes[name].
EVENT_FIELDS = ("user", "item", "action")


class _Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


def _duration(name: str, value: Any) -> float:
    try:
        return parse_duration(value, name)
    except ConfigError as exc:
        raise ValueError(f"`{name}` " + str(exc).removeprefix(f"config key '{name}': ")) from None


def _name_ok(name: str) -> bool:
    return bool(name) and name.replace("_", "").replace("-", "").isalnum()


class Tier(_Strict):
    """One slice granularity.

    Attributes
    ----------
    width: length of the slices of this tier (``"1m"``, ``"1h"``, ``"1d"`` or seconds).
    until: age below which data stays at this width; older data is compacted into the next tier.
        Ignored (and may be omitted) on the last tier, which lasts until the slot's retention.
    """

    width: float | str
    until: float | str | None = None

    def __post_init__(self) -> None:
        self.width = _duration("width", self.width)
        if not self.width >= 1 or self.width != int(self.width):
            raise ValueError(f"`width` must be a whole number of seconds >= 1, got {self.width!r}")
        if self.until is not None:
            self.until = _duration("until", self.until)


class ProfileSlotConfig(_Strict):
    """One slot (feature family) of the profiles.

    A slot is one named family of features everywhere in streamrec; this is its profile side (which
    events count, into whose profile). Its embedding side, the table of ids a model learns, is
    :class:`streamrec.embedding.SlotConfig`.

    Attributes
    ----------
    entity: whose profile the slot lives in: ``"user"`` (key from ``event.user``), ``"item"``
        (``event.item``) or any other name (``event.attributes[name]``; events without it skip
        the slot).
    value: the feature value: ``"item"``, ``"user"``, ``"action"`` or an attribute name.
    counters: counter names; each event adds to a counter ``c`` the amount ``event.counters[c]``
        if present, else 1 if ``event.action == c``, else nothing.
    reduce: counter -> reduce function name (``sum``, ``max``, ``min``, ``last``, ``first``);
        unnamed counters use ``sum``.
    actions: if set, only events with one of these actions feed the slot.
    retention: how long history is kept (``"30d"``).
    truncate: keep at most this many values per slice (0 = all), the ones with the largest
        ``truncate_by`` counter.
    truncate_by: counter ranking values for truncation (default: the first counter).
    hash_values: store feature values as keyed hashes (hex) instead of as given.
    tiers: slice granularities for this slot; default: the section's ``tiers``.
    """

    entity: str = "user"
    value: str = "item"
    counters: list[str] = msgspec.field(default_factory=lambda: ["show", "click"])
    reduce: dict[str, str] = msgspec.field(default_factory=dict)
    actions: list[str] | None = None
    retention: float | str = "30d"
    truncate: int = 0
    truncate_by: str | None = None
    hash_values: bool = False
    tiers: list[Tier] | None = None

    def __post_init__(self) -> None:
        from streamrec.profiles.reduce import known_reduces

        if not _name_ok(self.entity):
            raise ValueError(f"`entity` must be a name (letters, digits, '_', '-'), got {self.entity!r}")
        if self.entity == "action":
            raise ValueError("`entity` cannot be 'action'")
        if not _name_ok(self.value):
            raise ValueError(f"`value` must be a name (letters, digits, '_', '-'), got {self.value!r}")
        if not self.counters:
            raise ValueError("`counters` must name at least one counter")
        for name in self.counters:
            if not _name_ok(name):
                raise ValueError(f"`counters` names are letters, digits, '_' or '-', got {name!r}")
        if len(set(self.counters)) != len(self.counters):
            raise ValueError(f"`counters` has duplicates: {self.counters!r}")
        for counter, fn in self.reduce.items():
            if counter not in self.counters:
                raise ValueError(f"`reduce` names counter {counter!r} which is not in counters {self.counters!r}")
            if fn not in known_reduces():
                raise ValueError(f"`reduce` of {counter!r}: unknown function {fn!r}; known: {sorted(known_reduces())}")
        self.retention = _duration("retention", self.retention)
        if self.retention <= 0:
            raise ValueError(f"`retention` must be > 0, got {self.retention!r}")
        if self.truncate < 0:
            raise ValueError(f"`truncate` must be >= 0 (0 = keep all), got {self.truncate!r}")
        if self.truncate_by is None:
            self.truncate_by = self.counters[0]
        elif self.truncate_by not in self.counters:
            raise ValueError(f"`truncate_by` must be one of counters {self.counters!r}, got {self.truncate_by!r}")
        if self.tiers is not None:
            _check_tiers(self.tiers)

    def reduce_of(self, counter: str) -> str:
        """Name of the reduce function of ``counter``."""
        return self.reduce.get(counter, "sum")


def _check_tiers(tiers: list[Tier]) -> None:
    if not tiers:
        raise ValueError("`tiers` must list at least one granularity")
    for prev, nxt in itertools.pairwise(tiers):
        if prev.until is None:
            raise ValueError(f"`tiers` every tier but the last needs `until` (tier of width {prev.width:g}s)")
        if nxt.width % prev.width:
            raise ValueError(f"`tiers` widths must divide one another: {prev.width:g}s does not divide {nxt.width:g}s")
        if nxt.width <= prev.width:
            raise ValueError("`tiers` widths must grow from first to last")
    untils = [t.until for t in tiers[:-1]]
    if any(b <= a for a, b in itertools.pairwise(untils)):
        raise ValueError(f"`tiers` until ages must grow: {untils!r}")


def _default_tiers() -> list[Tier]:
    return [Tier(width=60.0, until=7200.0), Tier(width=3600.0, until=3 * 86400.0), Tier(width=86400.0)]


def _default_slots() -> dict[str, ProfileSlotConfig]:
    # MovieLens-like events: action in {show, click, like, rate}, attributes genre/author/
    # category, counters rating and dwell_ms.
    engagement = ["show", "click", "like", "dwell_ms"]
    return {
        "actions": ProfileSlotConfig(
            entity="user", value="action", counters=["count", "dwell_ms"], reduce={"dwell_ms": "max"}
        ),
        "clicked_item": ProfileSlotConfig(
            entity="user", value="item", counters=engagement, truncate=200, truncate_by="click"
        ),
        "clicked_category": ProfileSlotConfig(entity="user", value="category", counters=engagement, truncate=50),
        "watched_genre": ProfileSlotConfig(
            entity="user", value="genre", counters=["show", "click", "rating"], truncate=50
        ),
        "watched_author": ProfileSlotConfig(entity="user", value="author", counters=engagement, truncate=50),
        "item_engagement": ProfileSlotConfig(entity="item", value="action", counters=["count", "dwell_ms", "rating"]),
        "item_last_rating": ProfileSlotConfig(
            entity="item", value="item", counters=["rating"], reduce={"rating": "last"}, actions=["rate"]
        ),
    }


class ProfilesConfig(_Strict):
    """The ``[profiles]`` section.

    Attributes
    ----------
    slots: slot name -> :class:`ProfileSlotConfig`. The default declares seven slots over MovieLens-like
        events (``actions``, ``clicked_item``, ``clicked_category``, ``watched_genre``,
        ``watched_author`` for users; ``item_engagement``, ``item_last_rating`` for items).
    tiers: default slice granularities, finest first (1m until 2h, 1h until 3d, then 1d).
    secret: key of the keyed hash (BLAKE2b) of entity ids.
    merge_interval: longest time between a write and its merge into the read table.
    flush_interval: how often dirty profiles are written to LMDB and the WAL truncated.
    memory_budget_mb: approximate size of the in-memory profiles above which clean profiles are
        evicted (least recently used first).
    max_profile_bytes: the most bytes one imported profile blob may decompress to (default 64 MiB);
        ``streamrec profiles serve`` hands it to its ``ProfileStore``.
    max_import_bytes: the most bytes the blobs of one ``ImportProfiles`` request may decompress to,
        together (default 64 MiB); ``streamrec profiles serve`` hands it to its node.
    clock: ``"wall"`` (now = time.time()) or ``"event"`` (now = the latest event time written,
        for loading history).
    max_future: events further than this ahead of the clock are rejected.
    compression_level: zstd level of stored profiles.
    map_size_mb: LMDB map size.
    fsync: fsync the WAL before ``write`` returns (turning it off loses the kill -9 guarantee).
    replicas: copies of each entity's profile in a cluster of profile nodes (read by
        ``ProfileClient``; nodes ignore it): each key on this many distinct nodes of the ring,
        writes acknowledged by ``replicas // 2 + 1`` of them (docs/profiles.md, "Replication").
    """

    slots: dict[str, ProfileSlotConfig] = msgspec.field(default_factory=_default_slots)
    tiers: list[Tier] = msgspec.field(default_factory=_default_tiers)
    secret: str = "streamrec-dev-secret"
    merge_interval: float | str = "1s"
    flush_interval: float | str = "30s"
    memory_budget_mb: float = 512.0
    max_profile_bytes: int = 64 << 20
    max_import_bytes: int = 64 << 20
    clock: Literal["wall", "event"] = "wall"
    max_future: float | str = "1d"
    compression_level: int = 3
    map_size_mb: int = 4096
    fsync: bool = True
    replicas: int = 1

    def __post_init__(self) -> None:
        if not self.slots:
            raise ValueError("declare at least one slot under [profiles.slots.NAME]")
        for name in self.slots:
            if not _name_ok(name):
                raise ValueError(f"`slots` names are letters, digits, '_' or '-', got {name!r}")
        _check_tiers(self.tiers)
        if not self.secret:
            raise ValueError("`secret` must not be empty")
        self.merge_interval = _duration("merge_interval", self.merge_interval)
        self.flush_interval = _duration("flush_interval", self.flush_interval)
        self.max_future = _duration("max_future", self.max_future)
        if not self.memory_budget_mb > 0:
            raise ValueError(f"`memory_budget_mb` must be > 0, got {self.memory_budget_mb!r}")
        for name in ("max_profile_bytes", "max_import_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be a positive number of bytes, got {getattr(self, name)!r}")
        if not 1 <= self.compression_level <= 22:
            raise ValueError(f"`compression_level` must be in 1..22, got {self.compression_level!r}")
        if self.map_size_mb < 1:
            raise ValueError(f"`map_size_mb` must be >= 1, got {self.map_size_mb!r}")
        if not 1 <= self.replicas <= 64:
            raise ValueError(f"`replicas` must be in 1..64, got {self.replicas!r}")

    def tiers_of(self, slot: str) -> list[Tier]:
        """The tiers of ``slot`` (its own or the section's)."""
        return self.slots[slot].tiers or self.tiers


def profiles_config(data: dict[str, Any] | ProfilesConfig | None = None) -> ProfilesConfig:
    """Validate a plain dict (the ``[profiles]`` table) into :class:`ProfilesConfig`; ``None`` = defaults."""
    if data is None:
        return ProfilesConfig()
    if isinstance(data, ProfilesConfig):
        return data
    return convert_keyed(data, ProfilesConfig, "profiles", "slots", ProfileSlotConfig)


def load_profiles_config(path: str) -> ProfilesConfig:
    """Read the ``[profiles]`` section of a TOML file (defaults if the file has none)."""
    data = load_toml(path)
    return profiles_config(data.get("profiles", {}))
