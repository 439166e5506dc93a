"""The online stage: train from topic ``examples``, publish updates, snapshot, then commit.

:class:`OnlineTrainer` wraps a :class:`~streamrec.training.trainer.Trainer` (usually restored from
the batch stage's snapshot) and runs one loop: poll a mini-batch of
:class:`~streamrec.records.Example` records, build an :class:`ExampleBatch`, ``train_step``, and
do whatever is due on three wall-clock schedules:

* every ``sparse_sync_interval``: expiry if due (``evict_expired`` at the largest event time
  seen), then ``export_delta()`` published as a ``"sparse"`` :class:`ModelUpdate`;
* every ``dense_sync_interval``: the head's ``state_dict`` as a ``"dense"`` update;
* every ``snapshot_interval``: a sparse and a dense sync, ``save_trainer`` with the log position it
  covers in ``extra["online"]``, and **only then** ``consumer.commit()``.

Why this order (crash semantics): the committed offset may lag the snapshot (a crash between the
two) but never lead it. A restarted trainer loads the snapshot, opens the same consumer group,
skips every record below the snapshot's ``examples_offsets`` (per partition; already inside the model), and trains
on the rest: every example is trained on exactly once relative to the snapshot it restarts from;
what was trained after the snapshot is lost with the process and trained again on replay. On
start the trainer publishes a ``"full"`` update, so replicas that applied updates of the lost
work converge to the restored model.

The loop is single-threaded on purpose: training, export and the snapshot see one consistent
model without locks; the only concurrency is in the serving replicas (``serving_model.py``).

**W ranks** (``streamrec train online --ranks W``, or under ``torchrun``): the trainer is a
:class:`~streamrec.training.distributed.DistributedTrainer` and each rank runs this loop in lock
step. A rank's consumer is a member of the group, so the ranks share the partitions of
``examples``; every step is collective (a rank that polled nothing trains on an empty share). After
each step the ranks agree, in one all-reduce, on what rank 0's clock says is due, whether anyone
was asked to stop, whether anything was polled anywhere (``until_drained``) and the newest event
time (for expiry). Each rank publishes the delta of its own shard (``shard``/``shards`` in the
update; a replica counts a version as applied once every part arrived); rank 0 publishes dense
updates and the first part of the ``full`` update that opens a run (the other parts follow it, so
the reset never wipes another shard's rows). Snapshots are sharded (``training/shards.py``) and
record the positions of every partition, merged over ranks; each rank commits after the snapshot.
A rank that dies breaks the collectives: the others fail, the launcher stops the job, and a restart
resumes from the last snapshot and the committed offsets.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import torch
import torch.distributed as dist

from streamrec.batch import ExampleBatch
from streamrec.config import parse_duration
from streamrec.embedding import EmbeddingCollection
from streamrec.errors import ConfigError
from streamrec.log import EventLog, open_log
from streamrec.records import Example
from streamrec.training.distributed import DistributedTrainer
from streamrec.training.shards import is_sharded, load_shard, reshard, save_sharded
from streamrec.training.snapshot import load_trainer, save_trainer
from streamrec.training.trainer import Trainer
from streamrec.training.updates import UPDATES_TOPIC, FullPayload, ModelUpdate, encode_dense

__all__ = ["OnlineConfig", "OnlineStats", "OnlineTrainer"]


class OnlineConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Schedules (wall-clock seconds) and topics of the online stage (the ``[online]`` section).

    The four intervals take seconds or any :func:`streamrec.config.parse_duration` string
    (``"10s"``, ``"5m"``, ``"1w"``) and hold seconds after construction.

    Parameters
    ----------
    sparse_sync_interval
        Seconds between publications of the rows touched since the previous one (default 10).
    dense_sync_interval
        Seconds between publications of the dense parameters (default 300).
    snapshot_interval
        Seconds between snapshots; offsets are committed right after each (default 600).
    expiry_interval
        Seconds between runs of ``evict_expired`` (default 60); evictions ride the next sparse sync.
    batch_size
        Most examples per training step (a step trains on what one poll returned).
    poll_timeout_s
        How long one poll waits for the first record.
    group
        Consumer group of the trainer on ``examples_topic``.
    publish
        Publish updates to ``updates_topic`` (off for throughput baselines).
    publish_full_on_start
        Publish a ``"full"`` update when the loop starts (see the module docstring).
    """

    sparse_sync_interval: float | str = 10.0
    dense_sync_interval: float | str = 300.0
    snapshot_interval: float | str = 600.0
    expiry_interval: float | str = 60.0
    batch_size: int = 512
    poll_timeout_s: float = 0.1
    examples_topic: str = "examples"
    updates_topic: str = UPDATES_TOPIC
    group: str = "trainer"
    publish: bool = True
    publish_full_on_start: bool = True

    def __post_init__(self) -> None:
        for name in ("sparse_sync_interval", "dense_sync_interval", "snapshot_interval", "expiry_interval"):
            setattr(self, name, parse_duration(getattr(self, name), f"online.{name}", positive=True))
        if self.batch_size < 1:
            raise ConfigError("online.batch_size", f"must be >= 1 (got {self.batch_size!r})")
        if not self.poll_timeout_s >= 0:
            raise ConfigError("online.poll_timeout_s", f"must be >= 0 (got {self.poll_timeout_s!r})")


