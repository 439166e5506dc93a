"""The joiner process: the event log in, the join state in LMDB, examples back into the log.

**Partitions.** ``impressions`` and ``actions`` are co-partitioned: both keyed by user, with the
same partition count, so an impression and every action on it are in partition ``p`` of their
topics. The join of partition ``p`` is independent of every other: a *lane* with its own LMDB
state (``<state_dir>/p<p>``; with one partition, ``<state_dir>`` itself, as before partitions
existed), watermark, input positions and outbox. Joiner processes of one consumer group share the
partitions of ``impressions`` (the group decides who owns what, and moves partitions when a process
joins, leaves or dies); a process reads ``actions`` of exactly the partitions it owns. When a
partition moves, its state moves with it: the new owner opens the same lane directory, so the
state directory must be shared by the processes of a group (one machine, or shared storage).
A lane's directory is held by an exclusive ``flock`` while a process has it open, so two processes
never join one partition at once, even while the group is still rebalancing.

Why an outbox: three stores take part in one step of a lane (the log's consumer offsets, the LMDB
state, the ``examples`` topic) and none of them can commit together with another. The step is
ordered so that a crash at any point loses nothing and duplicates nothing:

1. poll a batch from ``impressions`` and from ``actions``; drop records below the positions stored
   in the lane's state (a replay of records already applied, after a crash before step 5);
2. one LMDB transaction per lane: the new join state, the new input positions, and the *outbox*
   (the lane's examples, encoded, with the ``examples`` end offsets read before the append);
3. append the outbox to ``examples`` (one atomic log append; keyed by request id);
4. clear the outbox (LMDB);
5. commit both consumers.

On opening a lane, a non-empty outbox means a crash between 2 and 4: the joiner reads the
partition of ``examples`` that the outbox's first example routes to, from the recorded end offset
(through the consumer group ``<group>.outbox.<p>``, as raw bytes), and appends the outbox only if
that example is not there. Appends are atomic, so "first is there" means "all are there". See
``docs/joiner.md``.
"""

from __future__ import annotations

import fcntl
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from streamrec.errors import InvalidInputError, LogError
from streamrec.joiner.config import JoinConfig, joiner_config
from streamrec.joiner.state import JoinState
from streamrec.joiner.stats import JoinStats
from streamrec.log import Consumer, EventLog, open_log
from streamrec.log.partitioner import partition_for
from streamrec.records import ActionEvent, Example, Impression

__all__ = ["Joiner"]

_encode = msgspec.msgpack.Encoder().encode
_decode_example = msgspec.msgpack.Decoder(Example).decode

#: How long opening a lane waits for the previous owner of its partition to let go of its state.
LANE_WAIT_S = 60.0


class _Outbox(msgspec.Struct, frozen=True):
    end: int  # end offset of the examples partition of payloads[0], read before the append
    payloads: list[bytes]


_decode_outbox = msgspec.msgpack.Decoder(_Outbox).decode


class _Lane:
    """One partition's join: its LMDB state, held by an exclusive lock on the directory."""

    def __init__(self, partition: int, path: Path, config: JoinConfig) -> None:
        self.partition = partition
        path.mkdir(parents=True, exist_ok=True)
        self._lock = open(path / "owner.lock", "a+b")  # noqa: SIM115 - held while the lane is open
        deadline = time.monotonic() + LANE_WAIT_S
        while True:
            try:
                fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    self._lock.close()
                    raise LogError(
                        f"joiner state {str(path)!r} of partition {partition} is still held by another "
                        f"process after {LANE_WAIT_S:.0f} s"
                    ) from None
                time.sleep(0.05)
        try:
            self.state = JoinState(path, config)
        except BaseException:
            self._lock.close()
            raise

    def position(self, topic: str) -> int:
        raw = self.state.get_meta(b"pos:" + topic.encode())
        return int(raw) if raw else 0

    def close(self) -> None:
        self.state.close()
        self._lock.close()


