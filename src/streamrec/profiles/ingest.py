"""The stream writer (IPS application layer): the ``actions`` topic into profiles.

The order of operations is the whole design: poll a batch, ``sink.write`` it (which returns only
once the rows are in the fsynced WAL), *then* commit the log offsets. A crash between the two
re-delivers the batch and counts it twice at worst — never loses it; the log's at-least-once
delivery plus the sink's durability is the guarantee. Rejected events are counted and skipped
(they will never become valid), so a bad record cannot wedge the consumer.

The sink is anything with that durable ``write``: a local :class:`ProfileStore` (embedded mode) or
a :class:`ProfileClient` over the profile nodes of a cluster, whose ``write`` returns once every
owning node has the event's rows in its WAL — so committing after it keeps the same guarantee.

Several ingest processes of one consumer group share the topic's partitions: the log's group
membership gives each partition to one of them, and moves it when a process joins, leaves or dies
(see ``docs/log.md``). An ingest keeps no state of its own per partition — the profiles are in the
sink, keyed by entity, and any process may write any entity — so a moved partition needs nothing
but its committed offset: the new owner resumes there. Because every batch is written and
committed before the next ``poll`` (where rebalancing happens), a partition is never given up with
written-but-uncommitted work in an orderly revoke; ``on_revoke`` commits anyway, in case a refused
commit (below) left some. A partition whose ownership *lapsed* (a stalled process) is fenced by the
log: its commit raises :class:`~streamrec.errors.PartitionLostError`, nothing of that batch is
committed, and the ingest goes on with the partitions it still owns — the new owner re-reads the
batch from the old committed offset, so it may be counted twice, never lost.

A local store directory takes one ingest process: ``streamrec profiles ingest --store`` refuses a
second one (:func:`lock_store`), since the store is one writer's WAL and LMDB; several processes
write through profile nodes instead.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, Protocol

import msgspec

from streamrec.errors import InvalidInputError, PartitionLostError
from streamrec.profiles.types import WriteResult

__all__ = ["IngestStats", "ProfileSink", "ingest", "lock_store"]


class ProfileSink(Protocol):
    """Where ingested events go: ``ProfileStore`` or ``ProfileClient``.

    ``write`` must return only once the accepted events are durable (the offsets are committed
    right after it), with ``rejected`` indices into ``events``.
    """

    def write(self, events: Sequence[Any]) -> WriteResult: ...


class IngestStats(msgspec.Struct):
    """What an ingest run did.

    ``partitions``: the partitions it owned when it stopped; ``partitions_owned``: every partition
    it owned at some point; ``by_partition``: events polled per partition (keys are partition
    numbers as strings, as in JSON). ``revoked`` / ``lost``: partitions given up in an orderly
    rebalance / taken away after its ownership lapsed; ``refused_commits``: batches written whose
    commit the log refused because a partition of them was lost (the new owner re-reads them).
    """

    polled: int = 0
    accepted: int = 0
    rejected: int = 0
    too_old: int = 0
    batches: int = 0
    seconds: float = 0.0
    partitions: list[int] = msgspec.field(default_factory=list)
    partitions_owned: list[int] = msgspec.field(default_factory=list)
    by_partition: dict[str, int] = msgspec.field(default_factory=dict)
    revoked: int = 0
    lost: int = 0
    refused_commits: int = 0

    @property
    def events_per_s(self) -> float:
        return self.polled / self.seconds if self.seconds > 0 else 0.0


def ingest(
    sink: ProfileSink,
    log_url: str,
    *,
    topic: str = "actions",
    group: str = "profiles",
    batch: int = 1000,
    idle_exit_s: float | None = None,
    max_records: int | None = None,
    on_batch: Callable[[IngestStats], None] | None = None,
    stop: Callable[[], bool] | None = None,
    on_ready: Callable[[], None] | None = None,
) -> IngestStats:
    """Consume ``topic`` as ``group`` into ``sink`` until idle, a record budget, or ``stop()``.

    Parameters
    ----------
    sink: a :class:`ProfileStore` or a :class:`ProfileClient` (see :class:`ProfileSink`).
    idle_exit_s: return once nothing arrived for this long (``None``: run until ``stop``).
    max_records: return after this many records.
    on_batch: called after each committed batch (progress).
    on_ready: called once the consumer group is open (a launcher waits for it).

    Returns the run's :class:`IngestStats`, including the partitions this process owned.
    """
    from streamrec.log import open_log
    from streamrec.records import ActionEvent

    stats = IngestStats()
    owned: set[int] = set()
    start = time.monotonic()
    last_data = start
    log = open_log(log_url)
    try:
        consumer: Any = None

        def assigned(partitions: list[int]) -> None:
            owned.update(partitions)

        def revoked(partitions: list[int]) -> None:
            # Everything polled was written before this poll; commit it while the partitions are
            # still ours (normally nothing is left: each batch was committed right after its write).
            if consumer is not None:
                _commit(consumer, stats)
            stats.revoked += len(partitions)

        def lost(partitions: list[int]) -> None:
            stats.lost += len(partitions)  # too late to commit: the new owner re-reads from the committed offset

        consumer = log.consumer(
            topic, group=group, record_type=ActionEvent, on_assign=assigned, on_revoke=revoked, on_lost=lost
        )
        if on_ready is not None:
            on_ready()
        try:
            while not (stop is not None and stop()):
                want = batch if max_records is None else min(batch, max_records - stats.polled)
                if want <= 0:
                    break
                envelopes = consumer.poll(want, timeout_s=0.2)
                now = time.monotonic()
                if not envelopes:
                    if idle_exit_s is not None and now - last_data >= idle_exit_s:
                        break
                    continue
                last_data = now
                res = sink.write([e.record for e in envelopes])  # durable on return
                _commit(consumer, stats)  # only now: a crash before this re-delivers, never loses
                stats.polled += len(envelopes)
                for envelope in envelopes:
                    key = str(envelope.partition)
                    stats.by_partition[key] = stats.by_partition.get(key, 0) + 1
                stats.accepted += res.accepted
                stats.rejected += len(res.rejected)
                stats.too_old += res.too_old
                stats.batches += 1
                stats.seconds = time.monotonic() - start
                if on_batch is not None:
                    on_batch(stats)
            stats.partitions = consumer.assignment()
        finally:
            consumer.close()
    finally:
        log.close()
    stats.partitions_owned = sorted(owned)
    stats.seconds = time.monotonic() - start
    return stats


def _commit(consumer: Any, stats: IngestStats) -> None:
    """Commit what was written; a batch with a lost partition is not committed at all (the log fences
    it), and is left to the partitions' new owner, which re-reads it: counted twice at worst."""
    try:
        consumer.commit()
    except PartitionLostError:
        stats.refused_commits += 1


def lock_store(path: Path) -> IO[bytes]:
    """Claim the local store directory ``path`` for this ingest process; keep the returned file open.

    The lock (``flock`` on ``<path>/ingest.lock``) is dropped by the kernel when the process exits,
    ``kill -9`` included. A second ingest on the same directory raises :class:`InvalidInputError`
    naming ``--store`` and the pid holding it.
    """
    path.mkdir(parents=True, exist_ok=True)
    handle = open(path / "ingest.lock", "a+b")  # noqa: SIM115 - held for the life of the ingest
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().decode(errors="replace").strip() or "unknown"
        handle.close()
        raise InvalidInputError(
            "--store",
            str(path),
            f"another ingest process (pid {holder}) writes this store; a local store takes one ingest "
            "(run several ingest processes against profile nodes with --profiles instead)",
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()).encode())
    handle.flush()
    return handle
