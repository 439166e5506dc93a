"""Candidate retrieval: several sources, merged with per-source quotas and deduplicated.

Each source returns items ranked by its own measure; :func:`merge_candidates` walks the sources in
the order of ``quotas`` (the first has priority) and takes from each up to its quota of items not
already taken. A candidate keeps the name of the source that found it first, which the response
and the impression carry, so a dashboard can show which source earns clicks.

The profile-backed sources read the profile service; there is no "list every item" query there, so
popularity and freshness come from the catalogue profile ``catalog:all`` that every action feeds
(``slots.py``):

* ``popular``: the catalogue's top items by clicks over ``popular_window`` (trending with a short
  window, popular with a long one);
* ``fresh``: the catalogue's items with the latest ``first_seen`` (the ``min`` of the event times
  in the window), i.e. first seen most recently within ``fresh_window``;
* ``co_engaged``: item-based collaborative filtering in two hops: the user's recently clicked
  items → the users who clicked them (slot ``item_users``) → what those users clicked, scored by
  the number of co-engaging users weighted by their clicks, minus the seed items;
* ``ann``: nearest neighbours of the user's two-tower vector among item vectors (``ann.py``), when
  a two-tower model is configured.

The first hop of every profile source is one query (user + catalogue); co-engagement adds two.
Each source asks for twice its quota so that deduplication rarely leaves a quota unfilled.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from streamrec.errors import InvalidInputError
from streamrec.profiles.types import Feature, FeatureQuery, FeatureResult
from streamrec.serving.slots import CATALOG

__all__ = ["Candidates", "RetrievalConfig", "Retriever", "merge_candidates"]

# A pluggable source: (user, now, n) -> up to n items, best first.
Source = Callable[[str, float, int], list[str]]


class RetrievalConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The ``[serving.retrieval]`` section.

    Attributes
    ----------
    quotas: source name -> most candidates it contributes; the order is the priority order.
        Known sources: ``co_engaged``, ``ann``, ``popular``, ``fresh`` (a source that is not
        available, e.g. ``ann`` without a two-tower model, contributes nothing).
    popular_window, popular_by: window and counter (``click`` or ``show``) of the popular source.
    fresh_window: how far back ``first_seen`` is looked for.
    recent_window, recent_items: the user's recently clicked items that seed co-engagement.
    co_users: users per seed item; co_items: items per co-engaging user.
    exclude_clicked_window: if set (e.g. ``"7d"``), items the user clicked within this window are
        never candidates, from any source (the ``exclude_clicked_max`` most clicked of them; the
        window is exact at the granularity of the profile slices, as every feature window is).
        Off by default: where people come back to the same items (music, series, groceries) a
        repeat is what they want.
    """

    quotas: dict[str, int] = msgspec.field(
        default_factory=lambda: {"co_engaged": 150, "ann": 150, "popular": 150, "fresh": 50}
    )
    popular_window: str = "1d"
    popular_by: str = "click"
    fresh_window: str = "3d"
    recent_window: str = "1d"
    recent_items: int = 10
    co_window: str = "7d"
    co_users: int = 30
    co_items: int = 30
    exclude_clicked_window: str | None = None
    exclude_clicked_max: int = 500

    def __post_init__(self) -> None:
        from streamrec.config import parse_duration
        from streamrec.errors import ConfigError

        for name, quota in self.quotas.items():
            if not isinstance(quota, int) or quota < 0:
                raise ValueError(f"`quotas.{name}` must be an integer >= 0, got {quota!r}")
        if self.exclude_clicked_window is not None:
            try:
                seconds = parse_duration(self.exclude_clicked_window, "exclude_clicked_window")
            except ConfigError:
                seconds = 0.0
            if not seconds > 0:
                raise ValueError(
                    f"`exclude_clicked_window` must be a duration > 0 such as '7d' or '12h', "
                    f"got {self.exclude_clicked_window!r}"
                )
        if not isinstance(self.exclude_clicked_max, int) or self.exclude_clicked_max < 1:
            raise ValueError(f"`exclude_clicked_max` must be an integer >= 1, got {self.exclude_clicked_max!r}")

    @property
    def total(self) -> int:
        return sum(self.quotas.values())


@dataclass(frozen=True)
class Candidates:
    """Merged candidates: ``items[i]`` was found by ``sources[i]``."""

    items: list[str]
    sources: list[str]

    def __len__(self) -> int:
        return len(self.items)


def merge_candidates(ranked: Mapping[str, Sequence[str]], quotas: Mapping[str, int]) -> Candidates:
    """Merge ranked lists: sources in ``quotas`` order, each adding up to its quota of new items.

    Examples
    --------
    >>> c = merge_candidates({"a": ["x", "y", "z"], "b": ["y", "w", "v"]}, {"a": 2, "b": 2})
    >>> list(zip(c.items, c.sources))
    [('x', 'a'), ('y', 'a'), ('w', 'b'), ('v', 'b')]
    """
    seen: set[str] = set()
    items: list[str] = []
    sources: list[str] = []
    for name, quota in quotas.items():
        taken = 0
        for item in ranked.get(name, ()):
            if taken >= quota:
                break
            if item in seen:
                continue
            seen.add(item)
            items.append(item)
            sources.append(name)
            taken += 1
    return Candidates(items, sources)


