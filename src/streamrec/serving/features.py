"""The feature plan: one declaration that turns (user, candidates, now) into model inputs.

Why a declared plan: the ranker, the impression log and any training job that rebuilds features
must agree on every column. The plan is data (``msgspec`` structs, loadable from TOML), so the
order of the dense vector and the meaning of each sparse slot are written down once; the model's
``n_dense`` and slots come from it, and the impression records exactly what :meth:`FeaturePlan.fetch`
produced, so the joiner's examples are the served inputs byte for byte (no training/serving skew).

How a request is answered (:meth:`FeaturePlan.fetch`): **one** :class:`~streamrec.profiles.FeatureQuery`
over the user and every candidate, carrying every profile feature of the plan (a user feature on an
item entity answers zeros at no cost: the slot is not in an item's profile). From that one answer:

* ``user`` features: one number, broadcast to every candidate;
* ``item`` features: one number per candidate;
* ``user_item`` features: a top-k feature of the *user* (clicks per category over 7d, clicks per
  item over 1d...), crossed with each candidate by its item id or its category: a dictionary lookup
  per candidate, vectorised with ``np.fromiter``;
* ``context`` features: hour of day and weekday of ``now`` (UTC), as sin/cos so 23h is next to 0h;
* sparse slots: stable 63-bit hashes of the user id, the item id, the item's category, and the
  user's top values of a profile slot (a multi-id bag).

``transform = "log1p"`` squashes counts so one viral item does not saturate the head.

With an :class:`ItemCache` (the recommender's, ``[serving] item_cache_ms``) the user's features
come from a one-entity query and the items' from answers shared across requests for a bounded
time (the misses in one query, straight into a matrix in embedded mode): the same FeatureSet
whenever the store did not change within the bound (see the class for the bound).
"""

from __future__ import annotations

import functools
import hashlib
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
import numpy as np
import torch

from streamrec.batch import ExampleBatch
from streamrec.config import convert
from streamrec.embedding import JaggedIds
from streamrec.errors import InvalidInputError
from streamrec.profiles.types import Feature, FeatureQuery, QueryResult
from streamrec.records import Example

__all__ = ["DenseFeature", "FeaturePlan", "FeatureSet", "ItemCache", "SparseFeature", "default_plan", "stable_id"]

_CONTEXT = ("hour_sin", "hour_cos", "weekday_sin", "weekday_cos", "hour", "weekday")
_MASK = (1 << 63) - 1
_FEATURES: dict[int, tuple[Any, list[Feature]]] = {}  # plan id -> (plan, its query's features)
_SPLIT: dict[int, tuple[Any, tuple[list[Feature], list[Feature]]]] = {}  # plan id -> (plan, (user, item))


