"""Many slots, one object: the embedding collection a model trains on.

:class:`EmbeddingCollection` owns one :class:`~streamrec.embedding.table.EmbeddingTable` per
declared slot and does, for all of them at once, what a trainer does on a schedule: expire stale
rows, export a :class:`~streamrec.embedding.delta.CollectionDelta` for serving replicas, and
report how the tables behave. Build it from Python (``{"user": SlotConfig(dim=16)}``), from a dict
shaped like the TOML section, or from a TOML file (:meth:`EmbeddingCollection.from_toml`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streamrec.embedding.config import (
    EmbeddingConfig,
    SlotConfig,
    embedding_config,
    load_embedding_config,
    slot_device,
)
from streamrec.embedding.delta import CollectionDelta
from streamrec.embedding.serving import ServingCollection
from streamrec.embedding.table import EmbeddingTable, check_time
from streamrec.errors import UnknownSlotError


class EmbeddingCollection:
    """Training tables for every slot.

    Parameters
    ----------
    config:
        An :class:`EmbeddingConfig`, a mapping ``slot -> SlotConfig``, or the ``[embedding]``
        section as plain data (validated; errors name the key).
    seed:
        Overrides the config's seed when given.
    device:
        Overrides every slot's ``device`` when given (``"cpu"``, ``"cuda"``, ``"cuda:N"``): a table
        on a GPU is a :class:`~streamrec.embedding.cuda_table.CudaEmbeddingTable`.

    Examples
    --------
    >>> import numpy as np
    >>> from streamrec.embedding.config import SlotConfig
    >>> tables = EmbeddingCollection({"user": SlotConfig(dim=4), "item": SlotConfig(dim=8, admit_after=2)})
    >>> tables["item"].admit(np.array([1, 2, 1]), now=0).tolist()
    [0, -1, 0]
    >>> sorted((slot, len(delta.ids)) for slot, delta in tables.export_delta().tables.items())
    [('item', 1), ('user', 0)]
    """

    def __init__(
        self,
        config: EmbeddingConfig | Mapping[str, SlotConfig] | Mapping[str, Any],
        seed: int | None = None,
        device: str | None = None,
    ):
        if isinstance(config, Mapping) and config and all(isinstance(v, SlotConfig) for v in config.values()):
            config = EmbeddingConfig(slots=dict(config), seed=0 if seed is None else seed)
        config = embedding_config(config)  # type: ignore[arg-type]
        if seed is not None:
            config = EmbeddingConfig(slots=config.slots, seed=seed, device=config.device)
        if device is not None:
            config = with_device(config, device)
        self.config = config
        self.tables = {slot: _table(slot, cfg, config) for slot, cfg in config.slots.items()}

    @classmethod
    def from_toml(cls, path: str) -> EmbeddingCollection:
        return cls(load_embedding_config(path))

    @property
    def slots(self) -> list[str]:
        return list(self.tables)

    def __getitem__(self, slot: str) -> EmbeddingTable:
        try:
            return self.tables[slot]
        except KeyError:
            raise UnknownSlotError(slot, list(self.tables)) from None

    def __contains__(self, slot: object) -> bool:
        return slot in self.tables

    def evict_expired(self, now: float) -> dict[str, int]:
        """Expire idle rows in every slot at event time ``now``; rows evicted per slot."""
        check_time(now)
        return {slot: table.evict_expired(now) for slot, table in self.tables.items()}

    def export_delta(self) -> CollectionDelta:
        """Changes of every slot since the previous export."""
        return CollectionDelta({slot: table.export_delta() for slot, table in self.tables.items()})

    def export_full(self) -> CollectionDelta:
        """Every row of every slot (starts a serving replica)."""
        return CollectionDelta({slot: table.export_full() for slot, table in self.tables.items()})

    def serving_replica(self) -> ServingCollection:
        """A new serving collection holding a full copy of the current vectors."""
        replica = ServingCollection(
            {slot: t.dim for slot, t in self.tables.items()},
            {slot: t.config.pooling for slot, t in self.tables.items()},
        )
        replica.apply(self.export_full())
        return replica

    def to(self, device: str) -> EmbeddingCollection:
        """Move every table to ``device`` (bytes copied; nothing rehashed). Returns ``self``."""
        from streamrec.embedding.cuda_table import CudaEmbeddingTable, check_device

        check_device(device)
        self.config = with_device(self.config, device)
        for slot, table in list(self.tables.items()):
            cpu = table.to_cpu() if isinstance(table, CudaEmbeddingTable) else table
            self.tables[slot] = cpu if device == "cpu" else CudaEmbeddingTable.from_cpu(cpu, device)
        return self

    def stats(self) -> dict[str, dict[str, float]]:
        """Per slot: ids held, load factor, admitted/evicted counts, bytes."""
        out = {}
        for slot, table in self.tables.items():
            memory = table.memory()
            out[slot] = {
                "ids": len(table),
                "load_factor": round(table.index.load_factor, 4),
                "admitted": table.stats.admitted,
                "evicted": table.stats.evicted,
                "unadmitted_lookups": table.stats.unadmitted_lookups,
                "bytes": sum(v for k, v in memory.items() if k.endswith("_bytes")),
            }
        return out


def with_device(config: EmbeddingConfig, device: str) -> EmbeddingConfig:
    """``config`` with every slot on ``device`` (slot-level devices cleared)."""
    import msgspec

    from streamrec.embedding.cuda_table import check_device

    check_device(device)
    slots = {name: msgspec.structs.replace(cfg, device=None) for name, cfg in config.slots.items()}
    return EmbeddingConfig(slots=slots, seed=config.seed, device=device)


def _table(slot: str, cfg: SlotConfig, config: EmbeddingConfig):
    device = slot_device(config, slot)
    if device == "cpu":
        return EmbeddingTable(slot, cfg, config.seed)
    from streamrec.embedding.cuda_table import CudaEmbeddingTable

    return CudaEmbeddingTable(slot, cfg, config.seed, device)