class OnlineStats(msgspec.Struct, kw_only=True):
    """Counters of one :class:`OnlineTrainer` run (``examples_seen`` counts the model's lifetime)."""

    examples: int = 0  # trained on in this run
    steps: int = 0
    replayed_skipped: int = 0  # records already inside the snapshot, skipped on restart
    rejected: int = 0  # records that do not fit the model (e.g. wrong dense length)
    sparse_syncs: int = 0
    dense_syncs: int = 0
    full_syncs: int = 0
    snapshots: int = 0
    evicted: int = 0
    bytes_published: int = 0
    examples_seen: int = 0
    max_event_time: float = 0.0
    elapsed_s: float = 0.0
    examples_per_s: float = 0.0
    event_lag_s: float = 0.0  # wall clock minus the newest event time trained on
    version: int = 0


class OnlineTrainer:
    """Trains a model from topic ``examples`` and publishes its updates on ``model-updates``.

    Parameters
    ----------
    trainer
        The trainer to continue (its model's tables must be an ``EmbeddingCollection`` to publish
        sparse updates or snapshot; a hashed baseline can train with ``publish=False`` and no snapshot).
    log
        The event log (an :class:`EventLog` or its URL).
    snapshot_path
        Where snapshots go (``None``: never snapshot, never commit).
    config
        Schedules and topics (:class:`OnlineConfig`).
    extra
        The ``extra`` of the snapshot the trainer was restored from; ``extra["online"]`` holds the
        log position it covers.

    Examples
    --------
    >>> import tempfile
    >>> from streamrec.embedding import EmbeddingCollection, SlotConfig
    >>> from streamrec.models import ModelConfig, build_model
    >>> from streamrec.records import Example
    >>> from streamrec.log import open_log
    >>> folder = tempfile.mkdtemp()
    >>> model = build_model(ModelConfig(hidden=[8]), EmbeddingCollection({"item": SlotConfig(dim=4)}))
    >>> log = open_log(f"sqlite://{folder}/log.db")
    >>> log.append("examples", [Example(sparse={"item": [i % 7]}, label=float(i % 2), time=i) for i in range(100)])
    [0, 1, ...]
    >>> online = OnlineTrainer(Trainer(model), log, f"{folder}/model.snap", OnlineConfig(batch_size=32))
    >>> stats = online.run(until_drained=True)
    >>> stats.examples, stats.snapshots, log.committed("examples", "trainer")
    (100, 1, 100)
    >>> online.close(); log.close()
    """

    def __init__(
        self,
        trainer: Trainer,
        log: EventLog | str,
        snapshot_path: str | Path | None = None,
        config: OnlineConfig | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.trainer = trainer
        self._agreed_drained = False
        self._until_drained = False  # set by run(); only then does an idle step ask the log what waits
        self.distributed = isinstance(trainer, DistributedTrainer)
        self.rank, self.world = (dist.get_rank(), dist.get_world_size()) if self.distributed else (0, 1)
        self.config = config or OnlineConfig()
        self._own_log = isinstance(log, str)
        self.log = open_log(log) if isinstance(log, str) else log
        self.snapshot_path = None if snapshot_path is None else Path(snapshot_path)
        self.extra = dict(extra or {})
        online = dict(self.extra.get("online", {}))
        # Next offset not in the model, per partition of the examples topic (a snapshot from before
        # partitions has one number: partition 0's).
        saved = online.get("examples_offsets")
        if saved is None:
            saved = {"0": online.get("examples_offset", 0)}
        self.examples_offsets: dict[int, int] = {int(p): int(o) for p, o in saved.items()}
        self.version = int(online.get("version", 0))
        self.trained_offsets = dict(online.get("trained_offsets", {"count": 0, "sum": 0}))
        if self.rank != 0:  # a snapshot's count covers every rank; snapshots sum the ranks' counts
            self.trained_offsets = {"count": 0, "sum": 0}
        self.stats = OnlineStats(max_event_time=float(online.get("max_event_time", 0.0)))
        tables = trainer.model.embeddings.tables if hasattr(trainer.model.embeddings, "tables") else None
        self.tables: EmbeddingCollection | None = tables if isinstance(tables, EmbeddingCollection) else None
        if self.snapshot_path is not None and self.tables is None:
            raise ConfigError("snapshot_path", "only models on collisionless tables can be snapshotted")
        self.slots = trainer.model.slots
        self.n_dense = trainer.model.config.n_dense
        self.consumer = self.log.consumer(self.config.examples_topic, self.config.group, Example)
        self._stop = threading.Event()
        self._changes_since: float | None = None  # wall time of the first step not yet synced (sparse)
        self._dense_changes_since: float | None = None
        now = time.monotonic()
        self._due = {
            "sparse": now + self.config.sparse_sync_interval,
            "dense": now + self.config.dense_sync_interval,
            "snapshot": now + self.config.snapshot_interval,
            "expiry": now + self.config.expiry_interval,
        }
        self._started = False

    @classmethod
    def from_snapshot(
        cls,
        snapshot_path: str | Path,
        log: EventLog | str,
        config: OnlineConfig | None = None,
        device: str | None = None,
    ) -> OnlineTrainer:
        """Restore the trainer saved at ``snapshot_path`` and continue it online, snapshotting there
        (one process only: on ``device`` when given)."""
        path = Path(snapshot_path)
        # W ranks write sharded snapshots (a directory). Given the batch stage's one-file snapshot,
        # they go beside it, to <file>.shards/, which later runs prefer once it holds a manifest.
        shards_home = path.with_name(path.name + ".shards") if path.is_file() else path
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            rank, world = dist.get_rank(), dist.get_world_size()
            if is_sharded(shards_home):
                trainer, extra = load_shard(shards_home, rank, world)
            else:  # a one-file snapshot: each rank keeps the ids it owns
                trainer, extra = load_trainer(path)
                trainer.model.embeddings.tables = reshard([trainer.model.embeddings.tables], rank, world)
            return cls(DistributedTrainer.from_trainer(trainer), log, shards_home, config, extra)
        if is_sharded(shards_home):
            trainer, extra = load_shard(shards_home, 0, 1)
            return cls(trainer, log, shards_home, config, extra)
        trainer, extra = load_trainer(path, device=device)
        return cls(trainer, log, path, config, extra)

    # -- the loop ---------------------------------------------------------------------------
    def step(self) -> int:
        """Poll one mini-batch, train on it, run what is due; returns how many records were polled."""
        if not self._started:
            self._start()
        size = self.config.batch_size if not self.distributed else max(1, self.config.batch_size // self.world)
        envelopes = self.consumer.poll(size, self.config.poll_timeout_s)
        positions = self.examples_offsets
        fresh = [e for e in envelopes if e.offset >= positions.get(e.partition, 0)]
        self.stats.replayed_skipped += len(envelopes) - len(fresh)
        records = [e.record for e in fresh if len(e.record.dense) == self.n_dense]
        self.stats.rejected += len(fresh) - len(records)
        if self.distributed:
            self._distributed_step(records)
        elif records:
            batch = ExampleBatch.from_examples(records, self.slots, self.n_dense)
            wall = time.time()  # rows change from here on: the oldest change the next syncs carry
            self.trainer.train_step(batch)
            if self._changes_since is None:
                self._changes_since = wall
            if self._dense_changes_since is None:
                self._dense_changes_since = wall
            self.stats.examples += len(records)
            self.stats.steps += 1
            self.stats.max_event_time = max(self.stats.max_event_time, batch.max_time)
        if fresh:
            offsets = np.fromiter((e.offset for e in fresh), dtype=np.int64, count=len(fresh))
            for envelope in fresh:  # per record, but only a dict store: offsets rise within a partition
                positions[envelope.partition] = envelope.offset + 1
            self.trained_offsets["count"] += len(fresh)
            self.trained_offsets["sum"] += int(offsets.sum())
        if self.distributed:
            return self._agree_and_run_due(len(envelopes))
        self.run_due()
        return len(envelopes)

    def _caught_up(self) -> bool:
        """Nothing waits in ``examples``: every partition's trained position (or the group's
        committed offset, never below the first record kept) is at its end."""
        topic = self.config.examples_topic
        ends = self.log.end_offsets(topic)
        done = self.log.committed_offsets(topic, self.config.group)
        return all(max(self.examples_offsets.get(p, 0), done[p]) >= end for p, end in enumerate(ends))

    def _drained(self) -> bool:
        """For ``until_drained``: an empty poll is not enough (a partition may not be this member's
        yet, e.g. while a dead member's lease runs out); nothing may be waiting anywhere. With W
        ranks, the answer agreed in the step's all-reduce, so every rank stops after the same step."""
        return self._agreed_drained if self.distributed else self._caught_up()

    # -- W ranks in lock step -----------------------------------------------------------------------
    def _distributed_step(self, records: list[Example]) -> None:
        batch = ExampleBatch.from_examples(records, self.slots, self.n_dense)
        wall = time.time()
        before = self.trainer.examples_seen
        self.trainer.train_step(batch)  # collective; a no-op everywhere when no rank has examples
        if self.trainer.examples_seen > before:
            if self._changes_since is None:
                self._changes_since = wall
            if self._dense_changes_since is None:
                self._dense_changes_since = wall
            self.stats.steps += 1
        self.stats.examples += len(records)
        if records:
            self.stats.max_event_time = max(self.stats.max_event_time, batch.max_time)

    def _agree_and_run_due(self, polled: int) -> int:
        """One all-reduce: rank 0's schedules, anyone's stop, the global poll count and newest event
        time; then every rank runs the same schedules. Returns the records polled by all ranks."""
        now = time.monotonic()
        due = [now >= self._due[k] for k in ("expiry", "snapshot", "sparse", "dense")] if self.rank == 0 else [0] * 4
        # Reading end and committed offsets costs round trips (on Kafka, a probe fetch): only an idle
        # step of a run that stops when drained needs them.
        waiting = float(self._until_drained and not polled and not self._caught_up())
        counts = torch.tensor([float(self._stop.is_set()), float(polled), waiting], dtype=torch.float64)
        # Every partition's trained position travels too (offsets are exact in float64 below 2^53):
        # when a partition moves to another rank, the new owner re-reads from the committed offset
        # (commits follow snapshots) and must skip what its previous owner already trained.
        parts = self.log.partitions(self.config.examples_topic)
        positions = [float(self.examples_offsets.get(p, 0)) for p in range(parts)]
        latest = torch.tensor([*map(float, due), self.stats.max_event_time, *positions], dtype=torch.float64)
        dist.all_reduce(counts, op=dist.ReduceOp.SUM)
        dist.all_reduce(latest, op=dist.ReduceOp.MAX)
        stop, total, waiting = counts.tolist()
        self._agreed_drained = total == 0 and waiting == 0
        expiry, snap, sparse, dense, newest, *agreed = latest.tolist()
        for part, position in enumerate(agreed):
            if position > 0:
                self.examples_offsets[part] = int(position)
        self.stats.max_event_time = newest
        if stop:
            self._stop.set()
        if expiry:
            self.expire()
        if snap and self.snapshot_path is not None:
            self.snapshot()
        else:
            if sparse:
                self.sync_sparse()
            if dense:
                self.sync_dense()
        return int(total)

    def run_due(self) -> None:
        """Run every schedule whose time has come (snapshot implies both syncs)."""
        now = time.monotonic()
        if now >= self._due["expiry"]:
            self.expire()
        if now >= self._due["snapshot"] and self.snapshot_path is not None:
            self.snapshot()
            return
        if now >= self._due["sparse"]:
            self.sync_sparse()
        if now >= self._due["dense"]:
            self.sync_dense()

    def run(
        self,
        max_seconds: float | None = None,
        until_drained: bool = False,
        on_progress: Callable[[OnlineStats], None] | None = None,
        progress_every_s: float = 1.0,
    ) -> OnlineStats:
        """Train until :meth:`stop`, ``max_seconds``, or (``until_drained``) an empty poll; then a
        final snapshot (or final syncs without a snapshot path). Returns the run's stats."""
        started = time.monotonic()
        self._until_drained = until_drained
        next_progress = started + progress_every_s
        while not self._stop.is_set():
            polled = self.step()
            now = time.monotonic()
            if on_progress is not None and now >= next_progress:
                on_progress(self._refresh(started))
                next_progress = now + progress_every_s
            if until_drained and polled == 0 and self._drained():
                break
            if max_seconds is not None and now - started >= max_seconds:
                if not self.distributed:
                    break
                self._stop.set()  # agreed at the next step, so every rank stops after the same one
        self.finish()
        return self._refresh(started)

    def stop(self) -> None:
        """Ask :meth:`run` to stop after the current step (safe from signal handlers and threads)."""
        self._stop.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT stop the loop gracefully (final snapshot, then commit)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())

    def finish(self) -> None:
        """Final syncs and, with a snapshot path, a final snapshot and commit."""
        if self.snapshot_path is not None:
            self.snapshot()
        elif self.config.publish:
            self.sync()

    # -- schedules --------------------------------------------------------------------------
    def expire(self) -> int:
        """Evict rows idle longer than their TTL at the newest event time seen; rows evicted."""
        self._due["expiry"] = time.monotonic() + self.config.expiry_interval
        if self.tables is None or self.stats.max_event_time <= 0:
            return 0
        evicted = sum(self.tables.evict_expired(self.stats.max_event_time).values())
        self.stats.evicted += evicted
        return evicted

    def sync(self) -> None:
        """A sparse and a dense sync now: afterwards a replica that applied both scores as this model."""
        self.sync_sparse()
        self.sync_dense()

    def sync_sparse(self) -> ModelUpdate | None:
        """Publish the rows touched (and ids evicted) since the previous sparse sync."""
        self._due["sparse"] = time.monotonic() + self.config.sparse_sync_interval
        if self.tables is None or not self.config.publish:
            return None
        created = time.time()
        delta = self.tables.export_delta()  # with W ranks: this rank's shard, one part of the version
        update = self._publish("sparse", delta.to_bytes(), created, self._changes_since, part=True)
        self._changes_since = None
        self.stats.sparse_syncs += 1
        return update

    def sync_dense(self) -> ModelUpdate | None:
        """Publish the head's parameters and buffers."""
        self._due["dense"] = time.monotonic() + self.config.dense_sync_interval
        if not self.config.publish:
            return None
        created = time.time()
        if self.rank != 0:  # the head is the same on every rank: rank 0 speaks for it
            self.version += 1
            self._dense_changes_since = None
            return None
        payload = encode_dense(self.trainer.model.head.state_dict())
        update = self._publish("dense", payload, created, self._dense_changes_since)
        self._dense_changes_since = None
        self.stats.dense_syncs += 1
        return update

    def publish_full(self) -> ModelUpdate | None:
        """Publish every row and the dense state: replicas replace their model with this one."""
        if self.tables is None or not self.config.publish:
            return None
        created = time.time()
        self.tables.export_delta()  # everything is in the full copy; start the next delta from here
        pooling = {slot: table.config.pooling for slot, table in self.tables.tables.items()}
        head = encode_dense(self.trainer.model.head.state_dict())
        payload = msgspec.msgpack.encode(FullPayload(self.tables.export_full().to_bytes(), head, pooling))
        if not self.distributed:
            update = self._publish("full", payload, created, None)
        else:  # part 0 resets a replica, so it must come first; the other shards' parts follow it
            update = self._publish("full", payload, created, None, part=True, publish=self.rank == 0)
            dist.barrier()
            if self.rank != 0:
                self.log.append(self.config.updates_topic, [update])
                self.stats.bytes_published += len(payload)
            dist.barrier()
        self._changes_since = self._dense_changes_since = None
        self.stats.full_syncs += 1
        return update

    def snapshot(self) -> None:
        """Sync, write the snapshot with the log position it covers, and only then commit offsets."""
        self._due["snapshot"] = time.monotonic() + self.config.snapshot_interval
        if self.snapshot_path is None:
            raise ConfigError("snapshot_path", "this online trainer has no snapshot path")
        if self.config.publish:
            self.sync()
        online = {
            "examples_topic": self.config.examples_topic,
            "examples_offset": self.examples_offset,
            "examples_offsets": {str(p): o for p, o in sorted(self.examples_offsets.items())},
            "version": self.version,
            "updates_offset": self.log.end_offset(self.config.updates_topic),
            "trained_offsets": dict(self.trained_offsets),
            "max_event_time": self.stats.max_event_time,
            "saved_at": time.time(),
        }
        if self.distributed or is_sharded(self.snapshot_path):
            merged: list[Any] = [None] * self.world
            mine = (dict(self.examples_offsets), dict(self.trained_offsets))
            if self.distributed:
                dist.all_gather_object(merged, mine)
            else:
                merged = [mine]
            positions: dict[int, int] = {}
            for mine, _ in merged:  # partitions may have moved between ranks: the furthest position wins
                for part, offset in mine.items():
                    positions[part] = max(positions.get(part, 0), offset)
            online["examples_offsets"] = {str(p): o for p, o in sorted(positions.items())}
            online["examples_offset"] = sum(positions.values())
            online["trained_offsets"] = {k: sum(t[k] for _, t in merged) for k in ("count", "sum")}
            online["world"] = self.world
            save_sharded(self.snapshot_path, self.trainer, {**self.extra, "online": online})
        else:
            save_trainer(self.snapshot_path, self.trainer, {**self.extra, "online": online})
        self.extra["online"] = online
        self.consumer.commit()  # after the snapshot: a crash in between replays, never loses
        self.stats.snapshots += 1

    @property
    def examples_offset(self) -> int:
        """Examples in the model: the next offset of each partition, summed (one partition: its offset)."""
        return sum(self.examples_offsets.values())

    # -- helpers ----------------------------------------------------------------------------
    def _start(self) -> None:
        self._started = True
        if self.config.publish and self.config.publish_full_on_start:
            self.publish_full()

    def _publish(
        self,
        kind: str,
        payload: bytes,
        created: float,
        since: float | None,
        *,
        part: bool = False,
        publish: bool = True,
    ) -> ModelUpdate:
        self.version += 1  # every rank counts every version, so versions agree across ranks
        shard, shards = (self.rank, self.world) if part else (0, 1)
        update = ModelUpdate(
            kind=kind,  # type: ignore[arg-type]
            version=self.version,
            created_at=created,
            changes_since=created if since is None else since,
            examples_seen=self.trainer.examples_seen,
            payload=payload,
            shard=shard,
            shards=shards,
        )
        if publish:
            self.log.append(self.config.updates_topic, [update])
            self.stats.bytes_published += len(payload)
        return update

    def _refresh(self, started: float) -> OnlineStats:
        s = self.stats
        s.elapsed_s = time.monotonic() - started
        s.examples_per_s = s.examples / s.elapsed_s if s.elapsed_s > 0 else 0.0
        s.examples_seen = self.trainer.examples_seen
        s.event_lag_s = time.time() - s.max_event_time if s.max_event_time > 0 else 0.0
        s.version = self.version
        return s

    def close(self) -> None:
        """Close the consumer (and the log, when this object opened it from a URL)."""
        self.consumer.close()
        if self._own_log:
            self.log.close()

    def __enter__(self) -> OnlineTrainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
