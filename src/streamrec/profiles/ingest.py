"""The stream writer (IPS application layer): the ``actions`` topic into profiles.

The order of operations is the whole design: poll a batch, ``sink.write`` it (which returns only
once the rows are in the fsynced WAL), *then* commit the log offsets. A crash between the two
re-delivers the batch and counts it twice at worst — never loses it; the log's at-least-once
delivery plus the sink's durability is the guarantee. Rejected events are counted and skipped
(they will never become valid), so a bad record cannot wedge the consumer.

The sink is anything with that durable ``write``: a local :class:`ProfileStore` (embedded mode) or
a :class:`ProfileClient` over the profile nodes of a cluster, whose ``write`` returns once every
owning node has the event's rows in its WAL — so committing after it keeps the same guarantee.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import msgspec

from streamrec.profiles.types import WriteResult

__all__ = ["IngestStats", "ProfileSink", "ingest"]


class ProfileSink(Protocol):
    """Where ingested events go: ``ProfileStore`` or ``ProfileClient``.

    ``write`` must return only once the accepted events are durable (the offsets are committed
    right after it), with ``rejected`` indices into ``events``.
    """

    def write(self, events: Sequence[Any]) -> WriteResult: ...


class IngestStats(msgspec.Struct):
    """What an ingest run did."""

    polled: int = 0
    accepted: int = 0
    rejected: int = 0
    too_old: int = 0
    batches: int = 0
    seconds: float = 0.0

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
    """
    from streamrec.log import open_log
    from streamrec.records import ActionEvent

    stats = IngestStats()
    start = time.monotonic()
    last_data = start
    log = open_log(log_url)
    try:
        consumer = log.consumer(topic, group=group, record_type=ActionEvent)
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
                consumer.commit()  # only now: a crash before this re-delivers, never loses
                stats.polled += len(envelopes)
                stats.accepted += res.accepted
                stats.rejected += len(res.rejected)
                stats.too_old += res.too_old
                stats.batches += 1
                stats.seconds = time.monotonic() - start
                if on_batch is not None:
                    on_batch(stats)
        finally:
            consumer.close()
    finally:
        log.close()
    stats.seconds = time.monotonic() - start
    return stats
