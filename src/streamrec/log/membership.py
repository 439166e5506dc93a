"""Sharing a topic's partitions among the live members of a consumer group, by lease.

Kafka's brokers run group membership themselves; SQLite and Redis do not, so streamrec does it
here, once, over a small :class:`LeaseStore` each of those backends provides:

* every member **heartbeats**: it registers itself as live until ``now + session_s`` and learns
  who else is live (SQLite: a ``flock`` per member that the kernel drops when the process dies;
  Redis: a sorted set scored by expiry time, read with the server's clock);
* each partition has a **lease** naming its owner, renewed on every heartbeat and given up on
  revoke or close. A member that stops heartbeating (killed, or stuck longer than ``session_s``)
  loses its leases when they expire, and a live member takes them over on its next tick: a dead
  member's partitions move within ``session_s + interval_s``.
* the **assignment** is a pure function of the sorted live members: member ``i`` of ``M`` wants the
  partitions ``p`` with ``p % M == i``. Every member computes the same answer, so there is no
  leader and no election; a member gives up what it no longer wants (``on_revoke`` first, so it can
  commit), and takes what it wants as soon as the previous owner has let go.

Commits are fenced by the lease: a backend commits a partition's offset only while this member
holds its lease (Redis checks it atomically in the same script), so a member whose lease lapsed
cannot move an offset after the new owner has started: it gets
:class:`~streamrec.errors.PartitionLostError` instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from streamrec.log.base import Consumer

__all__ = ["LeaseStore", "Membership", "wanted_partitions"]


class LeaseStore(Protocol):
    """What a backend provides for :class:`Membership` (one topic, one group)."""

    def heartbeat(self, member: str, session_s: float) -> list[str]:
        """Mark ``member`` live for ``session_s`` more seconds; return every live member, sorted."""

    def acquire(self, partitions: list[int], member: str, session_s: float) -> list[int]:
        """Take the leases of ``partitions`` that nobody holds; return the ones ``member`` now holds."""

    def renew(self, partitions: list[int], member: str, session_s: float) -> list[int]:
        """Extend ``member``'s leases on ``partitions``; return the ones it still holds."""

    def release(self, partitions: list[int], member: str) -> None:
        """Give up ``member``'s leases on ``partitions`` (others' leases are left alone)."""

    def leave(self, member: str) -> None:
        """Remove ``member`` from the live set (on close)."""


def wanted_partitions(members: list[str], member: str, partitions: int) -> set[int]:
    """The partitions ``member`` should own: ``p % len(members) == its index`` among sorted live members.

    >>> sorted(wanted_partitions(["a", "b"], "b", 5)), sorted(wanted_partitions(["a"], "a", 3))
    ([1, 3], [0, 1, 2])
    """
    ordered = sorted(members)
    if member not in ordered:
        return set()
    index = ordered.index(member)
    return {p for p in range(partitions) if p % len(ordered) == index}


class Membership:
    """Drives one consumer's share of a topic's partitions; call :meth:`maintain` from every poll.

    Parameters
    ----------
    consumer
        The consumer whose :meth:`~streamrec.log.base.Consumer._assigned` / ``_revoked`` are called.
    store
        The backend's leases and live set.
    partition_count
        Returns the topic's partition count (0 while the topic does not exist).
    member
        This member's unique id.
    session_s
        How long a heartbeat and a lease last without renewal.
    interval_s
        How often :meth:`maintain` talks to the store (it does nothing between ticks).
    """

    def __init__(
        self,
        consumer: Consumer,
        store: LeaseStore,
        partition_count: Callable[[], int],
        member: str,
        session_s: float,
        interval_s: float,
    ) -> None:
        self.consumer = consumer
        self.store = store
        self.partition_count = partition_count
        self.member = member
        self.session_s = session_s
        self.interval_s = interval_s
        self._next_tick = float("-inf")
        self._count = 0

    def maintain(self, *, force: bool = False) -> None:
        """Heartbeat, renew, and rebalance if the live members changed (at most once per ``interval_s``)."""
        now = time.monotonic()
        if not self._count:  # while the topic does not exist, look for it on every call: it is one cheap read
            self._count = self.partition_count()
            force = force or bool(self._count)
        if not force and now < self._next_tick:
            return
        self._next_tick = now + self.interval_s
        live = self.store.heartbeat(self.member, self.session_s)
        owned = sorted(self.consumer._owned)
        if owned:
            held = set(self.store.renew(owned, self.member, self.session_s))
            lost = [p for p in owned if p not in held]
            if lost:
                self.consumer._revoked(lost, lost=True)
        if not self._count:
            return
        target = wanted_partitions(live, self.member, self._count)
        surplus = sorted(self.consumer._owned - target)
        if surplus:
            self.consumer._revoked(surplus)
        missing = sorted(target - self.consumer._owned)
        if missing:
            got = self.store.acquire(missing, self.member, self.session_s)
            if got:
                self.consumer._assigned(got)
            if len(got) < len(missing):
                self._next_tick = min(self._next_tick, now + min(self.interval_s, 0.2))  # the owner is letting go

    def close(self) -> None:
        """Give up every lease and leave the live set, so the others take over at once."""
        owned = sorted(self.consumer._owned)
        if owned:
            self.store.release(owned, self.member)
        self.store.leave(self.member)
