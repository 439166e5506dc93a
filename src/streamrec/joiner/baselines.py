"""The baseline that ``streamrec bench joiner`` measures the durable join against.

:func:`dict_join` is the online join as a stream processor keeps it in memory (a Flink or Kafka
Streams job with heap state and no checkpoint between batches): pending impressions in a dict keyed
by ``(request_id, item)``, their deadlines in a heap, and the same window, lateness and negative
sampling rules as :class:`~streamrec.joiner.state.JoinState`. It durably stores nothing, so a crash
loses every pending impression; that is what the comparison prices. It is a fair one because both
sides get the same steps of already-decoded records, emit the same examples (the bench checks the
counts agree, ``same_examples``) and run in the same process: the ratio is what LMDB's crash-safe
state costs, nothing else.
"""

from __future__ import annotations

import heapq

from streamrec.joiner.config import JoinConfig
from streamrec.joiner.sampling import keep_negative
from streamrec.records import ActionEvent, Example, Impression

__all__ = ["dict_join"]


def dict_join(steps: list[tuple[list[Impression], list[ActionEvent]]], config: JoinConfig) -> list[Example]:
    """The examples the join emits for ``steps``: the same windows in a dict and a heap, nothing durable.

    Each step is ``(impressions, actions)`` cut at the same event time, as the joiner reads its two
    topics. An impression waits ``config.window_s`` for an action with its ``(request_id, item)``;
    the first one in the window makes a positive, and an impression still waiting when the
    watermark (the step's last impression time minus ``allowed_lateness_s``) passes its deadline
    becomes a negative kept by :func:`~streamrec.joiner.sampling.keep_negative`. The rest are
    drained at the end, as ``JoinState.step(drain=True)`` does.
    """
    pending: dict[tuple[str, str], Impression] = {}
    heap: list[tuple[float, tuple[str, str]]] = []
    out: list[Example] = []
    w, r = config.window_s, config.negative_rate
    for ib, ab in steps:
        for imp in ib:
            key = (imp.request_id, imp.item)
            if key not in pending:
                pending[key] = imp
                heapq.heappush(heap, (imp.time + w, key))
        for act in ab:
            imp = pending.get((act.request_id or "", act.item))
            if imp is not None and act.time <= imp.time + w:
                out.append(Example(sparse=imp.sparse, dense=imp.dense, label=1.0, time=act.time, item=imp.item))
                pending[(imp.request_id, imp.item)] = None  # type: ignore[assignment]
        wm = ib[-1].time - config.allowed_lateness_s
        while heap and heap[0][0] < wm:
            deadline, key = heapq.heappop(heap)
            imp = pending.pop(key)
            if imp is not None and keep_negative(imp.request_id, imp.item, r):
                out.append(Example(sparse=imp.sparse, dense=imp.dense, label=0.0, sample_rate=r, time=deadline))
    for _, key in heap:
        imp = pending.pop(key)
        if imp is not None and keep_negative(imp.request_id, imp.item, r):
            out.append(Example(sparse=imp.sparse, dense=imp.dense, label=0.0, sample_rate=r, time=imp.time + w))
    return out
