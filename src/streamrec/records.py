"""The typed records that flow through the loop, defined once and used by every part.

Every record is a frozen ``msgspec.Struct``: it is what the event log stores (as msgpack), what the
HTTP API accepts (as JSON), and what the profile writer, joiner and trainer consume. Keeping one
definition per record means the log, the API and the consumers can never disagree on a field.

Validation lives in the struct itself (``__post_init__``), because msgspec runs that hook both when
a record is built in Python and when it is decoded from JSON or msgpack: an :class:`ActionEvent`
with a NaN time or an empty user cannot exist, whichever way it was made. Type checks the decoders
already do (``str`` vs ``int``) are repeated in the hook only for what the constructor would let
through silently. :func:`parse_record` is the one entry point for untrusted data (dict, JSON text,
msgpack bytes); it turns every failure into :class:`~streamrec.errors.InvalidInputError` naming the
field and the bad value.

Records added later (impressions, training examples, model deltas) go in this file, built the same
way; the log is generic over any struct, so nothing else has to change.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any, Literal, TypeVar

import msgspec

from streamrec.errors import InvalidInputError

__all__ = ["ActionEvent", "parse_action", "parse_many", "parse_record"]

T = TypeVar("T")


def _check_text(field: str, value: Any) -> None:
    if not isinstance(value, str):
        raise InvalidInputError(field, value, f"must be a string, not {type(value).__name__}")
    if not value:
        raise InvalidInputError(field, value, "must not be empty")


def _check_number(field: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError(field, value, f"must be a number, not {type(value).__name__}")
    if not math.isfinite(value):
        raise InvalidInputError(field, value, "must be finite")


class ActionEvent(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One thing a user did to an item: the record of the ``actions`` topic.

    Parameters
    ----------
    user
        Raw id of the user who acted. Profiles hash it before storage; it is never stored raw there.
    item
        Id of the item acted on.
    action
        Lowercase action name: ``"show"`` (an exposure), ``"click"``, ``"like"``, ``"share"``, ``"purchase"``...
    time
        Event time in unix seconds; finite and not negative.
    counters
        Extra measures of the action, e.g. ``{"dwell_ms": 3200.0}``; every value finite.
    attributes
        Item or context attributes the profile slots key on, e.g. ``{"category": "sci-fi"}``.
    request_id
        The recommendation request that showed the item, if any (the joiner joins on it).

    Examples
    --------
    >>> import msgspec
    >>> event = ActionEvent(user="u42", item="i7", action="click", time=1_700_000_000.0,
    ...                     counters={"dwell_ms": 3200.0}, attributes={"category": "sci-fi"})
    >>> msgspec.msgpack.decode(msgspec.msgpack.encode(event), type=ActionEvent) == event
    True
    >>> ActionEvent(user="u42", item="i7", action="click", time=float("nan"))
    Traceback (most recent call last):
    ...
    streamrec.errors.InvalidInputError: time: must be finite (got nan)
    """

    user: str
    item: str
    action: str
    time: float
    counters: dict[str, float] = {}
    attributes: dict[str, str] = {}
    request_id: str | None = None

    def __post_init__(self) -> None:
        _check_text("user", self.user)
        _check_text("item", self.item)
        _check_text("action", self.action)
        if self.action != self.action.lower() or self.action != self.action.strip():
            raise InvalidInputError("action", self.action, "must be a lowercase name without spaces around it")
        _check_number("time", self.time)
        if self.time < 0:
            raise InvalidInputError("time", self.time, "must be unix seconds, not negative")
        if not isinstance(self.counters, dict):
            raise InvalidInputError("counters", self.counters, "must be a dict of name -> number")
        for name, value in self.counters.items():
            _check_text("counters key", name)
            _check_number(f"counters[{name!r}]", value)
        if not isinstance(self.attributes, dict):
            raise InvalidInputError("attributes", self.attributes, "must be a dict of name -> string")
        for name, value in self.attributes.items():
            _check_text("attributes key", name)
            if not isinstance(value, str):
                raise InvalidInputError(f"attributes[{name!r}]", value, "must be a string")
        if self.request_id is not None:
            _check_text("request_id", self.request_id)


# msgspec names the failing location as "$.field", "$.field[...]" or "$.field.key".
_PATH = re.compile(r" - at `\$(?:\.)?(?P<path>[^`]*)`$")
_FIELD = re.compile(r"`(?P<name>[^`]+)`")


def _field_value(data: Any, field: str) -> Any:
    top = re.split(r"[.\[]", field, maxsplit=1)[0]
    if isinstance(data, dict) and top in data:
        return data[top]
    return data


def _as_invalid(exc: msgspec.MsgspecError, data: Any, record_type: type) -> InvalidInputError:
    if isinstance(exc.__cause__, InvalidInputError):  # raised by the struct's __post_init__
        return exc.__cause__
    message = str(exc)
    match = _PATH.search(message)
    if match:
        field = match.group("path") or record_type.__name__
        reason = message[: match.start()]
        return InvalidInputError(field, _field_value(data, field), reason)
    named = _FIELD.search(message)
    if named and "missing required field" in message:
        return InvalidInputError(named.group("name"), None, "required field is missing")
    if named and "unknown field" in message:
        return InvalidInputError(named.group("name"), _field_value(data, named.group("name")), "unknown field")
    return InvalidInputError(record_type.__name__, data, message)