def _values(result: FeatureResult, positive_col: int | None = 0) -> list[str]:
    """Values of a top-k answer, keeping those whose ``positive_col`` number is > 0."""
    values = result.values or []
    if positive_col is None:
        return list(values)
    return [v for v, row in zip(values, result.data, strict=False) if row[positive_col] > 0]


class Retriever:
    """Profile-backed retrieval sources, plus any extra sources (e.g. ``ann``).

    Parameters
    ----------
    client: a :class:`~streamrec.profiles.ProfileClient` (or store) with the serving slots.
    config: quotas and windows.
    extra: more sources by name, each ``(user, now, n) -> items``.
    """

    def __init__(self, client: Any, config: RetrievalConfig | None = None, extra: dict[str, Source] | None = None):
        self.client = client
        self.config = config or RetrievalConfig()
        self.extra = dict(extra or {})
        c = self.config
        q = c.quotas
        # With exclusion on, the profile sources ask for as many more items as may be excluded, so
        # their quotas still fill with items the user has not clicked.
        self._pad = c.exclude_clicked_max if c.exclude_clicked_window is not None else 0
        self._wanted = {name: max(2 * quota, 1) for name, quota in q.items()}  # each source's list length
        self._first = [
            Feature(
                slot="clicked_item", window=c.recent_window, counters=("click",), top_k=max(c.recent_items, 1),
                name="recent",
            ),
            Feature(
                slot="catalog_items", window=c.popular_window, counters=(c.popular_by,),
                top_k=self._wanted.get("popular", 1) + self._pad, name="popular",
            ),
            Feature(
                slot="catalog_items", window=c.fresh_window, counters=("first_seen",),
                top_k=self._wanted.get("fresh", 1) + self._pad, name="fresh",
            ),
        ]  # fmt: skip
        if self._pad:
            self._first.append(
                Feature(
                    slot="clicked_item", window=c.exclude_clicked_window, counters=("click",),
                    top_k=c.exclude_clicked_max, name="exclude",
                )
            )  # fmt: skip
        self._users = [
            Feature(slot="item_users", window=c.co_window, counters=("click",), top_k=c.co_users, name="users")
        ]
        self._items = [
            Feature(slot="clicked_item", window=c.co_window, counters=("click",), top_k=c.co_items, name="items")
        ]

    def retrieve(self, user: str, now: float) -> Candidates:
        """Every source's ranked list, merged by quota."""
        return merge_candidates(self.ranked(user, now), self.config.quotas)

    def ranked(self, user: str, now: float) -> dict[str, list[str]]:
        """Each source's items, best first (up to twice its quota), before merging."""
        if not isinstance(user, str) or not user:
            raise InvalidInputError("user", user, "must be a non-empty string")
        quotas = self.config.quotas
        first = self.client.query(FeatureQuery(features=self._first, entities=[f"user:{user}", CATALOG], now=now))
        user_row, catalog_row = first.results
        excluded = set(_values(user_row[3])) if self._pad else set()
        ranked: dict[str, list[str]] = {
            "popular": _values(catalog_row[1]),
            "fresh": _values(catalog_row[2], None),
        }
        if quotas.get("co_engaged", 0) > 0:
            n = self._wanted["co_engaged"] + len(excluded)
            ranked["co_engaged"] = self.co_engaged(user, _values(user_row[0]), now, n)
        for name, source in self.extra.items():
            if quotas.get(name, 0) > 0:
                ranked[name] = source(user, now, self._wanted[name] + len(excluded))
        if not self._pad:
            return ranked
        return {
            name: [i for i in items if i not in excluded][: self._wanted.get(name, 1)] for name, items in ranked.items()
        }

    def co_engaged(self, user: str, seeds: list[str], now: float, n: int) -> list[str]:
        """Items clicked by users who clicked the ``seeds``, by co-engagement weight (best first)."""
        if not seeds:
            return []
        hop = self.client.query(FeatureQuery(features=self._users, entities=[f"item:{i}" for i in seeds], now=now))
        users = Counter()
        for row in hop.results:
            for v, data in zip(row[0].values or [], row[0].data, strict=False):
                if v != user and data[0] > 0:
                    users[v] += data[0]
        if not users:
            return []
        names = list(users)
        hop2 = self.client.query(FeatureQuery(features=self._items, entities=[f"user:{u}" for u in names], now=now))
        score: Counter[str] = Counter()
        for u, row in zip(names, hop2.results, strict=True):
            weight = users[u]
            for v, data in zip(row[0].values or [], row[0].data, strict=False):
                if data[0] > 0:
                    score[v] += weight
        for seed in seeds:
            score.pop(seed, None)
        return [item for item, _ in sorted(score.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]
