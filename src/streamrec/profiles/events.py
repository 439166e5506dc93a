"""From action events to slot rows: validation, entity hashing, and the counter rule.

This is where bad input is first seen, so this is where it is rejected, event by event, with the
field and the value; the valid events of the batch go on. An accepted event becomes at most one
*row* per slot it feeds: ``(entity key, event time, feature value, counter vector)``. Rows are what
the write-ahead log stores and what the merge folds into profiles — never raw entity ids.

The counter rule: a counter ``c`` of a slot gets ``event.counters[c]`` if present, else ``1`` if
``event.action == c``, else nothing (its reduce's identity, and for ``last`` no time). The
counter name ``count`` (if a slot declares it and no event names it) counts every event. An
event that feeds no slot at all (its action is no counter and it carries no declared counter, or
every slot it would feed lacks its entity or value attribute) is rejected.

This loop reads Python objects, so it is Python; it touches each event once and does only dict
lookups and float checks.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from streamrec.errors import InvalidInputError
from streamrec.profiles.config import ProfilesConfig
from streamrec.profiles.reduce import get_reduce
from streamrec.profiles.slices import TIME_COLUMN, TierPlan
from streamrec.records import parse_action

__all__ = ["MAX_TIME", "EntityKeyer", "SlotRows", "SlotSpec", "build_specs", "events_to_rows"]

# The latest time a query clock, a window start, an imported slice or (under the event clock) an
# event may name: the end of the year 9999 in epoch seconds. Slice starts are int64 and window
# arithmetic rounds in integers, so a clock of 1e300 or a window of 2^70 s would overflow there;
# no calendar use needs more.
MAX_TIME = 253_402_300_799


class SlotSpec:
    """A slot's config compiled for the hot paths (codes, hidden columns, tier plan)."""

    __slots__ = (
        "actions",
        "codes",
        "columns",
        "counters",
        "entity",
        "hash_values",
        "identity",
        "index",
        "name",
        "plan",
        "reduces",
        "tcol",
        "trunc_col",
        "truncate",
        "value",
    )

    def __init__(self, index: int, name: str, cfg: ProfilesConfig) -> None:
        slot = cfg.slots[name]
        self.index = index
        self.name = name
        self.entity = slot.entity
        self.value = slot.value
        self.counters = list(slot.counters)
        self.actions = frozenset(slot.actions) if slot.actions is not None else None
        self.hash_values = slot.hash_values
        self.reduces = [get_reduce(slot.reduce_of(c)) for c in self.counters]
        columns = list(self.counters)
        codes = [r.code for r in self.reduces]
        tcol = [0] * len(columns)
        for i, r in enumerate(self.reduces):
            if r.timed:
                tcol[i] = len(columns)
                columns.append(f"{self.counters[i]}@time")
                codes.append(TIME_COLUMN)
                tcol.append(0)
        self.columns = columns
        self.codes = np.asarray(codes, dtype=np.int64)
        self.tcol = np.asarray(tcol, dtype=np.int64)
        ident = [r.identity for r in self.reduces] + [-math.inf] * (len(columns) - len(self.counters))
        self.identity = np.asarray(ident, dtype=np.float64)
        tiers = cfg.tiers_of(name)
        self.plan = TierPlan([t.width for t in tiers], [t.until for t in tiers[:-1]], slot.retention)
        self.truncate = slot.truncate
        self.trunc_col = self.counters.index(slot.truncate_by)


def build_specs(cfg: ProfilesConfig) -> list[SlotSpec]:
    return [SlotSpec(i, name, cfg) for i, name in enumerate(cfg.slots)]


class EntityKeyer:
    """Keyed BLAKE2b-128 of ``type:id``; a small memo keeps hot entities from rehashing."""

    def __init__(self, secret: str) -> None:
        self._key = hashlib.blake2b(secret.encode(), digest_size=32).digest()
        self._memo: dict[tuple[str, str], bytes] = {}

    def __call__(self, entity_type: str, entity_id: str) -> bytes:
        k = (entity_type, entity_id)
        key = self._memo.get(k)
        if key is None:
            key = hashlib.blake2b(f"{entity_type}\x00{entity_id}".encode(), key=self._key, digest_size=16).digest()
            if len(self._memo) > 1_000_000:
                self._memo.clear()
            self._memo[k] = key
        return key

    def value_hash(self, slot: str, value: str) -> str:
        """Keyed hash of a feature value (for slots with ``hash_values``)."""
        return hashlib.blake2b(f"{slot}\x00{value}".encode(), key=self._key, digest_size=8).hexdigest()


class SlotRows:
    """Rows of one slot: entity keys, times, value strings, and a float64 matrix in the slot's columns."""

    __slots__ = ("data", "keys", "slot", "times", "values")

    def __init__(self, slot: int, keys: list[bytes], times: np.ndarray, values: list[str], data: np.ndarray) -> None:
        self.slot = slot
        self.keys = keys
        self.times = times
        self.values = values
        self.data = data


def _coerce(event: Any) -> Any:
    if isinstance(event, Mapping):  # untrusted data (JSON bodies, CSV rows): the record parser checks it
        try:
            return parse_action(dict(event))
        except InvalidInputError as exc:
            raise _Bad(str(exc)) from None
    return event


