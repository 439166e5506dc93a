"""``eval recommend``: top-k quality of the recommender replayed over a time-ordered log.

The log (a :class:`~streamrec.datasets.resolve.Dataset` in event order) is cut at the first
``1 - test_fraction`` of its rows. Every method learns from the rows before the cut (the batch
stage), then is measured two ways:

* **split**: one request per user at the cut; the relevant items are the user's positives after
  the cut; items the user interacted with before the cut are never recommended (by any method).
* **prequential** (online): the rows after the cut are replayed in time order in steps of
  ``step`` rows. Each step's positives are predicted from the state *before* the step (the lists
  of its users are computed first), and only then does every method learn the step: counts,
  co-engagement, a train step of the retrieval model and of the ranker, and the ANN index is
  rebuilt from the new item vectors (the serving sync). Relevant = the one item of the
  interaction; per-user means, then the mean over users.

Methods, side by side (all over the same catalogue: the items seen so far):

* ``random``, ``popular`` (positives so far): the baselines;
* the retrieval sources alone, as ``serving/retrieval.py`` defines them: ``co_engaged`` (the
  user's last ``recent_items`` positives → users who engaged with them → their items, weighted
  by how many seeds each co-user shares; the serving source's per-user truncations are not
  applied), ``fresh`` (latest first seen), ``ann`` (the retrieval model's nearest items through
  the usearch index of ``serving/ann.py``);
* ``retrieval``: the two-tower retriever (``training/retrieval.py``) scored exactly over the
  whole catalogue, the model alone;
* ``ranker``: the ranking model (DeepFM) scored over the whole catalogue;
* ``recommender``: the whole recommender: the sources merged by the serving quotas
  (``merge_candidates``'s rule: in quota order, each adds up to its quota of new items), the
  candidates scored by the ranker, the top k.

The ranker trains on the log's positives plus, per positive, ``negatives`` items drawn
uniformly from the catalogue as label-0 rows (``log_negatives`` adds the log's own negatives,
e.g. ratings below the threshold: off by default, see the field), with each item's windowed
counts of positives as dense features, point-in-time (``WindowCounts``), as the profile
service's windowed item counters feed the serving ranker. It leaves the item id out by default
(``ranker_item_id``). Users are **cold** when they had no interaction before the request (split: before
the cut; prequential: before the step), warm otherwise.

Features of a (user, item) pair that the log never held are composed from the user's latest
row (slots that are a function of the user, and the dense features) and the item's latest row
(slots that are a function of the item); the MovieLens cross ``user_genre`` is recomputed from
both; other slots (context that is neither) are not used by these models.

Everything per user or per item is a matrix operation (NumPy/torch): scores are ``[users,
items]`` tensors, lists come from one ``argsort``, metrics from ``eval/topk.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from streamrec.batch import ExampleBatch
from streamrec.datasets.resolve import Dataset
from streamrec.embedding import EmbeddingCollection, JaggedIds
from streamrec.errors import InvalidInputError
from streamrec.eval.topk import TopKScores, csr_from_pairs, top_k_items
from streamrec.models import ModelConfig, build_model
from streamrec.serving.ann import nearest_items
from streamrec.training.defaults import default_slot
from streamrec.training.retrieval import RetrievalTrainer, first_ids
from streamrec.training.trainer import TrainConfig, Trainer

__all__ = ["METHODS", "RecommendConfig", "RecommendRow", "recommend", "recommend_expectations"]

METHODS = ["random", "popular", "trending", "co_engaged", "fresh", "ann", "retrieval", "ranker", "recommender"]
NEG_INF = float("-inf")


@dataclass(frozen=True)
class RecommendConfig:
    ks: tuple[int, ...] = (10, 50)
    test_fraction: float = 0.2
    step: int | None = None  # prequential: rows per step (the sync interval in rows); None: a tenth of the part
    # The serving defaults (RetrievalConfig.quotas); the popular source is the windowed one.
    quotas: dict[str, int] = field(
        default_factory=lambda: {"co_engaged": 150, "ann": 150, "trending": 150, "fresh": 50}
    )
    recent_items: int = 10
    retrieval_epochs: int = 8
    ranker_epochs: int = 1
    negatives: int = 2
    ranker_lr: float = 0.001
    # The ranker leaves the item id out by default: an item's id embedding learns its all-time
    # appeal, which on a drifting log outweighs the windowed counts (ml-100k split recall@10
    # 0.075-0.093 with it, 0.112 without; docs/eval.md).
    ranker_item_id: bool = False
    # The ranker learns positives against catalogue items, not against the log's own negatives
    # (rated but not liked, shown but not clicked): those teach P(like | taken), which ranks a
    # catalogue badly (split recall@10 on criteo-sample 0.042 with them, 0.101 without; ml-100k
    # 0.112 and 0.115).
    log_negatives: bool = False
    batch_size: int = 256
    prequential: bool = True
    seed: int = 0
    max_users: int | None = None  # split: evaluate at most this many users (a seeded sample)


@dataclass
class RecommendRow:
    dataset: str
    variant: str  # split | prequential
    group: str  # all | warm | cold
    method: str
    k: int
    scores: TopKScores

    def as_dict(self) -> dict:
        s = self.scores
        r5 = lambda x: None if x != x else round(float(x), 5)  # noqa: E731 (nan -> null)
        return {
            "dataset": self.dataset, "variant": self.variant, "group": self.group, "method": self.method,
            "k": self.k, "recall": r5(s.recall), "recall_ci": [r5(x) for x in s.recall_ci], "ndcg": r5(s.ndcg),
            "ndcg_ci": [r5(x) for x in s.ndcg_ci], "hit": r5(s.hit), "coverage": r5(s.coverage), "users": s.users,
        }  # fmt: skip


# -- the log as users x items ----------------------------------------------------------------------


def _signature(ids: JaggedIds) -> np.ndarray:
    """A 64-bit fingerprint of each bag (order-insensitive sum of mixed ids, plus its length)."""
    values = ids.values.numpy().astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    cs = np.concatenate([[np.uint64(0)], np.cumsum(values, dtype=np.uint64)])
    starts = ids.offsets.numpy()
    ends = np.append(starts[1:], len(values))
    return cs[ends] - cs[starts] + (ends - starts).astype(np.uint64) * np.uint64(0xBF58476D1CE4E5B9)


def _function_of(key: np.ndarray, sig: np.ndarray) -> bool:
    """Is ``sig`` constant within each value of ``key``?"""
    pairs = np.unique(np.stack([key.astype(np.uint64), sig]), axis=1).shape[1]
    return pairs == len(np.unique(key))


class Log:
    """The data set's rows as dense user and item indices, plus the feature layout of pairs."""

    def __init__(self, dataset: Dataset, user_slot: str, item_slot: str) -> None:
        ex = dataset.examples
        for flag, slot in (("--user-slot", user_slot), ("--item-slot", item_slot)):
            if slot not in ex.sparse:
                raise InvalidInputError(flag, slot, f"not a slot of {dataset.name}; its slots are {dataset.slots}")
        self.name = dataset.name
        self.kind = dataset.kind
        keep = (ex.sparse[user_slot].lengths() > 0) & (ex.sparse[item_slot].lengths() > 0)
        if not bool(keep.all()):
            ex = ex.take(torch.nonzero(keep).squeeze(1))
        self.examples = ex
        self.user_slot, self.item_slot = user_slot, item_slot
        self.user_ids, self.user = np.unique(first_ids(ex, user_slot), return_inverse=True)
        self.item_ids, self.item = np.unique(first_ids(ex, item_slot), return_inverse=True)
        self.label = ex.labels.numpy() > 0
        self.n_users, self.n_items = len(self.user_ids), len(self.item_ids)
        rows = np.arange(len(ex))
        self.user_row = np.zeros(self.n_users, dtype=np.int64)
        self.user_row[self.user] = rows  # fancy assignment keeps the last row of each user
        self.item_row = np.zeros(self.n_items, dtype=np.int64)
        self.item_row[self.item] = rows
        self.user_side, self.item_side, self.cross = [user_slot], [item_slot], []
        for slot, ids in ex.sparse.items():
            if slot in (user_slot, item_slot):
                continue
            sig = _signature(ids)
            if _function_of(self.item, sig):
                self.item_side.append(slot)
            elif _function_of(self.user, sig):
                self.user_side.append(slot)
            elif slot == "user_genre" and "genre" in ex.sparse and dataset.kind == "movielens":
                self.cross.append(slot)

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def slots(self) -> list[str]:
        return [*self.user_side, *self.item_side, *self.cross]

    def pairs(self, users: np.ndarray, items: np.ndarray, time: float) -> ExampleBatch:
        """Feature rows of (user, item) pairs: user-side slots and dense from the user's latest row,
        item-side slots from the item's latest row, the MovieLens cross recomputed."""
        from streamrec.datasets.movielens import _cross

        ex = self.examples
        u_rows = torch.from_numpy(self.user_row[users])
        i_rows = torch.from_numpy(self.item_row[items])
        sparse = {s: ex.sparse[s].take(u_rows) for s in self.user_side}
        sparse |= {s: ex.sparse[s].take(i_rows) for s in self.item_side}
        if self.cross:
            genre = sparse["genre"] if "genre" in sparse else ex.sparse["genre"].take(i_rows)
            lengths = genre.lengths().numpy()
            raw_users = np.repeat(self.user_ids[users], lengths)
            crossed = _cross(raw_users, genre.values.numpy())
            sparse["user_genre"] = JaggedIds(torch.from_numpy(crossed), genre.offsets.clone())
        n = len(users)
        return ExampleBatch(
            sparse, ex.dense[u_rows], torch.zeros(n), torch.ones(n), torch.full((n,), time, dtype=torch.float64)
        )


