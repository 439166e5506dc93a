"""The SQL dialect: answers equal the brute-force reference; errors quote the bad part."""

from __future__ import annotations

import math
import random

import pytest
from profiles_reference import expected
from test_query_bruteforce import CONFIG, NOW, SLOTS, TIERS

from streamrec.profiles import ProfileStore
from streamrec.profiles.sql import SqlError


@pytest.fixture(scope="module")
def loaded():
    rng = random.Random(3)
    events = [
        {
            "user": rng.choice("12"),
            "item": rng.choice(["i1", "i2", "i3"]),
            "action": rng.choice(["show", "show", "click"]),
            "time": NOW - rng.expovariate(1 / 86400) + i * 1e-3,
            "counters": {"dwell": float(rng.randint(0, 100))},
            "attributes": {"category": rng.choice("abcd")},
        }
        for i in range(400)
    ]
    events = [e for e in events if e["time"] > NOW - 29 * 86400]
    store = ProfileStore(CONFIG, clock=lambda: NOW, background=False)
    assert not store.write(events).rejected
    yield store, events
    store.close()


@pytest.mark.parametrize("window,seconds", [("5m", 300), ("1h", 3600), ("1d", 86400), ("7d", 7 * 86400)])
def test_per_value_sql_matches_brute_force(loaded, window, seconds):
    store, events = loaded
    out = store.sql(
        f"SELECT value, sum(click) AS clicks, max(dwell), ratio(click, show, 1, 2) AS ctr FROM cat "
        f"WHERE entity = 'user:1' AND window = '{window}' AND now = {NOW} ORDER BY clicks DESC, value LIMIT 3"
    )
    feat = {"slot": "cat", "window_s": seconds, "top_k": 100}
    values, data = expected(events, SLOTS, TIERS, "user:1", feat, NOW)
    rows = sorted(
        ([v, d[1], d[2], (d[1] + 1) / (d[0] + 2)] for v, d in zip(values, data, strict=True)),
        key=lambda r: (-r[1], r[0]),
    )[:3]
    assert out.columns == ["value", "clicks", "MAX(dwell)", "ctr"]
    assert len(out.rows) == len(rows)
    for got, want in zip(out.rows, rows, strict=True):
        assert got[0] == want[0]
        assert all(
            math.isclose(a, b) or (math.isnan(a) and math.isnan(b)) for a, b in zip(got[1:], want[1:], strict=True)
        )


def test_whole_window_sql_matches_brute_force(loaded):
    store, events = loaded
    out = store.sql(
        "SELECT entity, click, show, count(DISTINCT value) AS n FROM cat "
        f"WHERE entity IN ('user:1', 'user:2') AND window = '1d' AND value IN ('a', 'b') AND now = {NOW}"
    )
    for row, label in zip(out.rows, ["user:1", "user:2"], strict=True):
        f = {"slot": "cat", "window_s": 86400, "values": ["a", "b"]}
        _, data = expected(events, SLOTS, TIERS, label, f, NOW)
        _, n = expected(events, SLOTS, TIERS, label, {**f, "agg": "distinct"}, NOW)
        assert row == [label, data[0][1], data[0][0], n[0][0]]


@pytest.mark.parametrize(
    "sql,part",
    [
        ("SELEC value FROM cat", None),
        ("SELECT value FROM nope WHERE entity = 'user:1'", "nope"),
        ("SELECT sum(clik) FROM cat WHERE entity = 'user:1'", "clik"),
        ("SELECT sum(dwell) FROM cat WHERE entity = 'user:1'", "SUM(dwell)"),
        ("SELECT value FROM cat WHERE entity = 'user:1' AND colour = 'red'", "colour"),
        ("SELECT value FROM cat WHERE window = '7d'", None),
        ("SELECT value FROM cat WHERE entity = 'user:1' OR entity = 'user:2'", None),
        ("SELECT value, count(DISTINCT value) FROM cat WHERE entity = 'user:1'", None),
        ("SELECT value FROM cat WHERE entity = 'user:1' LIMIT -1", None),
        ("SELECT value FROM cat WHERE entity = 'user:1' ORDER BY nothing", "nothing"),
        ("SELECT a.value FROM cat AS a JOIN item AS b ON a.value = b.value WHERE entity = 'user:1'", None),
        ("", None),
    ],
)
def test_sql_errors_quote_the_bad_part(loaded, sql, part):
    store, _ = loaded
    with pytest.raises(SqlError) as info:
        store.sql(sql)
    if part is not None:
        assert repr(part) in str(info.value)