def stable_id(slot: str, value: str) -> int:
    """A stable non-negative int64 id of ``value`` in ``slot`` (BLAKE2b; the same in every process)."""
    digest = hashlib.blake2b(f"{slot}\x1f{value}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & _MASK


# Requests ask for the same hot items and categories over and over: their ids are remembered
# (a pure function; 2**16 entries of values up to 128 characters: 50 MB at the very most, a few MB
# for ids of usual length; longer values are hashed every time).
_remembered_id = functools.lru_cache(maxsize=1 << 16)(stable_id)


def _cached_id(slot: str, value: str) -> int:
    return _remembered_id(slot, value) if len(value) <= 128 else stable_id(slot, value)


class DenseFeature(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One column of the dense vector.

    Attributes
    ----------
    name: the column's name (unique in the plan).
    kind: ``"user"``, ``"item"``, ``"user_item"`` or ``"context"``.
    slot, window, agg, counter, numerator, denominator, alpha, beta: the profile feature
        (:class:`~streamrec.profiles.Feature`); ``counter`` picks one counter of ``"counters"``.
    match: for ``user_item``: which key of the candidate picks the user's value, ``"item"`` or
        ``"category"``.
    top_k: for ``user_item``: how many of the user's values to fetch.
    context: for ``context``: one of ``hour_sin hour_cos weekday_sin weekday_cos hour weekday``.
    transform: ``"log1p"`` (counts) or ``"none"`` (ratios, context).
    """

    name: str
    kind: Literal["user", "item", "user_item", "context"]
    slot: str | None = None
    window: str = "1d"
    agg: Literal["counters", "ratio", "distinct"] = "counters"
    counter: str | None = None
    numerator: str | None = None
    denominator: str | None = None
    alpha: float = 0.0
    beta: float = 0.0
    match: Literal["item", "category"] = "item"
    top_k: int = 50
    context: str | None = None
    transform: Literal["none", "log1p"] = "none"

    def __post_init__(self) -> None:
        if self.kind == "context":
            if self.context not in _CONTEXT:
                raise ValueError(f"`context` of {self.name!r} must be one of {_CONTEXT}, got {self.context!r}")
        elif not self.slot:
            raise ValueError(f"`slot` of {self.name!r} is required for kind {self.kind!r}")
        if self.agg == "counters" and self.kind != "context" and not self.counter:
            raise ValueError(f"`counter` of {self.name!r} is required with agg 'counters'")

    def profile_feature(self) -> Feature:
        """The :class:`Feature` this column reads (its output name is the column name)."""
        return Feature(
            slot=self.slot or "",
            window=self.window,
            agg=self.agg,
            counters=(self.counter,) if self.agg == "counters" else None,
            numerator=self.numerator,
            denominator=self.denominator,
            alpha=self.alpha,
            beta=self.beta,
            top_k=self.top_k if self.kind == "user_item" else 0,
            name=self.name,
        )


class SparseFeature(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One sparse slot of the model.

    Attributes
    ----------
    name: the model's slot name (its embedding table).
    kind: ``"user"`` (the user id), ``"item"`` (the item id), ``"category"`` (the item's
        category) or ``"user_top"`` (the user's ``top_k`` values of profile ``slot`` over
        ``window``, ranked by ``counter``: a bag of ids).
    """

    name: str
    kind: Literal["user", "item", "category", "user_top"]
    slot: str | None = None
    window: str = "7d"
    counter: str | None = None
    top_k: int = 5

    def __post_init__(self) -> None:
        if self.kind == "user_top" and not self.slot:
            raise ValueError(f"`slot` of sparse {self.name!r} is required for kind 'user_top'")


class FeaturePlan(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The declared features of the ranker (the ``[serving.features]`` TOML section).

    Attributes
    ----------
    sparse: the model's sparse slots, in order.
    dense: the dense columns, in order (``n_dense`` = their count).
    category_slot: the item slot whose top value is the item's category.
    category_window: how far back to look for it.

    Examples
    --------
    >>> from streamrec.profiles import ProfileClient
    >>> from streamrec.serving.slots import serving_profiles_config
    >>> client = ProfileClient.embedded(serving_profiles_config(), clock=lambda: 1_700_000_030.0)
    >>> plan = default_plan()
    >>> plan.n_dense >= 50, plan.slots
    (True, ['user', 'item', 'category', 'user_categories'])
    >>> ev = {"user": "u1", "item": "i1", "action": "click", "time": 1_700_000_000.0,
    ...       "attributes": {"category": "news"}}
    >>> client.write([ev]).accepted
    1
    >>> client.flush()
    >>> fs = plan.fetch(client, "u1", ["i1", "i2"], now=1_700_000_030.0)
    >>> fs.categories, fs.dense.shape == (2, plan.n_dense)
    (['news', ''], True)
    >>> round(float(fs.column("item_click_1h")[0]), 4), round(math.log1p(1.0), 4)
    (0.6931, 0.6931)
    >>> client.close()
    """

    sparse: list[SparseFeature]
    dense: list[DenseFeature]
    category_slot: str = "item_category"
    category_window: str = "30d"

    def __post_init__(self) -> None:
        names = [d.name for d in self.dense]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"`dense` names must be unique, repeated: {sorted(dup)}")
        slots = [s.name for s in self.sparse]
        if len(set(slots)) != len(slots):
            raise ValueError(f"`sparse` names must be unique, got {slots}")

    # -- shape ------------------------------------------------------------------------------
    @property
    def n_dense(self) -> int:
        return len(self.dense)

    @property
    def slots(self) -> list[str]:
        return [s.name for s in self.sparse]

    @property
    def dense_names(self) -> list[str]:
        return [d.name for d in self.dense]

    def profile_slots(self) -> set[str]:
        """Every profile slot the plan reads."""
        out = {d.slot for d in self.dense if d.slot} | {s.slot for s in self.sparse if s.slot}
        return out | {self.category_slot}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeaturePlan:
        """Validate a ``[serving.features]`` table; errors name the dotted key."""
        return convert(data, cls, "serving.features")

    def _category_feature(self) -> Feature:
        """The item's category: the top value of ``category_slot`` (counter ``count``)."""
        return Feature(
            slot=self.category_slot, window=self.category_window, agg="counters", counters=("count",), top_k=1,
            name="_category",
        )  # fmt: skip

    def _query_features(self) -> list[Feature]:
        """Every profile feature of a request, built once per plan (the same list object each time,
        so a gRPC node encodes a feature list it has seen once)."""
        hit = _FEATURES.get(id(self))
        if hit is not None and hit[0] is self:
            return hit[1]
        feats = [d.profile_feature() for d in self.dense if d.kind != "context"]
        feats.append(self._category_feature())
        for s in self.sparse:
            if s.kind == "user_top":
                feats.append(
                    Feature(
                        slot=s.slot or "", window=s.window, agg="counters",
                        counters=(s.counter,) if s.counter else None, top_k=s.top_k, name=f"_top:{s.name}",
                    )
                )  # fmt: skip
        if len(_FEATURES) > 64:
            _FEATURES.clear()
        _FEATURES[id(self)] = (self, feats)
        return feats

    # -- the request path ---------------------------------------------------------------------
    def fetch(
        self, client: Any, user: str, items: Sequence[str], now: float, cache: ItemCache | None = None
    ) -> FeatureSet:
        """Features of ``user`` with each of ``items`` at ``now``, from one batched profile query.

        With ``cache`` (an :class:`ItemCache` of this plan), the user's features come from a
        one-entity query and the items' from the cache, each answer at most ``cache.max_age_s``
        old (the misses in one query); without, one query over the user and every item.

        Parameters
        ----------
        client
            A :class:`~streamrec.profiles.ProfileClient` or :class:`~streamrec.profiles.ProfileStore`.
        user, items
            Raw ids; ``items`` are the candidates, in order.
        now
            The request's clock (epoch seconds): windows end here and context reads it.
        cache
            Item-side answers shared across requests (see :class:`ItemCache`), or ``None``.
        """
        if not isinstance(user, str) or not user:
            raise InvalidInputError("user", user, "must be a non-empty string")
        if not isinstance(now, int | float) or not math.isfinite(now):
            raise InvalidInputError("now", now, "must be a finite epoch time")
        items = list(items)
        if cache is not None:
            return self._fetch_cached(client, user, items, float(now), cache)
        features = self._query_features()
        entities = [f"user:{user}", *(f"item:{i}" for i in items)]
        result = client.query(FeatureQuery(features=features, entities=entities, now=float(now)))
        return self._assemble(result, user, items, float(now))

    def _fetch_cached(self, client: Any, user: str, items: list[str], now: float, cache: ItemCache) -> FeatureSet:
        """The user's features from a one-entity query; the items' from ``cache`` (a query for its misses)."""
        user_features, _ = self._split_features()
        answer = client.query(FeatureQuery(features=user_features, entities=[f"user:{user}"], now=now))
        user_row = dict(zip(answer.names, answer.results[0], strict=True))
        numbers, categories = cache.lookup(client, items, now)
        return self._build(user_row, numbers, categories, user, items, now)

    def _split_features(self) -> tuple[list[Feature], list[Feature]]:
        """The query's features read from the user (user, user_item, user_top) and from items
        (item columns in plan order, then ``_category``): one list object each, per plan."""
        hit = _SPLIT.get(id(self))
        if hit is not None and hit[0] is self:
            return hit[1]
        item_names = {d.name for d in self.dense if d.kind == "item"} | {"_category"}
        feats = self._query_features()
        split = (
            [f for f in feats if f.output_name() not in item_names],
            [f for f in feats if f.output_name() in item_names and f.output_name() != "_category"]
            + [self._category_feature()],
        )
        if len(_SPLIT) > 64:
            _SPLIT.clear()
        _SPLIT[id(self)] = (self, split)
        return split

    def item_sparse(self, client: Any, items: Sequence[str], now: float) -> tuple[list[str], dict[str, JaggedIds]]:
        """The items' categories and their ids in the plan's item-side slots (``item``, ``category``).

        One profile query of one feature (the category), whatever the plan's size: what an item
        index needs to embed a whole catalogue.
        """
        items = list(items)
        result = client.query(
            FeatureQuery(features=[self._category_feature()], entities=[f"item:{i}" for i in items], now=float(now))
        )
        categories = [r[0].values[0] if r[0].values else "" for r in result.results]
        sparse = {}
        for s in self.sparse:
            if s.kind == "item":
                sparse[s.name] = _jagged([[stable_id(s.name, i)] for i in items])
            elif s.kind == "category":
                sparse[s.name] = _jagged([[stable_id(s.name, c)] if c else [] for c in categories])
        return categories, sparse

    def _assemble(self, result: QueryResult, user: str, items: list[str], now: float) -> FeatureSet:
        index = {name: j for j, name in enumerate(result.names)}
        item_rows = result.results[1:]
        _, item_features = self._split_features()
        numbers, categories = item_numbers(result, item_features, item_rows)
        user_row = {name: result.results[0][j] for name, j in index.items()}
        return self._build(user_row, numbers, categories, user, items, now)

    def _build(
        self,
        user_row: dict[str, Any],
        numbers: np.ndarray,
        categories: list[str],
        user: str,
        items: list[str],
        now: float,
    ) -> FeatureSet:
        """The FeatureSet from the user's answers (by feature name) and the items' numbers
        (``[n_items, item columns]`` in plan order, raw) and categories."""
        n = len(items)
        dense = np.zeros((n, self.n_dense), dtype=np.float32)
        item_col = 0
        item_keys = cat_keys = None  # the items' and categories' codes (_codes), when a crossing needs them
        for c, d in enumerate(self.dense):
            if d.kind == "context":
                dense[:, c] = _context(d.context or "", now)
                continue
            if d.kind == "user":
                dense[:, c] = user_row[d.name].data[0][0]
            elif d.kind == "item":
                dense[:, c] = numbers[:, item_col]
                item_col += 1
            else:
                if d.match == "item":
                    keys = item_keys if item_keys is not None else (item_keys := _codes(items))
                else:
                    keys = cat_keys if cat_keys is not None else (cat_keys := _codes(categories))
                answer = user_row[d.name]
                dense[:, c] = _match(answer.values or (), [row[0] for row in answer.data], keys)
        # An empty window of a max/min counter answers its identity (inf, or NaN once reduced):
        # the model sees 0 ("nothing in the window") instead.
        np.nan_to_num(dense, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        log_cols = [c for c, d in enumerate(self.dense) if d.transform == "log1p"]
        if log_cols:
            dense[:, log_cols] = np.log1p(np.maximum(dense[:, log_cols], 0.0))
        ids: dict[str, JaggedIds] = {}
        one_each = np.arange(n, dtype=np.int64)
        for s in self.sparse:
            if s.kind == "user":
                ids[s.name] = _bags(np.full(n, stable_id(s.name, user), dtype=np.int64), one_each)
            elif s.kind == "item":
                name = s.name
                ids[s.name] = _bags(np.fromiter((_cached_id(name, i) for i in items), np.int64, n), one_each)
            elif s.kind == "category":
                name = s.name
                # -1 for "no category" (stable ids are >= 0): such a candidate has no id in the slot
                each = np.fromiter((_cached_id(name, c) if c else -1 for c in categories), np.int64, n)
                held = each >= 0
                ids[s.name] = _bags(each[held], np.cumsum(held) - held)
            else:
                top = user_row[f"_top:{s.name}"].values or []
                one = np.array([stable_id(s.name, v) for v in top], dtype=np.int64)
                ids[s.name] = _bags(np.tile(one, n), one_each * len(one))
        return FeatureSet(user=user, items=items, categories=categories, ids=ids, dense=dense, now=now, plan=self)


def item_numbers(result: QueryResult, item_features: list[Feature], rows: list[Any]) -> tuple[np.ndarray, list[str]]:
    """The item columns of ``rows`` (answers of ``result``) as a float64 matrix, and each row's category.

    ``item_features`` are the plan's item features in column order, the category last.
    """
    index = {name: j for j, name in enumerate(result.names)}
    n = len(rows)
    numbers = np.empty((n, len(item_features) - 1), dtype=np.float64)
    for c, f in enumerate(item_features[:-1]):
        j = index[f.output_name()]
        numbers[:, c] = np.fromiter((r[j].data[0][0] for r in rows), dtype=np.float64, count=n)
    cat_j = index["_category"]
    return numbers, [r[cat_j].values[0] if r[cat_j].values else "" for r in rows]


class ItemCache:
    """Item-side feature answers of one plan, shared across requests, each at most ``max_age_s`` old.

    Why: of a request's 500 candidates most are the same for every user (popular and fresh items),
    and item counters change slowly next to hundreds of requests a second; asking the store for
    every (item, feature) again in every request was most of the feature stage, and its answers
    most of what the garbage collector walked. The user's features are never cached.

    **The bound.** An item's numbers are served from the cache only if the store answered them at
    most ``life`` ago on the monotonic clock and for a request clock ``now0`` with
    ``now0 <= now <= now0 + life``, where each entry's ``life`` is drawn in
    ``[max_age_s / 2, max_age_s]`` when it is filled (so the entries one request fills do not all
    expire together and make one slow request). A cached answer is therefore the uncached answer
    of the store as it was at most ``max_age_s`` ago, over windows that end at most ``max_age_s``
    before ``now``. A request whose ``now`` goes back in time misses.

    Columnar: one float64 matrix with a row per item, a dict item -> row, and the categories; a
    lookup is one vectorised freshness test and one gather, and the misses are one profile query.
    When ``capacity`` items are held, the cache starts over. Thread-safe (one lock).

    Examples
    --------
    >>> from streamrec.profiles import ProfileClient
    >>> from streamrec.serving.slots import serving_profiles_config
    >>> client = ProfileClient.embedded(serving_profiles_config(), clock=lambda: 1_700_000_030.0)
    >>> plan = default_plan()
    >>> cache = ItemCache(plan, max_age_s=0.5)
    >>> ev = {"user": "u1", "item": "i1", "action": "click", "time": 1_700_000_000.0,
    ...       "attributes": {"category": "news"}}
    >>> client.write([ev]).accepted
    1
    >>> client.flush()
    >>> a = plan.fetch(client, "u1", ["i1", "i2"], now=1_700_000_030.0, cache=cache)
    >>> b = plan.fetch(client, "u1", ["i1", "i2"], now=1_700_000_030.0)
    >>> bool((a.dense == b.dense).all()), a.categories, cache.stats()["misses"]
    (True, ['news', ''], 2)
    >>> client.close()
    """

    def __init__(
        self,
        plan: FeaturePlan,
        max_age_s: float,
        capacity: int = 100_000,
        clock: Any = time.monotonic,
        seed: int = 0,
    ) -> None:
        if isinstance(max_age_s, bool) or not isinstance(max_age_s, int | float) or not 0 < max_age_s < math.inf:
            raise InvalidInputError("max_age_s", max_age_s, "must be a positive number of seconds")
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise InvalidInputError("capacity", capacity, "must be a positive number of items")
        self.plan = plan
        self.max_age_s = float(max_age_s)
        self.capacity = capacity
        self._clock = clock
        self._features = plan._split_features()[1]
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self.hits = self.misses = self.resets = 0
        self._start_over()

    def _start_over(self) -> None:
        cap, ncols = self.capacity, len(self._features) - 1
        self._index: dict[str, int] = {}
        self._categories: list[str] = []
        self._numbers = np.zeros((cap, ncols), dtype=np.float64)
        self._born_wall = np.zeros(cap, dtype=np.float64)
        self._born_now = np.zeros(cap, dtype=np.float64)
        self._life = np.full(cap, -1.0, dtype=np.float64)

    def __len__(self) -> int:
        return len(self._index)

    def stats(self) -> dict[str, Any]:
        """``max_age_ms`` (the bound), ``entries``, ``hits``, ``misses``, ``hit_rate``, ``resets``."""
        total = self.hits + self.misses
        return {
            "max_age_ms": 1000.0 * self.max_age_s,
            "entries": len(self._index),
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": self.hits / total if total else 0.0,
            "resets": self.resets,
        }

    def lookup(self, client: Any, items: Sequence[str], now: float) -> tuple[np.ndarray, list[str]]:
        """The item columns (float64 ``[len(items), item columns]``, plan order, raw) and categories."""
        n = len(items)
        with self._lock:
            wall = self._clock()
            rows = np.fromiter((self._index.get(i, -1) for i in items), dtype=np.int64, count=n)
            at = np.maximum(rows, 0)
            life = self._life[at]
            since = now - self._born_now[at]
            fresh = (rows >= 0) & (wall - self._born_wall[at] <= life) & (since >= 0.0) & (since <= life)
            stale = np.flatnonzero(~fresh)
            if len(self._index) + stale.size > self.capacity:
                self._start_over()
                self.resets += 1
                stale = np.arange(n)
            self.hits += n - stale.size
            self.misses += stale.size
            if stale.size:
                self._fill(client, list(dict.fromkeys(items[j] for j in stale.tolist())), now, wall)
                rows = np.fromiter((self._index[i] for i in items), dtype=np.int64, count=n)
            categories = self._categories
            return self._numbers[rows], [categories[r] for r in rows.tolist()]

    def _fill(self, client: Any, missing: list[str], now: float, wall: float) -> None:
        # ``wall`` was read before the query: the store's answer is at least that recent.
        labels = [f"item:{i}" for i in missing]
        store = _local_store(client)
        if store is not None:  # embedded: the numbers straight into a matrix, no answer per (item, feature)
            numbers = store.query_numbers(self._features[:-1], labels, now)
            cat = store.query(FeatureQuery(features=self._features[-1:], entities=labels, now=now))
            categories = [r[0].values[0] if r[0].values else "" for r in cat.results]
        else:
            result = client.query(FeatureQuery(features=self._features, entities=labels, now=now))
            numbers, categories = item_numbers(result, self._features, result.results)
        rows = np.empty(len(missing), dtype=np.int64)
        index, cats = self._index, self._categories
        for j, (item, category) in enumerate(zip(missing, categories, strict=True)):
            row = index.get(item)
            if row is None:
                row = index[item] = len(cats)
                cats.append(category)
            else:
                cats[row] = category
            rows[j] = row
        self._numbers[rows] = numbers
        self._born_wall[rows] = wall
        self._born_now[rows] = now
        self._life[rows] = self.max_age_s * (0.5 + 0.5 * self._rng.random(len(missing)))


def _local_store(client: Any) -> Any:
    """The in-process :class:`ProfileStore` behind ``client`` (a store, or an embedded client), else ``None``."""
    from streamrec.profiles.store import ProfileStore

    if isinstance(client, ProfileStore):
        return client
    store = getattr(client, "local_store", None)  # ProfileClient.embedded: one local node holding the store
    if isinstance(store, ProfileStore):
        return store
    return None


def _codes(keys: Sequence[str]) -> tuple[dict[str, int], np.ndarray]:
    """Each distinct key's code, and the code of each key: one dict pass over the candidates."""
    index: dict[str, int] = {}
    codes = np.fromiter((index.setdefault(k, len(index)) for k in keys), dtype=np.int64, count=len(keys))
    return index, codes


def _match(names: Sequence[str], numbers: Sequence[float], keys: tuple[dict[str, int], np.ndarray]) -> np.ndarray:
    """For each key of ``keys`` (:func:`_codes`), the number of the equal name (the last one if
    repeated), else 0: ``dict(zip(names, numbers)).get(key, 0.0)`` for every key, with the Python
    work on the user's few names and one NumPy gather over the candidates."""
    index, codes = keys
    by_code = np.zeros(len(index) + 1, dtype=np.float64)
    for name, number in dict(zip(names, numbers, strict=False)).items():
        code = index.get(name)
        if code is not None:
            by_code[code] = number
    return by_code[codes]


def _bags(values: np.ndarray, offsets: np.ndarray) -> JaggedIds:
    return JaggedIds(torch.from_numpy(values), torch.from_numpy(offsets.astype(np.int64)))  # a copy per slot


def _jagged(lists: list[list[int]]) -> JaggedIds:
    """Per-example id lists as :class:`JaggedIds` (NumPy, no per-id Python objects kept)."""
    n = len(lists)
    lengths = np.fromiter(map(len, lists), dtype=np.int64, count=n)
    values = np.fromiter((v for ids in lists for v in ids), dtype=np.int64, count=int(lengths.sum()))
    offsets = np.zeros(n, dtype=np.int64)
    if n:
        np.cumsum(lengths[:-1], out=offsets[1:])
    return JaggedIds(torch.from_numpy(values), torch.from_numpy(offsets))


def _context(kind: str, now: float) -> float:
    day = now / 86400.0
    hour = (now % 86400.0) / 3600.0
    weekday = (math.floor(day) + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    if kind == "hour":
        return hour / 24.0
    if kind == "weekday":
        return weekday / 7.0
    angle = 2 * math.pi * (hour / 24.0 if kind.startswith("hour") else (weekday + hour / 24.0) / 7.0)
    return math.sin(angle) if kind.endswith("sin") else math.cos(angle)


@dataclass(frozen=True)
class FeatureSet:
    """The features of one request: per candidate, its sparse ids and dense vector.

    Attributes
    ----------
    ids: model slot -> the candidates' ids (:class:`JaggedIds`: one bag per candidate, NumPy-backed).
    dense: float32 ``[n_candidates, n_dense]`` in the plan's order.
    categories: each candidate's category (``""`` when the profiles do not know it).
    """

    user: str
    items: list[str]
    categories: list[str]
    ids: dict[str, JaggedIds]
    dense: np.ndarray
    now: float
    plan: FeaturePlan

    def __len__(self) -> int:
        return len(self.items)

    @property
    def sparse(self) -> dict[str, list[list[int]]]:
        """Model slot -> per candidate, the list of its ids (what an :class:`Impression` logs)."""
        return {slot: [self._bag(bags, i) for i in range(len(self.items))] for slot, bags in self.ids.items()}

    def _bag(self, bags: JaggedIds, i: int) -> list[int]:
        offsets = bags.offsets.numpy()
        end = int(offsets[i + 1]) if i + 1 < len(offsets) else bags.values.numel()
        return bags.values.numpy()[int(offsets[i]) : end].tolist()

    def column(self, name: str) -> np.ndarray:
        """The dense column ``name`` (one value per candidate)."""
        return self.dense[:, self.plan.dense_names.index(name)]

    def sparse_of(self, i: int) -> dict[str, list[int]]:
        """Candidate ``i``'s sparse ids, as an :class:`Impression` stores them."""
        i = range(len(self.items))[i]  # a negative index counts from the end, as for a list
        return {slot: self._bag(bags, i) for slot, bags in self.ids.items()}

    def batch(self) -> ExampleBatch:
        """The candidates as an unlabelled :class:`ExampleBatch` (what the ranker scores)."""
        n = len(self.items)
        return ExampleBatch(
            # copies: the impressions are built from `ids` after the model ran on these
            {slot: JaggedIds(bags.values.clone(), bags.offsets.clone()) for slot, bags in self.ids.items()},
            torch.from_numpy(self.dense),
            torch.zeros(n),
            time=torch.full((n,), self.now, dtype=torch.float64),
        )

    def examples(self, labels: Sequence[float]) -> list[Example]:
        """Training examples with these features (how a batch job rebuilds what serving would log)."""
        if len(labels) != len(self.items):
            raise InvalidInputError("labels", len(labels), f"expected {len(self.items)} labels, one per item")
        return [
            Example(
                sparse=self.sparse_of(i), dense=self.dense[i].tolist(), label=float(labels[i]),
                time=self.now, user=self.user, item=item,
            )
            for i, item in enumerate(self.items)
        ]  # fmt: skip


def default_plan(windows: Sequence[str] = ("5m", "1h", "1d", "7d")) -> FeaturePlan:
    """The default plan: 4 sparse slots and ``14 * len(windows) + 4`` dense columns (60 by default).

    Per window: item shows, clicks, likes, smoothed CTR ``(click + 1) / (show + 20)``, max dwell,
    distinct engaged users; user shows, clicks, CTR, distinct categories; the user's clicks and
    shows on the candidate's category, clicks on the candidate itself, and CTR on its category.
    Plus hour and weekday as sin/cos. Reads the default profile slots and :data:`SERVING_SLOTS`.
    """
    dense: list[DenseFeature] = []
    log = "log1p"
    for w in windows:

        def count(name: str, kind: Any, slot: str, counter: str, w: str = w) -> DenseFeature:
            return DenseFeature(name=f"{name}_{w}", kind=kind, slot=slot, window=w, counter=counter, transform=log)

        dense += [
            count("item_show", "item", "item_ctr", "show"),
            count("item_click", "item", "item_ctr", "click"),
            count("item_like", "item", "item_ctr", "like"),
            DenseFeature(
                name=f"item_ctr_{w}", kind="item", slot="item_ctr", window=w, agg="ratio",
                numerator="click", denominator="show", alpha=1.0, beta=20.0,
            ),
            count("item_dwell", "item", "item_ctr", "dwell_ms"),
            DenseFeature(
                name=f"item_users_{w}", kind="item", slot="item_users", window=w, agg="distinct", transform=log
            ),
            count("user_show", "user", "clicked_item", "show"),
            count("user_click", "user", "clicked_item", "click"),
            DenseFeature(
                name=f"user_ctr_{w}", kind="user", slot="clicked_item", window=w, agg="ratio",
                numerator="click", denominator="show", alpha=1.0, beta=20.0,
            ),
            DenseFeature(
                name=f"user_categories_{w}", kind="user", slot="clicked_category", window=w, agg="distinct",
                transform=log,
            ),
            DenseFeature(
                name=f"user_category_click_{w}", kind="user_item", slot="clicked_category", window=w,
                counter="click", match="category", top_k=50, transform=log,
            ),
            DenseFeature(
                name=f"user_category_show_{w}", kind="user_item", slot="clicked_category", window=w,
                counter="show", match="category", top_k=50, transform=log,
            ),
            DenseFeature(
                name=f"user_category_ctr_{w}", kind="user_item", slot="clicked_category", window=w, agg="ratio",
                numerator="click", denominator="show", alpha=1.0, beta=10.0, match="category", top_k=50,
            ),
            DenseFeature(
                name=f"user_item_click_{w}", kind="user_item", slot="clicked_item", window=w, counter="click",
                match="item", top_k=200, transform=log,
            ),
        ]  # fmt: skip
    dense += [DenseFeature(name=c, kind="context", context=c) for c in _CONTEXT[:4]]
    sparse = [
        SparseFeature(name="user", kind="user"),
        SparseFeature(name="item", kind="item"),
        SparseFeature(name="category", kind="category"),
        SparseFeature(name="user_categories", kind="user_top", slot="clicked_category", window="7d", counter="click"),
    ]
    return FeaturePlan(sparse=sparse, dense=dense)
