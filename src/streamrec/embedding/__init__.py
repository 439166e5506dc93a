"""The collisionless embedding table (Monolith): cuckoo-hashed rows, admission, expiry, per-row
optimizers, deltas for serving replicas, snapshots, and a PyTorch module on top.

See ``docs/embedding.md`` for formats, invariants and failure behaviour.
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
