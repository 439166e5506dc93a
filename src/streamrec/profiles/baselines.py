"""The baseline that ``streamrec bench profiles`` measures a profile node against: windowed counters in Redis.

:class:`RedisProfiles` is the feature store a careful engineer builds on Redis today (the
online-store layout of Feast or Tecton's Redis store, with the windowed counters that a
Flink-to-Redis pipeline keeps): one hash per (slot, entity, time bucket) at the *same
granularities streamrec compacts to* (minute, hour and day buckets, every event written to all
three), fields ``value\x1fcounter`` bumped with ``HINCRBY``. Increments are pre-aggregated per
batch and sent in one ``MULTI``/``EXEC`` pipeline, and every bucket gets an ``EXPIREAT`` so it
lives exactly as long as a query can need it. A query covers each window with the fewest buckets
(whole days, then whole hours, then minutes), fetches the union of all buckets the request needs
with one pipelined ``HGETALL`` each, and merges on the client.

Why the comparison is fair: entities are keyed with the same keyed hash (:class:`EntityKeyer`), so
neither side stores raw ids; a window starts where streamrec's tiers start it
(:meth:`RedisProfiles.window_start`), so a window never reads more buckets here than streamrec
merges; the answers are the same (the bench checks them equal on a sample of users before timing,
and ``tests/profiles/test_bench_profiles.py`` holds them equal to :class:`ProfileStore`'s); and the
bench runs Redis with ``appendfsync always``, because a streamrec write is durable when
acknowledged.
"""

from __future__ import annotations

import math
import time
from typing import Any

from streamrec.profiles.config import ProfilesConfig
from streamrec.profiles.events import EntityKeyer
from streamrec.profiles.types import Feature

__all__ = ["WINDOW_SECONDS", "RedisProfiles"]

#: The seconds of each window the bench's request asks for.
WINDOW_SECONDS = {"5m": 300, "1h": 3600, "1d": 86400, "7d": 7 * 86400, "30d": 30 * 86400}

_GRAINS = ((b"m", 60, 2 * 3600 + 60), (b"h", 3600, 3 * 86400 + 3600), (b"d", 86400, 31 * 86400))


