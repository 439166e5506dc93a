"""The simulated world: users whose interests drift, items that are born and age, clicks with position bias.

Why it is built this way
------------------------
* **State is arrays, not objects.** Users are rows of ``(n_users, n_topics)`` arrays, items rows of
  growing arrays ordered by birth time. Every step (drift, shifts, births, arrivals, clicks for a
  whole batch of requests) is a handful of NumPy operations; no Python loop runs per user. The only
  per-event Python work is building the :class:`~streamrec.records.ActionEvent` records themselves.
* **Separate random streams.** The seed is split (``SeedSequence.spawn``) into one stream for the
  world's dynamics (drift, shifts, births), one for arrivals and one for clicks. What the world does
  therefore never depends on what was recommended: three worlds with the same seed served by three
  policies see the same users arrive at the same times with the same interests and the same items,
  so their CTRs compare arms on the *same simulated users* (what ``streamrec demo`` needs).
* **Ground truth is public.** :meth:`World.click_probability`, :meth:`World.oracle_slate` and
  :meth:`World.oracle_expected_clicks` expose the true model, so tests and the demo measure regret
  and oracle CTR instead of guessing.

The model (equations and defaults) is written down in ``docs/sim.md``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from streamrec.errors import InvalidInputError
from streamrec.records import ActionEvent
from streamrec.sim.config import WorldConfig

if TYPE_CHECKING:
    from streamrec.sim.history import History
    from streamrec.sim.protocol import Recommender

__all__ = ["Feedback", "World"]

_DAY = 86400.0


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class Feedback:
    """What :meth:`World.respond_many` returns for a batch of requests.

    ``events`` are sorted by time; ``clicks[r]`` and ``expected_clicks[r]`` are the sampled and the
    expected (true probability, position bias included) number of clicks of request ``r``;
    ``impressions[r]`` is the number of items shown.
    """

    events: list[ActionEvent]
    impressions: np.ndarray
    clicks: np.ndarray
    expected_clicks: np.ndarray


class World:
    """A reproducible world of users and items on a simulated clock (seconds).

    Parameters
    ----------
    config
        The world's parameters (:class:`~streamrec.sim.WorldConfig`); defaults if omitted.
    seed
        Seed of every random draw. Same ``(config, seed)`` and the same calls give identical events.
    **overrides
        Fields of :class:`WorldConfig` to change, e.g. ``World(n_users=200)``.

    Notes
    -----
    User ids are ``"u<index>"``, item ids ``"i<index>"`` (items numbered in birth order). Use
    :meth:`arrivals` to sample the requests of the next ``dt`` seconds, answer them with
    :meth:`respond` / :meth:`respond_many`, then :meth:`advance` the clock by ``dt``. The drivers
    (:class:`~streamrec.sim.InProcessDriver`, :class:`~streamrec.sim.HttpDriver`) do exactly that.

    Examples
    --------
    >>> world = World(seed=7, n_users=50, n_items=40)
    >>> users, times = world.arrivals(600.0)
    >>> len(users) > 0
    True
    >>> user = world.user_id(users[0])
    >>> slate = world.oracle_slate(user, k=3)
    >>> events = world.respond(user, slate, request_id="r1", time=float(times[0]))
    >>> [e.action for e in events[:3]]
    ['show', 'show', 'show']
    >>> sorted(events[0].attributes)
    ['author', 'category']
    >>> world.advance(600.0)
    >>> world.now - world.config.start_time
    600.0
    """

    def __init__(self, config: WorldConfig | None = None, *, seed: int = 0, **overrides: object) -> None:
        config = config or WorldConfig()
        if overrides:
            known = {f.name for f in dataclasses.fields(WorldConfig)}
            for name in overrides:
                if name not in known:
                    raise InvalidInputError(name, overrides[name], "unknown WorldConfig field")
            config = dataclasses.replace(config, **overrides)
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise InvalidInputError("seed", seed, "must be a non-negative integer")
        self.config = config
        self.seed = int(seed)
        init, dyn, arrive, click = (np.random.default_rng(s) for s in np.random.SeedSequence(self.seed).spawn(4))
        self._dyn, self._arrive, self._click = dyn, arrive, click
        c = config
        self.now = float(c.start_time)
        self.shifts: list[tuple[float, int]] = []
        """``(time, number of users)`` of every sudden shift so far."""

        self._eye = np.eye(c.n_topics)
        self._author_topic = init.integers(0, c.n_topics, c.n_authors)
        self._fav = init.integers(0, c.n_topics, c.n_users)
        self._g = init.standard_normal((c.n_users, c.n_topics))
        self._trend = init.standard_normal(c.n_topics)
        rates = (np.arange(c.n_users) + 1.0) ** -c.activity_zipf
        rates = init.permutation(rates)
        self._rates = rates * (c.n_users / c.mean_request_interval_s) / rates.sum()

        cap = max(1024, 2 * c.n_items)
        self._n = 0
        self._vec = np.empty((cap, c.n_topics))
        self._quality = np.empty(cap)
        self._birth = np.empty(cap)
        self._retire = np.empty(cap)
        self._topic = np.empty(cap, dtype=np.int64)
        self._author = np.empty(cap, dtype=np.int64)
        self._attrs: list[dict[str, str]] = []
        life = c.item_lifetime_s * init.uniform(0.5, 1.5, c.n_items)
        births = self.now - init.uniform(0.0, 1.0, c.n_items) * life  # ages uniform over each life
        order = np.argsort(births, kind="stable")
        self._add_items(births[order], init, lifetimes=life[order])
        schedule = list(c.shift_times)
        self._schedule = sorted(self.now + t for t in schedule)
        self._next_periodic = self.now + c.shift_every_s if c.shift_every_s > 0 else np.inf

    # -- ids ------------------------------------------------------------------------------------

    @property
    def n_users(self) -> int:
        return self.config.n_users

    @property
    def n_items_total(self) -> int:
        """Items ever born, live or retired."""
        return self._n

    def user_id(self, index: int) -> str:
        """The id of user ``index`` (``"u<index>"``)."""
        return f"u{int(index)}"

    def item_id(self, index: int) -> str:
        """The id of item ``index`` (``"i<index>"``)."""
        return f"i{int(index)}"

    def user_index(self, user: str) -> int:
        """Index of a user id; :class:`InvalidInputError` naming ``user`` if it is not in this world."""
        return self._parse("user", user, "u", self.config.n_users)

    def item_index(self, item: str) -> int:
        """Index of an item id; :class:`InvalidInputError` naming ``item`` if it was never born here."""
        return self._parse("item", item, "i", self._n)

    @staticmethod
    def _parse(field: str, value: object, prefix: str, limit: int) -> int:
        if isinstance(value, str) and value.startswith(prefix) and value[1:].isdigit():
            index = int(value[1:])
            if index < limit:
                return index
        raise InvalidInputError(field, value, f"is not a {field} of this world ({prefix}0..{prefix}{limit - 1})")

    # -- items ----------------------------------------------------------------------------------

    def _add_items(self, births: np.ndarray, rng: np.random.Generator, lifetimes: np.ndarray | None = None) -> None:
        c = self.config
        m = len(births)
        if m == 0:
            return
        if self._n + m > len(self._birth):
            cap = max(2 * len(self._birth), self._n + m)
            for name in ("_vec", "_quality", "_birth", "_retire", "_topic", "_author"):
                old = getattr(self, name)
                new = np.empty((cap, *old.shape[1:]), dtype=old.dtype)
                new[: self._n] = old[: self._n]
                setattr(self, name, new)
        if lifetimes is None:
            lifetimes = c.item_lifetime_s * rng.uniform(0.5, 1.5, m)
        author = rng.integers(0, c.n_authors, m)
        own = rng.random(m) < c.author_topic_share
        topic = np.where(own, self._author_topic[author], rng.integers(0, c.n_topics, m))
        vec = self._eye[topic] + c.item_topic_noise * rng.standard_normal((m, c.n_topics))
        quality = c.quality_std * rng.standard_normal(m)
        s = slice(self._n, self._n + m)
        self._vec[s], self._quality[s], self._topic[s], self._author[s] = vec, quality, topic, author
        self._birth[s], self._retire[s] = births, births + lifetimes
        self._attrs.extend({"category": f"c{t:02d}", "author": f"a{a:04d}"} for t, a in zip(topic, author, strict=True))
        self._n += m

    def _live(self, time: float | None = None) -> np.ndarray:
        t = self.now if time is None else time
        # Items are in birth order and live at most 1.5 mean lifetimes: only a tail can be live.
        lo = int(np.searchsorted(self._birth[: self._n], t - 1.5 * self.config.item_lifetime_s, side="left"))
        hi = int(np.searchsorted(self._birth[: self._n], t, side="right"))
        idx = np.arange(lo, hi)
        return idx[self._retire[lo:hi] > t]

    def live_items(self, time: float | None = None) -> list[str]:
        """Ids of the items live at ``time`` (default: now), oldest first."""
        return [f"i{i}" for i in self._live(time)]

    def item_attributes(self, item: str) -> dict[str, str]:
        """``{"category": "c03", "author": "a0042"}``: what events carry in ``ActionEvent.attributes``."""
        return dict(self._attrs[self.item_index(item)])

    def item_birth(self, item: str) -> float:
        """Unix time the item was born (it is live from then until it retires)."""
        return float(self._birth[self.item_index(item)])

    def fresh_items(self, k: int, time: float | None = None) -> list[str]:
        """The ``k`` most recently born live items, newest first."""
        return [f"i{i}" for i in self._live(time)[::-1][:k]]

    def popular_items(self, k: int, time: float | None = None) -> list[str]:
        """The ``k`` live items with the highest true click probability averaged over all users (ground truth).

        A policy that learns popularity from clicks is :class:`~streamrec.sim.PopularityPolicy`.
        """
        t = self.now if time is None else time
        live = self._live(t)
        p = _sigmoid(self._logits_matrix(np.arange(self.config.n_users), live, np.full(self.config.n_users, t)))
        order = np.argsort(-p.mean(axis=0), kind="stable")[:k]
        return [f"i{i}" for i in live[order]]

    # -- users ----------------------------------------------------------------------------------

    def _user_vecs(self, users: np.ndarray) -> np.ndarray:
        c = self.config
        return c.interest_strength * self._eye[self._fav[users]] + c.interest_noise * self._g[users]

    def interests(self, user: str) -> np.ndarray:
        """A copy of the user's current latent interest vector (length ``n_topics``)."""
        return self._user_vecs(np.array([self.user_index(user)]))[0].copy()

    def favourite_topic(self, user: str) -> int:
        """The topic the user currently likes most (it changes only at a sudden shift)."""
        return int(self._fav[self.user_index(user)])

    def activity_rates(self) -> np.ndarray:
        """Requests per second of every user (Zipf-like; a copy)."""
        return self._rates.copy()

    # -- ground truth ---------------------------------------------------------------------------

    def _logits_matrix(self, users: np.ndarray, items: np.ndarray, times: np.ndarray) -> np.ndarray:
        """Click logits of every (user r, item j) pair given examination: ``(len(users), len(items))``."""
        c = self.config
        base = self._quality[items] + self._birth[items] / c.age_scale_s + self._item_trend(items)
        return c.bias + self._user_vecs(users) @ self._vec[items].T + base[None, :] - (times / c.age_scale_s)[:, None]

    def _logits_slates(self, users: np.ndarray, slates: np.ndarray, times: np.ndarray) -> np.ndarray:
        """Click logits of each request's own slate: ``slates`` is ``(R, k)`` item indices (>= 0)."""
        c = self.config
        affinity = np.einsum("rd,rkd->rk", self._user_vecs(users), self._vec[slates])
        age = np.maximum(times[:, None] - self._birth[slates], 0.0)
        return c.bias + affinity + self._quality[slates] + self._item_trend(slates) - age / c.age_scale_s

    def _item_trend(self, items: np.ndarray) -> np.ndarray:
        return self.config.trend_strength * self._trend[self._topic[items]]

    def topic_trends(self) -> np.ndarray:
        """The current logit offset of every topic shared by all users (``trend_strength`` times an OU state)."""
        return self.config.trend_strength * self._trend

    def examination_probability(self, k: int) -> np.ndarray:
        """Probability that a user looks at each of the first ``k`` positions: ``(1 + r) ** -position_bias``."""
        return (1.0 + np.arange(k)) ** -self.config.position_bias

    def click_probability(self, user: str, items: Sequence[str], time: float | None = None) -> np.ndarray:
        """True probability that ``user`` clicks each item *once examined*, at ``time`` (default now).

        Multiply by :meth:`examination_probability` for the click probability at a position.
        """
        t = self.now if time is None else float(time)
        u = np.array([self.user_index(user)])
        idx = np.array([self.item_index(i) for i in items], dtype=np.int64).reshape(1, -1)
        return _sigmoid(self._logits_slates(u, idx, np.array([t])))[0]

    def oracle_slate(self, user: str, k: int, time: float | None = None) -> list[str]:
        """The ``k`` live items with the highest true click probability for ``user``, best first."""
        t = self.now if time is None else float(time)
        live = self._live(self.now)
        logits = self._logits_matrix(np.array([self.user_index(user)]), live, np.array([t]))[0]
        return [f"i{i}" for i in live[np.argsort(-logits, kind="stable")[:k]]]

    def oracle_expected_clicks(self, users: np.ndarray, times: np.ndarray, k: int) -> np.ndarray:
        """Expected clicks of the oracle's slate for each request ``(users[r], times[r])`` (vectorized)."""
        live = self._live(self.now)
        if len(users) == 0 or len(live) == 0:
            return np.zeros(len(users))
        p = _sigmoid(self._logits_matrix(np.asarray(users), live, np.asarray(times, dtype=float)))
        kk = min(k, len(live))
        top = -np.sort(-np.partition(p, len(live) - kk, axis=1)[:, len(live) - kk :], axis=1)
        return top @ self.examination_probability(kk)

    # -- the clock ------------------------------------------------------------------------------

    def arrivals(self, dt: float, activity_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """Sample the requests of ``[now, now + dt)``: user indices and request times, sorted by time.

        Each user sends a Poisson number of requests at their own (Zipf-like) rate times
        ``activity_scale``. Does not move the clock; call :meth:`advance` after serving them.
        """
        if not dt > 0:
            raise InvalidInputError("dt", dt, "must be > 0 seconds")
        if not activity_scale >= 0:
            raise InvalidInputError("activity_scale", activity_scale, "must be >= 0")
        counts = self._arrive.poisson(self._rates * (dt * activity_scale))
        users = np.repeat(np.arange(self.config.n_users), counts)
        times = self.now + self._arrive.random(len(users)) * dt
        order = np.argsort(times, kind="stable")
        return users[order], times[order]

    def advance(self, dt: float) -> None:
        """Move the clock by ``dt`` seconds: drift every user, apply due shifts, give birth to items."""
        if not dt > 0:
            raise InvalidInputError("dt", dt, "must be > 0 seconds")
        c, rng = self.config, self._dyn
        end = self.now + dt
        # Slow drift: an Ornstein-Uhlenbeck step, exact for any dt, stationary N(0, 1) per component.
        a = np.exp(-dt / c.drift_tau_s)
        self._g = a * self._g + np.sqrt(1.0 - a * a) * rng.standard_normal(self._g.shape)
        # Topic trends: the same exact OU step, shared by everyone.
        b = np.exp(-dt / c.trend_tau_s)
        self._trend = b * self._trend + np.sqrt(1.0 - b * b) * rng.standard_normal(c.n_topics)
        # Random sudden shifts: each user jumps with probability 1 - exp(-rate * dt).
        jump = rng.random(c.n_users) < -np.expm1(-c.shift_rate_per_day * dt / _DAY)
        if jump.any():
            self._shift(np.flatnonzero(jump), end)
        # Scheduled shifts falling in (now, end].
        while self._schedule and self._schedule[0] <= end:
            self.shift_users(fraction=c.shift_fraction, time=self._schedule.pop(0))
        while self._next_periodic <= end:
            self.shift_users(fraction=c.shift_fraction, time=self._next_periodic)
            self._next_periodic += c.shift_every_s
        # Births: a Poisson process that keeps the live pool near n_items.
        born = rng.poisson(c.n_items / c.item_lifetime_s * dt)
        self._add_items(np.sort(self.now + rng.random(born) * dt), rng)
        self.now = end

    def shift_users(
        self, fraction: float | None = None, users: Sequence[str] | None = None, time: float | None = None
    ) -> np.ndarray:
        """Make a random ``fraction`` of users (or the given ``users``) jump to a new favourite topic.

        Their Gaussian interest part is redrawn as well. Returns the indices of the users that moved.
        """
        if (fraction is None) == (users is None):
            raise InvalidInputError("fraction", fraction, "give exactly one of fraction and users")
        if users is not None:
            idx = np.array([self.user_index(u) for u in users], dtype=np.int64)
        else:
            if not 0.0 <= fraction <= 1.0:  # type: ignore[operator]
                raise InvalidInputError("fraction", fraction, "must be in [0, 1]")
            n = round(fraction * self.config.n_users)  # type: ignore[operator]
            idx = np.sort(self._dyn.choice(self.config.n_users, n, replace=False))
        self._shift(idx, self.now if time is None else time)
        return idx

    def _shift(self, idx: np.ndarray, time: float) -> None:
        c, rng = self.config, self._dyn
        self._fav[idx] = (self._fav[idx] + rng.integers(1, c.n_topics, len(idx))) % c.n_topics
        self._g[idx] = rng.standard_normal((len(idx), c.n_topics))
        self.shifts.append((float(time), len(idx)))

    # -- feedback -------------------------------------------------------------------------------

    def respond(
        self,
        user: str,
        items: Sequence[str],
        request_id: str,
        time: float | None = None,
        *,
        impressions: bool = True,
    ) -> list[ActionEvent]:
        """Show ``items`` (best first) to ``user``; return the events the user produces, sorted by time.

        One request of :meth:`respond_many`; see there for what the events are.
        """
        t = self.now if time is None else float(time)
        slate = np.array([[self.item_index(i) for i in items]], dtype=np.int64).reshape(1, -1)
        return self.respond_many(
            np.array([self.user_index(user)]), slate, np.array([t]), [request_id], impressions=impressions
        ).events

    def respond_many(
        self,
        users: np.ndarray,
        slates: np.ndarray,
        times: np.ndarray,
        request_ids: Sequence[str],
        *,
        impressions: bool = True,
    ) -> Feedback:
        """Sample what a batch of requests does with the slates shown (vectorized over requests and positions).

        Parameters
        ----------
        users
            ``(R,)`` user indices.
        slates
            ``(R, k)`` item indices, best first; ``-1`` pads a slate shorter than ``k``.
        times
            ``(R,)`` request times.
        request_ids
            One id per request, copied into every event of that request.
        impressions
            Also emit one ``action="show"`` event per item shown (what profile counters of
            shows and CTR features count).

        Returns
        -------
        Feedback
            Events: ``show`` at the request time (counter ``position``), ``click`` at
            ``time + 1 + position`` (counters ``position`` and ``dwell_ms``), ``like`` after the dwell.
            All carry the item's ``category`` and ``author`` attributes and the request id.
            Which items are clicked: examined with probability ``(1 + r) ** -position_bias``, then
            clicked with the true probability :meth:`click_probability`.
        """
        users = np.asarray(users, dtype=np.int64)
        slates = np.asarray(slates, dtype=np.int64)
        if slates.ndim != 2 or slates.shape[0] != len(users):
            raise InvalidInputError("slates", slates.shape, f"must be (len(users), k) = ({len(users)}, k)")
        times = np.asarray(times, dtype=float)
        if len(request_ids) != len(users) or len(times) != len(users):
            raise InvalidInputError("request_ids", len(request_ids), "need one request id and time per user")
        if slates.size and (slates.max() >= self._n or slates.min() < -1):
            raise InvalidInputError("slates", slates, "hold an item index this world never gave birth to")
        c = self.config
        r_, k = slates.shape
        valid = slates >= 0
        safe = np.where(valid, slates, 0)
        logits = self._logits_slates(users, safe, times) if r_ and k else np.zeros((r_, k))
        p_click = _sigmoid(logits) * self.examination_probability(k)[None, :] * valid
        # Draw full matrices whatever the outcome, so the stream stays aligned across policies.
        u_click, u_like = self._click.random((r_, k)), self._click.random((r_, k))
        dwell = c.dwell_mean_s * np.exp(
            0.3 * np.clip(logits - c.bias, -5, 5) + 0.6 * self._click.standard_normal((r_, k))
        )
        click = u_click < p_click
        like = click & (u_like < _sigmoid(logits + c.like_offset))

        events: list[ActionEvent] = []
        attrs = self._attrs
        for r, cc in zip(*np.nonzero(valid if impressions else click), strict=True):
            user, item, t, rid = f"u{users[r]}", f"i{safe[r, cc]}", float(times[r]), request_ids[r]
            a = attrs[safe[r, cc]]
            pos = float(cc)
            if impressions:
                imp = ActionEvent(
                    user=user, item=item, action="show", time=t,
                    counters={"position": pos}, attributes=dict(a), request_id=rid,
                )  # fmt: skip
                events.append(imp)
            if click[r, cc]:
                tc = t + 1.0 + pos
                ms = float(dwell[r, cc] * 1000.0)
                hit = ActionEvent(
                    user=user, item=item, action="click", time=tc,
                    counters={"position": pos, "dwell_ms": ms}, attributes=dict(a), request_id=rid,
                )  # fmt: skip
                events.append(hit)
                if like[r, cc]:
                    liked = ActionEvent(
                        user=user, item=item, action="like", time=tc + ms / 1000.0,
                        attributes=dict(a), request_id=rid,
                    )  # fmt: skip
                    events.append(liked)
        events.sort(key=lambda e: e.time)
        return Feedback(
            events=events,
            impressions=valid.sum(axis=1),
            clicks=click.sum(axis=1),
            expected_clicks=p_click.sum(axis=1),
        )

    # -- history --------------------------------------------------------------------------------

    def generate_history(self, days: float, policy: Recommender | None = None, **kwargs: Any) -> History:
        """Run ``days`` of simulated traffic from now and return it as a :class:`~streamrec.sim.History`.

        The world's clock, users and items move forward by ``days`` (live traffic continues from
        there). ``policy`` defaults to :class:`~streamrec.sim.RandomPolicy`; see
        :func:`streamrec.sim.generate_history` for the other arguments.
        """
        from streamrec.sim.history import generate_history

        return generate_history(self, days, policy=policy, **kwargs)
