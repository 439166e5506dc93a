"""Compile the profile store's Numba kernels before a profile node or an ingest says it is ready.

The store's slices, merges and queries run on Numba kernels compiled on first call and cached next
to the source (``cache=True``). On a fresh install the first request to a profile node would wait
for LLVM (measured on a 2-core machine with the cache emptied: 10.7 s for the first action to reach
a node's features), so a node calls :func:`warm_profiles` before it reports ready: it writes,
merges, compacts and queries a throwaway in-memory store with the real config, so every kernel of
that config's path is compiled (or loaded from the cache) before the first real request. The
embedding table warms its own (:func:`streamrec.embedding.warmup.warm_embedding`).

``tests/test_warmup.py`` checks that after a warm-up a real profile workload (writes, merges,
compaction, every kind of feature) compiles nothing new.
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["warm_profiles"]


def warm_profiles(config: Any = None) -> float:
    """Write, merge, compact and query a throwaway in-memory store of ``config``; seconds taken.

    Every slot gets events of every action its counters or filter name (with every counter given
    explicitly too), at ages that land in each tier, and is then queried with every kind of
    feature: counters, a ratio, distinct values, top-k, a value filter.
    """
    from streamrec.profiles.store import ProfileStore
    from streamrec.profiles.types import Feature, FeatureQuery
    from streamrec.records import ActionEvent

    started = time.perf_counter()
    store = ProfileStore(config, None, background=False)
    try:
        names = {"user", "item", "action"}
        attributes = sorted({n for s in store.cfg.slots.values() for n in (s.entity, s.value)} - names)
        actions = sorted({a for s in store.cfg.slots.values() for a in [*s.counters, *(s.actions or [])]})
        counters = sorted({c for s in store.cfg.slots.values() for c in s.counters})
        now = time.time()
        ages = (0.0, 90.0, 3 * 3600.0, 4 * 86400.0)
        events = [
            ActionEvent(
                user=f"warm-{i % 3}",
                item=f"warm-{i % 5}",
                action=action,
                time=now - age,
                counters={c: 1.0 for c in counters} if i % 2 else {},
                attributes={a: f"warm-{i % 4}" for a in attributes},
            )
            for i, (action, age) in enumerate((a, g) for a in actions for g in ages)
        ]
        store.write(events)
        store.merge()
        store.compact()
        store.write(events[: len(events) // 2])  # into existing slices: the merge path, not the install one
        store.merge()
        entities = [f"{s.entity}:warm-{i}" for s in store.cfg.slots.values() for i in range(2)]
        features = []
        for name, slot in store.cfg.slots.items():
            first = slot.counters[0]
            last = slot.counters[-1]
            features += [
                Feature(slot=name, window="5m"),
                Feature(slot=name, window="30d", top_k=3),
                Feature(slot=name, window="1d", agg="ratio", numerator=last, denominator=first, alpha=1, beta=2),
                Feature(slot=name, window="7d", agg="ratio", numerator=last, denominator=first, top_k=2, by="ratio"),
                Feature(slot=name, window="1h", agg="distinct"),
                Feature(slot=name, window="7d", values=("warm-0", "warm-1")),
            ]
        store.query(FeatureQuery(entities=sorted(set(entities)), features=features, now=now))
    finally:
        store.close()
    return time.perf_counter() - started
