"""Sharded trainer snapshots: one file per shard plus a manifest, committed as a whole, reshardable.

Layout of a snapshot directory::

    manifest.json                       what a reader trusts: world size, shard key, the files
    v000000001234-3f2a9c/               one version: the files the manifest names
        shard-0-of-2.npz                rank 0's tables + the dense head and its optimizer
        shard-1-of-2.npz                rank 1's tables (+ the same dense head)

Each shard file is an ordinary trainer snapshot (``training/snapshot.py``). A save is collective:
every rank writes its file into a new version directory and fsyncs it; rank 0 then writes the
manifest (with each file's size and SHA-256) to a temporary name, fsyncs it and renames it over
``manifest.json`` — the one atomic step. A crash at any earlier point leaves the previous manifest,
whose version directory is untouched, so a reader always sees a whole snapshot; older versions are
removed only after the new manifest is in place. Across machines the directory must be on storage
every rank reaches.

**Resharding.** Ids are placed by :func:`~streamrec.training.distributed.owner_of`, which depends
only on the id and the world size. Loading with the world size the snapshot was written with
reads one file; with another, every rank reads every shard and keeps the ids it now owns, each
with its row, optimizer state, last-update time and dirty flag, so nothing is lost (2 -> 3 -> 1 is
tested bit for bit). Admission counts of ids that have no row yet live in count-min sketches that
cannot be split by id: the new shards each take the element-wise sum of the old sketches (capped at
255), which still never underestimates a count.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch.distributed as dist

from streamrec.embedding import EmbeddingCollection
from streamrec.embedding.cuckoo import CuckooIndex
from streamrec.embedding.snapshot import collection_from_arrays, read_arrays
from streamrec.embedding.table import EmbeddingTable
from streamrec.errors import SnapshotError
from streamrec.training.distributed import SHARD_KEY, owner_of
from streamrec.training.snapshot import FORMAT as SHARD_FORMAT
from streamrec.training.snapshot import load_trainer, save_trainer
from streamrec.training.trainer import Trainer

__all__ = ["MANIFEST_FORMAT", "is_sharded", "load_shard", "read_manifest", "reshard", "save_sharded"]

MANIFEST_FORMAT = "streamrec-sharded-trainer-v1"


def is_sharded(path: str | Path) -> bool:
    """Whether ``path`` is a sharded snapshot directory (it holds a manifest)."""
    return (Path(path) / "manifest.json").is_file()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_sharded(path: str | Path, trainer: Trainer, extra: dict[str, Any] | None = None) -> Path:
    """Write this rank's shard and, on rank 0, commit the manifest. Collective (without a process
    group: one shard); returns the manifest path.

    ``extra`` is recorded from rank 0 (the online stage stores its log positions there).
    """
    root = Path(path)
    together = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if together else (0, 1)
    version = [f"v{trainer.steps:012d}-{uuid.uuid4().hex[:6]}"] if rank == 0 else [None]
    if together:
        dist.broadcast_object_list(version, src=0)
    folder = root / str(version[0])
    folder.mkdir(parents=True, exist_ok=True)
    name = f"shard-{rank}-of-{world}.npz"
    save_trainer(folder / name, trainer, extra)  # written to a temp file, fsynced, renamed
    entry = {"name": name, "bytes": (folder / name).stat().st_size, "sha256": _sha256(folder / name)}
    entries: list[Any] = [entry]
    if together:
        entries = [None] * world
        dist.all_gather_object(entries, entry)
    manifest = root / "manifest.json"
    if rank == 0:
        _fsync_dir(folder)
        body = {
            "format": MANIFEST_FORMAT,
            "world": world,
            "shard_key": SHARD_KEY,
            "version": version[0],
            "files": entries,
            "steps": trainer.steps,
            "examples_seen": int(trainer.examples_seen),  # global: every rank counts the whole batch
            "saved_at": time.time(),
            "extra": extra or {},
        }
        temp = root / f"manifest.json.tmp-{uuid.uuid4().hex[:6]}"
        with open(temp, "w") as handle:
            json.dump(body, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, manifest)  # the commit point
        _fsync_dir(root)
        for old in root.iterdir():
            if old.is_dir() and old.name.startswith("v") and old.name != version[0]:
                shutil.rmtree(old, ignore_errors=True)
    if together:
        dist.barrier()
    return manifest


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of a sharded snapshot, checked; :class:`SnapshotError` names what is wrong."""
    manifest = Path(path) / "manifest.json"
    try:
        body = json.loads(manifest.read_text())
    except FileNotFoundError:
        raise SnapshotError(f"{path}: no manifest.json (not a sharded snapshot, or never committed)") from None
    except (OSError, ValueError) as exc:
        raise SnapshotError(f"{manifest}: unreadable manifest: {exc}") from None
    if body.get("format") != MANIFEST_FORMAT:
        raise SnapshotError(f"{manifest}: format {body.get('format')!r}, expected {MANIFEST_FORMAT!r}")
    if body.get("shard_key") != SHARD_KEY:
        raise SnapshotError(f"{manifest}: written with shard key {body.get('shard_key')}, this build uses {SHARD_KEY}")
    return body