class RedisProfiles:
    """The same profiles as Redis hashes per (slot, entity, bucket); see the module docstring.

    Parameters
    ----------
    client: a ``redis.Redis`` connection.
    cfg: the profile config (slots, tiers, secret: entities are keyed the same way, so neither
        side stores raw ids).
    """

    def __init__(self, client: Any, cfg: ProfilesConfig) -> None:
        self.r = client
        self.cfg = cfg
        self.keyer = EntityKeyer(cfg.secret)
        self.slots = [
            (name.encode(), s.entity, s.value, [c.encode() for c in s.counters], list(s.counters))
            for name, s in cfg.slots.items()
        ]
        self.counters = {name: list(s.counters) for name, s in cfg.slots.items()}
        self._counter_index = {n: {c.encode(): i for i, c in enumerate(cs)} for n, cs in self.counters.items()}
        tiers = cfg.tiers
        self.widths = [int(t.width) for t in tiers]
        self.untils = [float(t.until) for t in tiers[:-1]]

    # ---- write

    def write(self, events: list[dict[str, Any]]) -> None:
        """Pre-aggregate a batch's increments, then one MULTI/EXEC pipeline of HINCRBY + EXPIREAT.

        Buckets that would already be expired (a minute bucket of an event three hours old) are not
        written at all, as streamrec places old events straight into coarse slices. MULTI/EXEC makes
        the batch one AOF write, so ``appendfsync always`` costs one fsync per batch.
        """
        acc: dict[bytes, dict[bytes, int]] = {}
        expire: dict[bytes, int] = {}
        keyer = self.keyer
        wall = time.time()
        for ev in events:
            t = ev["time"]
            action = ev["action"]
            counters = ev.get("counters") or {}
            attrs = ev.get("attributes") or {}
            grains = []
            for g, w, keep in _GRAINS:
                until = (int(t // w) + 1) * w + keep
                if until > wall:
                    grains.append((g, int(t // w), until))
            for slot_b, entity, value, counters_b, names in self.slots:
                eid = ev[entity] if entity in ("user", "item") else attrs.get(entity)
                val = ev[value] if value in ("user", "item", "action") else attrs.get(value)
                if not eid or not val:
                    continue
                incs = []
                for c_b, c in zip(counters_b, names, strict=True):
                    x = counters.get(c)
                    if x is None:
                        if action == c or (c == "count" and "count" not in counters):
                            x = 1
                        else:
                            continue
                    incs.append((val.encode() + b"\x1f" + c_b, int(x)))
                if not incs:
                    continue
                ekey = keyer(entity, eid)
                for g, bucket, until in grains:
                    key = b"%s|%s|%s|%d" % (slot_b, ekey, g, bucket)
                    fields = acc.get(key)
                    if fields is None:
                        fields = acc[key] = {}
                        expire[key] = until
                    for f, x in incs:
                        fields[f] = fields.get(f, 0) + x
        pipe = self.r.pipeline(transaction=True)
        for key, fields in acc.items():
            for f, x in fields.items():
                pipe.hincrby(key, f, x)
            pipe.expireat(key, expire[key])
        pipe.execute()

    # ---- read

    def window_start(self, seconds: float, now: float) -> int:
        """Start of a window, rounded down to the width of the slices that hold it (streamrec's rule)."""
        start = now - seconds
        width = self.widths[-1]
        for k, until in enumerate(self.untils):
            boundary = math.floor((now - until) / self.widths[k + 1]) * self.widths[k + 1]
            if start >= boundary:
                width = self.widths[k]
                break
        return int(math.floor(start / width) * width)

    @staticmethod
    def cover(start: int, now: float) -> list[tuple[bytes, int]]:
        """Fewest (grain, bucket) covering ``[start, now]``: whole days, then whole hours, then minutes."""
        end = int(now // 60) * 60 + 60
        out = []
        t = start
        while t < end:
            for g, w, _ in reversed(_GRAINS):
                if t % w == 0 and t + w <= end:
                    out.append((g, t // w))
                    t += w
                    break
            else:  # start not minute-aligned (cannot happen with the default tiers)
                out.append((b"m", t // 60))
                t = (t // 60 + 1) * 60
        return out

    def query(self, user: str, features: list[Feature], now: float) -> list[tuple[list[str] | None, list[list[float]]]]:
        """Answer ``features`` for one user: one pipeline of HGETALL, then merge on the client."""
        ekey = self.keyer("user", user)
        plans = []
        covers: dict[tuple[str, int], list[bytes]] = {}
        for f in features:
            start = self.window_start(WINDOW_SECONDS[f.window], now)
            ck = (f.slot, start)
            if ck not in covers:
                slot_b = f.slot.encode()
                covers[ck] = [b"%s|%s|%s|%d" % (slot_b, ekey, g, b) for g, b in self.cover(start, now)]
            plans.append(ck)
        keys = list({k for ks in covers.values() for k in ks})
        pipe = self.r.pipeline(transaction=False)
        for k in keys:
            pipe.hgetall(k)
        hashes = dict(zip(keys, pipe.execute(), strict=True))
        # Merge each (slot, window) once: value -> counter vector.
        merged: dict[tuple[str, int], dict[str, list[float]]] = {}
        for ck, ks in covers.items():
            index = self._counter_index[ck[0]]
            nc = len(index)
            agg: dict[bytes, list[float]] = {}
            for k in ks:
                for field, x in hashes[k].items():
                    value, _, counter = field.rpartition(b"\x1f")
                    vec = agg.get(value)
                    if vec is None:
                        vec = agg[value] = [0.0] * nc
                    vec[index[counter]] += int(x)
            merged[ck] = {v.decode(): vec for v, vec in agg.items()}
        return [self._answer(f, merged[ck]) for f, ck in zip(features, plans, strict=True)]

    def _answer(self, f: Feature, agg: dict[str, list[float]]) -> tuple[list[str] | None, list[list[float]]]:
        names = self.counters[f.slot]
        if f.values is not None:
            agg = {v: x for v, x in agg.items() if v in f.values}
        if f.agg == "distinct":
            return None, [[float(len(agg))]]
        if f.agg == "ratio":
            ni, di = names.index(f.numerator), names.index(f.denominator)

            def ratio(vec: list[float]) -> float:
                den = vec[di] + f.beta
                return (vec[ni] + f.alpha) / den if den != 0 else 0.0

            if not f.top_k:
                tot = [sum(v[i] for v in agg.values()) for i in range(len(names))]
                return None, [[ratio(tot)]]
            by_ratio = f.by in (None, "ratio")
            ranked = sorted(
                agg.items(), key=lambda kv: (-(ratio(kv[1]) if by_ratio else kv[1][names.index(f.by)]), kv[0])
            )
            top = ranked[: f.top_k]
            return [v for v, _ in top], [[ratio(x)] for _, x in top]
        cols = [names.index(c) for c in (f.counters or names)]
        if not f.top_k:
            tot = [0.0] * len(names)
            for vec in agg.values():
                for i, x in enumerate(vec):
                    tot[i] += x
            return None, [[tot[c] for c in cols]]
        bi = names.index(f.by or names[cols[0]])
        top = sorted(agg.items(), key=lambda kv: (-kv[1][bi], kv[0]))[: f.top_k]
        return [v for v, _ in top], [[x[c] for c in cols] for _, x in top]
