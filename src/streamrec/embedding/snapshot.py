"""Snapshots of a whole collection: one file, replaced atomically.

Format: an uncompressed ``.npz`` (a zip of ``.npy`` arrays, readable by any numpy, no pickle)
holding ``format`` (version), ``config`` (the collection's config as JSON bytes) and, per slot,
every array the table needs to continue exactly: the cuckoo index arrays, seeds and the secret key
its seeds are drawn from (``index.secret``: a restored index keeps its layout and draws the seeds
the original would), the rows in use, optimizer state, timestamps, dirty flags, free list,
admission sketch and counters. Arrays added since the first version (``index.secret``,
``index.rehash_loads``, the ``flooded`` counter) are optional when reading, so older snapshots load.

Crash safety: the snapshot is written to ``<path>.tmp-<pid>`` in the same directory, flushed and
fsynced, then ``os.replace``d over ``<path>`` and the directory fsynced. A crash at any point
leaves either the previous snapshot or the new one at ``<path>``, never a torn file; stray
``.tmp-*`` files are ignored by readers.

A restored collection answers lookups bit for bit as the saved one and, fed the same batches,
trains identically (same rows, same optimizer state, same admission counts, same kick RNG).
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path

import msgspec
import numpy as np

from streamrec.embedding.collection import EmbeddingCollection
from streamrec.embedding.config import EmbeddingConfig, embedding_config, slot_device
from streamrec.embedding.table import EmbeddingTable
from streamrec.errors import SnapshotError

FORMAT = "streamrec-embedding-v1"


def write_arrays_atomic(path: str | Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` as an ``.npz`` at ``path`` so that a crash never leaves a torn file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_arrays(path: str | Path, expected_format: str) -> dict[str, np.ndarray]:
    """Every array of a snapshot file, after checking its ``format`` entry."""
    path = Path(path)
    if not path.exists():
        raise SnapshotError(f"no snapshot at {path}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, NotImplementedError, zlib.error) as exc:
        # a damaged zip directory surfaces as any of these (e.g. a flipped flag byte reads as
        # "compression method not supported", a flipped name byte as a missing member)
        raise SnapshotError(f"{path} is not a readable snapshot: {exc!r}") from None
    found = bytes(arrays.get("format", np.array([], np.uint8))).decode(errors="replace")
    if found != expected_format:
        raise SnapshotError(f"{path} has format {found!r}, expected {expected_format!r}")
    return arrays


def text_array(text: str) -> np.ndarray:
    """A string stored as a uint8 array (npz entries must be arrays; no pickle)."""
    return np.frombuffer(text.encode(), dtype=np.uint8)


def collection_arrays(collection: EmbeddingCollection, prefix: str = "") -> dict[str, np.ndarray]:
    """The arrays of a collection's snapshot, keys optionally prefixed (to embed in a larger one)."""
    arrays = {f"{prefix}config": text_array(msgspec.json.encode(collection.config).decode())}
    for slot, table in collection.tables.items():
        for name, array in table.state_arrays().items():
            arrays[f"{prefix}slot/{slot}/{name}"] = array
    return arrays


def collection_from_arrays(
    arrays: Mapping[str, np.ndarray], prefix: str = "", device: str | None = None
) -> EmbeddingCollection:
    """Rebuild a collection from :func:`collection_arrays` output (on ``device`` when given, else
    where each slot's config puts it: the arrays are the same for a CPU and a GPU table).

    Raises :class:`SnapshotError` if an array is missing or does not fit the others.
    """
    try:
        config = embedding_config(json.loads(bytes(arrays[f"{prefix}config"]).decode()))
        if device is not None:
            from streamrec.embedding.collection import with_device

            config = with_device(config, device)
        collection = EmbeddingCollection.__new__(EmbeddingCollection)
        collection.config = config
        collection.tables = {}
        for slot, slot_config in config.slots.items():
            head = f"{prefix}slot/{slot}/"
            table_arrays = {k.removeprefix(head): v for k, v in arrays.items() if k.startswith(head)}
            table = EmbeddingTable.from_state_arrays(slot, slot_config, config.seed, table_arrays)
            device = slot_device(config, slot)
            if device != "cpu":  # the snapshot format is the CPU table's, whatever the device
                from streamrec.embedding.cuda_table import CudaEmbeddingTable

                table = CudaEmbeddingTable.from_cpu(table, device)
            collection.tables[slot] = table
    except (KeyError, ValueError, TypeError, IndexError) as exc:  # ValueError covers ConfigError and bad JSON
        raise SnapshotError(f"snapshot arrays are incomplete or inconsistent: {exc!r}") from None
    return collection


def save_collection(collection: EmbeddingCollection, path: str | Path) -> None:
    """Snapshot every slot of ``collection`` to ``path`` (atomically replaced).

    Raises :class:`SnapshotError` if the file cannot be written; the previous snapshot stays.
    """
    try:
        write_arrays_atomic(path, {"format": text_array(FORMAT), **collection_arrays(collection)})
    except OSError as exc:
        raise SnapshotError(f"cannot write a snapshot at {path}: {exc}") from exc


def load_collection(path: str | Path, device: str | None = None) -> EmbeddingCollection:
    """Restore a collection saved by :func:`save_collection` (onto ``device`` when given)."""
    return collection_from_arrays(read_arrays(path, FORMAT), device=device)


__all__ = [
    "EmbeddingConfig",
    "collection_arrays",
    "collection_from_arrays",
    "load_collection",
    "read_arrays",
    "save_collection",
    "write_arrays_atomic",
]
