"""Negative sampling and the calibration correction that undoes it.

The joiner keeps every positive and a fraction ``r`` of the negatives. Which negatives are kept is
decided by a hash of ``(request_id, item)``, not by a random generator: a replay of the same log
(after a crash, or a second joiner over the same topics) keeps exactly the same negatives, so the
examples a restarted joiner emits agree with the ones it emitted before it died.

A model trained on such examples sees the positives ``1/r`` times too often, so its predicted
probability ``q`` is too high. The odds are inflated by exactly ``1/r``::

    odds(p) = r * odds(q)   <=>   p = q / (q + (1 - q) / r)   <=>   logit(p) = logit(q) + log(r)

**Where the correction happens (project decision):** at serving time, in log-odds
(``docs/joiner.md``, ``DESIGN.md``). Examples carry ``sample_rate`` and are trained on unweighted;
the serving model adds ``log(r)`` to its logit. Training with weights ``1/r`` instead would give
calibrated outputs without a correction but with noisier gradients on the rare kept negatives.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from streamrec.errors import InvalidInputError

__all__ = ["correct_logit", "correct_probability", "keep_negative", "sample_hash"]

_SCALE = float(2**64)


def _check_rate(rate: float) -> None:
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 < rate <= 1.0:
        raise InvalidInputError("negative_rate", rate, "must be a number in (0, 1]")


def sample_hash(request_id: str, item: str) -> float:
    """A uniform number in ``[0, 1)`` fixed by ``(request_id, item)`` (BLAKE2b, 64 bits)."""
    digest = hashlib.blake2b(f"{request_id}\x1f{item}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def keep_negative(request_id: str, item: str, rate: float) -> bool:
    """Whether the negative of impression ``(request_id, item)`` is kept at sampling rate ``rate``.

    Deterministic: the same impression gives the same answer in every process and every replay.

    Examples
    --------
    >>> kept = sum(keep_negative(f"r{n}", "i1", 0.1) for n in range(100_000))
    >>> 9_700 < kept < 10_300
    True
    """
    _check_rate(rate)
    return rate >= 1.0 or sample_hash(request_id, item) < rate


def correct_probability(q: float | np.ndarray, rate: float) -> float | np.ndarray:
    """The calibrated probability of a model trained on negatives kept at ``rate``.

    ``p = q / (q + (1 - q) / r)``; vectorised over NumPy arrays.

    Parameters
    ----------
    q
        The model's raw prediction(s), in ``[0, 1]``.
    rate
        The negative sampling rate ``r`` in ``(0, 1]`` (the ``sample_rate`` of the negatives).

    Examples
    --------
    A model trained with r = 0.1 that predicts 0.5 means odds 1:1 on the sampled data, so 1:10
    on the real traffic:

    >>> round(correct_probability(0.5, 0.1), 6)
    0.090909
    >>> correct_probability(0.3, 1.0)
    0.3
    """
    _check_rate(rate)
    if isinstance(q, np.ndarray):
        q = q.astype(np.float64, copy=False)
        return q / (q + (1.0 - q) / rate)
    q = float(q)
    if not 0.0 <= q <= 1.0:
        raise InvalidInputError("q", q, "must be a probability in [0, 1]")
    if q == 0.0:
        return 0.0
    return q / (q + (1.0 - q) / rate)


def correct_logit(logit: float | np.ndarray, rate: float) -> float | np.ndarray:
    """The log-odds form of :func:`correct_probability`: ``logit + log(r)``.

    This is what a serving model applies to its output before the sigmoid: one addition, exact,
    and free of the rounding of ``q`` near 0 or 1.

    Examples
    --------
    >>> import math
    >>> p = 1 / (1 + math.exp(-correct_logit(0.0, 0.1)))
    >>> round(p, 6) == round(correct_probability(0.5, 0.1), 6)
    True
    """
    _check_rate(rate)
    return logit + math.log(rate)
