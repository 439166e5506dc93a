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

**Replicated nodes** (a ``ProfileClient`` with ``replicas > 1``): a batch is committed once each of
its entities has a quorum of replicas with it. A batch short of its quorum (a replica is down)
is *not* polled again from the log — re-sending it as a new write would count it twice on the
replicas that have it — but resumed in place (:meth:`ProfileClient.resume`: the same write ids,
so each replica applies its part once), with backoff, until the quorum is back; the offsets stay
uncommitted meanwhile, so a crash of the ingest re-delivers the batch. With the default two
replicas the quorum is both, so the ingest waits for a dead node to come back (the log holds
what arrives meanwhile, queries go on). With ``W < R`` (three replicas) the ingest goes on; the
parts a replica missed are appended to the topic ``<topic>.hints`` as :class:`Hint` records
*before* the batch is committed (hinted handoff kept durably in the log, not in this process),
and delivered to their node when it answers again, with their write ids, by whichever ingest
process holds that topic. See ``docs/profiles.md``, "Replication".
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, Protocol

import msgspec

from streamrec.errors import InvalidInputError, PartitionLostError, StreamrecError
from streamrec.profiles.types import WriteResult
from streamrec.records import ActionEvent

__all__ = ["Hint", "IngestStats", "ProfileSink", "ingest", "lock_store"]

_RESUME_FIRST_S, _RESUME_MAX_S = 0.05, 2.0  # backoff of a batch short of its write quorum
_HINT_FIRST_S, _HINT_MAX_S = 0.5, 5.0  # backoff of hints whose node still fails


class ProfileSink(Protocol):
    """Where ingested events go: ``ProfileStore`` or ``ProfileClient``.

    ``write`` must return only once the accepted events are durable (the offsets are committed
    right after it), with ``rejected`` indices into ``events``.
    """

    def write(self, events: Sequence[Any]) -> WriteResult: ...


class Hint(msgspec.Struct, kw_only=True):
    """A replica's part of an acknowledged write that the replica did not confirm (hinted handoff).

    The record of the topic ``<topic>.hints``: the node, the part's write id (the node applies an
    id once, so a hint delivered twice counts once), the entity keys the node keeps of these
    events, and the events.
    """

    node: str
    write_id: bytes
    owned: list[bytes]
    events: list[ActionEvent]


class IngestStats(msgspec.Struct):
    """What an ingest run did.

    ``partitions``: the partitions it owned when it stopped; ``partitions_owned``: every partition
    it owned at some point; ``by_partition``: events polled per partition (keys are partition
    numbers as strings, as in JSON). ``revoked`` / ``lost``: partitions given up in an orderly
    rebalance / taken away after its ownership lapsed; ``refused_commits``: batches written whose
    commit the log refused because a partition of them was lost (the new owner re-reads them).
    ``quorum_waits``: resends of batches short of their write quorum (replicated nodes);
    ``hints_written`` / ``hints_delivered``: replica parts kept in ``<topic>.hints`` / delivered.
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
    quorum_waits: int = 0
    hints_written: int = 0
    hints_delivered: int = 0

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
        hints = _Hints(sink, log, topic, group, stats) if _hints_possible(sink) else None
        if on_ready is not None:
            on_ready()
        try:
            while not (stop is not None and stop()):
                if hints is not None:
                    hints.deliver()
                want = batch if max_records is None else min(batch, max_records - stats.polled)
                if want <= 0:
                    break
                envelopes = consumer.poll(want, timeout_s=0.2)
                now = time.monotonic()
                if not envelopes:
                    if idle_exit_s is not None and now - last_data >= idle_exit_s:  # hints wait in the log
                        break
                    continue
                last_data = now
                res = _write(sink, [e.record for e in envelopes], stats, stop, hints)  # durable on return
                if res is None:  # stopped while a replica set was short of its quorum: not committed
                    break
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
            if hints is not None:
                hints.close()
    finally:
        log.close()
    stats.partitions_owned = sorted(owned)
    stats.seconds = time.monotonic() - start
    return stats


def _hints_possible(sink: Any) -> bool:
    """Whether a write to ``sink`` can be acknowledged while a replica misses it (``W < R``)."""
    ring = getattr(sink, "ring", None)
    if ring is None or not hasattr(sink, "submit"):
        return False
    return int(sink.quorum_size) < ring.replica_count(sink.replicas)


def _write(
    sink: Any, events: list[Any], stats: IngestStats, stop: Callable[[], bool] | None, hints: _Hints | None
) -> WriteResult | None:
    """Write a batch durably; ``None`` if ``stop()`` came while it was short of its write quorum.

    A local store writes or raises. Profile nodes (``submit``): the batch is resumed in place
    with backoff until each entity has its quorum — never written again as a new batch, which
    would count it twice where it landed — and the parts a replica missed become hints.
    """
    if not hasattr(sink, "submit"):
        return sink.write(events)
    w = sink.submit(events)
    delay = _RESUME_FIRST_S
    while not w.has_quorum:
        if stop is not None and stop():
            return None
        stats.quorum_waits += 1
        time.sleep(delay)
        delay = min(delay * 2, _RESUME_MAX_S)
        sink.resume(w)
    if not w.complete and hints is not None:
        hints.keep(w)
    return w.result


class _Hints:
    """Hinted handoff through the log: parts a replica missed, kept in ``<topic>.hints`` until delivered.

    ``keep`` appends them (durable when it returns, before the batch's offsets are committed);
    ``deliver`` reads them as the group's member for that topic, sends each to its node with its
    write id and commits what was delivered. A hint whose node still fails is kept and tried
    again after a backoff (those behind it wait: one node's hints are delivered in order).
    """

    def __init__(self, sink: Any, log: Any, topic: str, group: str, stats: IngestStats) -> None:
        self.sink = sink
        self.log = log
        self.topic = f"{topic}.hints"
        self.stats = stats
        log.create_topic(self.topic, partitions=1)
        self.consumer = log.consumer(self.topic, group=group, record_type=Hint)
        self.backlog: list[Any] = []
        self.next_try = 0.0
        self.delay = _HINT_FIRST_S

    def keep(self, w: Any) -> None:
        records = [
            Hint(
                node=name,
                write_id=w.parts[name].write_id,
                owned=list(w.parts[name].owned),
                events=[w.events[i] for i in w.parts[name].order],
            )
            for name in w.missing
        ]
        self.log.append(self.topic, records)
        self.stats.hints_written += len(records)

    def deliver(self) -> None:
        if time.monotonic() < self.next_try:
            return
        if not self.backlog:
            self.backlog = self.consumer.poll(100, timeout_s=0)
        while self.backlog:
            hint = self.backlog[0].record
            try:
                self.sink.send_part(hint.node, hint.events, hint.owned, hint.write_id)
            except InvalidInputError:
                pass  # the node left the ring (a resize moved its profiles): nothing to deliver
            except StreamrecError:
                self.next_try = time.monotonic() + self.delay
                self.delay = min(self.delay * 2, _HINT_MAX_S)
                return
            else:
                self.stats.hints_delivered += 1
            try:
                self.consumer.commit(self.backlog.pop(0))
            except PartitionLostError:  # another member reads the hints now; a resent hint counts once
                self.backlog = []
                return
        self.delay = _HINT_FIRST_S

    def close(self) -> None:
        self.consumer.close()


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
