"""The stream writer (IPS application layer): the ``actions`` topic into a profile store.

The order of operations is the whole design: poll a batch, ``store.write`` it (which returns only
once the rows are in the fsynced WAL), *then* commit the log offsets. A crash between the two
re-delivers the batch and counts it twice at worst — never loses it; the log's at-least-once
delivery plus the store's durability is the guarantee. Rejected events are counted and skipped
(they will never become valid), so a bad record cannot wedge the consumer.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec

from streamrec.profiles.store import ProfileStore

__all__ = ["IngestStats", "ingest"]


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
    store: ProfileStore,
    log_url: str,
    *,
    topic: str = "actions",
    group: str = "profiles",
    batch: int = 1000,
    idle_exit_s: float | None = None,
    max_records: int | None = None,
    on_batch: Callable[[IngestStats], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> IngestStats:
    """Consume ``topic`` as ``group`` into ``store`` until idle, a record budget, or ``stop()``.

    Parameters
    ----------
    idle_exit_s: return once nothing arrived for this long (``None``: run until ``stop``).
    max_records: return after this many records.
    on_batch: called after each committed batch (progress).
    """
    from streamrec.log import open_log
    from streamrec.records import ActionEvent

    stats = IngestStats()
    start = time.monotonic()
    last_data = start
    log = open_log(log_url)
    try:
        consumer = log.consumer(topic, group=group, record_type=ActionEvent)
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
                res = store.write([e.record for e in envelopes])  # durable on return
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
