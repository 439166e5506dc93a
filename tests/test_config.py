"""The one duration parser against datetime.timedelta, and its callers reading the same strings alike."""

import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamrec.config import parse_duration
from streamrec.errors import ConfigError

_UNIT = {"ms": "milliseconds", "s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@given(st.integers(0, 10_000), st.sampled_from(sorted(_UNIT)))
def test_a_number_with_a_unit_is_the_seconds_timedelta_gives(n, unit):
    expected = datetime.timedelta(**{_UNIT[unit]: n}).total_seconds()
    assert parse_duration(f"{n}{unit}") == pytest.approx(expected, rel=1e-12)


def test_a_ttl_a_window_and_a_sync_interval_read_1w_alike():
    from streamrec.embedding import SlotConfig
    from streamrec.training.online import OnlineConfig

    week = 7 * 86400.0
    assert SlotConfig(dim=2, ttl="1w").ttl == week
    assert OnlineConfig(sparse_sync_interval="1w").sparse_sync_interval == week
    assert parse_duration("1w", "window") == week


@pytest.mark.parametrize("bad", ["soon", "5 minutes", "-3s", "1e3", True, float("inf"), float("nan"), None])
def test_a_bad_duration_names_the_key_and_the_value(bad):
    with pytest.raises(ConfigError, match=r"^config key .ttl.: .*" + repr(bad)[:4]):
        parse_duration(bad, "ttl")


def test_positive_refuses_zero_but_a_ttl_of_zero_is_allowed():
    assert parse_duration(0, "ttl") == 0.0
    with pytest.raises(ConfigError, match=r"online\.snapshot_interval.*> 0"):
        parse_duration("0s", "online.snapshot_interval", positive=True)
