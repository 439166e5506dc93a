"""Past traffic for the batch stage: :func:`generate_history` runs the world forward under a logging policy.

History is made by the same driver loop as live traffic, so it has exactly the statistics live
traffic has (drift, births, position bias); it is simply run before the live phase, and the world
continues from where history ended. The default logging policy is random, so the batch stage sees
every category and position (no feedback loop of a popularity policy); pass another policy to
imitate a production system.

:class:`History` keeps the events and can turn its ``show`` events into
:class:`~streamrec.records.Impression` records with simple id features (what the joiner joins),
write them to an event log, or to Parquet (one row per event, the columns of
:class:`~streamrec.records.ActionEvent` with ``counters``/``attributes`` as JSON text).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from streamrec.errors import InvalidInputError
from streamrec.records import ActionEvent, Impression
from streamrec.sim.driver import InProcessDriver, SimReport
from streamrec.sim.protocol import Recommender
from streamrec.sim.world import World

__all__ = ["History", "generate_history"]


@dataclass
class History:
    """Events of a past period ``[start, end)`` of simulated time, sorted by time within each step."""

    start: float
    end: float
    events: list[ActionEvent] = field(default_factory=list)
    report: SimReport = field(default_factory=SimReport)

    def actions(self, *names: str) -> Iterator[ActionEvent]:
        """The events whose action is one of ``names`` (all events if none given)."""
        return (e for e in self.events if not names or e.action in names)

    def impressions(self) -> list[Impression]:
        """One :class:`Impression` per ``show`` event, with sparse features ``user``, ``item``,
        ``category`` and ``author`` (their integer indices in the world) and the position."""
        out = []
        for e in self.actions("show"):
            sparse = {
                "user": [int(e.user[1:])],
                "item": [int(e.item[1:])],
                "category": [int(e.attributes["category"][1:])],
                "author": [int(e.attributes["author"][1:])],
            }
            position = int(e.counters.get("position", 0))
            out.append(Impression(request_id=e.request_id or "", user=e.user, item=e.item, time=e.time,
                                  sparse=sparse, position=position))  # fmt: skip
        return out

    def append_to(self, log: Any, actions_topic: str = "actions", batch: int = 10_000) -> int:
        """Append every event to ``log`` (a :class:`~streamrec.log.EventLog`) in batches; returns the count."""
        for i in range(0, len(self.events), batch):
            log.append(actions_topic, self.events[i : i + batch], key="user")
        return len(self.events)

    def to_parquet(self, path: str | Path) -> Path:
        """Write the events as Parquet (``counters`` and ``attributes`` JSON-encoded); returns the path."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        enc = msgspec.json.encode
        table = pa.table(
            {
                "user": [e.user for e in self.events],
                "item": [e.item for e in self.events],
                "action": [e.action for e in self.events],
                "time": pa.array([e.time for e in self.events], type=pa.float64()),
                "counters": [enc(e.counters).decode() for e in self.events],
                "attributes": [enc(e.attributes).decode() for e in self.events],
                "request_id": [e.request_id for e in self.events],
            }
        )
        path = Path(path)
        pq.write_table(table, path)
        return path


def generate_history(
    world: World,
    days: float,
    policy: Recommender | None = None,
    *,
    k: int = 10,
    step_s: float = 60.0,
    activity_scale: float = 1.0,
    impressions: bool = True,
) -> History:
    """Run ``days`` of simulated traffic under ``policy`` (default: :class:`RandomPolicy`) and keep it.

    The world's clock moves forward by ``days``. With the default world (1000 users, one request
    per user per 10 minutes on average, 10 items each) a day is about 144 000 requests and 1.5
    million events; ``activity_scale`` thins it.

    Examples
    --------
    >>> world = World(seed=0, n_users=100)
    >>> history = world.generate_history(days=0.05)
    >>> history.end - history.start
    4320.0
    >>> world.now == history.end
    True
    >>> clicks = sum(1 for _ in history.actions("click"))
    >>> 0 < clicks < sum(1 for _ in history.actions("show"))
    True
    """
    if not days > 0:
        raise InvalidInputError("days", days, "must be > 0")
    if policy is None:
        from streamrec.sim.policies import RandomPolicy

        policy = RandomPolicy(world, seed=world.seed)
    history = History(start=world.now, end=world.now)
    driver = InProcessDriver(
        world, policy, k=k, step_s=step_s, bucket_s=3600.0, impressions=impressions,
        regret=False, activity_scale=activity_scale,
    )  # fmt: skip
    history.report = driver.run(days * 1440.0, on_events=history.events.extend)
    history.end = world.now
    return history
