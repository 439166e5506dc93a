"""Baseline policies that live inside the simulator: popularity only, random, and the oracle.

They are the reference arms of ``streamrec demo`` and the tests, so they must not depend on the
recommender they are compared with. Each implements the :class:`~streamrec.sim.Recommender`
protocol. Popularity learns only from the events it is given (decayed click counts per item), like
a real popularity service; random and oracle read the world's catalogue of live items (a real
service knows which items exist), and the oracle also reads the true click model (an upper bound no
real policy can reach).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from streamrec.errors import InvalidInputError
from streamrec.records import ActionEvent
from streamrec.sim.protocol import Slate, SlateItem
from streamrec.sim.world import World

__all__ = ["OraclePolicy", "PopularityPolicy", "RandomPolicy"]


class RandomPolicy:
    """Recommend ``k`` live items uniformly at random (source ``"random"``).

    Examples
    --------
    >>> world = World(seed=0, n_users=20, n_items=30)
    >>> len(RandomPolicy(world, seed=1).recommend("u3", 5, world.now).items)
    5
    """

    def __init__(self, world: World, seed: int = 0) -> None:
        self.world = world
        self._rng = np.random.default_rng(seed)

    def recommend(self, user: str, k: int, now: float) -> Slate:
        live = self.world._live()
        pick = self._rng.choice(len(live), min(k, len(live)), replace=False)
        return Slate([SlateItem(f"i{live[j]}", 0.0, "random") for j in pick])

    def record(self, events: Sequence[ActionEvent]) -> None:
        pass


class PopularityPolicy:
    """Recommend the live items with the most recent clicks (exponentially decayed), the same for everyone.

    Parameters
    ----------
    world
        The world whose live items are the candidates.
    half_life_s
        A click counts half as much after this many seconds.
    explore
        Slots of each slate (the last ones) given to random live items, so new items can earn clicks.

    Examples
    --------
    >>> world = World(seed=0, n_users=20, n_items=30)
    >>> policy = PopularityPolicy(world)
    >>> policy.record([ActionEvent(user="u1", item="i5", action="click", time=world.now)])
    >>> policy.recommend("u2", 3, world.now).items[0]
    SlateItem(item='i5', score=1.0, source='popular')
    """

    def __init__(self, world: World, half_life_s: float = 1800.0, explore: int = 1, seed: int = 0) -> None:
        if not half_life_s > 0:
            raise InvalidInputError("half_life_s", half_life_s, "must be > 0")
        if explore < 0:
            raise InvalidInputError("explore", explore, "must be >= 0")
        self.world = world
        self.half_life_s = float(half_life_s)
        self.explore = explore
        self._rng = np.random.default_rng(seed)
        # Counts are stored as c * 2^((t - t0) / h) so that decay needs no per-item update.
        self._t0 = world.now
        self._counts = np.zeros(1024)

    def _scale(self, t: float) -> float:
        return float(2.0 ** ((t - self._t0) / self.half_life_s))

    def record(self, events: Sequence[ActionEvent]) -> None:
        clicks = [e for e in events if e.action == "click"]
        if not clicks:
            return
        idx = np.array([self.world.item_index(e.item) for e in clicks])
        if idx.max() >= len(self._counts):
            self._counts = np.concatenate([self._counts, np.zeros(max(len(self._counts), idx.max() + 1))])
        if max(e.time for e in clicks) - self._t0 > 500 * self.half_life_s:  # rebase before 2^x overflows
            s = self._scale(clicks[0].time)
            self._counts /= s
            self._t0 = clicks[0].time
        np.add.at(self._counts, idx, [self._scale(e.time) for e in clicks])

    def recommend(self, user: str, k: int, now: float) -> Slate:
        live = self.world._live()
        counts = np.zeros(len(live))
        known = live < len(self._counts)
        counts[known] = self._counts[live[known]] / self._scale(now)
        # Most clicked first; ties (e.g. never clicked) go to the newest item.
        order = np.lexsort((-live, -counts))
        n_pop = max(0, min(k, len(live)) - self.explore)
        chosen = list(order[:n_pop])
        rest = order[n_pop:]
        if len(rest):
            chosen += list(self._rng.choice(rest, min(k - n_pop, len(rest)), replace=False))
        return Slate(
            [SlateItem(f"i{live[j]}", round(float(counts[j]), 6), "popular" if n < n_pop else "explore")
             for n, j in enumerate(chosen)]
        )  # fmt: skip


class OraclePolicy:
    """Rank live items by the true click probability of the user now: the upper bound (source ``"oracle"``).

    Examples
    --------
    >>> world = World(seed=0, n_users=20, n_items=30)
    >>> slate = OraclePolicy(world).recommend("u3", 3, world.now)
    >>> [s.item for s in slate.items] == world.oracle_slate("u3", 3)
    True
    """

    def __init__(self, world: World) -> None:
        self.world = world

    def recommend(self, user: str, k: int, now: float) -> Slate:
        items = self.world.oracle_slate(user, k, time=now)
        p = self.world.click_probability(user, items, time=now)
        return Slate([SlateItem(i, float(q), "oracle") for i, q in zip(items, p, strict=True)])

    def record(self, events: Sequence[ActionEvent]) -> None:
        pass
