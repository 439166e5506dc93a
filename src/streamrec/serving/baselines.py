"""The baselines that ``streamrec bench serving`` measures the feature stage against.

The feature stage (:meth:`FeaturePlan.fetch <streamrec.serving.FeaturePlan.fetch>`) reads a
request's user and candidate features in one profile query and assembles the model's input. Each
baseline here answers the same request another way a serving team does it today:

* :class:`PrecomputedRedisFeatures` — a Feast-style online store: every feature precomputed (here:
  the profile store's answer at the bench's clock) into one Redis hash per entity, read back with
  one pipelined ``HMGET`` round trip per request and decoded into arrays. It does less than the
  feature stage (no windowed merge at read time, no crossing, no sparse ids, no FeatureSet), so
  the comparison favours Redis; the categories read back are checked equal to the served ones.
* :func:`fetch_split` with ``per_entity=False`` — two entity-typed queries (the user's features of
  the user, the item features of the candidates), as a feature store with one entity per feature
  view answers; with ``per_entity=True`` — one query per candidate, the N+1 way of a client that
  asks a key-value profile service entity by entity.

Both :func:`fetch_split` ways read the same profile store as the feature stage and assemble the same
FeatureSet (the bench checks them equal before timing, and ``tests/serving/test_serving_baselines.py``
holds all of them to the feature stage's answers), so the ratios compare equal answers.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np

__all__ = ["PrecomputedRedisFeatures", "fetch_split", "split_features"]


class PrecomputedRedisFeatures:
    """A request's profile features precomputed in Redis hashes, as a Feast-style online store keeps them.

    :meth:`load` gives each user and candidate one hash (``f:user:<id>``, ``f:item:<id>``), one
    field per profile feature of ``plan``, holding the store's answer at ``now``: a number as 8 raw
    float64 bytes, a top-k answer as msgpack ``(values, rows)``, the category as text. :meth:`read`
    is the timed part: one pipelined round trip of ``HMGET`` and the decoding.

    Parameters
    ----------
    client: a ``redis.Redis`` connection.
    plan: the :class:`~streamrec.serving.FeaturePlan` whose profile features are stored.
    """

    def __init__(self, client: Any, plan: Any) -> None:
        self.r = client
        self.user_feats, self.item_feats = plan._split_features()
        self.unames = [f.output_name() for f in self.user_feats]
        self.inames = [f.output_name() for f in self.item_feats]
        self.scalar = [j for j, f in enumerate(self.user_feats) if f.top_k == 0]
        self._enc = msgspec.msgpack.Encoder()
        self._dec = msgspec.msgpack.Decoder()

    def _encode(self, name: str, res: Any) -> bytes:
        if name == "_category":
            return (res.values[0] if res.values else "").encode()
        if res.values is None and len(res.data) == 1 and len(res.data[0]) == 1:
            return struct.pack("<d", res.data[0][0])
        return self._enc.encode((res.values, res.data))

    def load(self, profiles: Any, requests: Sequence[tuple[str, Sequence[str]]], now: float) -> None:
        """Store the answers of ``profiles`` (a :class:`~streamrec.profiles.ProfileClient`) at ``now``
        for every ``(user, candidates)`` of ``requests``, in one pipeline."""
        from streamrec.profiles.types import FeatureQuery

        user_feats, item_feats, unames, inames, encode = (
            self.user_feats, self.item_feats, self.unames, self.inames, self._encode,
        )  # fmt: skip
        pipe = self.r.pipeline(transaction=False)
        for u, items in requests:
            row = profiles.query(FeatureQuery(features=user_feats, entities=[f"user:{u}"], now=now)).results[0]
            pipe.hset(f"f:user:{u}", mapping={n: encode(n, x) for n, x in zip(unames, row, strict=True)})
            answer = profiles.query(FeatureQuery(features=item_feats, entities=[f"item:{i}" for i in items], now=now))
            for i, row in zip(items, answer.results, strict=True):
                pipe.hset(f"f:item:{i}", mapping={n: encode(n, x) for n, x in zip(inames, row, strict=True)})
        pipe.execute()

    def read(self, u: str, items: list[str]) -> tuple[np.ndarray, list[str], dict[str, Any]]:
        """The item features of ``items`` (float64, one row per item, the category column left out),
        their categories, and the user's answers by feature name (a number, or ``[values, rows]``)."""
        r, unames, inames, scalar, dec = self.r, self.unames, self.inames, self.scalar, self._dec
        p = r.pipeline(transaction=False)
        p.hmget(f"f:user:{u}", unames)
        for i in items:
            p.hmget(f"f:item:{i}", inames)
        out = p.execute()
        urow = out[0]
        user = {unames[j]: struct.unpack("<d", urow[j])[0] for j in scalar}
        user.update({unames[j]: dec.decode(v) for j, v in enumerate(urow) if j not in set(scalar)})
        numbers = np.frombuffer(b"".join(v for row in out[1:] for v in row[:-1]), dtype=np.float64)
        return numbers.reshape(len(items), len(inames) - 1), [row[-1].decode() for row in out[1:]], user


def split_features(plan: Any) -> tuple[list[int], list[int]]:
    """Indices of the plan's query features read from the user (user, user_item, user_top) and from items."""
    kinds = {d.name: d.kind for d in plan.dense}
    feats = plan._query_features()
    item = [j for j, f in enumerate(feats) if kinds.get(f.name) == "item" or f.name == "_category"]
    user = [j for j in range(len(feats)) if j not in set(item)]
    return user, item


def fetch_split(plan: Any, client: Any, user: str, items: Sequence[str], now: float, per_entity: bool) -> Any:
    """The plan's FeatureSet from entity-typed queries: the user's features of the user, then the item
    features of the items in one query (``per_entity=False``) or one query per item (the N+1 way)."""
    from streamrec.profiles.types import FeatureQuery, QueryResult

    feats = plan._query_features()
    user_j, item_j = split_features(plan)
    n = len(feats)
    ufeats, ifeats = [feats[j] for j in user_j], [feats[j] for j in item_j]
    urow: list[Any] = [None] * n
    answer = client.query(FeatureQuery(features=ufeats, entities=[f"user:{user}"], now=now))
    for j, res in zip(user_j, answer.results[0], strict=True):
        urow[j] = res
    if per_entity:
        answers = [
            client.query(FeatureQuery(features=ifeats, entities=[f"item:{i}"], now=now)).results[0] for i in items
        ]
    else:
        answers = client.query(FeatureQuery(features=ifeats, entities=[f"item:{i}" for i in items], now=now)).results
    rows = [urow]
    for got in answers:
        row: list[Any] = [None] * n
        for j, res in zip(item_j, got, strict=True):
            row[j] = res
        rows.append(row)
    result = QueryResult(names=[f.output_name() for f in feats], columns=[], keys=[], results=rows, now=now)
    return plan._assemble(result, user, list(items), float(now))
