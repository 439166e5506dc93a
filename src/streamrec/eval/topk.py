"""Top-k quality of recommendation lists: recall@k, NDCG@k, hit rate, catalogue coverage, bootstrap CIs.

Every function here is vectorised over users (NumPy): a list of recommendations is a row of an
``[U, k]`` int array of item indices (``-1`` pads a list shorter than ``k``), and the items each
user went on to like are a CSR pair ``(indptr [U + 1], indices)``. Membership of every
recommended item in its user's relevant set is one ``np.isin`` over ``user * n_items + item``
keys, so no Python loop runs per user or per item.

Definitions (those of most papers and of RecBole, so numbers compare):

* ``recall@k = |top_k ∩ relevant| / |relevant|`` (users with no relevant item are not counted);
* ``NDCG@k = DCG / IDCG`` with ``DCG = Σ_{j<k, top_k[j] relevant} 1 / log2(j + 2)`` and the ideal
  ``IDCG = Σ_{j < min(k, |relevant|)} 1 / log2(j + 2)``;
* ``hit@k = 1`` if any of the top k is relevant;
* ``coverage@k = |∪ top_k| / n_items``: the share of the catalogue recommended to anyone.

``bootstrap_ci`` resamples users with replacement (one ``[B, U]`` index draw) and returns the
2.5 / 97.5 percentiles of the mean: the spread a different sample of users would give.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["TopKScores", "bootstrap_ci", "coverage", "csr_from_pairs", "ranking_metrics", "top_k_items"]


def csr_from_pairs(rows: np.ndarray, cols: np.ndarray, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(indptr, indices) of the distinct ``(row, col)`` pairs, indices sorted within each row."""
    keys = np.unique(rows.astype(np.int64) * (int(cols.max(initial=0)) + 1) + cols.astype(np.int64))
    width = int(cols.max(initial=0)) + 1
    r, c = keys // width, keys % width
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.add.at(indptr, r + 1, 1)
    return np.cumsum(indptr), c.astype(np.int64)


def top_k_items(
    scores: torch.Tensor | np.ndarray,
    k: int,
    exclude: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """``[U, k]`` indices of each row's ``k`` best scores, best first; ``exclude`` (CSR) never chosen.

    Ties go to the lower item index (a stable order), so a list does not depend on the platform's
    sort. Items scored ``-inf`` (or excluded) are returned as ``-1`` when fewer than ``k`` remain.
    """
    s = torch.as_tensor(scores, dtype=torch.float64).clone()
    n_users, n_items = s.shape
    if exclude is not None:
        indptr, indices = exclude
        rows = np.repeat(np.arange(n_users), np.diff(indptr))
        s[torch.from_numpy(rows), torch.from_numpy(indices)] = -torch.inf
    k = min(k, n_items)
    order = torch.argsort(-s, dim=1, stable=True)[:, :k]
    top = order.numpy().astype(np.int64)
    chosen = torch.gather(s, 1, order)
    top[~torch.isfinite(chosen).numpy()] = -1
    return top


def _hits(top: np.ndarray, relevant: tuple[np.ndarray, np.ndarray], n_items: int) -> np.ndarray:
    """bool ``[U, k]``: is ``top[u, j]`` among user ``u``'s relevant items."""
    indptr, indices = relevant
    n_users = len(indptr) - 1
    rel_keys = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(indptr)) * n_items + indices
    keys = np.arange(n_users, dtype=np.int64)[:, None] * n_items + top
    return np.isin(keys, rel_keys) & (top >= 0)


def ranking_metrics(
    top: np.ndarray, relevant: tuple[np.ndarray, np.ndarray], n_items: int, k: int | None = None
) -> dict[str, np.ndarray]:
    """Per-user ``recall``, ``ndcg``, ``hit`` at ``k`` (default: the list length), users with
    at least one relevant item only (``users`` gives their row numbers)."""
    k = top.shape[1] if k is None else k
    top = top[:, :k]
    n_rel = np.diff(relevant[0])
    hits = _hits(top, relevant, n_items)
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits * discount).sum(axis=1)
    ideal = np.concatenate([[0.0], np.cumsum(discount)])[np.minimum(n_rel, k)]
    users = np.nonzero(n_rel > 0)[0]
    n_hit = hits.sum(axis=1)
    return {
        "users": users,
        "recall": (n_hit[users] / n_rel[users]).astype(np.float64),
        "ndcg": (dcg[users] / ideal[users]).astype(np.float64),
        "hit": (n_hit[users] > 0).astype(np.float64),
    }


def coverage(top: np.ndarray, n_items: int) -> float:
    """Share of the ``n_items`` catalogue that appears in at least one list."""
    chosen = top[top >= 0]
    return float(len(np.unique(chosen)) / n_items) if n_items else 0.0


def bootstrap_ci(values: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the mean of ``values`` over users resampled with replacement."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(n_boot, len(values)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


@dataclass(frozen=True)
class TopKScores:
    """One method's metrics at one ``k`` on one group of users (mean and 95 % bootstrap CI)."""

    recall: float
    recall_ci: tuple[float, float]
    ndcg: float
    ndcg_ci: tuple[float, float]
    hit: float
    coverage: float
    users: int

    @classmethod
    def of(cls, top: np.ndarray, relevant, n_items: int, k: int, rows: np.ndarray | None = None, seed: int = 0):
        """Metrics over the users ``rows`` (default all) of ``top`` against ``relevant``."""
        if rows is not None:
            top = top[rows]
            indptr, indices = relevant
            starts, ends = indptr[rows], indptr[rows + 1]
            lengths = ends - starts
            take = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths) + np.arange(
                lengths.sum()
            )
            relevant = (np.concatenate([[0], np.cumsum(lengths)]), indices[take])
        m = ranking_metrics(top[:, :k], relevant, n_items)
        users = len(m["users"])
        nan = float("nan")
        return cls(
            recall=float(m["recall"].mean()) if users else nan,
            recall_ci=bootstrap_ci(m["recall"], seed=seed),
            ndcg=float(m["ndcg"].mean()) if users else nan,
            ndcg_ci=bootstrap_ci(m["ndcg"], seed=seed),
            hit=float(m["hit"].mean()) if users else nan,
            coverage=coverage(top[m["users"], :k], n_items),
            users=users,
        )
