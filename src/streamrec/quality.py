"""Model quality measures shared by the demo, training and the experiments: AUC and log loss.

Named "quality", not "metrics": in streamrec "metrics" are the operational counters a process
exports for Prometheus (:mod:`streamrec.serving.metrics`, `GET /metrics`).

AUC is computed from ranks (Mann–Whitney U) with ties counted as half, in O(n log n) NumPy —
the same value as counting every (positive, negative) pair, without the O(n²) loop.
"""

from __future__ import annotations

import numpy as np

from streamrec.errors import InvalidInputError


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve; ``nan`` when only one class is present.

    Examples
    --------
    >>> auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    0.75
    """
    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise InvalidInputError("scores", scores.shape, f"must match labels of shape {labels.shape}")
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(labels.size, dtype=np.float64)
    # average rank (1-based) of each run of tied scores
    _, starts, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = starts + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def log_loss(labels: np.ndarray, probabilities: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of ``probabilities`` (clipped to [eps, 1 - eps])."""
    y = np.asarray(labels, dtype=np.float64).ravel()
    p = np.clip(np.asarray(probabilities, dtype=np.float64).ravel(), eps, 1 - eps)
    if y.shape != p.shape:
        raise InvalidInputError("probabilities", p.shape, f"must match labels of shape {y.shape}")
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))