class Joiner:
    """Joins the ``impressions`` and ``actions`` topics of a log into ``examples``.

    Parameters
    ----------
    log
        An open :class:`~streamrec.log.EventLog`, or its URL (then the joiner owns and closes it).
    state_dir
        Directory of the LMDB join states (one per partition; see the module docstring). A joiner
        restarted on the same directory and group continues exactly where the last one stopped,
        even after ``kill -9``; several joiner processes of one group share it.
    config
        :class:`JoinConfig` or a ``[joiner]`` dict.
    group
        Consumer group on both input topics; its processes share the partitions.
    impressions_topic, actions_topic, examples_topic
        Topic names. The input topics must have the same partition count (a missing one is created
        with the other's count).

    Examples
    --------
    >>> import tempfile
    >>> from streamrec.log import open_log
    >>> from streamrec.records import ActionEvent, Example, Impression
    >>> tmp = tempfile.mkdtemp()
    >>> log = open_log(f"sqlite://{tmp}/log.db")
    >>> _ = log.append("impressions", [Impression(request_id="r1", user="u1", item=i, time=0.0, sparse={"item": [n]})
    ...                                for n, i in enumerate(["a", "b", "c"])])
    >>> _ = log.append("actions", [ActionEvent(user="u1", item="b", action="click", time=3.0, request_id="r1")])
    >>> with Joiner(log, f"{tmp}/state", {"window": "1m", "negative_rate": 1.0}) as joiner:
    ...     stats = joiner.run(once=True, drain=True)
    >>> (stats.positives, stats.negatives_kept)
    (1, 2)
    >>> with log.consumer("examples", group="trainer", record_type=Example) as consumer:
    ...     sorted((e.record.item, e.record.label) for e in consumer.poll(timeout_s=0))
    [('a', 0.0), ('b', 1.0), ('c', 0.0)]
    >>> log.close()
    """

    def __init__(
        self,
        log: EventLog | str,
        state_dir: str | Path,
        config: JoinConfig | dict[str, Any] | None = None,
        *,
        group: str = "joiner",
        impressions_topic: str = "impressions",
        actions_topic: str = "actions",
        examples_topic: str = "examples",
    ) -> None:
        self.config = joiner_config(config)
        self._owns_log = isinstance(log, str)
        self.log = open_log(log) if isinstance(log, str) else log
        try:
            self.group = group
            self.topics = (impressions_topic, actions_topic)
            self.examples_topic = examples_topic
            self.state_dir = Path(state_dir)
            self.partitions = self._co_partitions()
            self._lanes: dict[int, _Lane] = {}
            self._actions: Consumer[ActionEvent] | None = None
            self._actions_for: list[int] = []
            self._impressions = self.log.consumer(
                impressions_topic,
                group,
                Impression,
                on_assign=self._open_lanes,
                on_revoke=self._close_lanes,
            )
        except BaseException:
            self.close()
            raise

    def _co_partitions(self) -> int:
        """The input topics' common partition count, creating a missing topic with the other's count."""
        counts = {topic: self.log.partitions(topic) for topic in self.topics}
        known = {n for n in counts.values() if n}
        if len(known) > 1:
            imp, act = self.topics
            raise InvalidInputError(
                "partitions",
                counts,
                f"topics {imp!r} and {act!r} must have the same partition count (both keyed by user) so an "
                "impression and its actions meet in one partition",
            )
        count = known.pop() if known else 1
        for topic, n in counts.items():
            if not n:
                self.log.create_topic(topic, partitions=count)
        return count

    # -- lanes: opened when the group gives this process a partition ------------------------------
    def _lane_dir(self, partition: int) -> Path:
        return self.state_dir if self.partitions == 1 else self.state_dir / f"p{partition}"

    def _open_lanes(self, partitions: list[int]) -> None:
        for partition in partitions:
            if partition not in self._lanes:
                lane = _Lane(partition, self._lane_dir(partition), self.config)
                self._lanes[partition] = lane
                self._recover_outbox(lane)

    def _close_lanes(self, partitions: list[int]) -> None:
        # Every step commits before it returns, so there is nothing to finish: just let go.
        for partition in partitions:
            lane = self._lanes.pop(partition, None)
            if lane is not None:
                lane.close()

    def _actions_consumer(self) -> Consumer[ActionEvent]:
        """The reader of ``actions``: exactly the partitions whose lanes are open here."""
        owned = sorted(self._lanes)
        if self._actions is None or owned != self._actions_for:
            if self._actions is not None:
                self._actions.close()  # everything it delivered was committed by the last step
            self._actions = self.log.consumer(self.topics[1], self.group, ActionEvent, partitions=owned)
            self._actions_for = owned
        return self._actions

    # -- crash recovery ----------------------------------------------------------------------
    def _recover_outbox(self, lane: _Lane) -> None:
        raw = lane.state.get_meta(b"outbox")
        if raw is None:
            return
        outbox = _decode_outbox(raw)
        if not self._already_appended(lane, outbox):
            self.log.append(self.examples_topic, outbox.payloads, key=self._example_keys(outbox.payloads))
        lane.state.put_meta({b"outbox": None})

    def _example_keys(self, payloads: list[bytes]) -> list[str] | None:
        if self.log.partitions(self.examples_topic) <= 1:
            return None
        return [_decode_example(p).request_id or "" for p in payloads]

    def _already_appended(self, lane: _Lane, outbox: _Outbox) -> bool:
        first = outbox.payloads[0]
        count = self.log.partitions(self.examples_topic)
        target = 0 if count <= 1 else partition_for(_decode_example(first).request_id or "", count)
        end_now = self.log.end_offset(self.examples_topic, target)
        if end_now <= outbox.end:
            return False
        found = False
        group = f"{self.group}.outbox" if self.partitions == 1 else f"{self.group}.outbox.{lane.partition}"
        with self.log.consumer(self.examples_topic, group, bytes, partitions=[target]) as reader:
            while not found:
                batch = reader.poll(max_records=10_000, timeout_s=0)
                if not batch:
                    break
                found = any(e.offset >= outbox.end and e.record == first for e in batch)
                if batch[-1].offset >= end_now - 1:
                    break
            reader.commit()
        return found

    # -- the loop ----------------------------------------------------------------------------
    def step(self, *, drain: bool = False) -> tuple[int, bool]:
        """Poll one batch of each topic, join each owned partition, append the examples, commit the offsets.

        Returns
        -------
        (examples appended, whether both topics are caught up on every owned partition)
        """
        size = self.config.batch_size
        imp_batch = self._impressions.poll(size, timeout_s=0)  # may open or close lanes (rebalance)
        actions = self._actions_consumer()
        act_batch = actions.poll(size, timeout_s=0) if self._lanes else []
        by_lane: dict[int, tuple[list[Any], list[Any]]] = {p: ([], []) for p in self._lanes}
        for side, batch in enumerate((imp_batch, act_batch)):
            for envelope in batch:
                if envelope.partition in by_lane:
                    by_lane[envelope.partition][side].append(envelope)
        ends = [self.log.end_offsets(topic) for topic in self.topics]
        appended = 0
        all_caught_up = True
        for partition, lane in self._lanes.items():
            appended += self._step_lane(lane, by_lane[partition], ends, drain)
            for side, topic in enumerate(self.topics):
                end = ends[side][partition] if partition < len(ends[side]) else 0
                all_caught_up &= lane.position(topic) >= end
        self._impressions.commit()
        actions.commit()
        # A process that owns no partition is not done: it is waiting for the group to give it some.
        return appended, bool(self._lanes) and all_caught_up and not (imp_batch or act_batch)

    def _step_lane(self, lane: _Lane, batches: tuple[list[Any], list[Any]], ends: list[list[int]], drain: bool) -> int:
        fresh: list[list[Any]] = []
        caught_up: list[bool] = []
        meta: dict[bytes, bytes | None] = {}
        for side, (topic, batch) in enumerate(zip(self.topics, batches, strict=True)):
            position = lane.position(topic)
            fresh.append([e.record for e in batch if e.offset >= position])
            if batch:
                position = max(position, batch[-1].offset + 1)
                meta[b"pos:" + topic.encode()] = str(position).encode()
            end = ends[side][lane.partition] if lane.partition < len(ends[side]) else 0
            caught_up.append(position >= end)
        count = self.log.partitions(self.examples_topic)

        def with_outbox(examples: list[Example]) -> dict[bytes, bytes | None]:
            if examples:
                first = examples[0]
                target = 0 if count <= 1 else partition_for(first.request_id or "", count)
                end = self.log.end_offset(self.examples_topic, target)
                meta[b"outbox"] = _encode(_Outbox(end, [_encode(e) for e in examples]))
            return meta

        examples = lane.state.step(
            fresh[0], fresh[1], caught_up=(caught_up[0], caught_up[1]), drain=drain, meta=with_outbox
        )
        if examples:
            keys = None if count <= 1 else [e.request_id or "" for e in examples]
            self.log.append(self.examples_topic, examples, key=keys)
            lane.state.put_meta({b"outbox": None})
        return len(examples)

    def run(
        self,
        *,
        once: bool = False,
        drain: bool = False,
        max_seconds: float | None = None,
        idle_sleep_s: float = 0.2,
        progress: Callable[[JoinStats], None] | None = None,
        progress_every_s: float = 2.0,
    ) -> JoinStats:
        """Run steps until interrupted, ``max_seconds`` passed, or (``once``) both topics are read.

        SIGINT (Ctrl-C) and SIGTERM end the loop after the step in progress (when called from the
        main thread); the counters are returned as usual.

        Parameters
        ----------
        once
            Stop when a step finds both topics caught up.
        drain
            With ``once``: then close every remaining window (end of input; see :meth:`JoinState.step`).
        max_seconds
            Stop after this much wall time.
        progress
            Called with the counters every ``progress_every_s`` and at the end.
        """
        if max_seconds is not None and not max_seconds >= 0:
            raise InvalidInputError("max_seconds", max_seconds, "must be a number of seconds >= 0")
        start = last = time.monotonic()
        stop: list[int] = []
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {}
        if threading.current_thread() is threading.main_thread():
            # Ctrl-C / SIGTERM finish the current step, then stop: nothing is left in the outbox.
            previous = {sig: signal.signal(sig, lambda signum, frame: stop.append(signum)) for sig in handled}
        try:
            while not stop:
                _, idle = self.step()
                now = time.monotonic()
                if progress is not None and now - last >= progress_every_s:
                    progress(self.stats())
                    last = now
                if once and idle:
                    if drain:
                        self.step(drain=True)
                    break
                if max_seconds is not None and now - start >= max_seconds:
                    break
                if idle:
                    time.sleep(idle_sleep_s)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if progress is not None:
            progress(self.stats())
        return self.stats()

    def stats(self) -> JoinStats:
        """The counters of the partitions this process owns now, summed (each is durable with its
        lane's state, so they survive restarts and move with the partition); the watermark is the
        lowest of the lanes'."""
        total = JoinStats()
        lanes = [lane.state.stats() for lane in self._lanes.values()]
        for stats in lanes:
            for field in total.__struct_fields__:
                if field != "watermark":
                    setattr(total, field, getattr(total, field) + getattr(stats, field))
        if lanes:
            total.watermark = min(stats.watermark for stats in lanes)
        return total

    @property
    def states(self) -> dict[int, JoinState]:
        """The join state of each partition this process owns now."""
        return {p: lane.state for p, lane in self._lanes.items()}

    def assignment(self) -> list[int]:
        """The partitions this process joins now."""
        return sorted(self._lanes)

    def close(self) -> None:
        """Close the consumers, the lanes' states and (if this joiner opened it) the log."""
        for name in ("_impressions", "_actions"):
            consumer = getattr(self, name, None)
            if consumer is not None:
                consumer.close()
        self._close_lanes(list(getattr(self, "_lanes", {})))
        if self._owns_log:
            self.log.close()

    def __enter__(self) -> Joiner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
