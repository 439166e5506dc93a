"""What the simulator's drivers talk to: the :class:`Recommender` protocol and the :class:`Slate` it may return.

A structural ``Protocol`` (not a base class) so that ``streamrec.serving``'s recommender, the
baseline policies in :mod:`streamrec.sim.policies`, and a ten-line policy in a test all plug into
the same driver without importing each other. ``recommend`` may return a bare list of
``(item, score, source)`` (the driver then makes the request id) or a :class:`Slate` carrying the
request id the recommender logged its impressions under, which the driver copies into every
event so the joiner can join them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from streamrec.errors import InvalidInputError
from streamrec.records import ActionEvent

__all__ = ["Recommender", "Slate", "SlateItem", "as_slate"]


@dataclass(frozen=True)
class SlateItem:
    """One recommended item: its id, the score it was ranked by, and the retrieval source."""

    item: str
    score: float = 0.0
    source: str = ""


@dataclass(frozen=True)
class Slate:
    """A ranked response: ``items`` best first, and the id of the request (``None``: the driver makes one)."""

    items: list[SlateItem] = field(default_factory=list)
    request_id: str | None = None


@runtime_checkable
class Recommender(Protocol):
    """Anything the drivers can send traffic to.

    ``recommend(user, k, now)`` returns at most ``k`` items best first (``now`` is the simulated
    request time, unix seconds); ``record(events)`` receives the events users produced, sorted by
    time, once per driver step.
    """

    def recommend(self, user: str, k: int, now: float) -> Slate | Sequence[tuple[str, float, str]]: ...

    def record(self, events: Sequence[ActionEvent]) -> None: ...


def as_slate(result: Any) -> Slate:
    """Normalize what ``recommend`` returned: a :class:`Slate`, or a sequence of tuples, dicts or objects.

    Raises :class:`InvalidInputError` naming ``recommend`` if an entry has no item id.
    """
    if isinstance(result, Slate):
        return result
    request_id = getattr(result, "request_id", None)
    entries = getattr(result, "items", result)
    if callable(entries):  # a dict's .items, not a response's
        raise InvalidInputError("recommend", result, "must return a Slate or a list of (item, score, source)")
    items: list[SlateItem] = []
    for entry in entries:
        if isinstance(entry, SlateItem):
            items.append(entry)
        elif isinstance(entry, tuple | list) and entry and isinstance(entry[0], str):
            score = float(entry[1]) if len(entry) > 1 else 0.0
            source = str(entry[2]) if len(entry) > 2 else ""
            items.append(SlateItem(entry[0], score, source))
        elif isinstance(entry, dict) and isinstance(entry.get("item"), str):
            items.append(SlateItem(entry["item"], float(entry.get("score", 0.0)), str(entry.get("source", ""))))
        elif isinstance(getattr(entry, "item", None), str):
            items.append(SlateItem(entry.item, float(getattr(entry, "score", 0.0)), str(getattr(entry, "source", ""))))
        else:
            raise InvalidInputError("recommend", entry, "each entry needs an item id: (item, score, source)")
    return Slate(items=items, request_id=request_id)
