"""ProfileStore: the IPS compute-cache and storage layers in one process.

Write path: ``write`` validates a batch (``events.py``), appends its rows to the write-ahead log
and fsyncs (``wal.py``), and queues them in the *write table*; it returns once the rows are
durable. A background thread merges the write table into the *read table* at least every
``merge_interval`` (1 s): rows are grouped by entity with NumPy and each touched (profile, slot)
goes through one Numba kernel that places rows in their slices, compacts, drops what is past
retention and truncates (``slices.py``). Merged slots are new arrays swapped in whole, so readers
take no lock and never see half a merge.

Read path: ``query`` resolves each feature once (cached), groups features by slot and window, and
per (entity, slot) runs one kernel pass for all its windows (``query.py``). Answers that depend
only on the feature (a window without rows: another entity type's slot, an unseen entity) or on
one number are built once per query and shared, so a query over a user and 500 items costs what
two entity-typed queries cost and leaves little for the garbage collector.

Cache and storage: the read table is an LRU map entity key -> :class:`Profile` (``cache.py``). Every
``flush_interval`` (and at ``flush``/``close``) the dirty profiles are serialized (msgspec +
zstd, ``codec.py``) and written to LMDB with the WAL sequence number they include, in one transaction; then the
WAL segments they cover are deleted. Over ``memory_budget_mb``, clean profiles are evicted, and
a later read loads them back (a miss). On open, LMDB is read and the WAL records after its
sequence number are replayed; a damaged record is skipped, reported and moved aside, and the
records after it still apply (``wal.py``; counted in ``stats()["wal_corruptions"]``).

Input from outside (queries, imported blobs) is held to ``MAX_TIME`` and the import size caps
before any arithmetic or allocation depends on it (``docs/profiles.md``, "Limits").

Time: the store's clock is wall time, or with ``clock = "event"`` the latest event time written
(for loading history). Tests pass a ``clock`` callable.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from streamrec.errors import InvalidInputError, StreamrecError
from streamrec.profiles.cache import ProfileCache
from streamrec.profiles.codec import DEFAULT_MAX_PROFILE_BYTES, ProfileCodec
from streamrec.profiles.config import ProfilesConfig, profiles_config
from streamrec.profiles.events import MAX_TIME, EntityKeyer, SlotRows, SlotSpec, build_specs, events_to_rows
from streamrec.profiles.profile import Profile, SlotData
from streamrec.profiles.query import (
    CompiledFeature,
    SlotWindows,
    WindowPlan,
    answer,
    plan_feature,
    single_number,
    window_aggregate,
)
from streamrec.profiles.slices import merge_rows
from streamrec.profiles.storage import ProfileStorage
from streamrec.profiles.types import Feature, FeatureQuery, FeatureResult, QueryResult, SqlResult, WriteResult
from streamrec.profiles.wal import WalBatch, WalSlotRows, WriteAheadLog

__all__ = ["ProfileStore"]

_COMPACT_INTERVAL = 60.0

# More values than any slot can hold (SQL asks 2^30 for "all of them").
MAX_TOP_K = 1 << 31


class ProfileStore:
    """Profiles of many entities: batched durable writes, windowed feature queries.

    Parameters
    ----------
    cfg: the ``[profiles]`` section (a :class:`ProfilesConfig`, a plain dict, or ``None`` for the
        defaults).
    path: directory for the WAL and LMDB (created; recovered on open), or ``None`` for a
        memory-only store (nothing survives the process; no eviction).
    clock: a callable returning "now" in epoch seconds (default: ``time.time``, or the event
        watermark with ``clock = "event"``).
    background: run the merge/flush thread. Without it, call :meth:`merge`/:meth:`flush`
        yourself (``merge_interval = 0`` merges inside every ``write``).
    max_profile_bytes: the most bytes one blob given to :meth:`import_profiles` may decompress
        to (default 64 MiB; also settable as the attribute). A blob that would inflate past it
        is refused while streaming, before the bytes are allocated.

    Examples
    --------
    >>> from streamrec.profiles import ProfileStore, Feature, FeatureQuery
    >>> from streamrec.records import ActionEvent as Event
    >>> store = ProfileStore(background=False, clock=lambda: 1_700_000_000.0)
    >>> ev = [Event(user="42", item="m1", action="click", time=1_699_999_990.0, attributes={"category": "comedy"})]
    >>> store.write(ev).accepted
    1
    >>> store.merge()
    >>> f = Feature(slot="clicked_category", window="1h", counters=("click",))
    >>> q = FeatureQuery(entities=["user:42"], features=[f])
    >>> store.query(q).results[0][0].scalar()
    1.0
    >>> store.close()
    """

    def __init__(
        self,
        cfg: ProfilesConfig | dict[str, Any] | None = None,
        path: str | Path | None = None,
        *,
        clock: Callable[[], float] | None = None,
        background: bool = True,
        max_profile_bytes: int = DEFAULT_MAX_PROFILE_BYTES,
    ) -> None:
        self.cfg = cfg = profiles_config(cfg)
        self.max_profile_bytes = _positive("max_profile_bytes", max_profile_bytes)
        self.specs = build_specs(cfg)
        self._spec_by_name = {s.name: s for s in self.specs}
        self._entity_types = frozenset(s.entity for s in self.specs)
        self._keyer = EntityKeyer(cfg.secret)
        if clock is not None:
            self._clock: Callable[[], float] | None = clock
        else:
            self._clock = time.time if cfg.clock == "wall" else None
        self._watermark = 0.0
        self._pending: list[tuple[int, list[SlotRows], list[bytes]]] = []
        self._deleted: set[bytes] = set()
        self._write_lock = threading.Lock()
        self._merge_lock = threading.RLock()
        self._flush_lock = threading.Lock()
        self._seq = 0
        self._plans: dict[Feature, CompiledFeature] = {}
        self._codec = ProfileCodec(self.specs, cfg.compression_level)
        self._stats = dict.fromkeys(
            (
                "accepted",
                "rejected",
                "too_old",
                "dropped_retention",
                "cache_hits",
                "cache_misses",
                "evictions",
                "merges",
                "flushes",
                "loads",
                # What the WAL replay at open found (see wal.py): damaged stretches moved aside
                # and reported, good records salvaged after them, torn tails cut off.
                "wal_corruptions",
                "wal_corrupt_bytes",
                "wal_salvaged_records",
                "wal_torn_tails",
                "wal_torn_bytes",
            ),
            0,
        )
        self._cache = ProfileCache(len(self.specs), int(cfg.memory_budget_mb * (1 << 20)), self._load, self._stats)
        self._closed = False
        self._last_compact = time.monotonic()
        self.path = Path(path) if path is not None else None
        self._storage: ProfileStorage | None = None
        self._wal: WriteAheadLog | None = None
        if self.path is not None:
            self.path.mkdir(parents=True, exist_ok=True)
            self._storage = ProfileStorage(self.path / "lmdb", cfg.map_size_mb)
            self._seq = self._storage.seq()
            self._watermark = self._storage.clock()
            self._wal = WriteAheadLog(self.path / "wal", fsync=cfg.fsync)
            try:
                self._recover()
            except BaseException:
                self._wal.close()
                self._storage.close()
                raise
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        if background and float(cfg.merge_interval) > 0:
            self._thread = threading.Thread(target=self._run, name="profiles-merge", daemon=True)
            self._thread.start()

    # ------------------------------------------------------------------ clock and keys

    def now(self) -> float:
        """The store's clock (wall time, the injected clock, or the event watermark)."""
        return self._clock() if self._clock is not None else self._watermark

    def slot_spec(self, name: str) -> SlotSpec | None:
        """The compiled spec of slot ``name`` (``None`` if the config declares no such slot)."""
        return self._spec_by_name.get(name)

    def entity_key(self, entity_type: str, entity_id: str) -> bytes:
        """Keyed 16-byte hash of an entity; the only form in which entities are stored or logged."""
        if entity_type not in self._entity_types:
            raise InvalidInputError(
                "entity", entity_type, f"not the entity of any slot ({', '.join(sorted(self._entity_types))})"
            )
        if not isinstance(entity_id, str) or not entity_id:
            raise InvalidInputError("entity", entity_id, "entity id must be a non-empty string")
        return self._keyer(entity_type, entity_id)

    def label_key(self, label: str) -> bytes:
        """Key of an entity label ``"type:id"`` (``"user:42"``)."""
        if not isinstance(label, str) or ":" not in label:
            raise InvalidInputError("entities", label, "expected 'type:id', e.g. 'user:42'")
        entity_type, entity_id = label.split(":", 1)
        return self.entity_key(entity_type, entity_id)

    # ------------------------------------------------------------------ write path

    def write(self, events: Sequence[Any], owns: Callable[[bytes], bool] | None = None) -> WriteResult:
        """Validate and apply a batch of action events; durable when this returns.

        Bad events are rejected with ``(index, reason)``; the others are applied. Events older than
        retention (at the store's clock) are counted in ``too_old`` and dropped. Writes become
        visible to queries at the next merge (within ``merge_interval``, or call :meth:`merge`).

        ``owns``, if given, filters by entity key: only rows of entities with ``owns(key)`` true are
        kept (a node of a cluster keeps the user rows of an event it owns and leaves its item rows
        to the item's node). Validation and the counts in the result are unaffected.
        """
        self._check_open()
        if isinstance(events, str | bytes) or not isinstance(events, Sequence | Iterable):
            raise InvalidInputError("events", events, "expected a sequence of action events")
        events = list(events)
        with self._write_lock:
            now = self._clock() if self._clock is not None else None
            rows, accepted, rejected, too_old, now = events_to_rows(
                events, self.specs, self._keyer, now, float(self.cfg.max_future), floor=self._watermark
            )
            if owns is not None:
                rows = _owned(rows, owns)
            if rows:
                self._log_rows(rows)
            if self._clock is None:
                self._watermark = max(self._watermark, now)
            self._stats["accepted"] += accepted
            self._stats["rejected"] += len(rejected)
            self._stats["too_old"] += too_old
        if float(self.cfg.merge_interval) == 0:
            self.merge()
        return WriteResult(accepted=accepted, rejected=rejected, too_old=too_old)

    def _log_rows(self, rows: list[SlotRows], deletes: list[bytes] | None = None) -> None:
        # Caller holds the write lock.
        self._seq += 1
        if self._wal is not None:
            wal_rows = [
                WalSlotRows(
                    slot=self.specs[r.slot].name,
                    columns=self.specs[r.slot].columns,
                    keys=r.keys,
                    times=r.times.tobytes(),
                    values=r.values,
                    data=r.data.tobytes(),
                )
                for r in rows
            ]
            self._wal.append(WalBatch(seq=self._seq, rows=wal_rows, deletes=deletes or []))
        self._pending.append((self._seq, rows, deletes or []))

    def merge(self) -> None:
        """Merge the write table into the read table now (the background thread does it every ``merge_interval``)."""
        with self._merge_lock:
            with self._write_lock:
                pending, self._pending = self._pending, []
            if pending:
                self._apply(pending, self.now())
                self._stats["merges"] += 1
            self._evict()

    def _apply(self, pending: list[tuple[int, list[SlotRows], list[bytes]]], now: float) -> None:
        # Rows are merged in groups between deletes, so a delete removes exactly what came before it.
        group: list[SlotRows] = []
        for _, rows, deletes in pending:
            group.extend(rows)
            if deletes:
                self._merge_group(group, now)
                group = []
                for key in deletes:
                    self._cache.pop(key)
                    self._deleted.add(key)
        self._merge_group(group, now)

    def _merge_group(self, group: list[SlotRows], now: float) -> None:
        by_slot: dict[int, list[SlotRows]] = {}
        for r in group:
            by_slot.setdefault(r.slot, []).append(r)
        for si, parts in by_slot.items():
            spec = self.specs[si]
            keys = [k for p in parts for k in p.keys]
            times = np.concatenate([p.times for p in parts])
            values = [v for p in parts for v in p.values]
            data = np.concatenate([p.data for p in parts])
            karr = np.array(keys, dtype="S16")
            uniq, inverse = np.unique(karr, return_inverse=True)
            order = np.argsort(inverse, kind="stable")
            bounds = np.searchsorted(inverse[order], np.arange(len(uniq) + 1))
            tb, cutoff = spec.plan.bounds(now)
            for u in range(len(uniq)):
                idx = order[bounds[u] : bounds[u + 1]]
                key = bytes(uniq[u]).ljust(16, b"\0")
                profile = self._get(key, create=True, count=False)
                self._merge_slot(profile, spec, times[idx], [values[i] for i in idx.tolist()], data[idx], tb, cutoff)

    def _merge_slot(self, profile: Profile, spec, times, values, data, tb, cutoff) -> None:
        old = profile.slots[spec.index]
        if old is None:
            vocab: list[str] = []
            vindex: dict[str, int] = {}
        else:
            vocab, vindex = old.vocab, old.vindex
        new_vals = np.empty(len(values), dtype=np.int32)
        for j, v in enumerate(values):
            i = vindex.get(v)
            if i is None:
                i = len(vocab)
                vocab.append(v)  # append-only: readers of the old slot index only below their length
                vindex[v] = i
            new_vals[j] = i
        if old is not None and old.starts.shape[0]:
            times = np.concatenate([old.starts.astype(np.float64), times])
            new_vals = np.concatenate([old.vals, new_vals])
            data = np.concatenate([old.data, data])
        self._install(profile, spec, times, new_vals, data, vocab, vindex, tb, cutoff)

    def _install(self, profile, spec, times, vals, data, vocab, vindex, tb, cutoff) -> None:
        starts, vals, data, dropped = merge_rows(
            times,
            vals,
            np.ascontiguousarray(data),
            spec.codes,
            spec.tcol,
            tb,
            spec.plan.widths,
            cutoff,
            spec.truncate,
            spec.trunc_col,
        )
        self._stats["dropped_retention"] += int(dropped)
        if len(vocab) > 2 * len(starts) + 64:  # values no row uses any more: rebuild the vocabulary
            used, vals = np.unique(vals, return_inverse=True)
            vals = vals.astype(np.int32)
            vocab = [vocab[i] for i in used.tolist()]
            slot = SlotData(starts, vals, data, vocab)
        else:
            slot = SlotData(starts, vals, data, vocab)
            slot._vindex = vindex
        slot.sliced_at = (tb.tobytes(), cutoff)
        old = profile.slots[spec.index]
        delta = slot.nbytes() - (old.nbytes() if old is not None else 0)
        profile.slots[spec.index] = slot if starts.shape[0] else None
        profile.nbytes += delta
        self._cache.mem += delta
        profile.version += 1

    def compact(self, now: float | None = None) -> None:
        """Re-slice every cached profile at ``now`` (compaction, retention, truncation); runs every minute."""
        with self._merge_lock:
            now = self.now() if now is None else now
            plans = {s.index: s.plan.bounds(now) for s in self.specs}
            keys = {i: (tb.tobytes(), cutoff) for i, (tb, cutoff) in plans.items()}
            for profile in list(self._cache.profiles.values()):
                for spec in self.specs:
                    old = profile.slots[spec.index]
                    if old is None or old.sliced_at == keys[spec.index]:
                        continue  # sliced with these very bounds: nothing moved
                    tb, cutoff = plans[spec.index]
                    self._install(
                        profile,
                        spec,
                        old.starts.astype(np.float64),
                        old.vals,
                        old.data,
                        old.vocab,
                        old.vindex,
                        tb,
                        cutoff,
                    )

    # ------------------------------------------------------------------ cache

    def _get(self, key: bytes, create: bool, count: bool = True) -> Profile | None:
        return self._cache.get(key, create, count)

    def _load(self, key: bytes) -> Profile | None:
        """A cache miss: the profile stored in LMDB (``None``: memory-only, deleted or never flushed)."""
        if self._storage is None or key in self._deleted:
            return None
        blob = self._storage.get(key)
        if blob is None:
            return None
        p = self._codec.decode(blob)
        p.stored = True
        self._stats["loads"] += 1
        return p

    def _evict(self) -> None:
        # Caller holds the merge lock (so no merge is writing into a profile being evicted).
        if self._storage is not None and self._cache.evict():
            self._wake.set()  # everything left is dirty: ask the thread to flush

    # ------------------------------------------------------------------ moving profiles

    def entity_keys(self) -> Iterator[bytes]:
        """Keys of the entities held by this store (cached and stored)."""
        self.merge()
        seen = set(self._cache.profiles.keys())
        yield from list(seen)
        if self._storage is not None:
            for key in self._storage.iter_keys():
                if key not in seen and key not in self._deleted:
                    yield key

    def export_profiles(self, keys: Iterable[bytes]) -> dict[bytes, bytes]:
        """Serialized, compressed profiles of ``keys`` (absent keys are left out)."""
        self.merge()
        out = {}
        for key in keys:
            key = _as_key(key)
            p = self._get(key, create=False, count=False)
            if p is not None and any(s is not None for s in p.slots):
                out[key] = self._codec.encode(list(p.slots))
        return out

    def import_profiles(self, blobs: dict[bytes, bytes], *, max_total_bytes: int | None = None) -> None:
        """Merge exported profiles in (by the reduce functions); durable when this returns.

        All or nothing: every blob is decompressed (each within :attr:`max_profile_bytes`, all
        together within ``max_total_bytes`` if given: a node passes its ``max_import_bytes``) and
        validated before anything is written. A blob is refused (``InvalidInputError``
        on the field ``blobs``, naming the blob, slot and column) if it is not zstd, not a profile
        of a known format, or holds values no write could have made: a slice start outside
        ``[0, MAX_TIME]``, a counter that is infinite, or NaN where the reduce's identity is not NaN.
        """
        self._check_open()
        if not isinstance(blobs, dict):
            raise InvalidInputError("blobs", type(blobs).__name__, "expected a dict entity key -> exported blob")
        if max_total_bytes is not None:
            _positive("max_total_bytes", max_total_bytes)
        per_slot: dict[int, tuple[list, list, list, list]] = {}
        left = max_total_bytes
        for i, (key, raw) in enumerate(blobs.items()):
            key = _as_key(key)
            plain = self._codec.inflate(raw, i, left, max_total_bytes, self.max_profile_bytes)
            if left is not None:
                left -= len(plain)
            p = self._codec.profile(plain, "blobs", f"blob {i}: ", check=True)
            for spec, slot in zip(self.specs, p.slots, strict=True):
                if slot is None:
                    continue
                keys, times, values, data = per_slot.setdefault(spec.index, ([], [], [], []))
                n = slot.starts.shape[0]
                keys.extend([key] * n)
                times.append(slot.starts.astype(np.float64))
                values.extend(slot.vocab[i] for i in slot.vals.tolist())
                data.append(slot.data)
        rows = [SlotRows(si, k, np.concatenate(t), v, np.concatenate(d)) for si, (k, t, v, d) in per_slot.items() if k]
        with self._write_lock:
            if rows:
                self._log_rows(rows)
        self.merge()

    def delete_profiles(self, keys: Iterable[bytes]) -> None:
        """Delete the profiles of ``keys``; durable when this returns."""
        self._check_open()
        keys = [_as_key(k) for k in keys]
        if not keys:
            return
        with self._write_lock:
            self._log_rows([], deletes=keys)
        self.merge()

    # ------------------------------------------------------------------ read path

    def _plan(self, feature: Feature) -> CompiledFeature:
        try:
            plan = self._plans.get(feature)
        except TypeError:  # lists inside: not hashable, resolve without caching
            return _checked_plan(plan_feature(feature, self._spec_by_name))
        if plan is None:
            plan = _checked_plan(plan_feature(feature, self._spec_by_name))
            if len(self._plans) > 100_000:
                self._plans.clear()
            self._plans[feature] = plan
        return plan

    def query(self, query: FeatureQuery) -> QueryResult:
        """Answer many features of one or many entities (see :class:`FeatureQuery`)."""
        if not isinstance(query, FeatureQuery):
            raise InvalidInputError("query", query, "expected a FeatureQuery")
        now = self.now() if query.now is None else query.now
        if not isinstance(now, int | float) or not math.isfinite(now) or abs(now) > MAX_TIME:
            raise InvalidInputError("now", now, f"must be a finite epoch time within ±{MAX_TIME} s (the year 9999)")
        plans = [self._plan(f) for f in query.features]
        keys = [self.label_key(e) for e in query.entities]
        keys.extend(_as_key(k) for k in query.keys)
        # Per slot: the window start of each feature (computed once per distinct window), and
        # which windows need per-value answers.
        groups: dict[int, list[tuple[int, int]]] = {}
        starts: dict[tuple[int, Any], int] = {}
        for j, plan in enumerate(plans):
            si = plan.spec.index
            wk = (si, plan.since if plan.since is not None else -plan.seconds)
            cutoff = starts.get(wk)
            if cutoff is None:
                cutoff = starts[wk] = plan.window_start(now)
            groups.setdefault(si, []).append((j, cutoff))
        slot_plans = []
        for si, items in groups.items():
            wp = WindowPlan([c for _, c in items], [plans[j].per_value for j, _ in items])
            slot_plans.append((si, wp, [(j, wp.win[c], wp.snap[c]) for j, c in items]))
        results: list[list[FeatureResult]] = []
        nplans = len(plans)
        specs = self.specs
        # The answers of an empty window depend only on the features, so they are built once per
        # query and shared by every (entity, window) without rows: a slot of another entity type
        # (a user feature asked of an item, in the recommender's one query over user + candidates),
        # an entity never seen, a short window of a quiet item. Answering them one by one made such
        # a query cost 2.7 of two entity-typed ones.
        # Likewise a one-number answer is shared by the entities with the same number (counts are
        # mostly small integers): every answer is two lists that live until the query's result
        # dies, so they are promoted through the GC's generations, and they are what triggered the
        # full collections that made the recommender's p99 (``streamrec bench serving``).
        # A one-entity query has nothing to share: it answers each feature directly (as fast as before).
        empty: dict[int, list[FeatureResult]] = {}
        same: dict[int, dict[float, FeatureResult]] = {}  # feature -> its one-number answers so far
        share = len(keys) > 1  # one entity has nobody to share with

        def empty_answers(si: int, wp: WindowPlan, items: list[tuple[int, int, int]]) -> list[FeatureResult]:
            answers = empty.get(si)
            if answers is None:  # built at the first entity that needs them
                sw = SlotWindows(None, specs[si], wp, now)
                answers = empty[si] = [answer(plans[j], sw, w, snap) for j, w, snap in items]
            return answers

        for key in keys:
            profile = self._get(key, create=False)
            row: list[Any] = [None] * nplans
            for si, wp, items in slot_plans:
                slot = profile.slots[si] if profile is not None else None
                if slot is None or slot.starts.shape[0] == 0:
                    for (j, _, _), res in zip(items, empty_answers(si, wp, items), strict=True):
                        row[j] = res
                    continue
                sw = SlotWindows(slot, specs[si], wp, now)
                rows_in = sw.distinct.tolist()  # 0 distinct values = no row in the window
                for n, (j, w, snap) in enumerate(items):
                    plan = plans[j]
                    if not share:
                        row[j] = answer(plan, sw, w, snap)
                        continue
                    if not rows_in[w]:
                        row[j] = empty_answers(si, wp, items)[n]
                        continue
                    if not plan.single:
                        row[j] = answer(plan, sw, w, snap)
                        continue
                    x = single_number(plan, sw, w)
                    if x == 0.0 and math.copysign(1.0, x) < 0:  # -0.0 would find 0.0's answer
                        row[j] = FeatureResult(None, [[x]])
                        continue
                    shared = same.get(j)
                    if shared is None:
                        shared = same[j] = {}
                    res = shared.get(x)  # a NaN never finds one (another object each time)
                    if res is None:
                        res = shared[x] = FeatureResult(None, [[x]])
                    row[j] = res
            results.append(row)
        return QueryResult(
            names=[p.name for p in plans],
            columns=[p.columns for p in plans],
            keys=keys,
            results=results,
            now=float(now),
        )

    def query_numbers(self, features: Sequence[Feature], entities: Sequence[str], now: float) -> np.ndarray:
        """One-number features of many entities as one float64 matrix ``[entity, feature]``.

        Each cell is what :meth:`query` answers in ``data[0][0]`` for that (entity, feature), bit
        for bit, without building an answer object per cell: one kernel pass per (entity, slot) as
        in :meth:`query`, then one NumPy expression per feature over all entities (hot path). Only
        whole-window features with one column (no ``top_k``, no ``values``, one counter) are
        allowed; others raise :class:`InvalidInputError` naming the feature. What the serving
        item cache fills its rows with.
        """
        self._check_open()
        if not isinstance(now, int | float) or not math.isfinite(now) or abs(now) > MAX_TIME:
            raise InvalidInputError("now", now, f"must be a finite epoch time within ±{MAX_TIME} s (the year 9999)")
        plans = [self._plan(f) for f in features]
        for p in plans:
            if not p.single:
                raise InvalidInputError(
                    "features", p.name, "query_numbers answers one-number features only (no top_k, values, or counters)"
                )
        keys = [self.label_key(e) for e in entities]
        groups: dict[int, list[tuple[int, int]]] = {}
        for j, plan in enumerate(plans):
            groups.setdefault(plan.spec.index, []).append((j, plan.window_start(now)))
        n = len(keys)
        profiles = [self._get(key, create=False) for key in keys]
        out = np.empty((n, len(plans)), dtype=np.float64)
        upper = math.floor(now)
        for si, items in groups.items():
            spec = self.specs[si]
            wp = WindowPlan([c for _, c in items], [False] * len(items))
            tot = np.empty((n, wp.cutoffs.shape[0], len(spec.columns)), dtype=np.float64)
            tot[:] = spec.identity
            distinct = np.zeros((n, wp.cutoffs.shape[0]), dtype=np.float64)
            for e, profile in enumerate(profiles):
                slot = profile.slots[si] if profile is not None else None
                if slot is None or slot.starts.shape[0] == 0:
                    continue  # the identity and no distinct value: what an empty window answers
                _, _, tot[e], distinct[e] = window_aggregate(
                    slot.starts, slot.vals, slot.data, spec.codes, spec.tcol, spec.identity,
                    wp.cutoffs, wp.need, upper, len(slot.vocab),
                )  # fmt: skip
            for j, cutoff in items:
                plan, w = plans[j], wp.win[cutoff]
                if plan.agg == "distinct":
                    out[:, j] = distinct[:, w]
                elif plan.agg == "ratio":
                    num = np.nan_to_num(tot[:, w, plan.num], nan=0.0, posinf=np.inf, neginf=-np.inf)
                    den = np.nan_to_num(tot[:, w, plan.den], nan=0.0, posinf=np.inf, neginf=-np.inf) + plan.beta
                    with np.errstate(divide="ignore", invalid="ignore"):
                        out[:, j] = np.where(den != 0, (num + plan.alpha) / np.where(den != 0, den, 1.0), 0.0)
                else:
                    out[:, j] = tot[:, w, plan.col_list[0]]
        return out

    def sql(self, text: str, now: float | None = None) -> SqlResult:
        """Answer a SQL query (the dialect is in ``docs/profiles.md``) as a table."""
        from streamrec.profiles.sql import run_sql

        return run_sql(self, text, now)

    # ------------------------------------------------------------------ flush, recovery, lifecycle

    def flush(self) -> None:
        """Merge, then write every dirty profile to LMDB and truncate the WAL (no-op for memory-only)."""
        self._check_open()
        self._flush()

    def _flush(self) -> None:
        if self._storage is None or self._wal is None:
            self.merge()
            return
        with self._flush_lock:
            with self._merge_lock:
                with self._write_lock:
                    old_segments = self._wal.rotate()
                    seq = self._seq
                    pending, self._pending = self._pending, []
                    clock = self._watermark
                if pending:
                    self._apply(pending, self.now())
                snapshot = [(k, p, p.version, list(p.slots)) for k, p in self._cache.profiles.items() if p.dirty]
                deleted = set(self._deleted)
            puts = [(k, self._codec.encode(slots)) for k, _, _, slots in snapshot if any(s is not None for s in slots)]
            empty = {k for k, _, _, slots in snapshot if all(s is None for s in slots)}
            put_keys = {k for k, _ in puts}
            self._storage.commit(puts, (deleted | empty) - put_keys, seq, clock)
            for k, p, version, _ in snapshot:
                p.stored = k in put_keys
                if p.version == version:
                    p.flushed = version
            with self._merge_lock:
                self._deleted -= deleted
            self._wal.remove(old_segments)
            self._stats["flushes"] += 1
            with self._merge_lock:
                self._evict()

    def _recover(self) -> None:
        assert self._wal is not None and self._storage is not None
        stored = self._seq
        for batch in self._wal.replay():
            if batch.seq <= stored:
                continue
            rows = []
            for wr in batch.rows:
                spec = self._spec_by_name.get(wr.slot)
                if spec is None:
                    continue
                data = np.frombuffer(wr.data, dtype=np.float64).reshape(len(wr.keys), max(len(wr.columns), 1))
                data = self._codec.remap(spec, wr.columns, data.copy())
                times = np.frombuffer(wr.times, dtype=np.float64).copy()
                rows.append(SlotRows(spec.index, list(wr.keys), times, list(wr.values), data))
                if self.cfg.clock == "event" and times.size:
                    self._watermark = max(self._watermark, float(times.max()))
            self._pending.append((batch.seq, rows, list(batch.deletes)))
            self._seq = max(self._seq, batch.seq)
        report = self._wal.report
        self._stats["wal_corruptions"] = report.corruptions
        self._stats["wal_corrupt_bytes"] = report.corrupt_bytes
        self._stats["wal_salvaged_records"] = report.salvaged
        self._stats["wal_torn_tails"] = report.torn_tails
        self._stats["wal_torn_bytes"] = report.torn_bytes
        self.merge()

    def _run(self) -> None:
        last_flush = time.monotonic()
        interval = float(self.cfg.merge_interval)
        while not self._stop.is_set():
            self._wake.wait(interval)
            woke = self._wake.is_set()
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.merge()
                t = time.monotonic()
                if t - self._last_compact >= _COMPACT_INTERVAL:
                    self.compact()
                    self._last_compact = t
                if self._storage is not None and (woke or t - last_flush >= float(self.cfg.flush_interval)):
                    self._flush()
                    last_flush = time.monotonic()
            except Exception:  # keep merging; the error shows up in stats
                self._stats["background_errors"] = self._stats.get("background_errors", 0) + 1

    def stats(self) -> dict[str, Any]:
        """Counters and sizes: entities, bytes, cache hits/misses, rejected, too_old, evictions..."""
        out: dict[str, Any] = dict(self._stats)
        out["cached_entities"] = len(self._cache.profiles)
        out["memory_bytes"] = self._cache.mem
        out["pending_batches"] = len(self._pending)
        out["wal_seq"] = self._seq
        if self._storage is not None and not self._closed:
            n, size = self._storage.entries_and_bytes()
            out["stored_entities"] = n
            out["stored_bytes"] = size
            new = sum(1 for p in list(self._cache.profiles.values()) if not p.stored)
            gone = sum(1 for k in list(self._deleted) if self._storage.get(k) is not None)
            out["entities"] = n + new - gone
        else:
            out["entities"] = len(self._cache.profiles)
        return out

    def close(self) -> None:
        """Stop the background thread, flush, and release the files."""
        if self._closed:
            return
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        self._flush()
        self._closed = True
        if self._wal is not None:
            self._wal.close()
        if self._storage is not None:
            self._storage.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise StreamrecError("the profile store is closed")

    def __enter__(self) -> ProfileStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _owned(rows: list[SlotRows], owns: Callable[[bytes], bool]) -> list[SlotRows]:
    out = []
    for r in rows:
        keep = [i for i, k in enumerate(r.keys) if owns(k)]
        if len(keep) == len(r.keys):
            out.append(r)
        elif keep:
            idx = np.asarray(keep, dtype=np.int64)
            out.append(
                SlotRows(r.slot, [r.keys[i] for i in keep], r.times[idx], [r.values[i] for i in keep], r.data[idx])
            )
    return out


def _checked_plan(plan: CompiledFeature) -> CompiledFeature:
    """Refuse windows and top-k sizes that no calendar or slot holds (they would overflow int64)."""
    if plan.since is not None and abs(plan.since) > MAX_TIME:
        raise InvalidInputError("since", plan.since, f"must be an epoch time within ±{MAX_TIME} s (the year 9999)")
    if plan.since is None and plan.seconds > MAX_TIME:
        raise InvalidInputError("window", plan.feature.window, f"must be at most {MAX_TIME} s (about 8,000 years)")
    if plan.top_k > MAX_TOP_K:
        raise InvalidInputError("top_k", plan.top_k, f"must be at most {MAX_TOP_K}")
    return plan


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidInputError(name, value, "must be a positive number of bytes")
    return value


def _as_key(key: Any) -> bytes:
    if not isinstance(key, bytes | bytearray) or len(key) != 16:
        raise InvalidInputError("keys", key, "an entity key is 16 bytes (from ProfileStore.entity_key)")
    return bytes(key)
