"""The collisionless embedding table (Monolith): cuckoo-hashed rows, admission, expiry, per-row
optimizers, deltas for serving replicas, snapshots, and a PyTorch module on top.

See ``docs/embedding.md`` for formats, invariants and failure behaviour.

Examples
--------
A million random 64-bit ids, each gets a row of its own (a hashed table of the same size would
merge many of them):

>>> import numpy as np
>>> from streamrec.embedding import EmbeddingTable, SlotConfig
>>> table = EmbeddingTable("user", SlotConfig(dim=4))
>>> ids = np.unique(np.random.default_rng(0).integers(-2**63, 2**63 - 1, 1_000_000))
>>> rows = table.admit(ids, now=0.0)
>>> print(f"{len(ids):,} ids -> {len(np.unique(rows)):,} rows")
1,000,000 ids -> 1,000,000 rows
"""

from streamrec.embedding.collection import EmbeddingCollection
from streamrec.embedding.config import (
    FTRL,
    SGD,
    Adagrad,
    Adam,
    EmbeddingConfig,
    Normal,
    SlotConfig,
    Uniform,
    Zeros,
)
from streamrec.embedding.delta import CollectionDelta, TableDelta
from streamrec.embedding.module import EmbeddingModule, JaggedIds
from streamrec.embedding.serving import ServingCollection, ServingTable
from streamrec.embedding.snapshot import load_collection, save_collection
from streamrec.embedding.table import EmbeddingTable

__all__ = [
    "FTRL",
    "SGD",
    "Adagrad",
    "Adam",
    "CollectionDelta",
    "EmbeddingCollection",
    "EmbeddingConfig",
    "EmbeddingModule",
    "EmbeddingTable",
    "JaggedIds",
    "Normal",
    "ServingCollection",
    "ServingTable",
    "SlotConfig",
    "TableDelta",
    "Uniform",
    "Zeros",
    "load_collection",
    "save_collection",
]
