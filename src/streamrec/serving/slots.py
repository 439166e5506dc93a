"""The profile slots the recommender reads, and the two fields it stamps on every action.

Retrieval and ranking need facts the default profile slots (``profiles/config.py``) do not keep:
an item's shows and clicks in one slot (so a smoothed CTR is one ``ratio`` feature), the users who
engaged with an item (co-engagement retrieval), an item's category, and a list of *all* items with
their engagement and first-seen time (popular and fresh retrieval). The profile service keys every
slot by an entity, and there is no "list every item" query, so the catalogue is a profile of its
own: a constant entity ``catalog:all`` that every action feeds (entity = the ``catalog`` attribute).

:func:`stamp` adds that attribute and a ``first_seen`` counter (the event time; the slot reduces it
with ``min``, so the catalogue's top-k by ``first_seen`` are the items first seen most recently) to
each action before it reaches the log. Stamping happens where actions enter (``Recommender.record``,
``POST /v1/events``), so the embedded writer and a cluster's profile ingest see the same events.
It also maps the action ``impression`` to the ``show`` counter every engagement slot keeps.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from streamrec.errors import ConfigError
from streamrec.profiles.config import ProfilesConfig, ProfileSlotConfig, profiles_config
from streamrec.records import ActionEvent

__all__ = ["CATALOG", "SERVING_SLOTS", "check_slots", "serving_profiles_config", "stamp"]

CATALOG = "catalog:all"  # the entity label of the catalogue profile
# ``position`` (the slot position an impression was shown at, which the simulator and clients
# send) is summed, so ``position / show`` is the item's mean shown position (for position bias).
_ITEM = ["show", "click", "like", "dwell_ms", "position"]

SERVING_SLOTS: dict[str, ProfileSlotConfig] = {
    "item_ctr": ProfileSlotConfig(entity="item", value="item", counters=_ITEM, reduce={"dwell_ms": "max"}),
    "item_users": ProfileSlotConfig(
        entity="item", value="user", counters=["show", "click"], truncate=200, truncate_by="click"
    ),
    "item_category": ProfileSlotConfig(entity="item", value="category", counters=["count"]),
    "catalog_items": ProfileSlotConfig(
        entity="catalog", value="item", counters=["show", "click", "first_seen"], reduce={"first_seen": "min"}
    ),
}


def serving_profiles_config(base: ProfilesConfig | dict[str, Any] | None = None) -> ProfilesConfig:
    """``base`` (default: the default ``[profiles]``) plus the slots the recommender reads.

    A slot of ``base`` with the same name wins, so a deployment can retune retention or truncation.
    """
    cfg = profiles_config(base)
    slots = {**SERVING_SLOTS, **cfg.slots}
    return msgspec.structs.replace(cfg, slots=slots)


def check_slots(cfg: ProfilesConfig, needed: Iterable[str]) -> None:
    """Raise :class:`ConfigError` naming the first slot in ``needed`` that ``cfg`` lacks."""
    for slot in needed:
        if slot not in cfg.slots:
            raise ConfigError(
                f"profiles.slots.{slot}",
                "the recommender reads this slot; build the profile config with serving_profiles_config()",
            )


def stamp(event: ActionEvent) -> ActionEvent:
    """``event`` with ``attributes["catalog"] = "all"`` and ``counters["first_seen"] = time`` added.

    Exposures are ``action="show"`` events: a counter is fed by an action of the same name (or by
    the event's own counter of that name), so they count in the slots' ``show`` counters.

    Examples
    --------
    >>> e = stamp(ActionEvent(user="u1", item="i1", action="show", time=5.0))
    >>> e.attributes, e.counters
    ({'catalog': 'all'}, {'first_seen': 5.0})
    """
    if event.attributes.get("catalog") == "all" and "first_seen" in event.counters:
        return event
    counters = dict(event.counters)
    counters["first_seen"] = event.time
    return msgspec.structs.replace(event, attributes={**event.attributes, "catalog": "all"}, counters=counters)