class _Bad(Exception):
    pass


def _field(name: str, value: Any, reason: str) -> _Bad:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return _Bad(f"{name}: {reason} (got {text})")


def _check(event: Any, known_counters: frozenset[str], latest: float) -> tuple[str, str, str, float, dict, dict]:
    try:
        user, item, action, t = event.user, event.item, event.action, event.time
        counters, attributes = event.counters, event.attributes
    except AttributeError as exc:
        raise _Bad(f"{exc.name or 'event'}: missing field (got {type(event).__name__})") from None
    if not isinstance(user, str) or not user:
        raise _field("user", user, "must be a non-empty string")
    if not isinstance(item, str) or not item:
        raise _field("item", item, "must be a non-empty string")
    if not isinstance(action, str) or not action:
        raise _field("action", action, "must be a non-empty string")
    if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or t < 0:
        raise _field("time", t, "must be a finite number of epoch seconds >= 0")
    if t > latest:
        raise _field("time", t, f"must be at most {MAX_TIME} epoch seconds (the year 9999)")
    if not isinstance(counters, Mapping):
        raise _field("counters", counters, "must be a mapping of counter name to number")
    for name, x in counters.items():
        if name not in known_counters:
            raise _field(f"counters.{name}", name, f"unknown counter; known: {', '.join(sorted(known_counters))}")
        if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
            raise _field(f"counters.{name}", x, "must be a finite number")
    if not isinstance(attributes, Mapping):
        raise _field("attributes", attributes, "must be a mapping of name to string")
    for name, x in attributes.items():
        if not isinstance(x, str):
            raise _field(f"attributes.{name}", x, "must be a string")
    return user, item, action, float(t), counters, attributes


def events_to_rows(
    events: Sequence[Any],
    specs: list[SlotSpec],
    keyer: EntityKeyer,
    now: float | None,
    max_future: float,
    floor: float = 0.0,
) -> tuple[list[SlotRows], int, list[tuple[int, str]], int, float]:
    """Validate ``events`` and turn the good ones into rows per slot.

    ``now=None`` means the event clock: now is the latest valid event time (at least ``floor``). Returns
    ``(rows per slot, accepted, rejected, too_old, now)``.

    Under the event clock an event after ``MAX_TIME`` is rejected: ``max_future`` bounds nothing
    there (the clock is the latest event), so such an event would move the clock itself past what
    slice arithmetic holds, and every merge after it (and the WAL replay at the next open) would fail.
    """
    known = frozenset(c for s in specs for c in s.counters)
    latest = MAX_TIME if now is None else math.inf
    checked: list[tuple[int, tuple]] = []
    rejected: list[tuple[int, str]] = []
    for i, event in enumerate(events):
        try:
            checked.append((i, _check(_coerce(event), known, latest)))
        except _Bad as exc:
            rejected.append((i, str(exc)))
    if now is None:
        now = max(floor, max((c[1][3] for c in checked), default=0.0))
    cutoffs = [s.plan.bounds(now)[1] for s in specs]
    acc: list[tuple[list, list, list, list]] = [([], [], [], []) for _ in specs]
    accepted = 0
    too_old = 0
    horizon = now + max_future
    for i, (user, item, action, t, counters, attributes) in checked:
        if t > horizon:
            rejected.append((i, f"time: more than max_future ahead of the clock {now:.0f} (got {t!r})"))
            continue
        fed = 0
        old = 0
        for s in specs:
            if s.actions is not None and action not in s.actions:
                continue
            ent = s.entity
            eid = user if ent == "user" else item if ent == "item" else attributes.get(ent)
            if not eid:
                continue
            vf = s.value
            val = item if vf == "item" else user if vf == "user" else action if vf == "action" else attributes.get(vf)
            if not val:
                continue
            row = s.identity.tolist()
            hit = False
            for c, name in enumerate(s.counters):
                x = counters.get(name)
                if x is None:
                    if action == name or (name == "count" and "count" not in counters):
                        x = 1.0
                    else:
                        continue
                row[c] = float(x)
                hit = True
                if s.reduces[c].timed:
                    row[s.tcol[c]] = t
            if not hit:
                continue
            fed += 1
            if t < cutoffs[s.index]:
                old += 1
                continue
            keys, times, values, data = acc[s.index]
            keys.append(keyer(ent, eid))
            times.append(t)
            values.append(keyer.value_hash(s.name, val) if s.hash_values else val)
            data.append(row)
        if fed == 0:
            rejected.append(
                (
                    i,
                    f"action: feeds no slot (no slot counts it or a counter it carries) (got {action!r})",
                )
            )
        elif old == fed:
            too_old += 1
        else:
            accepted += 1
    rejected.sort()
    out = []
    for s in specs:
        keys, times, values, data = acc[s.index]
        if keys:
            out.append(
                SlotRows(s.index, keys, np.asarray(times, dtype=np.float64), values, np.asarray(data, dtype=np.float64))
            )
    return out, accepted, rejected, too_old, now
