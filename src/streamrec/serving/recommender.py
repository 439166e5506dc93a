"""The recommender: retrieve → features → rank → top k → log impressions.

One request (:meth:`Recommender.recommend`):

1. **retrieve** candidates from several sources with per-source quotas (``retrieval.py``);
2. **features** of the user and every candidate from one batched profile query (``features.py``);
3. **rank**: the serving model scores the whole candidate batch in one forward pass and the
   probabilities are corrected for negative sampling (``sigmoid(logit + log r)``, monotone in the
   logit, so it changes the scores shown, not the order); the top ``k`` by score (stable: ties keep
   retrieval order), skipping items whose category already has ``category_cap`` items;
4. **log** one :class:`~streamrec.records.Impression` per returned item to ``impressions``: the
   request id, the position, the served score and the exact sparse ids and dense vector the model
   scored, so the joiner's examples are the serving inputs (no training/serving skew).

Each stage is timed (``Recommendation.timings``, and the ``streamrec_recommend_stage_seconds``
histogram). Without a model the ranker falls back to a named dense column (by default the
item's smoothed 1-day CTR): a popularity arm needs no second code path. Each request and each
recorded batch also feeds :attr:`Recommender.live`, the time-bucketed stats of the dashboard
(``live.py``): O(k) per request, one pass over the batch per record.

:meth:`Recommender.record` is where actions enter: validated (bad ones reported by index, the
valid ones kept), stamped with the catalogue fields (``slots.py``), appended to ``actions``, and
then, when the recommender owns the profile store (embedded mode), written to it. The order is
the design (``docs/serving.md``, "A batch reaches the log and the profiles, or neither"): every
check runs before anything is stored, the profile store's own rules included (a dry run of them);
the log is the record of what happened, so it is written first, and profiles follow it as the
ingest follows it in cluster mode. A profile write that fails after the append is not the
client's to resend (the log has the batch): the recommender keeps the batch and applies it before
any later one, refusing new batches until it has.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from streamrec.batch import ExampleBatch
from streamrec.config import convert
from streamrec.errors import InvalidInputError, ProfilesBehindError, ProfilesUnavailableError  # re-exported here
from streamrec.log import EventLog
from streamrec.profiles.events import build_specs, events_to_rows
from streamrec.records import ActionEvent, Example, Impression, parse_many
from streamrec.serving.features import FeaturePlan, FeatureSet, ItemCache, default_plan
from streamrec.serving.limits import MAX_EPOCH_S, ServingLimits, check_epoch, is_utf8
from streamrec.serving.live import LiveStats
from streamrec.serving.metrics import ServingMetrics
from streamrec.serving.retrieval import Candidates, RetrievalConfig, Retriever
from streamrec.serving.slots import check_slots, stamp

__all__ = [
    "PendingRecommendation",
    "ProfilesBehindError",
    "ProfilesUnavailableError",
    "Recommendation",
    "Recommender",
    "RecommenderConfig",
    "RecordResult",
    "check_model",
]


class RecommenderConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The ``[serving]`` section.

    Attributes
    ----------
    features: the feature plan (the model's slots and ``n_dense`` must match it).
    retrieval: sources and quotas.
    category_cap: at most this many items of one category in a response (``None``: no cap).
    sample_rate: the rate negatives were kept at in training (the joiner's ``negative_rate``);
        scores are corrected with it. 1.0 = no correction.
    fallback_column: the dense column that ranks when no model is given.
    max_k: the largest ``k`` a request may ask for.
    actions_topic, impressions_topic: the log topics written.
    limits: what one HTTP request may ask (``[serving.limits]``, :class:`ServingLimits`).
    item_cache_ms: how old an item's feature answers may be when served: they are shared across
        requests for at most this long (:class:`~streamrec.serving.features.ItemCache`); ``0``
        asks the store for every item in every request. The user's features are never cached.
    """

    features: FeaturePlan = msgspec.field(default_factory=default_plan)
    retrieval: RetrievalConfig = msgspec.field(default_factory=RetrievalConfig)
    category_cap: int | None = None
    sample_rate: float = 1.0
    fallback_column: str = "item_ctr_1d"
    max_k: int = 200
    actions_topic: str = "actions"
    impressions_topic: str = "impressions"
    limits: ServingLimits = msgspec.field(default_factory=ServingLimits)
    item_cache_ms: float = 500.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.item_cache_ms <= 3_600_000.0:
            raise ValueError(f"`item_cache_ms` must be in [0, 3600000] (0: no cache), got {self.item_cache_ms!r}")
        if self.category_cap is not None and self.category_cap < 1:
            raise ValueError(f"`category_cap` must be >= 1 (or omitted), got {self.category_cap!r}")
        if not 0.0 < self.sample_rate <= 1.0:
            raise ValueError(f"`sample_rate` must be in (0, 1], got {self.sample_rate!r}")
        if self.max_k < 1:
            raise ValueError(f"`max_k` must be >= 1, got {self.max_k!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RecommenderConfig:
        """Validate a ``[serving]`` table; an unknown key or bad value raises ``ConfigError`` naming it."""
        return convert(data, cls, "serving")


@dataclass(frozen=True)
class Recommendation:
    """The answer to one request: ``items`` is ``[(item, score, source), ...]``, best first."""

    request_id: str
    items: list[tuple[str, float, str]]
    timings: dict[str, float] = field(default_factory=dict)
    n_candidates: int = 0


class PendingRecommendation:
    """An answer whose impressions are queued for the log (:meth:`Recommender.begin`)."""

    def __init__(
        self,
        recommender: Recommender,
        user: str,
        answer: Recommendation,
        candidates: Any,
        batch: _Batch | None,
        started_log: float,
    ) -> None:
        self._rec = recommender
        self._user = user
        self.answer = answer
        self._candidates = candidates
        self._batch = batch  # the log batch holding the impressions (None: nothing to log)
        self._started_log = started_log
        self._finished = False

    def finish(self) -> Recommendation:
        """Wait until the impressions are durable (raising the log's error, if the append failed),
        record the request's metrics (once, however often it is called), and return the answer.

        ``timings["log"]`` runs from the end of ranking to durable: building the impressions,
        the hand-off to the waiting thread and the append (shared with the requests of its batch).
        """
        answer, rec = self.answer, self._rec
        if self._batch is not None:
            rec._impressions.wait(self._batch)  # raises the batch's error, every time
        if self._finished:
            return answer
        self._finished = True
        if self._batch is not None:
            answer.timings["log"] = time.perf_counter() - self._started_log
        rec._observe(answer.timings, self._candidates, answer.items)
        rec.live.observe_request(answer.request_id, answer.items, sum(answer.timings.values()), self._user)
        return answer


@dataclass(frozen=True)
class RecordResult:
    """What :meth:`Recommender.record` did: events accepted, and ``(index, error)`` of the rejected."""

    accepted: int
    rejected: list[tuple[int, InvalidInputError]]


def top_k(scores: np.ndarray, k: int, categories: Sequence[str] | None = None, cap: int | None = None) -> np.ndarray:
    """Indices of the ``k`` best scores (ties keep index order), at most ``cap`` per category.

    Items with an empty category are never capped.

    Examples
    --------
    >>> top_k(np.array([0.1, 0.9, 0.8, 0.7]), 2, ["a", "b", "b", "c"], cap=1).tolist()
    [1, 3]
    """
    order = np.argsort(-scores, kind="stable")
    if cap is None or categories is None:
        return order[:k]
    taken: dict[str, int] = {}
    out: list[int] = []
    for i in order.tolist():  # stops after k items; only walks past capped ones
        c = categories[i]
        if c:
            if taken.get(c, 0) >= cap:
                continue
            taken[c] = taken.get(c, 0) + 1
        out.append(i)
        if len(out) == k:
            break
    return np.asarray(out, dtype=np.int64)


_REASON = re.compile(r"^(?P<field>[^:\s]+): (?P<why>.*?)(?: \(got (?P<value>.*)\))?$", re.S)


class _NoKeys:
    """The profile store's keyer for a dry run of its rules: validating needs no keyed hashes."""

    def __call__(self, entity_type: str, entity_id: str) -> bytes:
        return b""

    def value_hash(self, slot: str, value: str) -> str:
        return ""


def _check_event(event: ActionEvent) -> InvalidInputError | None:
    """What the record parser lets through but no store can take: text UTF-8 cannot encode (a lone
    surrogate) and times past :data:`MAX_EPOCH_S`."""
    for name, text in (("user", event.user), ("item", event.item), ("action", event.action)):
        if not is_utf8(text):
            return InvalidInputError(name, text, "is not valid UTF-8 text (it holds a lone surrogate)")
    if event.request_id is not None and not is_utf8(event.request_id):
        return InvalidInputError("request_id", event.request_id, "is not valid UTF-8 text (it holds a lone surrogate)")
    for name in event.counters:
        if not is_utf8(name):
            return InvalidInputError("counters", name, "a key is not valid UTF-8 text (it holds a lone surrogate)")
    for name, text in event.attributes.items():
        if not is_utf8(name):
            return InvalidInputError("attributes", name, "a key is not valid UTF-8 text (it holds a lone surrogate)")
        if not is_utf8(text):
            return InvalidInputError(
                f"attributes[{name!r}]", text, "is not valid UTF-8 text (it holds a lone surrogate)"
            )
    if event.time > MAX_EPOCH_S:
        return InvalidInputError("time", event.time, f"must be epoch seconds in [0, {MAX_EPOCH_S:.0f}]")
    return None


def check_model(model: Any, plan: FeaturePlan, source: str = "model") -> None:
    """Raise :class:`InvalidInputError` (field ``model``) if ``model`` cannot score ``plan``'s features.

    Compares the model's ``n_dense`` with the plan's dense columns and the model's sparse slots
    (its embedding tables) with the plan's sparse features, naming every difference; when they
    agree, scores one candidate of the plan's shape, so anything else that does not fit fails here,
    at start, and not in every request. ``source`` names where the model came from (a snapshot).
    """
    if model is None:
        return
    problems = []
    n_dense = getattr(getattr(model, "config", None), "n_dense", None)
    if n_dense is not None and n_dense != plan.n_dense:
        problems.append(f"n_dense is {n_dense} in the model but the plan has {plan.n_dense} dense columns")
    tables = getattr(getattr(model, "tables", None), "tables", None)
    slots = list(tables) if isinstance(tables, dict) else []
    missing = [s for s in slots if s not in plan.slots]
    if missing:
        problems.append(f"the model's sparse slots {missing} are not sparse features of the plan {plan.slots}")
    if not problems:
        probe = Example(sparse={}, dense=[0.0] * plan.n_dense, label=0.0, time=0.0)
        try:
            model.predict(ExampleBatch.from_examples([probe], plan.slots, plan.n_dense))
        except Exception as exc:  # anything a request would hit: report it now, once
            problems.append(f"scoring one candidate of the plan's shape fails: {type(exc).__name__}: {exc}")
    if problems:
        raise InvalidInputError(
            "model",
            {"source": source, "n_dense": n_dense, "slots": slots},
            "does not fit the feature plan [serving.features]: " + "; ".join(problems),
        )


def _store_error(reason: str) -> InvalidInputError:
    """The profile store's rejection reason (``"field: why (got value)"``) as a typed error."""
    match = _REASON.match(reason)
    if match is None:
        return InvalidInputError("event", None, reason)
    return InvalidInputError(match["field"], match["value"], match["why"])


def _is_two_tower(model: Any) -> bool:
    from streamrec.models.heads import TwoTowerHead

    return model is not None and isinstance(getattr(getattr(model, "_model", model), "head", None), TwoTowerHead)


class GroupAppender:
    """Appends to one topic, sharing one log transaction among the requests that append at once.

    Why: an append returns once its records are durable (the SQLite log commits with
    ``synchronous=FULL``: one fsync each), so with one append per request the disk's fsync rate
    capped the requests per second of every thread, and of every worker of ``serve --workers``
    on one log file. Here a request's impressions join the batch that is open; one caller (the
    first to find no append running) appends the whole batch, the others wait for it. Each caller
    still returns only once *its* records are durable, and gets the batch's error if the append
    failed (nothing of that batch was stored). One caller at a time appends exactly as before.
    Keyed by ``user`` (an impression meets the user's actions in one partition).
    """

    def __init__(self, log: EventLog, topic: str) -> None:
        self.log, self.topic = log, topic
        self._cond = threading.Condition()
        self._open = _Batch()  # the batch new records join
        self._busy = False
        self.appends = 0  # log transactions, for tests and the bench

    def append(self, records: list[Any]) -> None:
        """Return once ``records`` are in the log (raise the append's error if it failed)."""
        self.wait(self.submit(records))

    def submit(self, records: list[Any]) -> _Batch:
        """Queue ``records`` in the open batch and return it, without waiting: they are durable
        only once :meth:`wait` of that batch returns (any waiter appends every queued record)."""
        with self._cond:
            self._open.records.extend(records)
            return self._open

    def wait(self, mine: _Batch) -> None:
        """Return once batch ``mine`` is in the log, appending the open batch here if no append
        is running; raise that batch's error if its append failed (kept on the batch itself, so
        a caller that comes late still gets it)."""
        with self._cond:
            while not mine.done:
                if self._busy:
                    self._cond.wait()
                    continue
                batch, self._open = self._open, _Batch()
                self._busy = True
                self._cond.release()
                error = None
                try:
                    self.log.append(self.topic, batch.records, key="user")
                except BaseException as exc:  # every caller of the batch gets it
                    error = exc
                finally:
                    self._cond.acquire()
                    self.appends += 1
                    self._busy = False
                    batch.error, batch.done = error, True
                    self._cond.notify_all()
        if mine.error is not None:
            raise mine.error

    def flush(self) -> None:
        """Append whatever is queued and not yet waited for (at shutdown)."""
        with self._cond:
            pending = self._open if self._open.records else None
        if pending is not None:
            self.wait(pending)


class _Batch:
    """Records appended in one log transaction, and how that append ended."""

    __slots__ = ("done", "error", "records")

    def __init__(self) -> None:
        self.records: list[Any] = []
        self.done = False
        self.error: BaseException | None = None


class Recommender:
    """Answers recommendation requests and takes in actions.

    Parameters
    ----------
    profiles
        A :class:`~streamrec.profiles.ProfileClient` whose config holds the serving slots
        (:func:`~streamrec.serving.slots.serving_profiles_config`).
    log
        The event log (impressions and actions are appended to it).
    model
        A :class:`~streamrec.training.serving_model.ServingModel` over the plan's slots and dense
        columns, or ``None`` to rank by ``config.fallback_column``.
    config
        Plan, retrieval, cap, sample rate.
    write_profiles
        Write recorded actions to ``profiles`` too (embedded mode). In cluster mode the profile
        ingest consumes ``actions`` instead.
    extra_sources
        More retrieval sources by name, each ``(user, now, n) -> items``. With a two-tower model
        and an ``ann`` quota, an :class:`~streamrec.serving.ann.AnnSource` is added by default.
    clock
        Time source for requests without ``now``.
    live
        The live statistics the dashboard reads (:class:`~streamrec.serving.live.LiveStats`);
        by default one of its own, sampling this recommender's model.
    """

    def __init__(
        self,
        profiles: Any,
        log: EventLog,
        model: Any | None = None,
        config: RecommenderConfig | None = None,
        *,
        write_profiles: bool = True,
        extra_sources: dict[str, Callable[[str, float, int], list[str]]] | None = None,
        clock: Callable[[], float] = time.time,
        metrics: ServingMetrics | None = None,
        request_ids: Callable[[], str] | None = None,
        live: LiveStats | None = None,
    ) -> None:
        self.config = config or RecommenderConfig()
        self.plan = self.config.features
        check_model(model, self.plan)
        check_slots(profiles.cfg, sorted(self.plan.profile_slots() | {"catalog_items", "item_users", "clicked_item"}))
        if model is None and self.config.fallback_column not in self.plan.dense_names:
            raise InvalidInputError(
                "fallback_column", self.config.fallback_column, "is not a dense column of the feature plan"
            )
        self.profiles = profiles
        self.log = log
        self.model = model
        self.write_profiles = write_profiles
        self.clock = clock
        self.request_ids = request_ids or (lambda: uuid.uuid4().hex)  # a seeded source makes replays exact
        self.metrics = metrics or ServingMetrics()
        self.live = live if live is not None else LiveStats()
        if self.live.model is None:
            self.live.model = lambda: self.model
        extra = dict(extra_sources or {})
        if "ann" not in extra and self.config.retrieval.quotas.get("ann", 0) > 0 and _is_two_tower(model):
            from streamrec.serving.ann import AnnSource

            extra["ann"] = AnnSource(profiles, model, self.plan)
        self.retriever = Retriever(profiles, self.config.retrieval, extra)
        ms = self.config.item_cache_ms
        self.item_cache = ItemCache(self.plan, ms / 1000.0) if ms > 0 else None
        self._record_lock = threading.Lock()
        self._impressions = GroupAppender(log, self.config.impressions_topic)
        self._specs = build_specs(profiles.cfg) if write_profiles else []  # the store's rules, for the dry run
        self._pending: list[ActionEvent] = []  # logged, not yet in the profiles (a profile write failed)

    @property
    def profiles_pending(self) -> int:
        """Events in the log that the profile store has not taken yet (0 unless a profile write failed)."""
        return len(self._pending)

    # -- requests -----------------------------------------------------------------------------
    def recommend(self, user: str, k: int = 10, now: float | None = None) -> Recommendation:
        """The top ``k`` items for ``user`` at ``now`` (default: the clock), each with score and source.

        Returns once the impressions are in the log (``begin(...).finish()``).
        """
        return self.begin(user, k, now).finish()

    def begin(self, user: str, k: int = 10, now: float | None = None) -> PendingRecommendation:
        """Everything of :meth:`recommend` but the wait for the log: the answer and its
        impressions queued for the log's next append. :meth:`PendingRecommendation.finish` waits
        until they are durable (and raises the append's error); answer nobody before it returns,
        and always call it (impressions queued by a ``begin`` without ``finish`` wait for the next
        append: :meth:`flush` at shutdown).

        Why split: an append waits for the disk (``synchronous=FULL``). ``serve`` computes the next
        request in its compute lane while this one's impressions are written, and the requests
        that end meanwhile share the next append.
        """
        if not isinstance(user, str) or not user:
            raise InvalidInputError("user_id", user, "must be a non-empty string")
        if not is_utf8(user):
            raise InvalidInputError("user_id", user, "is not valid UTF-8 text (it holds a lone surrogate)")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.config.max_k:
            raise InvalidInputError("k", k, f"must be an integer in 1..{self.config.max_k}")
        now = self.clock() if now is None else check_epoch("now", now)
        request_id = self.request_ids()
        t0 = time.perf_counter()
        candidates = self.retriever.retrieve(user, now)
        t1 = time.perf_counter()
        if not len(candidates):
            timings = {"retrieve": t1 - t0, "features": 0.0, "rank": 0.0, "log": 0.0}
            return PendingRecommendation(self, user, Recommendation(request_id, [], timings, 0), candidates, None, t1)
        features = self.plan.fetch(self.profiles, user, candidates.items, now, self.item_cache)
        t2 = time.perf_counter()
        scores = self.score(features)
        finite = np.isfinite(scores)
        if not finite.all():  # a model gone bad: answered (null over HTTP), but counted
            self.metrics.nonfinite_scores.inc(int(finite.size - np.count_nonzero(finite)))
        chosen = top_k(scores, k, features.categories, self.config.category_cap)
        t3 = time.perf_counter()
        items = [(candidates.items[i], float(scores[i]), candidates.sources[i]) for i in chosen.tolist()]
        batch = self._impressions.submit(self._impressions_of(request_id, features, chosen, scores))
        timings = {"retrieve": t1 - t0, "features": t2 - t1, "rank": t3 - t2}
        answer = Recommendation(request_id, items, timings, len(candidates))
        return PendingRecommendation(self, user, answer, candidates, batch, t3)

    def flush(self) -> None:
        """Append the impressions of any :meth:`begin` not finished yet (``serve`` calls it at exit)."""
        self._impressions.flush()

    def score(self, features: FeatureSet) -> np.ndarray:
        """Corrected probabilities of every candidate (float64), or the fallback column without a model."""
        if self.model is None:
            return features.column(self.config.fallback_column).astype(np.float64)
        rate = self.config.sample_rate
        return self.model.predict(features.batch(), sample_rate=rate if rate < 1.0 else None)

    def _impressions_of(
        self, request_id: str, features: FeatureSet, chosen: np.ndarray, scores: np.ndarray
    ) -> list[Impression]:
        dense = features.dense[chosen].tolist()
        records = [
            Impression(
                request_id=request_id, user=features.user, item=features.items[i], time=features.now,
                sparse=features.sparse_of(i), dense=dense[p], position=p, score=float(scores[i]),
            )
            for p, i in enumerate(chosen.tolist())
        ]  # fmt: skip
        return records

    def _observe(self, timings: dict[str, float], candidates: Candidates, items: list) -> None:
        m = self.metrics
        m.observe_stages(timings)
        m.recommend_seconds.observe(sum(timings.values()))
        for source in set(candidates.sources):
            m.candidates.labels(source).inc(candidates.sources.count(source))
        for _, _, source in items:
            m.served.labels(source).inc()

    # -- actions ------------------------------------------------------------------------------
    def record(self, events: Sequence[Any]) -> RecordResult:
        """Validate, stamp and store a batch of actions; bad events are reported, valid ones kept.

        ``events`` are dicts (untrusted JSON) or :class:`ActionEvent`. Every check runs before
        anything is stored: the record's fields, text that UTF-8 cannot encode, and in embedded
        mode the profile store's own rules (a counter no slot declares, an event too far in the
        future), whose rejections name the field like the others. The valid events are appended
        to the log, then written to the profile store (embedded mode). Events older than every
        slot's retention are accepted (logged) and only dropped by the store.

        Raises
        ------
        LogError
            The log append failed: nothing of the batch was stored anywhere; resend it.
        ProfilesBehindError
            The batch is in the log but the profile store failed to take it: do not resend it, the
            recommender writes it to the profiles before any later batch.
        ProfilesUnavailableError
            Events logged earlier still wait for the profile store: nothing was stored; resend later.
        """
        if isinstance(events, str | bytes) or not isinstance(events, Sequence):
            raise InvalidInputError("events", events, "expected a list of action events")
        valid, rejected = parse_many(events, ActionEvent)
        bad_input = {j for j, _ in rejected}
        index = [i for i in range(len(events)) if i not in bad_input]  # batch position of each valid event
        checked: list[tuple[int, ActionEvent]] = []
        for i, event in zip(index, valid, strict=True):
            error = _check_event(event)
            if error is None:
                checked.append((i, stamp(event)))
            else:
                rejected.append((i, error))
        with self._record_lock:
            if self.write_profiles:
                self._catch_up()
                refused = self._store_rejects([e for _, e in checked])
                rejected.extend((checked[j][0], _store_error(reason)) for j, reason in refused)
                gone = {j for j, _ in refused}
                checked = [c for j, c in enumerate(checked) if j not in gone]
            stamped = [e for _, e in checked]
            behind = None
            if stamped:
                self.log.append(self.config.actions_topic, stamped, key="user")
                if self.write_profiles:
                    behind = self._write_profiles(stamped)
        rejected.sort(key=lambda r: r[0])
        self._observe_record(stamped, len(rejected))
        result = RecordResult(len(stamped), rejected)
        if behind is not None:
            behind.result = result
            raise behind
        return result

    def _observe_record(self, stamped: list[ActionEvent], n_rejected: int) -> None:
        self.metrics.events.labels("accepted").inc(len(stamped))
        self.metrics.events.labels("rejected").inc(n_rejected)
        self.live.observe_actions(stamped)

    def _store_rejects(self, events: list[ActionEvent]) -> list[tuple[int, str]]:
        """``(index, reason)`` of the events the profile store would refuse, without writing anything.

        The store's own validation (``profiles.events.events_to_rows``) on its compiled slots, at
        this recommender's clock for a wall-clock store (the event clock otherwise, as the store).
        """
        if not events:
            return []
        cfg = self.profiles.cfg
        now = self.clock() if cfg.clock == "wall" else None
        _, _, refused, _, _ = events_to_rows(events, self._specs, _NoKeys(), now, float(cfg.max_future))  # type: ignore[arg-type]
        return refused

    def _write_profiles(self, stamped: list[ActionEvent]) -> ProfilesBehindError | None:
        """Write a logged batch to the profile store; on failure keep it for :meth:`_catch_up`."""
        try:
            result = self.profiles.write(stamped)
        except Exception as exc:  # the batch is in the log: it must reach the profiles later, once
            self._pending = list(stamped)
            error = ProfilesBehindError(len(stamped), self.config.actions_topic, exc)
            error.__cause__ = exc
            return error
        if result.rejected:  # the dry run passed them a moment ago: the store's clock moved past them
            self.metrics.events.labels("dropped_by_profiles").inc(len(result.rejected))
        return None

    def _catch_up(self) -> None:
        """Write the events a failed profile write left behind, before any new batch is stored."""
        if not self._pending:
            return
        try:
            self.profiles.write(self._pending)
        except Exception as exc:
            raise ProfilesUnavailableError(len(self._pending), exc) from exc
        self._pending = []
