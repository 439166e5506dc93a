"""The profile service (IPS): profiles of time slices per entity, reduce functions, compaction and
truncation, a write table merged into a read table, a cache of compressed profiles over LMDB with a
write-ahead log, and windowed feature queries (structured or SQL).

See ``docs/profiles.md`` for formats, invariants and failure behaviour.

Examples
--------
Three clicks and a show of user 42 on comedies, then their clicks per show over the last hour,
read from the profile:

>>> from streamrec.profiles import Feature, FeatureQuery, ProfileStore
>>> now = 1_700_000_000.0
>>> store = ProfileStore(clock=lambda: now)
>>> events = [{"user": "42", "item": f"m{i}", "action": a, "time": now - 60 * i, "attributes": {"category": "comedy"}}
...           for i, a in enumerate(["click", "click", "show", "click"])]
>>> store.write(events).accepted
4
>>> store.merge()
>>> ctr = Feature(slot="clicked_category", window="1h", agg="ratio", numerator="click", denominator="show")
>>> print(f"{store.query(FeatureQuery(entities=['user:42'], features=[ctr])).results[0][0].scalar():.2f}")
3.00
>>> store.close()
"""

from streamrec.profiles.config import ProfilesConfig, ProfileSlotConfig, Tier, load_profiles_config, profiles_config
from streamrec.profiles.sql import SqlError
from streamrec.profiles.store import ProfileStore
from streamrec.profiles.types import Feature, FeatureQuery, FeatureResult, QueryResult, SqlResult, WriteResult

__all__ = [
    "Feature",
    "FeatureQuery",
    "FeatureResult",
    "ProfileSlotConfig",
    "ProfileStore",
    "ProfilesConfig",
    "QueryResult",
    "SqlError",
    "SqlResult",
    "Tier",
    "WriteResult",
    "load_profiles_config",
    "profiles_config",
]

# ---- Service, client and placement (client.py, ring.py, service.py) --------------------------
# Loaded on first use so that `import streamrec.profiles` does not import gRPC.
_SERVICE_NAMES = {
    "ProfileClient": "streamrec.profiles.client",
    "HashRing": "streamrec.profiles.ring",
    "ProfileNodeServer": "streamrec.profiles.service",
}
__all__ += list(_SERVICE_NAMES)


def __getattr__(name: str):
    if name in _SERVICE_NAMES:
        import importlib

        return getattr(importlib.import_module(_SERVICE_NAMES[name]), name)
    raise AttributeError(f"module 'streamrec.profiles' has no attribute {name!r}")
