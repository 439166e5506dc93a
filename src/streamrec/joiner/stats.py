"""The joiner's counters: what it read, what it emitted, and what it had to drop and why.

A plain mutable struct, saved in the joiner's LMDB state in the same transaction as the join state
it describes, so after a crash and restart the counters match the examples in the log exactly
(a replayed batch is not counted twice).
"""

from __future__ import annotations

import math

import msgspec

__all__ = ["JoinStats"]


class JoinStats(msgspec.Struct, kw_only=True):
    """Counters of one joiner (its whole life, across restarts).

    Parameters
    ----------
    impressions, actions
        Records consumed from each topic (duplicates included).
    positives
        Positive examples emitted.
    negatives_kept, negatives_dropped
        Windows closed without a positive action: kept (emitted with ``sample_rate = r``) or
        dropped by sampling.
    late_actions
        Label actions that labelled nothing: outside their impression's window in event time, or
        arriving after the window closed, or whose impression never arrived in time.
    late_impressions
        Impressions that arrived after their own window had closed (dropped, no example).
    duplicate_impressions, duplicate_actions
        A second copy of a waiting impression; a label action for an impression already positive.
    ignored_actions
        Actions that can never label: not in the positive set (``impression``, ``show``, ``dwell``...)
        or without a ``request_id``.
    spilled
        Waiting impressions evicted from memory to LMDB only (the memory budget was full).
    pending, buffered_actions
        Gauges: impressions waiting for their window to close; label actions waiting for their
        impression.
    watermark
        Event time up to which windows are closed (``-inf`` before both topics were seen).
    """

    impressions: int = 0
    actions: int = 0
    positives: int = 0
    negatives_kept: int = 0
    negatives_dropped: int = 0
    late_actions: int = 0
    late_impressions: int = 0
    duplicate_impressions: int = 0
    duplicate_actions: int = 0
    ignored_actions: int = 0
    spilled: int = 0
    pending: int = 0
    buffered_actions: int = 0
    watermark: float = float("-inf")

    @property
    def examples(self) -> int:
        """Examples emitted: positives plus kept negatives."""
        return self.positives + self.negatives_kept

    def as_dict(self) -> dict[str, float | None]:
        """The counters as a plain dict (for ``--json`` and metrics), with ``examples`` added.

        A watermark of ``±inf`` (nothing read yet; drained) is ``None``, so the dict is valid JSON.
        """
        out: dict[str, float | None] = msgspec.structs.asdict(self)
        out["examples"] = self.examples
        if not math.isfinite(self.watermark):
            out["watermark"] = None
        return out
