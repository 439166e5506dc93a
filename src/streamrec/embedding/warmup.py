"""Compile the embedding table's Numba kernels before a trainer or a serving replica says it is ready.

The embedding table runs on Numba kernels compiled on first call and cached next to the source
(``cache=True``). On a fresh install nothing is cached yet: the first training step of an online
trainer would wait seconds for LLVM (measured on a 2-core machine with the cache emptied: 3.4-4.1 s
for the first click to reach the model's scores against 0.9-2 s warm). A long-running service must
not pay that inside a request, so it calls :func:`warm_embedding` before it reports ready: every
kernel of the table's path runs once on a throwaway collection, with the same argument types the
real work passes, so the real work finds them compiled (or, on a warm install, loaded from the
cache in a fraction of a second). The profile store warms its own kernels
(:func:`streamrec.profiles.warmup.warm_profiles`).

``tests/test_warmup.py`` holds the property that makes this worth having: after a warm-up, a real
training loop (train steps, growth, deltas, expiry, a serving replica) compiles nothing new.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

__all__ = ["warm_embedding"]


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
