"""Nearest-neighbour retrieval in the two-tower item space (``usearch``), refreshed as the model syncs.

A two-tower model scores ``<user_vector(user features), item_vector(item ids)>``, so the items a
user would score highest are the nearest neighbours of the user's vector under inner product.
:class:`AnnSource` keeps a ``usearch`` HNSW index of the item vectors of the catalogue (the items
of the ``catalog:all`` profile over ``catalog_window``) and answers ``(user, now, n)`` with the
``n`` nearest items. Inner product is turned into L2 distance by one extra coordinate
(:func:`_augment_items`), so the HNSW graph searches a true metric.

Why and when it is rebuilt: item vectors change when the serving model applies an update (new
embedding rows arrive every few seconds, a new tower every few minutes) and the catalogue changes
as items are born. The index is rebuilt when the model's ``version`` moved, or ``refresh_s``
passed, at most once per ``min_interval_s``: the request that notices starts the rebuild in a
background thread and is answered from the current index; the new index replaces the old one with
one reference assignment, so concurrent requests read a whole index, old or new. (Only the first
index is built in the request.) Rebuilding is one profile query of one feature (the items'
categories), one forward pass of the item tower, and ``Index.add``.

The user vector needs the dense columns too (the user tower takes them): they are built by the
feature plan for the user with an empty item (item-dependent columns at their no-history value).

The model's :class:`~streamrec.models.ranking.RankingModel` is reached through ``ServingModel._model``
(the serving model exposes no tower accessors yet); :func:`_ranking_model` is that one adapter.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import torch
from usearch.index import Index

from streamrec.errors import InvalidInputError
from streamrec.models.heads import TwoTowerHead
from streamrec.profiles.types import Feature, FeatureQuery
from streamrec.serving.features import FeaturePlan
from streamrec.serving.slots import CATALOG

__all__ = ["AnnSource"]

_EMPTY_ITEM = "\x00no-item"  # an item id no event can carry (ids are user text; NUL is not typed)


def _augment_items(vectors: np.ndarray) -> np.ndarray:
    """Item vectors ``x`` as ``[x, sqrt(M^2 - |x|^2)]`` (``M`` the largest norm): vectorised.

    With the query ``[q, 0]``, ``|q' - x'|^2 = |q|^2 + M^2 - 2 q.x``, so the L2-nearest items are
    the items of largest inner product (the MIPS-to-NN reduction of Bachrach et al., 2014). HNSW
    graphs are built for metrics; searched with raw inner product (not a metric) they miss the
    best items of large norm (measured here: 3 of the exact top 10 on an 80-item catalogue).
    """
    if not len(vectors):
        return np.zeros((0, vectors.shape[1] + 1), dtype=np.float32)
    sq = np.einsum("ij,ij->i", vectors, vectors)
    extra = np.sqrt(np.maximum(sq.max() - sq, 0.0))
    return np.hstack([vectors, extra[:, None]]).astype(np.float32)


def _ranking_model(model: Any) -> Any:
    """The ``RankingModel`` a :class:`ServingModel` is answering with now (one reference read)."""
    return getattr(model, "_model", model)


class AnnSource:
    """A retrieval source: the items nearest to the user in the two-tower space.

    Parameters
    ----------
    client: the profile client (catalogue and features).
    model: a :class:`ServingModel` (or ``RankingModel``) whose head is a ``TwoTowerHead``.
    plan: the feature plan the model was trained with.
    catalog_size: most items indexed (the catalogue's top by shows over ``catalog_window``).
    refresh_s: rebuild at least this often even if the model did not change (new items).
    min_interval_s: never rebuild more often than this.
    background: rebuild in a background thread (the request that notices does not wait; it and
        the requests after it use the previous index until the new one is swapped in).
    """

    def __init__(
        self,
        client: Any,
        model: Any,
        plan: FeaturePlan,
        *,
        catalog_window: str = "7d",
        catalog_size: int = 20_000,
        refresh_s: float = 60.0,
        min_interval_s: float = 1.0,
        connectivity: int = 16,
        background: bool = True,
    ) -> None:
        head = _ranking_model(model).head
        if not isinstance(head, TwoTowerHead):
            raise InvalidInputError("model.kind", type(head).__name__, "the ann source needs a two_tower model")
        self.client = client
        self.model = model
        self.plan = plan
        self.refresh_s = refresh_s
        self.min_interval_s = min_interval_s
        self.connectivity = connectivity
        self._catalog = [
            Feature(slot="catalog_items", window=catalog_window, counters=("show",), top_k=catalog_size, name="items")
        ]
        self._lock = threading.Lock()
        self._state: tuple[Index, list[str]] | None = None
        self._built_version: Any = object()
        self._built_at = -float("inf")
        self.rebuilds = 0
        self.error: BaseException | None = None
        self.background = background

    # -- the index ----------------------------------------------------------------------------
    def _stale(self) -> bool:
        age = time.monotonic() - self._built_at
        if age < self.min_interval_s and self._state is not None:
            return False
        return (
            self._state is None or getattr(self.model, "version", None) != self._built_version or age > self.refresh_s
        )

    def refresh(self, now: float, force: bool = False) -> None:
        """Rebuild the index from the catalogue and the model's item tower now."""
        with self._lock:
            if not force and not self._stale():
                return
            version = getattr(self.model, "version", None)
            answer = self.client.query(FeatureQuery(features=self._catalog, entities=[CATALOG], now=now))
            items = list(answer.results[0][0].values or [])
            vectors = self.item_vectors(items, now)
            augmented = _augment_items(vectors)
            index = Index(ndim=augmented.shape[1], metric="l2sq", dtype="f32", connectivity=self.connectivity)
            if items:
                # One thread: the graph (and so every answer) is then the same for the same vectors.
                index.add(np.arange(len(items), dtype=np.uint64), augmented, threads=1)
            self._state = (index, items)
            self._built_version = version
            self._built_at = time.monotonic()
            self.rebuilds += 1

    def item_vectors(self, items: list[str], now: float) -> np.ndarray:
        """Item-tower vectors of ``items`` (float32 ``[n, out_dim]``), from the model as it is now."""
        rm = _ranking_model(self.model)
        if not items:
            return np.zeros((0, rm.head.item_tower[-1].out_features), dtype=np.float32)
        _, sparse = self.plan.item_sparse(self.client, items, now)
        missing = [s for s in rm.head.item_slots if s not in sparse]
        if missing:
            raise InvalidInputError("model.item_slots", missing, "are not item or category slots of the feature plan")
        with torch.no_grad():
            emb = rm.embeddings({s: sparse[s] for s in rm.head.item_slots}, now=now)
            return rm.head.item_vector(emb).numpy().astype(np.float32)

    def user_vector(self, user: str, now: float) -> np.ndarray:
        """User-tower vector of ``user`` (its dense columns built with an empty item)."""
        rm = _ranking_model(self.model)
        batch = self.plan.fetch(self.client, user, [_EMPTY_ITEM], now).batch()
        with torch.no_grad():
            emb = rm.embeddings({s: batch.sparse[s] for s in rm.head.user_slots}, now=now)
            return rm.head.user_vector(emb, batch.dense).numpy()[0].astype(np.float32)

    # -- the source ---------------------------------------------------------------------------
    def _maybe_refresh(self, now: float) -> None:
        if self._state is None or not self.background:
            self.refresh(now)  # the first index (or background off): the request waits for it
        elif self._stale() and not self._lock.locked():
            # Later ones are built beside the live index; requests keep using the old one meanwhile.
            threading.Thread(target=self._refresh_quietly, args=(now,), name="ann-refresh", daemon=True).start()

    def _refresh_quietly(self, now: float) -> None:
        try:
            self.refresh(now)
        except Exception as exc:  # kept for /healthz-style inspection; the old index keeps serving
            self.error = exc

    def __call__(self, user: str, now: float, n: int) -> list[str]:
        """Up to ``n`` items nearest to ``user``, best first."""
        self._maybe_refresh(now)
        state = self._state
        if state is None or not state[1] or n <= 0:
            return []
        index, items = state
        query = np.append(self.user_vector(user, now), np.float32(0.0))
        matches = index.search(query, min(n, len(items)))
        return [items[int(k)] for k in np.asarray(matches.keys)]


def nearest_items(item_vectors: np.ndarray, user_vectors: np.ndarray, n: int, connectivity: int = 16) -> np.ndarray:
    """``[U, n]`` indices of the items of largest inner product with each user vector, best first,
    through the same augmented HNSW index :class:`AnnSource` serves from (``-1`` pads a short
    answer). One batched ``Index.search`` for all users; used by ``streamrec eval recommend``."""
    users = np.asarray(user_vectors, dtype=np.float32)
    out = np.full((len(users), max(n, 0)), -1, dtype=np.int64)
    if not len(item_vectors) or not len(users) or n <= 0:
        return out
    augmented = _augment_items(np.asarray(item_vectors, dtype=np.float32))
    index = Index(ndim=augmented.shape[1], metric="l2sq", dtype="f32", connectivity=connectivity)
    index.add(np.arange(len(augmented), dtype=np.uint64), augmented, threads=1)
    queries = np.hstack([users, np.zeros((len(users), 1), dtype=np.float32)])
    n = min(n, len(augmented))
    matches = index.search(queries, n, threads=1)
    if hasattr(matches, "counts"):  # a batch answer: keys padded to n, counts per query
        keys = np.asarray(matches.keys, dtype=np.int64).reshape(len(users), -1)[:, :n]
        keys[np.arange(keys.shape[1])[None, :] >= np.asarray(matches.counts)[:, None]] = -1
    else:  # one query: only the keys found
        keys = np.asarray(matches.keys, dtype=np.int64).reshape(1, -1)[:, :n]
    out[:, : keys.shape[1]] = keys
    return out