class WindowCounts:
    """Positives of each item in trailing windows, point-in-time: what the profile service's
    windowed item counters give the ranker at serving time (``item_click_1d`` and the like).

    ``counts(items, rows)`` counts the positives of ``items[j]`` among log rows ``[lo_j, rows[j])``
    whose time is within each window of the time of row ``rows[j]`` (the rows before it: nothing
    from the future). Vectorised: positives keyed by ``item * n_rows + row`` and sorted once, so
    a count is two ``searchsorted``. Windows are fractions of the log's span (1/200, 1/30, 1/7
    and everything: about 1 day, 1 week, 1 month and all-time on ML-100K's seven months).
    """

    FRACTIONS = (1 / 200, 1 / 30, 1 / 7, None)

    def __init__(self, log: Log) -> None:
        self.times = log.examples.time.numpy()
        self.n = len(self.times)
        span = float(self.times[-1] - self.times[0]) if self.n else 0.0
        self.windows = [None if f is None else max(span * f, 1.0) for f in self.FRACTIONS]
        rows = np.nonzero(log.label)[0]
        self.keys = np.sort(log.item[rows].astype(np.int64) * self.n + rows)

    def counts(self, items: np.ndarray, rows: np.ndarray, now: np.ndarray | None = None) -> np.ndarray:
        """float32 ``[len(items), windows]`` of ``log1p`` counts (``now``: the time the windows end,
        default the time of the last row before ``rows``)."""
        items = items.astype(np.int64)
        if now is None:
            now = self.times[np.maximum(rows - 1, 0)]
        end = np.searchsorted(self.keys, items * self.n + rows)
        out = np.empty((len(items), len(self.windows)), dtype=np.float32)
        for j, w in enumerate(self.windows):
            first = np.zeros(len(items), dtype=np.int64) if w is None else np.searchsorted(self.times, now - w)
            out[:, j] = np.log1p(end - np.searchsorted(self.keys, items * self.n + np.minimum(first, rows)))
        return out