def _shard_files(path: Path, manifest: dict[str, Any]) -> list[Path]:
    files = []
    for entry in manifest["files"]:
        file = path / manifest["version"] / entry["name"]
        if not file.is_file():
            raise SnapshotError(f"{file}: a shard the manifest names is missing")
        if file.stat().st_size != entry["bytes"] or _sha256(file) != entry["sha256"]:
            raise SnapshotError(f"{file}: size or SHA-256 differs from the manifest (corrupt shard)")
        files.append(file)
    return files


def load_shard(path: str | Path, rank: int, world: int) -> tuple[Trainer, dict[str, Any]]:
    """The trainer of rank ``rank`` of ``world`` from a sharded snapshot, resharding when the
    snapshot was written by another world size. Returns it and the snapshot's ``extra``.

    With ``rank=0, world=1`` this is the whole model as an ordinary one-process trainer.
    """
    root = Path(path)
    manifest = read_manifest(root)
    files = _shard_files(root, manifest)
    if manifest["world"] == world:
        trainer, extra = load_trainer(files[rank])
    else:
        trainer, extra = load_trainer(files[0])  # dense head, optimizer, configs: the same on every shard
        old = [collection_from_arrays(read_arrays(f, SHARD_FORMAT), prefix="emb/") for f in files]
        trainer.model.embeddings.tables = reshard(old, rank, world)
    trainer.examples_seen = int(manifest["examples_seen"])
    return trainer, manifest.get("extra", extra)


def reshard(old: list[EmbeddingCollection], rank: int, world: int) -> EmbeddingCollection:
    """The ids of ``old`` shards that rank ``rank`` of ``world`` owns, as one collection."""
    config = old[0].config
    out = EmbeddingCollection.__new__(EmbeddingCollection)
    out.config = config
    out.tables = {}
    for slot, slot_config in config.slots.items():
        tables = [shard.tables[slot] for shard in old]
        out.tables[slot] = _table_subset(slot, slot_config, config.seed, tables, rank, world)
    return out


def _table_subset(
    slot: str, config: Any, seed: int, tables: list[EmbeddingTable], rank: int, world: int
) -> EmbeddingTable:
    ids_parts, weights, last, dirty, evicted = [], [], [], [], []
    states: dict[str, list[np.ndarray]] = {}
    for table in tables:
        arrays = table.state_arrays()
        ids, rows = table.index.items()
        mine = owner_of(ids, world) == rank
        ids, rows = ids[mine], rows[mine].astype(np.int64)
        ids_parts.append(ids)
        weights.append(arrays["weights"][rows])
        last.append(arrays["last_update"][rows])
        dirty.append(arrays["dirty"][rows])
        for name, array in arrays.items():
            if name.startswith("state."):
                states.setdefault(name, []).append(array[rows])
        gone = arrays["evicted"]
        evicted.append(gone[owner_of(gone, world) == rank])
    ids = np.concatenate(ids_parts)
    n = len(ids)
    index = CuckooIndex(max(2 * n, 64))
    index.insert(ids, np.arange(n, dtype=np.int32))
    counters = np.stack([t.state_arrays()["counters"] for t in tables])
    arrays: dict[str, np.ndarray] = {f"index.{k}": v for k, v in index.state().items()}
    arrays.update(
        {
            "weights": np.concatenate(weights),
            "last_update": np.concatenate(last),
            "dirty": np.concatenate(dirty),
            "free": np.empty(0, dtype=np.int32),
            "alloc": np.array([0, n, max(n, 1), index.size], dtype=np.int64),  # free, used, capacity, index size
            "counters": np.array(
                [counters[:, 0].max(), counters[:, 1].sum(), counters[:, 2].sum(), counters[:, 3].sum()], np.int64
            ),
            "evicted": np.concatenate(evicted),
        }
    )
    arrays.update({name: np.concatenate(parts) for name, parts in states.items()})
    sketches = [t.state_arrays().get("sketch") for t in tables]
    if sketches[0] is not None:
        total = np.sum([s.astype(np.int64) for s in sketches], axis=0)
        arrays["sketch"] = np.minimum(total, 255).astype(np.uint8)
    return EmbeddingTable.from_state_arrays(slot, config, seed, arrays)
