"""Compile the Numba kernels before a service says it is ready.

The embedding table and the profile store run on Numba kernels compiled on first call and cached
next to the source (``cache=True``). On a fresh install nothing is cached yet: the first request
to a profile node, or the first training step of an online trainer, would wait seconds for LLVM
(measured on a 2-core machine with the cache emptied: 10.7 s for the first action to reach a
node's features, 3.4-4.1 s for the first click to reach the model's scores against 0.9-2 s
warm). A long-running service must not pay that inside a request, so each one calls a warm-up
here before it reports ready: the work below runs every kernel of its path on a throwaway table
or store, with the same argument types the real work passes, so the real work finds them
compiled (or, on a warm install, loaded from the cache in a fraction of a second).

``tests/test_warmup.py`` holds the property that makes this worth having: after a warm-up, a real
training loop (train steps, growth, deltas, expiry, a serving replica) and a real profile
workload (writes, merges, compaction, every kind of feature) compile nothing new.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np


def warm_embedding() -> float:
    """Run every embedding kernel a trainer or a serving replica uses; returns seconds taken."""
    import torch

    from streamrec.embedding import (
        FTRL,
        SGD,
        Adagrad,
        Adam,
        EmbeddingCollection,
        EmbeddingModule,
        JaggedIds,
        SlotConfig,
        Uniform,
        Zeros,
    )

    started = time.perf_counter()
    slots = {
        "sgd": SlotConfig(dim=2, optimizer=SGD(), initializer=Zeros(), ttl=10.0, capacity=8),
        "adagrad": SlotConfig(dim=2, optimizer=Adagrad(), admit_after=2, ttl=10.0, capacity=8),
        "ftrl": SlotConfig(dim=2, optimizer=FTRL(), initializer=Uniform(), pooling="mean", capacity=8),
        "adam": SlotConfig(dim=2, optimizer=Adam(), capacity=8),
    }
    tables = EmbeddingCollection(slots)
    module = EmbeddingModule(tables)
    replica = tables.serving_replica()
    ids = torch.arange(64, dtype=torch.int64)  # past capacity: the tables grow (rehash) on the way
    for now in (0.0, 1.0):
        features: dict[str, Any] = {slot: ids for slot in slots}
        features["ftrl"] = JaggedIds.from_lists([[0, 1], [2], []] * 8)
        out = module(features, now=now)
        torch.stack([v.sum() for v in out.values()]).sum().backward()
        module.apply_gradients()
        replica.apply(tables.export_delta())
    tables.evict_expired(100.0)  # the ttl slots drop every row: deletes reach the replica too
    replica.apply(tables.export_delta())
    replica.apply(tables.export_full())
    module.eval()
    with torch.no_grad():
        EmbeddingModule(replica)(features)
        module(features)
    for slot in slots:
        tables[slot].lookup(ids.numpy())
        replica[slot].lookup(ids.numpy())
        tables[slot].rows_of(ids.numpy())
    _large_batches(tables, replica)
    return time.perf_counter() - started


def _large_batches(tables: Any, replica: Any) -> None:
    """Lookups big enough for the parallel kernel (batches of ``PARALLEL_MIN`` ids or more)."""
    from streamrec.embedding.cuckoo import PARALLEL_MIN

    many = np.arange(PARALLEL_MIN, dtype=np.int64)
    tables["adam"].lookup(many)
    replica["adam"].lookup(many)


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
