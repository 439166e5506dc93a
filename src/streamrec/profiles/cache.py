"""The read table's cache: an LRU map entity key -> :class:`Profile` and the bytes it holds.

A hit moves the profile to the recent end; a miss asks ``load`` (the store reads LMDB and decodes)
and, if nothing is stored, makes an empty profile when asked to ``create``. :meth:`ProfileCache.evict`
drops clean profiles, least recently used first, once the cache holds more than its budget. Readers
take no lock: a profile evicted while read stays valid to read. The store calls :meth:`evict` under
its merge lock, so no merge writes into a profile being evicted.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from streamrec.profiles.profile import Profile

__all__ = ["ProfileCache"]


class ProfileCache:
    """Profiles by entity key, least recently used first, with their total size in ``mem`` bytes.

    Parameters
    ----------
    nslots: slots of a new profile.
    budget: bytes above which :meth:`evict` drops clean profiles (down to 90% of it).
    load: a miss's loader: the profile stored for a key, or ``None``.
    stats: the store's counters; ``cache_hits``, ``cache_misses`` and ``evictions`` are counted here.

    Examples
    --------
    >>> from streamrec.profiles.profile import Profile
    >>> stats = {"cache_hits": 0, "cache_misses": 0, "evictions": 0}
    >>> cache = ProfileCache(1, budget=0, load=lambda key: None, stats=stats)
    >>> cache.get(b"a" * 16, create=False) is None, cache.get(b"a" * 16, create=True) is not None
    (True, True)
    >>> cache.get(b"a" * 16, create=False) is not None, stats
    (True, {'cache_hits': 1, 'cache_misses': 2, 'evictions': 0})
    """

    def __init__(
        self, nslots: int, budget: int, load: Callable[[bytes], Profile | None], stats: dict[str, Any]
    ) -> None:
        self.profiles: OrderedDict[bytes, Profile] = OrderedDict()
        self.mem = 0
        self.budget = budget
        self._nslots = nslots
        self._load = load
        self._stats = stats

    def get(self, key: bytes, create: bool, count: bool = True) -> Profile | None:
        """The profile of ``key``: cached, loaded, new (``create``) or ``None``; ``count``: in hits/misses."""
        profiles = self.profiles
        p = profiles.get(key)
        if p is not None:
            if count:
                self._stats["cache_hits"] += 1
            with contextlib.suppress(KeyError):  # evicted meanwhile; the object is still valid to read
                profiles.move_to_end(key)
            return p
        if count:
            self._stats["cache_misses"] += 1
        p = self._load(key)
        if p is None:
            if not create:
                return None
            p = Profile(self._nslots)
        existing = profiles.setdefault(key, p)
        if existing is p:
            self.mem += p.nbytes
        return existing

    def pop(self, key: bytes) -> None:
        """Forget the profile of ``key`` (deleted), if cached."""
        p = self.profiles.pop(key, None)
        if p is not None:
            self.mem -= p.nbytes

    def evict(self) -> bool:
        """Over the budget, drop clean profiles (oldest first) down to 90% of it; ``True`` if still over it
        (everything left is dirty: the store should flush)."""
        if self.mem <= self.budget:
            return False
        for key in list(self.profiles.keys()):
            if self.mem <= self.budget * 0.9:
                break
            p = self.profiles.get(key)
            if p is not None and not p.dirty:
                del self.profiles[key]
                self.mem -= p.nbytes
                self._stats["evictions"] += 1
        return self.mem > self.budget
