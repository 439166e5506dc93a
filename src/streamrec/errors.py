"""Typed errors raised by every part of streamrec.

Every error is raised where the bad input is first seen and names what is wrong: the field (a
config key, an argument, a record field) and the offending value. Callers catch the narrowest
type they can handle; everything derives from :class:`StreamrecError`.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConfigError",
    "IndexFloodError",
    "InvalidInputError",
    "LogError",
    "NonFiniteGradientError",
    "PartitionLostError",
    "ProfilesBehindError",
    "ProfilesUnavailableError",
    "SnapshotError",
    "StreamrecError",
    "UnknownSlotError",
]


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class StreamrecError(Exception):
    """Base class of every error streamrec raises on purpose."""


class InvalidInputError(StreamrecError, ValueError):
    """A value handed to streamrec is malformed: wrong type, dtype, shape or range.

    ``field`` names the argument or record field, ``value`` is what was passed (possibly
    abbreviated in the message).
    """

    def __init__(self, field: str, value: Any, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"{field}: {reason} (got {_short(value)})")


class UnknownSlotError(InvalidInputError, KeyError):
    """A slot name that is not declared in the configuration."""

    def __init__(self, slot: str, known: list[str] | tuple[str, ...] = ()) -> None:
        hint = f"known slots: {', '.join(sorted(known))}" if known else "no slots are declared"
        super().__init__("slot", slot, f"unknown slot; {hint}")

    def __str__(self) -> str:  # KeyError would otherwise quote the whole message
        return self.args[0]


class NonFiniteGradientError(InvalidInputError):
    """A gradient holds NaN or infinity; the update was refused and nothing changed."""


class ConfigError(StreamrecError, ValueError):
    """A configuration file or object is invalid; ``key`` is the dotted path of the bad key."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(f"config key '{key}': {message}" if key else f"config: {message}")


class SnapshotError(StreamrecError):
    """A snapshot cannot be written or read (missing, truncated, or from another format)."""


class LogError(StreamrecError):
    """The event log backend failed or was given a bad URL or record."""


class PartitionLostError(LogError):
    """A consumer tried to commit partitions it no longer owns (its ownership lapsed or moved).

    Nothing of that commit was written: the partitions' new owner re-reads from the last
    committed offsets, so no offset ever moves backwards and no record is skipped.
    """

    def __init__(self, topic: str, group: str, partitions: list[int]) -> None:
        self.topic = topic
        self.group = group
        self.partitions = list(partitions)
        super().__init__(
            f"topic {topic!r} group {group!r}: partition(s) {self.partitions} are no longer this consumer's "
            "(ownership lapsed or moved); nothing committed"
        )


class IndexFloodError(StreamrecError):
    """The cuckoo index could not place an id at a low load factor, even with fresh seeds.

    Ids that crowd the same buckets under every seed tried: a hash flood (with secret seeds, not
    something random ids do). The index refuses to grow for them. ``key`` and ``row`` are the pair
    left out: normally the id being inserted; every other pair the index held is still there.
    ``min_growth_load`` is the load factor below which the index rehashes instead of growing.
    """

    def __init__(self, key: int, row: int, load: float, attempts: int, *, min_growth_load: float) -> None:
        self.key = key
        self.row = row
        self.load = load
        super().__init__(
            f"cuckoo index: id {key} found no place at load factor {load:.4f} after {attempts} rehashes with "
            f"fresh seeds (below {min_growth_load} the index rehashes instead of growing); the id was not stored"
        )


class ProfilesBehindError(StreamrecError):
    """The batch is in the log (topic ``actions``), but the profile store failed to take it.

    Do not resend it: the log would hold it twice. The recommender keeps the batch (``pending``)
    and writes it to the profiles before any later batch; until then it refuses new batches with
    :class:`ProfilesUnavailableError`. ``result`` is the batch's
    :class:`~streamrec.serving.RecordResult` (what its validation said), set by
    ``Recommender.record``.
    """

    def __init__(self, logged: int, topic: str, cause: BaseException) -> None:
        self.logged = logged
        self.cause = cause
        self.result: Any = None  # a serving RecordResult; typed loosely so errors import no part
        super().__init__(
            f"the {logged} event(s) are in the log (topic {topic!r}) but the profile store failed to take "
            f"them ({type(cause).__name__}: {cause}); they will be written to the profiles before any later "
            "batch: do not resend them"
        )


class ProfilesUnavailableError(StreamrecError):
    """Nothing of the batch was stored: events logged earlier still wait for the profile store.

    Resend the batch later; ``GET /healthz`` shows ``profiles_pending`` until the store takes them.
    """

    def __init__(self, pending: int, cause: BaseException) -> None:
        self.pending = pending
        self.cause = cause
        super().__init__(
            f"nothing of this batch was stored: {pending} event(s) logged earlier still wait for the profile "
            f"store ({type(cause).__name__}: {cause}); resend the batch later"
        )
