"""Limits of the HTTP API (``[serving.limits]``) and the checks every untrusted value passes.

Why limits: without them one request costs the server whatever the client asks. A 100 MB body
was read into memory whole; a 0.1 MB ``/v1/features/query`` (4,000 entities x 1,000 features)
made a 336 MB answer and stalled ``/healthz`` for 2 s. Each limit below bounds one of those costs
and is checked before the work it bounds: the body size from ``Content-Length`` and then while
the body streams in (413), the counts before the query runs (422), the answer's size once encoded
(422). Every refusal names the limit and its value, so a client knows what to split.

Why the value checks: JSON as Python reads it carries values no store can take. ``NaN`` and
``Infinity`` are numbers to ``json.loads``; ``1e300`` seconds is a float but not a time; and
``"\\ud800"`` is a ``str`` that UTF-8 cannot encode, so it passed validation and failed deep in a
store (a 500, after part of the work was done). :func:`check_epoch`, :func:`check_seconds` and
:func:`find_unencodable` refuse them where they enter, naming the field.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

from streamrec.errors import InvalidInputError

__all__ = [
    "MAX_EPOCH_S",
    "ServingLimits",
    "check_epoch",
    "check_seconds",
    "find_unencodable",
    "is_utf8",
    "json_safe",
]

MAX_EPOCH_S = 253_402_300_799.0
"""The latest time the API takes, 9999-12-31T23:59:59Z: the end of what calendars (and Python's
``datetime``) write, far inside what the profile store's int64 slice arithmetic holds."""


class ServingLimits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The ``[serving.limits]`` section: what one HTTP request may ask of the server.

    Attributes
    ----------
    max_body_bytes: request body size; checked against ``Content-Length`` before reading and
        counted while a body streams in (413).
    max_events: events in one ``POST /v1/events`` batch (422).
    max_entities: entities in one ``POST /v1/features/query`` (422).
    max_features: features in one query (422).
    max_query_cells: entities x features of one query: the answers it computes (422). The default
        is the size of the recommender's own query for 500 candidates and 100 features.
    max_response_bytes: the encoded answer of one query, which ``top_k`` tables can make large
        however few the cells (422).

    Examples
    --------
    >>> ServingLimits().max_body_bytes
    1048576
    >>> from streamrec.serving import RecommenderConfig
    >>> RecommenderConfig.from_dict({"limits": {"max_events": 0}})
    Traceback (most recent call last):
    ...
    streamrec.errors.ConfigError: config key 'serving.limits.max_events': max_events must be >= 1, got 0
    """

    max_body_bytes: int = 1 << 20
    max_events: int = 1000
    max_entities: int = 1000
    max_features: int = 200
    max_query_cells: int = 50_000
    max_response_bytes: int = 16 << 20

    def __post_init__(self) -> None:
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be >= 1, got {value!r}")

    def refuse(self, field: str, name: str, got: int) -> InvalidInputError:
        """The error for ``got`` over the limit ``name`` (the field is what the client sent)."""
        return InvalidInputError(
            field, got, f"over the limit serving.limits.{name} = {getattr(self, name)}; split the request"
        )


def is_utf8(text: str) -> bool:
    """Whether ``text`` encodes as UTF-8 (it does not when it holds a lone surrogate)."""
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def find_unencodable(data: Any, path: str = "") -> tuple[str, str] | None:
    """The first string of decoded JSON (a key or a value) that UTF-8 cannot encode, as
    ``(field path, the string)``; ``None`` if there is none.

    Paths read like the API's field names: ``events[0].request_id``, ``entities[2]``; a bad key
    is reported at the object holding it. Iterative, so a deeply nested body cannot overflow the
    stack.

    >>> find_unencodable({"events": [{"user": "u1"}, {"user": "u\\ud800"}]})
    ('events[1].user', 'u\\ud800')
    >>> find_unencodable({"a": [1, 2.5, None, "ok"]}) is None
    True
    """
    stack: list[tuple[str, Any]] = [(path, data)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            if not is_utf8(value):
                return where, value
        elif isinstance(value, dict):
            children = []
            for key, child in value.items():
                if isinstance(key, str) and not is_utf8(key):
                    return where, key
                children.append((f"{where}.{key}" if where else str(key), child))
            stack.extend(reversed(children))
        elif isinstance(value, list | tuple):
            stack.extend(reversed([(f"{where}[{i}]", child) for i, child in enumerate(value)]))
    return None


def check_epoch(field: str, value: Any) -> float:
    """``value`` as epoch seconds in ``[0, MAX_EPOCH_S]``, else :class:`InvalidInputError` naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError(field, value, "must be a number of epoch seconds")
    if not (isinstance(value, int) or math.isfinite(value)) or not 0 <= value <= MAX_EPOCH_S:
        raise InvalidInputError(field, value, f"must be finite epoch seconds in [0, {MAX_EPOCH_S:.0f}]")
    return float(value)


def check_seconds(field: str, seconds: float, value: Any) -> float:
    """A duration of ``seconds`` (parsed from ``value``) that is > 0 and at most ``MAX_EPOCH_S``."""
    if not 0 < seconds <= MAX_EPOCH_S:
        raise InvalidInputError(field, value, f"must be a duration in (0, {MAX_EPOCH_S:.0f}] seconds")
    return seconds


def json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` made encodable as strict JSON: non-finite floats and unencodable strings become
    their escaped text (``"nan"``, ``"\\\\ud800"``), anything else deep or odd its short ``repr``.

    Error bodies echo what the client sent; echoing it raw made the 422 itself a 500.
    """
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        return value if is_utf8(value) else value.encode("utf-8", "backslashreplace").decode()
    if depth < 4 and isinstance(value, list | tuple):
        return [json_safe(v, depth + 1) for v in value[:20]]
    if depth < 4 and isinstance(value, dict):
        return {json_safe(str(k), depth + 1): json_safe(v, depth + 1) for k, v in list(value.items())[:20]}
    text = repr(value)
    return text[:200] + ("..." if len(text) > 200 else "")