def parse_record(
    data: Any,
    record_type: type[T] = ActionEvent,  # type: ignore[assignment]
    *,
    format: Literal["auto", "python", "json", "msgpack"] = "auto",
) -> T:
    """Validate one record from untrusted data and return it typed.

    Parameters
    ----------
    data
        A dict (or any Python object msgspec can convert), JSON text (``str``), or msgpack bytes.
        With ``format="auto"``, ``str`` is JSON, ``bytes``-like is msgpack, anything else is Python.
    record_type
        The ``msgspec.Struct`` type to produce (default :class:`ActionEvent`).
    format
        Force how ``data`` is read, e.g. ``"json"`` for JSON held in ``bytes``.

    Raises
    ------
    InvalidInputError
        Naming the field and the bad value: a missing or unknown field, a wrong type, an empty id,
        a non-finite time or counter, malformed JSON or msgpack.
    """
    if format == "auto":
        if isinstance(data, str):
            format = "json"
        elif isinstance(data, bytes | bytearray | memoryview):
            format = "msgpack"
        else:
            format = "python"
    try:
        if format == "json":
            return msgspec.json.decode(data, type=record_type)
        if format == "msgpack":
            return msgspec.msgpack.decode(data, type=record_type)
        if isinstance(data, record_type):
            # A struct built in Python already ran __post_init__; re-check its field types too.
            return msgspec.convert(msgspec.to_builtins(data), record_type)
        return msgspec.convert(data, record_type)
    except msgspec.ValidationError as exc:
        raise _as_invalid(exc, data, record_type) from None
    except msgspec.DecodeError as exc:
        raise InvalidInputError(format, data, f"malformed {format}: {exc}") from None
    except InvalidInputError:
        raise
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(record_type.__name__, data, str(exc)) from None


def parse_action(data: Any) -> ActionEvent:
    """:func:`parse_record` for an :class:`ActionEvent` (the ``POST /v1/events`` body, a CSV row...)."""
    return parse_record(data, ActionEvent)


def parse_many(
    items: Iterable[Any],
    record_type: type[T] = ActionEvent,  # type: ignore[assignment]
) -> tuple[list[T], list[tuple[int, InvalidInputError]]]:
    """Validate a batch: the valid records, and ``(index, error)`` for each invalid one.

    A bad record never hides the valid ones beside it: callers apply ``valid`` and report
    ``errors`` (e.g. as a 422 listing each index and field).
    """
    valid: list[T] = []
    errors: list[tuple[int, InvalidInputError]] = []
    for index, item in enumerate(items):
        try:
            valid.append(parse_record(item, record_type))
        except InvalidInputError as exc:
            errors.append((index, exc))
    return valid, errors


# -- joiner records (streamrec.joiner; see docs/joiner.md) --------------------------------------


def _check_rate(field: str, value: Any) -> None:
    _check_number(field, value)
    if not 0.0 < value <= 1.0:
        raise InvalidInputError(field, value, "must be in (0, 1]")


class Impression(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One item shown in one response, with the exact features the ranker used (topic ``impressions``).

    The joiner turns it into exactly one :class:`Example` (see ``docs/joiner.md``); ``(request_id,
    item)`` identifies it, so a duplicated impression is recognised and joined once.

    Examples
    --------
    >>> imp = Impression(request_id="r1", user="u1", item="i7", time=1_700_000_000.0, sparse={"user": [42]})
    >>> msgspec.msgpack.decode(msgspec.msgpack.encode(imp), type=Impression) == imp
    True
    """

    request_id: str
    user: str
    item: str
    time: float  # event time the item was shown, unix seconds
    sparse: dict[str, list[int]] = {}  # slot -> int64 feature ids used at serving
    dense: list[float] = []  # dense feature values used at serving, in the model's order
    position: int = 0
    score: float | None = None  # the served (corrected) probability, if any

    def __post_init__(self) -> None:
        _check_text("request_id", self.request_id)
        _check_text("user", self.user)
        _check_text("item", self.item)
        _check_number("time", self.time)
        if self.time < 0:
            raise InvalidInputError("time", self.time, "must be unix seconds, not negative")


class Example(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A labelled training example (topic ``examples``), built by the joiner or by dataset readers.

    ``sample_rate`` is the probability the example was kept: ``r`` for a sampled negative, 1 for a
    positive. Predictions of a model trained on such examples are corrected at serving time with
    :func:`streamrec.joiner.correct_probability` (``docs/joiner.md``).
    """

    sparse: dict[str, list[int]]
    dense: list[float] = []
    label: float  # 1.0 positive, 0.0 negative
    sample_rate: float = 1.0  # probability this example was kept (negatives: r; positives: 1)
    time: float  # event time of the label (action time, or window close)
    request_id: str | None = None
    user: str | None = None
    item: str | None = None

    def __post_init__(self) -> None:
        _check_number("label", self.label)
        if not 0.0 <= self.label <= 1.0:
            raise InvalidInputError("label", self.label, "must be in [0, 1]")
        _check_rate("sample_rate", self.sample_rate)
        _check_number("time", self.time)


__all__ += ["Example", "Impression"]
