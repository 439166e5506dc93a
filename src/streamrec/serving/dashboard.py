"""The dashboard at ``/`` of ``streamrec serve``: one HTML page and one script, shipped in the package.

The page is static (``static/dashboard.html`` and ``static/dashboard.js``, no CDN, no build step:
``streamrec serve`` often runs where there is no internet) and reads everything through the API
like any other client: ``GET /v1/stats`` every second for the charts, ``GET /v1/dashboard/config``
once for what the profile explorer and the try-out need, ``POST /v1/features/query`` and
``GET /v1/recommendations`` for those two. So the page holds no data and the bearer token guards
the data routes, not the page: ``/`` and ``/dashboard.js`` are open, and the page asks for the
token when a data route answers 401 (``docs/dashboard.md``).

This module builds the config JSON from the recommender (the feature plan's windows, the profile
slots by entity type) and reads the static files.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from streamrec.config import parse_duration
from streamrec.serving.recommender import Recommender

__all__ = ["STATIC", "dashboard_config", "static_text"]

STATIC = Path(__file__).parent / "static"


@cache
def static_text(name: str) -> str:
    """The text of a file shipped in ``static/`` (read once)."""
    return (STATIC / name).read_text(encoding="utf-8")


def plan_windows(recommender: Recommender) -> list[str]:
    """The windows the feature plan reads profiles over, shortest first (``["5m", "1h", "1d", "7d"]``)."""
    plan = recommender.plan
    windows = {str(d.window) for d in plan.dense if d.kind != "context"}
    windows |= {str(s.window) for s in plan.sparse if s.kind == "user_top"}
    return sorted(windows, key=lambda w: parse_duration(w, "window"))


def dashboard_config(recommender: Recommender, *, token_required: bool) -> dict[str, Any]:
    """What the page needs besides the stats: windows, slots by entity type, limits, refresh period.

    Examples
    --------
    >>> import tempfile
    >>> from streamrec.log import open_log
    >>> from streamrec.profiles import ProfileClient
    >>> from streamrec.serving import serving_profiles_config
    >>> log = open_log(f"sqlite:///{tempfile.mkdtemp()}/log.db")
    >>> rec = Recommender(ProfileClient.embedded(serving_profiles_config()), log)
    >>> cfg = dashboard_config(rec, token_required=False)
    >>> cfg["windows"], sorted(cfg["entities"])
    (['5m', '1h', '1d', '7d'], ['catalog', 'item', 'user'])
    >>> cfg["entities"]["user"][0]
    {'slot': 'actions', 'value': 'action', 'counters': ['count', 'dwell_ms']}
    """
    entities: dict[str, list[dict[str, Any]]] = {}
    for name, slot in sorted(recommender.profiles.cfg.slots.items()):
        entities.setdefault(slot.entity, []).append(
            {"slot": name, "value": slot.value, "counters": list(slot.counters)}
        )
    live = recommender.live
    return {
        "windows": plan_windows(recommender),
        "entities": entities,
        "max_k": recommender.config.max_k,
        "model": recommender.model is not None,
        "bucket_s": live.bucket_s,
        "click_window_s": live.click_window_s,
        "refresh_ms": 1000,
        "token_required": token_required,
    }
