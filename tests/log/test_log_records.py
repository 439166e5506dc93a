"""ActionEvent validation against an independent predicate, over JSON, msgpack and Python input."""

from __future__ import annotations

import math

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamrec.errors import InvalidInputError
from streamrec.records import ActionEvent, parse_action, parse_many, parse_record

GOOD = {"user": "u42", "item": "i7", "action": "click", "time": 1_700_000_000.5}

anything = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4), st.sampled_from(["", "Click", " like", "share"]),
)  # fmt: skip
counter_maps = st.dictionaries(
    st.text(max_size=3), st.one_of(st.floats(), st.integers(-3, 3), st.text(max_size=2)), max_size=3
)
attribute_maps = st.dictionaries(st.text(max_size=3), st.one_of(st.text(max_size=3), st.integers(0, 3)), max_size=3)


def is_valid(data: dict) -> bool:
    """The rules of ActionEvent, written out plainly (the reference the decoder is checked against)."""
    allowed = {"user", "item", "action", "time", "counters", "attributes", "request_id"}
    if set(data) - allowed or not {"user", "item", "action", "time"} <= set(data):
        return False
    for key in ("user", "item", "action"):
        if not isinstance(data[key], str) or data[key] == "":
            return False
    if data["action"] != data["action"].strip().lower():
        return False
    t = data["time"]
    if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or t < 0:
        return False
    for name, value in data.get("counters", {}).items():
        if name == "" or isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return False
    for name, value in data.get("attributes", {}).items():
        if name == "" or not isinstance(value, str):
            return False
    rid = data.get("request_id")
    return rid is None or (isinstance(rid, str) and rid != "")


records = st.fixed_dictionaries(
    {},
    optional={
        "user": st.one_of(st.text(max_size=3), anything),
        "item": st.one_of(st.text(max_size=3), anything),
        "action": st.one_of(st.sampled_from(["click", "like"]), anything),
        "time": st.one_of(st.floats(0, 2e9), anything),
        "counters": counter_maps,
        "attributes": attribute_maps,
        "request_id": st.one_of(st.none(), st.text(max_size=3)),
        "extra": st.integers(-5, 5),
    },
)


@settings(max_examples=300, deadline=None)
@given(data=records)
def test_parse_accepts_exactly_what_the_plain_rules_accept(data):
    # JSON cannot carry NaN/inf; msgpack and Python objects can. Check both paths that can.
    for form in (data, msgspec.msgpack.encode(data)):
        if is_valid(data):
            event = parse_action(form)
            assert event.user == data["user"] and event.time == data["time"]
            assert event.counters == {k: float(v) for k, v in data.get("counters", {}).items()}
            assert msgspec.msgpack.decode(msgspec.msgpack.encode(event), type=ActionEvent) == event
        else:
            with pytest.raises(InvalidInputError) as info:
                parse_action(form)
            assert info.value.field  # names what is wrong


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"user": ""}, "user"),
        ({"item": 7}, "item"),
        ({"action": "Click"}, "action"),
        ({"time": float("nan")}, "time"),
        ({"time": -1.0}, "time"),
        ({"counters": {"dwell_ms": float("inf")}}, "counters['dwell_ms']"),
        ({"attributes": {"category": 3}}, "attributes"),
        ({"request_id": ""}, "request_id"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_error_names_the_field_and_value(change, field):
    with pytest.raises(InvalidInputError) as info:
        parse_action({**GOOD, **change})
    assert info.value.field.startswith(field)
    assert field.split("[")[0] in str(info.value)


def test_missing_field_and_malformed_input_are_named():
    with pytest.raises(InvalidInputError, match="time"):
        parse_action({k: v for k, v in GOOD.items() if k != "time"})
    with pytest.raises(InvalidInputError, match="json"):
        parse_action('{"user": "u"')
    with pytest.raises(InvalidInputError, match="msgpack"):
        parse_action(b"\xc1")
    assert parse_record(msgspec.json.encode(GOOD), format="json") == ActionEvent(**GOOD)
    assert parse_action(msgspec.json.encode(GOOD).decode()) == ActionEvent(**GOOD)


def test_constructing_a_bad_event_in_python_raises_too():
    with pytest.raises(InvalidInputError, match="time"):
        ActionEvent(user="u", item="i", action="click", time=float("inf"))
    with pytest.raises(InvalidInputError, match="user"):
        ActionEvent(user=3, item="i", action="click", time=1.0)  # type: ignore[arg-type]


def test_parse_many_keeps_the_valid_records_beside_the_bad_ones():
    valid, errors = parse_many([GOOD, {**GOOD, "time": "soon"}, {**GOOD, "item": "i8"}])
    assert [e.item for e in valid] == ["i7", "i8"]
    assert [(i, e.field) for i, e in errors] == [(1, "time")]
