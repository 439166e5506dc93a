"""A tiny per-(user, category) click-rate policy used by the drift tests: online it adapts, frozen it does not.

It stands in for the demo's online-trained and frozen arms: the same model, either updated by every
event the driver hands back, or trained once on history and then left alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from streamrec.records import ActionEvent
from streamrec.sim import Slate, SlateItem, World


class CategoryPolicy:
    """Rank live items by the user's decayed click rate on the item's category; the last slots explore."""

    def __init__(self, world: World, *, online: bool, half_life_s: float = 1200.0, explore: int = 2, seed: int = 0):
        self.world = world
        self.online = online
        self.half_life_s = half_life_s
        self.explore = explore
        n_cat = world.config.n_topics
        self.clicks = np.zeros((world.n_users, n_cat))
        self.shows = np.zeros((world.n_users, n_cat))
        self.last = np.full(world.n_users, world.now)
        self._rng = np.random.default_rng(seed)

    def train(self, events: Sequence[ActionEvent]) -> None:
        """Count every event (used for the batch stage, and online by record())."""
        for e in events:
            if e.action not in ("show", "click"):
                continue
            u = int(e.user[1:])
            c = int(e.attributes["category"][1:])
            decay = 0.5 ** (max(0.0, e.time - self.last[u]) / self.half_life_s)
            self.clicks[u] *= decay
            self.shows[u] *= decay
            self.last[u] = max(self.last[u], e.time)
            if e.action == "show":
                self.shows[u, c] += 1.0
            else:
                self.clicks[u, c] += 1.0

    def record(self, events: Sequence[ActionEvent]) -> None:
        if self.online:
            self.train(events)

    def recommend(self, user: str, k: int, now: float) -> Slate:
        u = int(user[1:])
        live = self.world._live()
        cats = self.world._topic[live]
        rate = (self.clicks[u] + 0.5) / (self.shows[u] + 5.0)  # prior CTR 0.1: unseen categories get tried
        score = rate[cats] + 1e-9 * live  # ties: newest first
        order = np.argsort(-score)
        n_top = k - self.explore
        chosen = list(order[:n_top]) + list(self._rng.choice(order[n_top:], self.explore, replace=False))
        return Slate([SlateItem(f"i{live[j]}", float(score[j]), "category") for j in chosen])
