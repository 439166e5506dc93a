"""The joiner process: the event log in, the join state in LMDB, examples back into the log.

Why an outbox: three stores take part in one step (the log's consumer offsets, the LMDB state,
the ``examples`` topic) and none of them can commit together with another. The step is ordered so
that a crash at any point loses nothing and duplicates nothing:

1. poll a batch from ``impressions`` and from ``actions``; drop records below the positions stored
   in the state (a replay of records already applied, after a crash before step 5);
2. one LMDB transaction: the new join state, the new input positions, and the *outbox* (the
   step's examples, encoded, with the ``examples`` end offset read before the append);
3. append the outbox to ``examples`` (one atomic log append);
4. clear the outbox (LMDB);
5. commit both consumers.

On start, a non-empty outbox means a crash between 2 and 4: the joiner reads ``examples`` from the
recorded end offset (through the consumer group ``<group>.outbox``, as raw bytes) and appends the
outbox only if its first example is not there. Appends are atomic, so "first is there" means "all
are there". See ``docs/joiner.md``.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from streamrec.errors import InvalidInputError
from streamrec.joiner.config import JoinConfig, joiner_config
from streamrec.joiner.state import JoinState
from streamrec.joiner.stats import JoinStats
from streamrec.log import EventLog, open_log
from streamrec.records import ActionEvent, Example, Impression

__all__ = ["Joiner"]

_encode = msgspec.msgpack.Encoder().encode


class _Outbox(msgspec.Struct, frozen=True):
    end: int  # end offset of the examples topic read before the append
    payloads: list[bytes]


_decode_outbox = msgspec.msgpack.Decoder(_Outbox).decode


class Joiner:
    """Joins the ``impressions`` and ``actions`` topics of a log into ``examples``.

    Parameters
    ----------
    log
        An open :class:`~streamrec.log.EventLog`, or its URL (then the joiner owns and closes it).
    state_dir
        Directory of the LMDB join state. A joiner restarted on the same directory and group
        continues exactly where the last one stopped, even after ``kill -9``.
    config
        :class:`JoinConfig` or a ``[joiner]`` dict.
    group
        Consumer group on both input topics (one joiner process per group).
    impressions_topic, actions_topic, examples_topic
        Topic names.

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
        self.group = group
        self.topics = (impressions_topic, actions_topic)
        self.examples_topic = examples_topic
        self.state = JoinState(state_dir, self.config)
        self._impressions = self.log.consumer(impressions_topic, group, Impression)
        self._actions = self.log.consumer(actions_topic, group, ActionEvent)
        self._recover_outbox()

    # -- crash recovery ----------------------------------------------------------------------
    def _position(self, topic: str) -> int:
        raw = self.state.get_meta(b"pos:" + topic.encode())
        return int(raw) if raw else 0

    def _recover_outbox(self) -> None:
        raw = self.state.get_meta(b"outbox")
        if raw is None:
            return
        outbox = _decode_outbox(raw)
        if not self._already_appended(outbox):
            self.log.append(self.examples_topic, outbox.payloads)
        self.state.put_meta({b"outbox": None})

    def _already_appended(self, outbox: _Outbox) -> bool:
        end_now = self.log.end_offset(self.examples_topic)
        if end_now <= outbox.end:
            return False
        first = outbox.payloads[0]
        found = False
        with self.log.consumer(self.examples_topic, f"{self.group}.outbox", bytes) as reader:
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
        """Poll one batch of each topic, join it, append the examples, commit the offsets.

        Returns
        -------
        (examples appended, whether both topics are caught up)
        """
        size = self.config.batch_size
        batches = (self._impressions.poll(size, timeout_s=0), self._actions.poll(size, timeout_s=0))
        fresh: list[list[Any]] = []
        caught_up: list[bool] = []
        meta: dict[bytes, bytes | None] = {}
        for topic, batch in zip(self.topics, batches, strict=True):
            position = self._position(topic)
            fresh.append([e.record for e in batch if e.offset >= position])
            if batch:
                position = max(position, batch[-1].offset + 1)
                meta[b"pos:" + topic.encode()] = str(position).encode()
            caught_up.append(position >= self.log.end_offset(topic))
        end = self.log.end_offset(self.examples_topic)

        def with_outbox(examples: list[Example]) -> dict[bytes, bytes | None]:
            if examples:
                meta[b"outbox"] = _encode(_Outbox(end, [_encode(e) for e in examples]))
            return meta

        examples = self.state.step(
            fresh[0], fresh[1], caught_up=(caught_up[0], caught_up[1]), drain=drain, meta=with_outbox
        )
        if examples:
            self.log.append(self.examples_topic, examples)
            self.state.put_meta({b"outbox": None})
        self._impressions.commit()
        self._actions.commit()
        return len(examples), caught_up[0] and caught_up[1] and not (batches[0] or batches[1])

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
        """The counters (durable with the state; they survive restarts)."""
        return self.state.stats()

    def close(self) -> None:
        """Close the consumers, the state and (if this joiner opened it) the log."""
        self._impressions.close()
        self._actions.close()
        self.state.close()
        if self._owns_log:
            self.log.close()

    def __enter__(self) -> Joiner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
