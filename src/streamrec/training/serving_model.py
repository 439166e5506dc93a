"""The serving model: a read-only copy of the ranking model that follows topic ``model-updates``.

A :class:`ServingModel` starts from a trainer snapshot (its tables become a
:class:`~streamrec.embedding.ServingCollection`, its head a copy of the saved head) or from the
``"full"`` update the online trainer publishes when it starts. A background thread polls
``model-updates`` and applies each :class:`~streamrec.training.updates.ModelUpdate` in order,
while any number of request threads call :meth:`ServingModel.predict`.

Why it is safe to predict while applying:

* sparse deltas patch the serving tables in place; those take a readers-writer lock per chunk of
  rows, so a lookup sees each row wholly old or wholly new (``embedding/serving.py``);
* dense updates never touch the head a request may be running: a new head is built, loaded and
  then swapped in with one reference assignment (atomic in Python); ``"full"`` updates swap the
  tables the same way.

So a request scores with a head of one version and rows each of some version between the previous
and the current sync; once an update is applied, every later request scores exactly as the
training model did when it made the update (same lookup kernel, same float32 rows, same head).

Every replica reads the whole topic with a consumer group of its own (``serving-<random>``), so
any number of replicas follow independently; records below the offset its snapshot already covers
are skipped. Each applied update records its lag (applied minus ``created_at``) for the benchmark.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np
import torch

from streamrec.batch import ExampleBatch
from streamrec.embedding import CollectionDelta, EmbeddingModule, ServingCollection
from streamrec.errors import InvalidInputError, LogError
from streamrec.log import EventLog, open_log
from streamrec.models.ranking import ModelConfig, RankingModel, build_head
from streamrec.training.updates import UPDATES_TOPIC, FullPayload, ModelUpdate, decode_dense

__all__ = ["AppliedUpdate", "ServingModel"]


@dataclass(frozen=True)
class AppliedUpdate:
    """What a replica recorded about one update it applied."""

    kind: str
    version: int
    examples_seen: int
    nbytes: int
    lag_s: float  # applied minus created_at
    staleness_s: float  # applied minus changes_since: the oldest change it carried, now visible


class ServingModel:
    """A ranking model that answers requests while it follows the trainer's updates.

    Parameters
    ----------
    config
        The model config (the snapshot's ``model`` section).
    tables
        The serving tables (a :class:`ServingCollection`); they are patched in place by sparse updates.
    head_state
        The head's ``state_dict`` (from a snapshot or a dense update).
    start_offset
        The first ``model-updates`` offset this model does not contain yet (from the snapshot).

    Examples
    --------
    >>> import tempfile
    >>> from streamrec.embedding import EmbeddingCollection, SlotConfig
    >>> from streamrec.models import ModelConfig, build_model
    >>> from streamrec.records import Example
    >>> from streamrec.training import ExampleBatch
    >>> from streamrec.training.online import OnlineConfig, OnlineTrainer
    >>> from streamrec.training.trainer import Trainer
    >>> folder = tempfile.mkdtemp()
    >>> trainer = Trainer(build_model(ModelConfig(hidden=[8]), EmbeddingCollection({"item": SlotConfig(dim=4)})))
    >>> online = OnlineTrainer(trainer, f"sqlite://{folder}/log.db", None, OnlineConfig(batch_size=16))
    >>> examples = [Example(sparse={"item": [i % 5]}, label=float(i % 2), time=i) for i in range(64)]
    >>> _ = online.log.append("examples", examples)
    >>> _ = online.run(until_drained=True)          # trains, then publishes its final sync
    >>> serving = ServingModel.from_update_log(online.log, ModelConfig(hidden=[8]))
    >>> batch = ExampleBatch.from_examples(examples, ["item"], 0)
    >>> bool(np.array_equal(serving.predict_logits(batch), trainer.predict_logits(batch)))
    True
    >>> online.close(); online.log.close()
    """

    def __init__(
        self,
        config: ModelConfig,
        tables: ServingCollection,
        head_state: dict[str, torch.Tensor],
        *,
        start_offset: int = 0,
        version: int = 0,
        examples_seen: int = 0,
    ) -> None:
        self.config = config
        self._model = self._assemble(EmbeddingModule(tables), head_state)
        self.start_offset = int(start_offset)
        self.version = version
        self.examples_seen = examples_seen
        self.applied: deque[AppliedUpdate] = deque(maxlen=100_000)  # the most recent updates
        self.error: BaseException | None = None
        self._applied_cond = threading.Condition()
        self._parts: dict[int, set[int]] = {}  # versions of W ranks still missing parts: the parts applied
        self._top = version  # the highest version wholly applied
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._log: EventLog | None = None
        self._own_log = False

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_snapshot(cls, path: str | Path) -> ServingModel:
        """The model saved in a trainer snapshot (a file, or a sharded snapshot's directory: every shard is
        read), ready to follow the updates made after it."""
        from streamrec.training.shards import is_sharded, load_shard
        from streamrec.training.snapshot import load_trainer

        trainer, extra = load_shard(path, 0, 1) if is_sharded(path) else load_trainer(path)
        tables = trainer.model.embeddings.tables.serving_replica()
        online = extra.get("online", {})
        return cls(
            trainer.model.config,
            tables,
            trainer.model.head.state_dict(),
            start_offset=int(online.get("updates_offset", 0)),
            version=int(online.get("version", 0)),
            examples_seen=trainer.examples_seen,
        )

    @classmethod
    def from_update_log(
        cls, log: EventLog | str, config: ModelConfig, topic: str = UPDATES_TOPIC, timeout_s: float = 10.0
    ) -> ServingModel:
        """Build the model from the last ``"full"`` update on ``topic`` plus every update after it.

        Reads the topic once, to its end; raises :class:`LogError` when no full update arrives
        within ``timeout_s``.
        """
        own = isinstance(log, str)
        event_log = open_log(log) if isinstance(log, str) else log
        try:
            pending: list[ModelUpdate] = []
            full_seen = False
            position = 0
            deadline = time.monotonic() + timeout_s
            with event_log.consumer(topic, f"serving-{uuid.uuid4().hex[:12]}", ModelUpdate) as consumer:
                while not (full_seen and position >= event_log.end_offset(topic)):
                    if time.monotonic() > deadline:
                        raise LogError(f"topic {topic!r}: no 'full' update within {timeout_s} s to start a model from")
                    for envelope in consumer.poll(1000, 0.2):
                        position = envelope.offset + 1
                        if envelope.record.kind == "full" and envelope.record.shard == 0:
                            pending, full_seen = [], True
                        if full_seen:
                            pending.append(envelope.record)
            first = msgspec.msgpack.decode(pending[0].payload, type=FullPayload)
            model = cls._from_full(config, first, pending[0])
            model.start_offset = position
            for update in pending[1:]:
                model.apply(update)
            model.applied.clear()
            return model
        finally:
            if own:
                event_log.close()

    @classmethod
    def _from_full(cls, config: ModelConfig, payload: FullPayload, update: ModelUpdate) -> ServingModel:
        delta = CollectionDelta.from_bytes(payload.sparse)
        tables = ServingCollection({slot: t.dim for slot, t in delta.tables.items()}, payload.pooling)
        tables.apply(delta)
        return cls(
            config, tables, decode_dense(payload.dense), version=update.version, examples_seen=update.examples_seen
        )

    def _assemble(self, embeddings: EmbeddingModule, head_state: dict[str, torch.Tensor]) -> RankingModel:
        tables = embeddings.tables
        dims = {slot: t.dim for slot, t in tables.tables.items()}
        head = build_head(self.config, list(dims), next(iter(dims.values())))
        try:
            head.load_state_dict(head_state)
        except RuntimeError as exc:
            raise InvalidInputError(
                "payload.dense", sorted(head_state), f"does not fit the model's head: {exc}"
            ) from None
        model = RankingModel(embeddings, head, self.config)
        model.eval()
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        return model

    # -- answering --------------------------------------------------------------------------
    @property
    def tables(self) -> ServingCollection:
        """The serving tables now in use."""
        return self._model.embeddings.tables

    def predict_logits(self, batch: ExampleBatch) -> np.ndarray:
        """Logits of ``batch`` (float32 ``[B]``); thread-safe, runs while updates apply."""
        model = self._model  # one reference: a concurrent swap does not affect this request
        with torch.no_grad():
            return model(batch).numpy()

    def predict(self, batch: ExampleBatch, sample_rate: float | None = None) -> np.ndarray:
        """Probabilities of ``batch`` (float64 ``[B]``).

        With ``sample_rate`` r (the rate negatives were kept at in training), the probabilities
        are corrected for negative sampling: ``p = q / (q + (1 - q) / r)``, computed in log-odds
        as ``sigmoid(logit + log r)``.
        """
        logits = self.predict_logits(batch).astype(np.float64)
        if sample_rate is not None:
            from streamrec.joiner.sampling import correct_logit

            if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | float) or not 0 < sample_rate <= 1:
                raise InvalidInputError("sample_rate", sample_rate, "must be a rate in (0, 1]")
            logits = correct_logit(logits, float(sample_rate))
        return 1.0 / (1.0 + np.exp(-logits))

    # -- applying ---------------------------------------------------------------------------
    def apply(self, update: ModelUpdate) -> None:
        """Apply one update (checked first: a bad payload raises and changes nothing)."""
        if update.kind == "sparse":
            self._model.embeddings.tables.apply(CollectionDelta.from_bytes(update.payload))
        elif update.kind == "full" and update.shard > 0:  # another rank's rows of a full update: merge
            try:
                full = msgspec.msgpack.decode(update.payload, type=FullPayload)
            except msgspec.DecodeError as exc:
                reason = f"not a full update: {exc}"
                raise InvalidInputError("payload", f"{len(update.payload)} bytes", reason) from None
            self._model.embeddings.tables.apply(CollectionDelta.from_bytes(full.sparse))
        elif update.kind == "dense":
            head_state = decode_dense(update.payload)
            self._model = self._assemble(self._model.embeddings, head_state)
        else:
            try:
                full = msgspec.msgpack.decode(update.payload, type=FullPayload)
            except msgspec.DecodeError as exc:
                raise InvalidInputError(
                    "payload", f"{len(update.payload)} bytes", f"not a full update: {exc}"
                ) from None
            delta = CollectionDelta.from_bytes(full.sparse)
            tables = ServingCollection({slot: t.dim for slot, t in delta.tables.items()}, full.pooling)
            tables.apply(delta)
            self._model = self._assemble(EmbeddingModule(tables), decode_dense(full.dense))
        applied = time.time()
        since = update.changes_since if update.changes_since is not None else update.created_at
        record = AppliedUpdate(
            update.kind, update.version, update.examples_seen, len(update.payload),
            applied - update.created_at, applied - since,
        )  # fmt: skip
        with self._applied_cond:
            self._count_version(update)
            self.applied.append(record)
            self._applied_cond.notify_all()

    def _count_version(self, update: ModelUpdate) -> None:
        """``version`` = the highest V such that every update up to V that arrived is wholly applied.

        One trainer publishes versions in order. W ranks publish each sparse (and full) version in W
        parts that interleave with other versions in the log, so a version counts only once all its
        parts are applied, and never while a lower version still misses a part. A full update's
        part 0 resets the count (a restarted trainer reuses versions after its snapshot's)."""
        if update.kind == "full" and update.shard == 0:
            self._parts.clear()
            self._top = update.version if update.shards == 1 else update.version - 1
        if update.shards > 1:
            parts = self._parts.setdefault(update.version, set())
            parts.add(update.shard)
            if len(parts) == update.shards:
                del self._parts[update.version]
                self._top = max(self._top, update.version)
        elif update.kind != "full":
            self._top = max(self._top, update.version)
        version = self._top if not self._parts else min(self._top, min(self._parts) - 1)
        if version != self.version:
            self.version = version
            self.examples_seen = update.examples_seen

    def follow(
        self,
        log: EventLog | str,
        topic: str = UPDATES_TOPIC,
        group: str | None = None,
        poll_timeout_s: float = 0.05,
    ) -> None:
        """Start a background thread that applies every update on ``topic`` from ``start_offset`` on.

        ``group`` defaults to a fresh ``serving-<random>`` group read from the start of the topic.
        Errors stop the thread and are kept in :attr:`error` (and re-raised by :meth:`stop`).
        """
        if self._thread is not None:
            raise InvalidInputError("follow", topic, "this model already follows a topic")
        self._own_log = isinstance(log, str)
        self._log = open_log(log) if isinstance(log, str) else log
        consumer = self._log.consumer(topic, group or f"serving-{uuid.uuid4().hex[:12]}", ModelUpdate)
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._follow_loop, args=(consumer, poll_timeout_s), name="serving-model-follow", daemon=True
        )
        self._thread.start()

    def _follow_loop(self, consumer, poll_timeout_s: float) -> None:  # type: ignore[no-untyped-def]
        try:
            with consumer:
                while not self._stop.is_set():
                    envelopes = consumer.poll(256, poll_timeout_s)
                    for envelope in envelopes:
                        if envelope.offset >= self.start_offset:
                            self.apply(envelope.record)
                            self.start_offset = envelope.offset + 1
                    if envelopes:
                        consumer.commit()  # only bookkeeping: a restarted replica starts from a snapshot
        except BaseException as exc:  # kept for the caller; the thread must not die silently
            self.error = exc
            with self._applied_cond:
                self._applied_cond.notify_all()

    def wait_for(self, version: int, timeout_s: float = 10.0) -> bool:
        """Block until an update of ``version`` or later is applied; False on timeout or error."""
        deadline = time.monotonic() + timeout_s
        with self._applied_cond:
            while self.version < version and self.error is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._applied_cond.wait(left)
            return self.version >= version

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop following; re-raises an error the follower thread hit."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        if self._own_log and self._log is not None:
            self._log.close()
            self._log = None
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def __enter__(self) -> ServingModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
