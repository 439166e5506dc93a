"""The join state machine: waiting impressions, buffered actions and the watermark, in LMDB.

Why LMDB holds all of it: the joiner must survive ``kill -9`` without losing or duplicating an
example, so the state a restarted joiner continues from has to be on disk, consistent with the
input offsets it reflects. Each :meth:`JoinState.step` applies one poll batch of both topics and
writes every change (new impressions, labels, closed windows, counters, watermark, and whatever
the caller adds such as input positions and the outbox) in **one** LMDB write transaction, so the
state on disk always equals "these exact input records applied, nothing else". Memory holds a
bounded cache of decoded waiting impressions (``memory_budget``); beyond it they live in LMDB only
("spilled") and are read back when an action matches them or their window closes.

Semantics (the reference tests in ``tests/joiner`` restate them independently):

* An impression ``(request_id, item)`` shown at ``t`` waits until the watermark passes
  ``t + window``. A label action (type in ``positive_actions``) of the same key with event time in
  ``[t - allowed_lateness, t + window]`` that arrives before then makes it **positive** at once;
  otherwise it becomes a **negative** when the window closes, kept with rate ``r`` (hash-sampled).
* Actions that arrive before their impression are buffered until the watermark passes
  ``time + allowed_lateness + window`` (after that no impression they could label is on time).
* Watermark: each topic's newest event time; the watermark is the minimum over the topics that
  are not caught up (a caught-up topic has nothing unread, so it holds nothing back), minus
  ``allowed_lateness``, and never moves back. Windows close at the end of a step, after the step's
  actions were applied. When each topic is out of order by at most ``allowed_lateness``, the result
  equals the offline join, whatever the batch sizes and the interleaving of the two topics.

Layout (named LMDB databases; keys of impressions are ``msgpack([request_id, item])``)::

    imp     key -> b"P" + msgpack(Impression)   waiting
                   b"D"                         already positive; kept to its deadline to catch duplicates
    due     sortable_f64(t + window) + key -> b""          windows by deadline
    early   key -> msgpack([action time, ...])             label actions waiting for their impression
    early_due sortable_f64(time + lateness + window) + key -> b""
    meta    b"wm", b"max_imp", b"max_act" -> f64;  b"stats" -> msgpack(JoinStats);
            b"config" -> msgpack of the settings the state was built with;  caller keys (positions, outbox)

The per-event work is plain Python over LMDB calls: the join is a hash lookup per record, not a
numeric loop, and measured at tens of thousands of events per second (``streamrec bench joiner``).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import lmdb
import msgspec

from streamrec.errors import ConfigError
from streamrec.joiner.config import JoinConfig
from streamrec.joiner.sampling import sample_hash
from streamrec.joiner.stats import JoinStats
from streamrec.records import ActionEvent, Example, Impression

__all__ = ["JoinState", "impression_key"]

_F64 = struct.Struct(">d")
_LE64 = struct.Struct("<d")
_SIGN = 1 << 63
_MASK = (1 << 64) - 1
_WAITING = b"P"
_DONE = b"D"
_encode = msgspec.msgpack.Encoder().encode
_decode_imp = msgspec.msgpack.Decoder(Impression).decode
_decode_times = msgspec.msgpack.Decoder(list[float]).decode
_decode_stats = msgspec.msgpack.Decoder(JoinStats).decode


def impression_key(request_id: str, item: str) -> bytes:
    """The LMDB key of impression ``(request_id, item)`` (hashed if too long for an LMDB key)."""
    key = _encode((request_id, item))
    if len(key) > 400:  # LMDB keys are at most 511 bytes; 0xff never starts a msgpack array
        key = b"\xff" + hashlib.blake2b(key, digest_size=32).digest()
    return key


def _sortable(x: float) -> bytes:
    """8 bytes whose byte order is the numeric order of ``x`` (negative times included)."""
    n = int.from_bytes(_F64.pack(x), "big")
    n = (n ^ _MASK) if n & _SIGN else (n | _SIGN)
    return n.to_bytes(8, "big")


def _unsortable(b: bytes) -> float:
    n = int.from_bytes(b[:8], "big")
    n = (n ^ _SIGN) if n & _SIGN else (n ^ _MASK)
    return _F64.unpack(n.to_bytes(8, "big"))[0]


class JoinState:
    """Impressions waiting for labels, buffered actions and the watermark, durable in LMDB.

    Parameters
    ----------
    path
        Directory of the LMDB environment (created if missing). Reopening it continues the join.
    config
        The join settings; reopening a state with different window, lateness, rate or positive
        actions raises :class:`~streamrec.errors.ConfigError` (the stored deadlines assume them).

    Examples
    --------
    >>> import tempfile
    >>> from streamrec.records import ActionEvent, Impression
    >>> state = JoinState(tempfile.mkdtemp(), JoinConfig(window_s=60, allowed_lateness_s=0, negative_rate=1.0))
    >>> imps = [Impression(request_id="r1", user="u", item=i, time=0.0, sparse={"item": [n]})
    ...         for n, i in enumerate(["a", "b"])]
    >>> click = ActionEvent(user="u", item="a", action="click", time=5.0, request_id="r1")
    >>> [(e.item, e.label) for e in state.step(imps, [click])]
    [('a', 1.0)]
    >>> later = ActionEvent(user="u", item="z", action="show", time=100.0, request_id="r2")
    >>> later_imp = Impression(request_id="r2", user="u", item="z", time=100.0)
    >>> [(e.item, e.label, e.time) for e in state.step([later_imp], [later])]
    [('b', 0.0, 60.0)]
    >>> state.close()
    """

    def __init__(self, path: str | Path, config: JoinConfig) -> None:
        self.config = config
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.env = lmdb.open(
            str(self.path), map_size=config.map_size_mb << 20, max_dbs=8, subdir=True, lock=True, sync=config.sync
        )
        self._imp = self.env.open_db(b"imp")
        self._due = self.env.open_db(b"due")
        self._early = self.env.open_db(b"early")
        self._early_due = self.env.open_db(b"early_due")
        self._meta = self.env.open_db(b"meta")
        self._positive = frozenset(config.positive_actions)
        # Decoded waiting impressions, oldest first, with their encoded sizes (the byte budget).
        self._cache: dict[bytes, tuple[Impression, int]] = {}
        self._cache_bytes = 0
        self._check_config()
        self._load()

    # -- durable scalars -------------------------------------------------------------------
    def _settings(self) -> bytes:
        c = self.config
        return _encode([c.window_s, c.allowed_lateness_s, c.negative_rate, sorted(c.positive_actions)])

    def _check_config(self) -> None:
        with self.env.begin(write=True, db=self._meta) as txn:
            stored = txn.get(b"config")
            if stored is None:
                txn.put(b"config", self._settings())
            elif bytes(stored) != self._settings():
                window, lateness, rate, positives = msgspec.msgpack.decode(stored)
                raise ConfigError(
                    "joiner",
                    f"state directory {str(self.path)!r} was built with window_s={window}, "
                    f"allowed_lateness_s={lateness}, negative_rate={rate}, positive_actions={positives}; "
                    "use those settings or a new --state-dir",
                )

    def _load(self) -> None:
        with self.env.begin(db=self._meta) as txn:
            raw = txn.get(b"stats")
            self._stats = _decode_stats(raw) if raw else JoinStats()
            self._max_imp = self._get_f64(txn, b"max_imp")
            self._max_act = self._get_f64(txn, b"max_act")
            self._stats.watermark = self._get_f64(txn, b"wm")

    @staticmethod
    def _get_f64(txn: lmdb.Transaction, key: bytes) -> float:
        raw = txn.get(key)
        return _LE64.unpack(raw)[0] if raw else float("-inf")

    def get_meta(self, key: bytes) -> bytes | None:
        """A value the caller stored with ``step(..., meta=...)`` (e.g. input positions)."""
        with self.env.begin(db=self._meta) as txn:
            raw = txn.get(key)
        return bytes(raw) if raw is not None else None

    def put_meta(self, meta: Mapping[bytes, bytes | None]) -> None:
        """Write (or delete, for ``None``) caller keys in their own transaction."""
        with self.env.begin(write=True, db=self._meta) as txn:
            self._write_meta(txn, meta)

    def _write_meta(self, txn: lmdb.Transaction, meta: Mapping[bytes, bytes | None]) -> None:
        for key, value in meta.items():
            if key in (b"wm", b"max_imp", b"max_act", b"stats", b"config"):
                raise ValueError(f"meta key {key!r} is reserved by the join state")
            if value is None:
                txn.delete(key, db=self._meta)
            else:
                txn.put(key, value, db=self._meta)

    @property
    def watermark(self) -> float:
        """Event time up to which windows are closed."""
        return self._stats.watermark

    def stats(self) -> JoinStats:
        """A copy of the counters (durable with the state)."""
        return msgspec.structs.replace(self._stats)

    # -- the step ----------------------------------------------------------------------------
    def step(
        self,
        impressions: Sequence[Impression],
        actions: Sequence[ActionEvent],
        *,
        caught_up: tuple[bool, bool] = (False, False),
        drain: bool = False,
        meta: Mapping[bytes, bytes | None] | Callable[[list[Example]], Mapping[bytes, bytes | None]] | None = None,
    ) -> list[Example]:
        """Apply one batch of each topic, advance the watermark, close windows; return the examples.

        Everything (state, counters, ``meta``) is committed in one LMDB transaction before this
        returns; if it raises, nothing of the batch is applied.

        Parameters
        ----------
        impressions, actions
            The next records of each topic, in topic order.
        caught_up
            ``(impressions, actions)``: whether that topic has nothing more to read right now. A
            caught-up topic does not hold the watermark back.
        drain
            End of input: close every window now (the watermark becomes ``+inf``; records that
            arrive later are late).
        meta
            Caller keys to write in the same transaction (``None`` deletes a key), or a function
            of the step's examples returning them (how the joiner stores its outbox).
        """
        if self._nothing_to_do(impressions, actions, caught_up, drain, meta):
            return []  # no transaction: an idle joiner does not fsync
        while True:
            try:
                return self._step(impressions, actions, caught_up, drain, meta)
            except lmdb.MapFullError:
                # The aborted step changed nothing: double the map (a bound, not memory) and redo it.
                self.env.set_mapsize(self.env.info()["map_size"] * 2)

    def _step(
        self,
        impressions: Sequence[Impression],
        actions: Sequence[ActionEvent],
        caught_up: tuple[bool, bool],
        drain: bool,
        meta: Mapping[bytes, bytes | None] | Callable[[list[Example]], Mapping[bytes, bytes | None]] | None,
    ) -> list[Example]:
        stats = msgspec.structs.replace(self._stats)
        max_imp, max_act = self._max_imp, self._max_act
        out: list[Example] = []
        try:
            with self.env.begin(write=True) as txn:
                for imp in impressions:
                    self._add_impression(txn, imp, stats, out)
                    if imp.time > max_imp:
                        max_imp = imp.time
                for act in actions:
                    self._add_action(txn, act, stats, out)
                    if act.time > max_act:
                        max_act = act.time
                wm = self._next_watermark(max_imp, max_act, caught_up, drain)
                stats.watermark = wm
                self._close_windows(txn, wm, stats, out)
                self._expire_actions(txn, wm, stats)
                txn.put(b"wm", _LE64.pack(wm), db=self._meta)
                txn.put(b"max_imp", _LE64.pack(max_imp), db=self._meta)
                txn.put(b"max_act", _LE64.pack(max_act), db=self._meta)
                txn.put(b"stats", _encode(stats), db=self._meta)
                if callable(meta):
                    meta = meta(out)
                if meta:
                    self._write_meta(txn, meta)
        except BaseException:
            self._cache.clear()  # may hold impressions of the aborted transaction
            self._cache_bytes = 0
            raise
        self._stats, self._max_imp, self._max_act = stats, max_imp, max_act
        return out

    def _nothing_to_do(
        self,
        impressions: Sequence[Impression],
        actions: Sequence[ActionEvent],
        caught_up: tuple[bool, bool],
        drain: bool,
        meta: Mapping[bytes, bytes | None] | Callable[[list[Example]], Mapping[bytes, bytes | None]] | None,
    ) -> bool:
        """No input, no drain, the same watermark (so no window closes) and no caller keys."""
        if impressions or actions or drain:
            return False
        if self._next_watermark(self._max_imp, self._max_act, caught_up, drain) != self._stats.watermark:
            return False
        return not (meta([]) if callable(meta) else meta)

    def _next_watermark(self, max_imp: float, max_act: float, caught_up: tuple[bool, bool], drain: bool) -> float:
        if drain:
            return float("inf")
        holding = [m for m, idle in zip((max_imp, max_act), caught_up, strict=True) if not idle]
        front = min(holding) if holding else max(max_imp, max_act)
        return max(self._stats.watermark, front - self.config.allowed_lateness_s)

    # -- per record (the hot path: a few LMDB calls each) -----------------------------------
    def _add_impression(self, txn: lmdb.Transaction, imp: Impression, stats: JoinStats, out: list[Example]) -> None:
        stats.impressions += 1
        key = impression_key(imp.request_id, imp.item)
        if txn.get(key, db=self._imp) is not None:
            stats.duplicate_impressions += 1
            return
        deadline = imp.time + self.config.window_s
        if deadline < stats.watermark:
            stats.late_impressions += 1
            return
        txn.put(_sortable(deadline) + key, b"", db=self._due)
        raw = txn.get(key, db=self._early)
        if raw is not None:
            times = _decode_times(raw)
            self._drop_buffered(txn, key, times, stats)
            lo = imp.time - self.config.allowed_lateness_s
            matching = [t for t in times if lo <= t <= deadline]
            stats.late_actions += len(times) - len(matching)
            if matching:
                stats.duplicate_actions += len(matching) - 1
                txn.put(key, _DONE, db=self._imp)
                out.append(self._example(imp, 1.0, 1.0, min(matching)))
                stats.positives += 1
                return
        payload = _encode(imp)
        txn.put(key, _WAITING + payload, db=self._imp)
        stats.pending += 1
        self._cache[key] = (imp, len(payload))
        self._cache_bytes += len(payload)
        byte_budget = self.config.memory_budget_bytes or float("inf")
        while self._cache and (len(self._cache) > self.config.memory_budget or self._cache_bytes > byte_budget):
            self._cache_bytes -= self._cache.pop(next(iter(self._cache)))[1]
            stats.spilled += 1

    def _take(self, key: bytes, raw: bytes) -> Impression:
        """The waiting impression ``key`` (``raw`` is its LMDB value), leaving the memory cache."""
        cached = self._cache.pop(key, None)
        if cached is None:
            return _decode_imp(raw[1:])
        self._cache_bytes -= cached[1]
        return cached[0]

    def _add_action(self, txn: lmdb.Transaction, act: ActionEvent, stats: JoinStats, out: list[Example]) -> None:
        stats.actions += 1
        if act.request_id is None or act.action not in self._positive:
            stats.ignored_actions += 1
            return
        key = impression_key(act.request_id, act.item)
        raw = txn.get(key, db=self._imp)
        if raw is None:  # impression not here (yet): buffer the action while it could still come
            expiry = act.time + self.config.allowed_lateness_s + self.config.window_s
            if expiry < stats.watermark:
                stats.late_actions += 1
                return
            old = txn.get(key, db=self._early)
            times = _decode_times(old) if old is not None else []
            times.append(act.time)
            txn.put(key, _encode(times), db=self._early)
            txn.put(_sortable(expiry) + key, b"", db=self._early_due)
            stats.buffered_actions += 1
            return
        if raw[:1] == _DONE:
            stats.duplicate_actions += 1
            return
        imp = self._take(key, raw)
        if not imp.time - self.config.allowed_lateness_s <= act.time <= imp.time + self.config.window_s:
            stats.late_actions += 1
            return
        txn.put(key, _DONE, db=self._imp)
        stats.pending -= 1
        out.append(self._example(imp, 1.0, 1.0, act.time))
        stats.positives += 1

    def _drop_buffered(self, txn: lmdb.Transaction, key: bytes, times: list[float], stats: JoinStats) -> None:
        txn.delete(key, db=self._early)
        extra = self.config.allowed_lateness_s + self.config.window_s
        for t in set(times):
            txn.delete(_sortable(t + extra) + key, db=self._early_due)
        stats.buffered_actions -= len(times)

    def _close_windows(self, txn: lmdb.Transaction, wm: float, stats: JoinStats, out: list[Example]) -> None:
        """Close every window with deadline < ``wm``: waiting impressions become negatives."""
        rate = self.config.negative_rate
        for due_key in _due_before(txn, self._due, wm):
            txn.delete(due_key, db=self._due)
            key = due_key[8:]
            raw = txn.pop(key, db=self._imp)
            if raw is None or raw[:1] == _DONE:
                continue
            imp = self._take(key, raw)
            stats.pending -= 1
            if rate >= 1.0 or sample_hash(imp.request_id, imp.item) < rate:
                out.append(self._example(imp, 0.0, rate, _unsortable(due_key)))
                stats.negatives_kept += 1
            else:
                stats.negatives_dropped += 1

    def _expire_actions(self, txn: lmdb.Transaction, wm: float, stats: JoinStats) -> None:
        """Forget buffered actions no on-time impression can match any more (counted late)."""
        extra = self.config.allowed_lateness_s + self.config.window_s
        for due_key in _due_before(txn, self._early_due, wm):
            txn.delete(due_key, db=self._early_due)
            key = due_key[8:]
            raw = txn.get(key, db=self._early)
            if raw is None:
                continue
            times = _decode_times(raw)
            keep = [t for t in times if t + extra >= wm]
            gone = len(times) - len(keep)
            stats.late_actions += gone
            stats.buffered_actions -= gone
            if keep:
                txn.put(key, _encode(keep), db=self._early)
            else:
                txn.delete(key, db=self._early)

    @staticmethod
    def _example(imp: Impression, label: float, rate: float, time: float) -> Example:
        return Example(
            sparse=imp.sparse,
            dense=imp.dense,
            label=label,
            sample_rate=rate,
            time=time,
            request_id=imp.request_id,
            user=imp.user,
            item=imp.item,
        )

    def close(self) -> None:
        """Close the LMDB environment (everything is already durable)."""
        self._cache.clear()
        self._cache_bytes = 0
        self.env.close()

    def __enter__(self) -> JoinState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _due_before(txn: lmdb.Transaction, db: object, wm: float) -> list[bytes]:
    """Keys of a deadline index (sortable time + key) whose deadline is before the watermark."""
    due: list[bytes] = []
    for due_key in txn.cursor(db=db).iternext(keys=True, values=False):
        if _unsortable(due_key) >= wm:
            break
        due.append(bytes(due_key))
    return due
