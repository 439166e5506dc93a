"""Loading and validating configuration.

streamrec reads one TOML file. Each part declares its section as a ``msgspec.Struct`` with
``forbid_unknown_fields=True``; :func:`convert` turns plain data (from TOML or Python) into that
struct and re-raises any problem as :class:`~streamrec.errors.ConfigError` naming the dotted key,
so a typo in ``[embedding.slots.user]`` reads ``config key 'embedding.slots.user.dimm': unknown
key`` rather than a stack trace.

Durations are written the way people write them: ``ttl = "30d"``, ``"12h"``, ``"90s"`` or a
number of seconds; :func:`parse_duration` is the one parser for them.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from streamrec.errors import ConfigError

T = TypeVar("T")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(value: Any, key: str = "duration", *, positive: bool = False) -> float:
    """Seconds in ``value``: a number of seconds or a number with a unit, ``ms s m h d w``.

    The one duration parser of streamrec: TTLs, windows and the trainer's sync schedules all read
    ``"1w"``, ``"250ms"`` or ``90`` alike. ``positive`` refuses 0 (an interval that must elapse);
    without it 0 is allowed (a TTL or window of 0 where the caller gives it a meaning). Errors are
    :class:`~streamrec.errors.ConfigError` naming ``key``.

    Examples
    --------
    >>> parse_duration("5m"), parse_duration("250ms"), parse_duration("1w"), parse_duration(3)
    (300.0, 0.25, 604800.0, 3.0)
    >>> parse_duration(0, "online.sparse_sync_interval", positive=True)
    Traceback (most recent call last):
    ...
    streamrec.errors.ConfigError: config key 'online.sparse_sync_interval': duration must be > 0 seconds, got 0
    """
    if isinstance(value, bool):
        raise ConfigError(key, f"expected a duration such as '30d' or seconds, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]
    else:
        raise ConfigError(key, f"expected a duration such as '30d', '12h', '90s', '250ms' or seconds, got {value!r}")
    if not seconds >= 0 or seconds == float("inf"):
        raise ConfigError(key, f"duration must be a finite number of seconds >= 0, got {value!r}")
    if positive and seconds == 0:
        raise ConfigError(key, f"duration must be > 0 seconds, got {value!r}")
    return seconds


def _dotted(path: str, prefix: str) -> str:
    # msgspec paths look like "$.slots.user.dim" or "$.slots[0]"; make them "prefix.slots.user.dim".
    path = path.removeprefix("$").lstrip(".")
    return ".".join(p for p in (prefix, path) if p)


_UNKNOWN = re.compile(r"Object contains unknown field `([^`]+)`(?: - at `([^`]+)`)?")
_AT = re.compile(r"^(.*) - at `([^`]+)`$")
_FIELD = re.compile(r"^`(\w+)` (.*)$", re.S)


def convert(data: Any, type_: type[T], section: str = "") -> T:
    """Validate ``data`` into ``type_``; errors become :class:`ConfigError` naming the key."""
    try:
        return msgspec.convert(data, type_, strict=True)
    except msgspec.ValidationError as exc:
        message = str(exc)
        if match := _UNKNOWN.match(message):
            field, where = match.group(1), match.group(2) or "$"
            raise ConfigError(_dotted(f"{where}.{field}", section), "unknown key") from None
        where, detail = "$", message
        if match := _AT.match(message):
            detail, where = match.group(1), match.group(2)
        if match := _FIELD.match(detail):  # raised by a __post_init__ check: "`field` must be ..."
            where, detail = f"{where}.{match.group(1)}", f"{match.group(1)} {match.group(2)}"
        raise ConfigError(_dotted(where, section), detail) from None


def convert_keyed(data: Any, type_: type[T], section: str, field: str, item_type: type) -> T:
    """:func:`convert` for a section holding a table of named sub-tables (``[section.field.NAME]``).

    msgspec reports errors inside a dict as ``[...]``; converting each named entry first makes the
    error name it (``embedding.slots.user.dim``).
    """
    if isinstance(data, dict) and isinstance(data.get(field), dict):
        items = {name: convert(item, item_type, f"{section}.{field}.{name}") for name, item in data[field].items()}
        data = {**data, field: items}
    return convert(data, type_, section)


def load_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file, raising :class:`ConfigError` that names the file on syntax errors."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError("", f"config file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"{path}: {exc}") from None