# -- what every method knows at one moment -------------------------------------------------------


class State:
    """Counts and histories over the rows learned so far (``learn(lo, hi)`` adds rows)."""

    def __init__(self, log: Log, recent_items: int) -> None:
        self.log = log
        self.recent_items = recent_items
        self.popularity = np.zeros(log.n_items)
        self.first_seen = np.full(log.n_items, np.inf)
        self.engaged = torch.zeros((log.n_users, log.n_items))  # positives, 0/1
        self.interactions = np.zeros(log.n_users, dtype=np.int64)
        self.seen_pairs: list[np.ndarray] = []  # user * n_items + item of every row learned
        self.recent = np.full((log.n_users, recent_items), -1, dtype=np.int64)  # last positives, newest last
        self.now = -np.inf
        self.learned = 0

    def learn(self, lo: int, hi: int) -> None:
        log = self.log
        u, i, pos = log.user[lo:hi], log.item[lo:hi], log.label[lo:hi]
        np.add.at(self.popularity, i[pos], 1)
        np.minimum.at(self.first_seen, i, log.examples.time[lo:hi].numpy())
        self.engaged[torch.from_numpy(u[pos]), torch.from_numpy(i[pos])] = 1.0
        np.add.at(self.interactions, u, 1)
        self.seen_pairs.append(u.astype(np.int64) * log.n_items + i)
        # recent positives: append each user's new positives in time order, keep the last R
        pu, pi = u[pos], i[pos]
        if len(pu):
            order = np.argsort(pu, kind="stable")
            pu, pi = pu[order], pi[order]
            users, starts, counts = np.unique(pu, return_index=True, return_counts=True)
            rank_from_end = np.repeat(starts + counts, counts) - np.arange(len(pu)) - 1  # 0 = newest
            keep = rank_from_end < self.recent_items
            new = np.full((len(users), self.recent_items), -1, dtype=np.int64)
            slot = self.recent_items - 1 - rank_from_end[keep]
            new[np.searchsorted(users, pu[keep]), slot] = pi[keep]
            n_new = np.minimum(counts, self.recent_items)
            old = self.recent[users]
            # shift the old ones left by the number of new ones (vectorised roll per row)
            idx = np.arange(self.recent_items)[None, :] + n_new[:, None]
            shifted = np.where(
                idx < self.recent_items, np.take_along_axis(old, np.minimum(idx, self.recent_items - 1), 1), -1
            )
            self.recent[users] = np.where(new >= 0, new, shifted)
        self.now = max(self.now, float(log.examples.time[hi - 1])) if hi > lo else self.now
        self.learned = hi

    @property
    def catalogue(self) -> np.ndarray:
        return np.isfinite(self.first_seen)

    def seen(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """CSR (rows of ``users``) of the items each interacted with so far."""
        keys = np.concatenate(self.seen_pairs) if self.seen_pairs else np.empty(0, dtype=np.int64)
        n = self.log.n_items
        pos = np.full(self.log.n_users, -1, dtype=np.int64)
        pos[users] = np.arange(len(users))
        rows = pos[keys // n]
        mask = rows >= 0
        return csr_from_pairs(rows[mask], keys[mask] % n, len(users))


# -- the methods -----------------------------------------------------------------------------------


class Models:
    """The retrieval model and the ranker, built and trained the same way for every variant."""

    def __init__(self, log: Log, cfg: RecommendConfig) -> None:
        self.log, self.cfg = log, cfg
        torch.manual_seed(cfg.seed)
        dims = {s: default_slot("mean" if s in ("genre", "user_genre") else "sum") for s in log.slots}
        two_tower = ModelConfig(
            kind="two_tower", hidden=[64], n_dense=log.examples.n_dense, user_slots=log.user_side,
            item_slots=log.item_side, out_dim=32, temperature=0.05,
        )  # fmt: skip
        tables = EmbeddingCollection({"slots": {s: dims[s] for s in [*log.user_side, *log.item_side]}}, seed=cfg.seed)
        self.retriever = RetrievalTrainer(build_model(two_tower, tables), item_slot=log.item_slot)
        self.windows = WindowCounts(log)
        ranker_cfg = ModelConfig(kind="deepfm", n_dense=log.examples.n_dense + len(self.windows.windows))
        ranker_slots = {s: d for s, d in dims.items() if cfg.ranker_item_id or s != log.item_slot}
        ranker_tables = EmbeddingCollection({"slots": ranker_slots}, seed=cfg.seed + 1)
        self.ranker = Trainer(
            build_model(ranker_cfg, ranker_tables), TrainConfig(batch_size=cfg.batch_size, dense_lr=cfg.ranker_lr)
        )
        self.rng = np.random.default_rng(cfg.seed)

    def with_counts(self, batch: ExampleBatch, items: np.ndarray, rows: np.ndarray, now=None) -> ExampleBatch:
        """``batch`` with the items' windowed positive counts appended to its dense features."""
        counts = torch.from_numpy(self.windows.counts(items, rows, now))
        dense = torch.cat([batch.dense, counts], dim=1)
        return ExampleBatch(batch.sparse, dense, batch.labels, batch.sample_rate, batch.time)

    def ranker_examples(self, state: State, lo: int, hi: int) -> ExampleBatch:
        """The log's rows plus ``negatives`` uniform catalogue items per positive (label 0), shuffled;
        every row with its item's windowed counts as of that row."""
        log = self.log
        rows = log.examples[lo:hi]
        rows = ExampleBatch(
            {s: rows.sparse[s] for s in log.slots}, rows.dense, rows.labels, rows.sample_rate, rows.time
        )
        index = np.arange(lo, hi)
        rows = self.with_counts(rows, log.item[lo:hi], index)
        if not self.cfg.log_negatives:
            rows = rows.take(torch.from_numpy(np.nonzero(log.label[lo:hi])[0]))
        pos = np.nonzero(log.label[lo:hi])[0] + lo
        catalogue = np.nonzero(state.catalogue)[0]
        if not len(pos) or not len(catalogue) or not self.cfg.negatives:
            return rows
        users = np.repeat(log.user[pos], self.cfg.negatives)
        items = catalogue[self.rng.integers(0, len(catalogue), len(users))]
        at = np.repeat(pos, self.cfg.negatives)
        negs = log.pairs(users, items, state.now)
        negs = ExampleBatch(negs.sparse, negs.dense, negs.labels, negs.sample_rate,
                            torch.from_numpy(log.examples.time.numpy()[at]))  # fmt: skip
        both = ExampleBatch.concat([rows, self.with_counts(negs, items, at)])
        order = torch.from_numpy(self.rng.permutation(len(both)))
        return both.take(order)

    def learn(self, state: State, lo: int, hi: int, epochs_retrieval: int = 1, epochs_ranker: int = 1) -> None:
        """Train both models on rows ``[lo, hi)`` (``state`` must already hold them: negatives are
        drawn from the catalogue as it is after the rows)."""
        part = self.log.examples[lo:hi]
        self.retriever.train(part, epochs=epochs_retrieval, batch_size=self.cfg.batch_size, seed=self.cfg.seed)
        for _ in range(epochs_ranker):
            examples = self.ranker_examples(state, lo, hi)
            if len(examples):  # a step of negatives only leaves the ranker nothing to learn
                self.ranker.train(examples, epochs=1, batch_size=self.cfg.batch_size)

    @torch.no_grad()
    def vectors(self, users: np.ndarray, now: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(user vectors ``[U, d]``, item vectors of the whole item index ``[I, d]``)."""
        model = self.retriever.model
        model.eval()
        log = self.log
        ub = log.pairs(users, np.zeros(len(users), dtype=np.int64), now)
        ib = log.pairs(np.zeros(log.n_items, dtype=np.int64), np.arange(log.n_items), now)
        head = model.head
        u = head.user_vector(model.embeddings({s: ub.sparse[s] for s in head.user_slots}, now=now), ub.dense)
        v = head.item_vector(model.embeddings({s: ib.sparse[s] for s in head.item_slots}, now=now))
        model.train()
        return u, v

    @torch.no_grad()
    def rank(self, users: np.ndarray, candidates: torch.Tensor, now: float, learned_rows: int) -> torch.Tensor:
        """Ranker logits ``[U, I]`` where ``candidates`` (bool ``[U, I]``) is set, ``-inf`` elsewhere."""
        uu, ii = torch.nonzero(candidates, as_tuple=True)
        out = torch.full(candidates.shape, NEG_INF)
        if len(uu):
            items = ii.numpy()
            batch = self.log.pairs(users[uu.numpy()], items, now)
            learned = np.full(len(items), learned_rows, dtype=np.int64)
            batch = self.with_counts(batch, items, learned, np.full(len(items), now))
            out[uu, ii] = torch.from_numpy(self.ranker.predict_logits(batch, batch_size=65_536)).float()
        return out


def _by_rank(lists: np.ndarray, n_items: int) -> torch.Tensor:
    """Scores ``[U, I]`` that order each row's listed items as listed (``-inf`` for the rest)."""
    out = torch.full((len(lists), n_items), NEG_INF)
    uu, jj = np.nonzero(lists >= 0)
    out[torch.from_numpy(uu), torch.from_numpy(lists[uu, jj])] = torch.from_numpy(-jj.astype(np.float32))
    return out


def source_scores(
    state: State, models: Models, users: np.ndarray, seen: tuple[np.ndarray, np.ndarray], cfg: RecommendConfig
) -> dict[str, torch.Tensor]:
    """Every method's ``[U, I]`` scores for ``users`` now (``-inf``: not offered)."""
    log = state.log
    n_items = log.n_items
    unavailable = torch.from_numpy(~state.catalogue)[None, :].expand(len(users), n_items)

    def offered(s: torch.Tensor, positive_only: bool = False) -> torch.Tensor:
        s = s.clone()
        if positive_only:
            s[s <= 0] = NEG_INF
        s[unavailable] = NEG_INF
        return s

    gen = torch.Generator().manual_seed(cfg.seed + state.learned)
    out = {
        "random": offered(torch.rand((len(users), n_items), generator=gen)),
        "popular": offered(torch.from_numpy(state.popularity).float()[None, :].expand(len(users), n_items), True),
    }
    seeds = state.recent[users]
    seed_matrix = torch.zeros((len(users), n_items))
    su, sj = np.nonzero(seeds >= 0)
    seed_matrix[torch.from_numpy(su), torch.from_numpy(seeds[su, sj])] = 1.0
    co_users = seed_matrix @ state.engaged.T  # [U, users]: seeds each other user shares
    co_users[torch.arange(len(users)), torch.from_numpy(users)] = 0.0
    co = co_users @ state.engaged
    co[seed_matrix > 0] = 0.0
    out["co_engaged"] = offered(co, True)
    # The serving popular source counts clicks over a window (``popular_window``), not all time.
    window = models.windows.counts(np.arange(n_items), np.full(n_items, state.learned), np.full(n_items, state.now))
    out["trending"] = offered(torch.from_numpy(window[:, 1]).float()[None, :].expand(len(users), n_items), True)
    out["fresh"] = offered(torch.from_numpy(np.where(state.catalogue, state.first_seen, -np.inf)).float()[None, :]
                           .expand(len(users), n_items))  # fmt: skip
    u, v = models.vectors(users, state.now)
    out["retrieval"] = offered(u @ v.T)
    catalogue = np.nonzero(state.catalogue)[0]
    widest = int(np.diff(seen[0]).max(initial=0))
    n_ann = min(len(catalogue), max(cfg.ks) + cfg.quotas.get("ann", 0) + widest)
    found = nearest_items(v.numpy()[catalogue], u.numpy(), n_ann)
    out["ann"] = offered(_by_rank(np.where(found >= 0, catalogue[np.maximum(found, 0)], -1), n_items))
    return out


def recommender_scores(
    state: State, models: Models, users: np.ndarray, sources: dict[str, torch.Tensor], seen, cfg: RecommendConfig
) -> torch.Tensor:
    """The whole recommender: candidates merged by quota (source order = priority), ranked by the ranker."""
    n_items = state.log.n_items
    taken = torch.zeros((len(users), n_items), dtype=torch.bool)
    indptr, indices = seen
    excluded = torch.zeros_like(taken)
    excluded[torch.from_numpy(np.repeat(np.arange(len(users)), np.diff(indptr))), torch.from_numpy(indices)] = True
    for name, quota in cfg.quotas.items():
        if quota <= 0 or name not in sources:
            continue
        s = sources[name].masked_fill(taken | excluded, NEG_INF)
        top = top_k_items(s, quota)
        uu, jj = np.nonzero(top >= 0)
        taken[torch.from_numpy(uu), torch.from_numpy(top[uu, jj])] = True
    return models.rank(users, taken, state.now, state.learned)


def all_scores(state, models, users, seen, cfg) -> dict[str, torch.Tensor]:
    out = source_scores(state, models, users, seen, cfg)
    out["recommender"] = recommender_scores(state, models, users, out, seen, cfg)
    everything = torch.from_numpy(state.catalogue)[None, :].expand(len(users), -1).clone()
    out["ranker"] = models.rank(users, everything, state.now, state.learned)
    return {m: out[m] for m in METHODS}


# -- the experiment --------------------------------------------------------------------------------


def recommend(
    dataset: Dataset,
    cfg: RecommendConfig | None = None,
    user_slot: str = "user",
    item_slot: str = "item",
    progress: Callable[[str], None] | None = None,
) -> list[RecommendRow]:
    """Train every method on the first ``1 - test_fraction`` of the log; measure split and prequential."""
    cfg = cfg or RecommendConfig()
    if not dataset.ordered:
        raise InvalidInputError(
            "--time", dataset.name, "eval recommend replays the log in time order and this table has no time "
            "column; name one with --time COLUMN (see docs/eval.md#data-as-users-have-it)",
        )  # fmt: skip
    say = progress or (lambda _: None)
    log = Log(dataset, user_slot, item_slot)
    cut = int(len(log) * (1 - cfg.test_fraction))
    if cut < 1 or cut >= len(log):
        raise InvalidInputError("--test-fraction", cfg.test_fraction, f"leaves no rows on one side of {len(log)}")
    state = State(log, cfg.recent_items)
    state.learn(0, cut)
    models = Models(log, cfg)
    say(f"recommend · {log.name} · batch stage on {cut:,} rows")
    models.learn(state, 0, cut, cfg.retrieval_epochs, cfg.ranker_epochs)
    rows = _split(state, models, cut, cfg, say)
    if cfg.prequential:
        rows += _prequential(state, models, cut, cfg, say)
    return rows


def _groups(cold: np.ndarray) -> dict[str, np.ndarray]:
    return {"all": np.arange(len(cold)), "warm": np.nonzero(~cold)[0], "cold": np.nonzero(cold)[0]}


def _split(state: State, models: Models, cut: int, cfg: RecommendConfig, say) -> list[RecommendRow]:
    log = state.log
    pos = np.nonzero(log.label[cut:])[0] + cut
    users = np.unique(log.user[pos])
    if cfg.max_users is not None and len(users) > cfg.max_users:
        users = np.sort(np.random.default_rng(cfg.seed).choice(users, cfg.max_users, replace=False))
    say(f"recommend · {log.name} · split: {len(users):,} users")
    index = np.full(log.n_users, -1, dtype=np.int64)
    index[users] = np.arange(len(users))
    keep = index[log.user[pos]] >= 0
    relevant = csr_from_pairs(index[log.user[pos][keep]], log.item[pos][keep], len(users))
    seen = state.seen(users)
    cold = state.interactions[users] == 0
    scores = all_scores(state, models, users, seen, cfg)
    out = []
    for method, s in scores.items():
        top = top_k_items(s, max(cfg.ks), exclude=seen)
        for group, rows in _groups(cold).items():
            for k in cfg.ks:
                out.append(RecommendRow(log.name, "split", group, method, k,
                                        TopKScores.of(top, relevant, log.n_items, k, rows, cfg.seed)))  # fmt: skip
    return out


def _prequential(state: State, models: Models, cut: int, cfg: RecommendConfig, say) -> list[RecommendRow]:
    """Each step's positives scored from the state before the step, then the step learned."""
    log = state.log
    per_method: dict[str, list[np.ndarray]] = {m: [] for m in METHODS}
    evaluated_users, evaluated_items, evaluated_cold = [], [], []
    n = len(log)
    step = cfg.step or max(1, (n - cut) // 10)
    for lo in range(cut, n, step):
        hi = min(lo + step, n)
        say(f"recommend · {log.name} · prequential rows {lo:,}-{hi:,} of {n:,}")
        pos = np.nonzero(log.label[lo:hi])[0] + lo
        if len(pos):
            users = np.unique(log.user[pos])
            seen = state.seen(users)
            scores = all_scores(state, models, users, seen, cfg)
            row_of = np.searchsorted(users, log.user[pos])
            for method, s in scores.items():
                top = top_k_items(s, max(cfg.ks), exclude=seen)
                per_method[method].append(top[row_of])
            evaluated_users.append(log.user[pos])
            evaluated_items.append(log.item[pos])
            evaluated_cold.append(state.interactions[log.user[pos]] == 0)
        state.learn(lo, hi)
        models.learn(state, lo, hi)  # after the predictions of the step: predicted before trained on
    if not evaluated_users:
        return []
    users = np.concatenate(evaluated_users)
    items = np.concatenate(evaluated_items)
    cold = np.concatenate(evaluated_cold)
    out = []
    for method, tops in per_method.items():
        top = np.concatenate(tops)
        for group, rows in _groups(cold).items():
            for k in cfg.ks:
                scores = interaction_scores(top, users, items, log.n_items, k, rows, cfg.seed)
                out.append(RecommendRow(log.name, "prequential", group, method, k, scores))
    return out


def interaction_scores(
    top: np.ndarray, users: np.ndarray, items: np.ndarray, n_items: int, k: int, rows: np.ndarray, seed: int = 0
) -> TopKScores:
    """Prequential metrics: one relevant item per interaction, averaged per user, then over users
    (so a user with many interactions counts once; the bootstrap resamples users)."""
    from streamrec.eval.topk import bootstrap_ci, coverage, ranking_metrics

    top, users, items = top[rows], users[rows], items[rows]
    nan = float("nan")
    if not len(rows):
        return TopKScores(nan, (nan, nan), nan, (nan, nan), nan, 0.0, 0)
    one = (np.arange(len(items) + 1, dtype=np.int64), items.astype(np.int64))
    m = ranking_metrics(top[:, :k], one, n_items)
    uniq, inverse = np.unique(users, return_inverse=True)
    count = np.bincount(inverse)

    def per_user(x: np.ndarray) -> np.ndarray:
        return np.bincount(inverse, weights=x) / count

    recall, ndcg, hit = per_user(m["recall"]), per_user(m["ndcg"]), per_user(m["hit"])
    return TopKScores(
        recall=float(recall.mean()), recall_ci=bootstrap_ci(recall, seed=seed), ndcg=float(ndcg.mean()),
        ndcg_ci=bootstrap_ci(ndcg, seed=seed), hit=float(hit.mean()), coverage=coverage(top[:, :k], n_items),
        users=len(uniq),
    )  # fmt: skip


def recommend_expectations(rows: list[RecommendRow]) -> dict[str, bool]:
    """The issue's expectations, per data set: the whole recommender beats popularity on recall@10
    (at the smallest k measured when 10 is not among them)."""
    met: dict[str, bool] = {}
    by = {(r.dataset, r.variant, r.group, r.method, r.k): r.scores.recall for r in rows}
    ks = {r.k for r in rows}
    k = 10 if 10 in ks else min(ks, default=10)
    for (name, variant, group, method, at), value in by.items():
        if method != "recommender" or at != k or group == "warm":
            continue
        pop = by.get((name, variant, group, "popular", k), float("nan"))
        if group == "all":
            met[f"recommend/{name}/{variant}: recommender > popular on recall@{k}"] = value > pop
            if variant == "split":
                met[f"recommend/{name}/split: recommender >= 1.3 x popular on recall@{k} (goal)"] = value >= 1.3 * pop
        elif group == "cold" and pop == pop:
            met[f"recommend/{name}/{variant}: cold users, recommender >= popular on recall@{k} (goal)"] = value >= pop
    return met
