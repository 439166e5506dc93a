"""The joiner over a real event log (SQLite, Redis Streams): end to end, and crashes at each step."""

from __future__ import annotations

import json
import uuid

import pytest
from joiner_data import LATENESS, RATE, WINDOW, check_examples, traffic
from typer.testing import CliRunner

from streamrec.errors import ConfigError
from streamrec.joiner import JoinConfig, Joiner
from streamrec.log import open_log
from streamrec.records import Example

CONFIG = JoinConfig(
    window_s=WINDOW, allowed_lateness_s=LATENESS, negative_rate=RATE, batch_size=97, memory_budget=50, sync=False
)


def _fill(log, imps, acts, chunk: int = 500) -> None:
    for start in range(0, max(len(imps), len(acts)), chunk):
        if imps[start : start + chunk]:
            log.append("impressions", imps[start : start + chunk])
        if acts[start : start + chunk]:
            log.append("actions", acts[start : start + chunk])


def _examples(log) -> list[Example]:
    out = []
    with log.consumer("examples", group=f"check-{uuid.uuid4().hex[:8]}", record_type=Example) as consumer:
        while batch := consumer.poll(max_records=10_000, timeout_s=0):
            out += [e.record for e in batch]
    return out


@pytest.fixture(params=["sqlite", "redis"])
def log_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/log.db"
    return f"{request.getfixturevalue('redis_url')}?prefix=joiner-{uuid.uuid4().hex[:8]}:"


def test_end_to_end_matches_the_offline_join(log_url, tmp_path):
    imps, acts = traffic(400)
    with open_log(log_url) as log:
        _fill(log, imps, acts)
        with Joiner(log, tmp_path / "state", CONFIG) as joiner:
            stats = joiner.run(once=True, drain=True)
        examples = _examples(log)
    check_examples(examples, imps, acts)
    assert stats.examples == len(examples) and stats.spilled > 0
    assert stats.impressions == len(imps) and stats.actions == len(acts)


def test_restarts_mid_stream_continue_exactly(tmp_path):
    """Stop and restart the joiner every few steps, with records still arriving: same answer."""
    imps, acts = traffic(300, seed=1)
    with open_log(f"sqlite://{tmp_path}/log.db") as log:
        for part in range(3):
            lo, hi = part * len(imps) // 3, (part + 1) * len(imps) // 3
            alo, ahi = part * len(acts) // 3, (part + 1) * len(acts) // 3
            _fill(log, imps[lo:hi], acts[alo:ahi])
            with Joiner(log, tmp_path / "state", CONFIG) as joiner:
                for _ in range(3):
                    joiner.step()
        with Joiner(log, tmp_path / "state", CONFIG) as joiner:
            joiner.run(once=True, drain=True)
        check_examples(_examples(log), imps, acts)


class _Crash(Exception):
    pass


@pytest.mark.parametrize("where", ["before_append", "after_append"])
def test_a_crash_around_the_append_loses_and_duplicates_nothing(where, tmp_path, monkeypatch):
    """Die after the state committed the outbox, before or after the examples reached the log."""
    imps, acts = traffic(200, seed=2)
    with open_log(f"sqlite://{tmp_path}/log.db") as log:
        _fill(log, imps, acts)
        joiner = Joiner(log, tmp_path / "state", CONFIG)
        for _ in range(3):
            joiner.step()
        if where == "before_append":
            real = log.append

            def append(topic, records, **kw):
                if topic == "examples":
                    raise _Crash
                return real(topic, records, **kw)

            monkeypatch.setattr(log, "append", append)
        else:
            monkeypatch.setattr(joiner.states[0], "put_meta", lambda meta: (_ for _ in ()).throw(_Crash()))
        with pytest.raises(_Crash):
            for _ in range(1000):  # until a step has examples to append
                joiner.step()
        monkeypatch.undo()
        joiner.close()  # the consumers never committed this step: it is replayed
        assert (tmp_path / "state" / "data.mdb").exists()  # one partition: the state dir itself
        with Joiner(log, tmp_path / "state", CONFIG) as again:
            again.run(once=True, drain=True)
        check_examples(_examples(log), imps, acts)


def test_cli_runs_once_and_prints_counters(tmp_path):
    from streamrec.cli import app

    imps, acts = traffic(100, seed=3)
    with open_log(f"sqlite://{tmp_path}/log.db") as log:
        _fill(log, imps, acts)
    args = ["joiner", "--log", f"sqlite://{tmp_path}/log.db", "--state-dir", str(tmp_path / "state")]
    args += ["--window", "1m", "--lateness", "5s", "--negative-rate", str(RATE), "--once", "--drain", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    counters = json.loads(result.output.strip().splitlines()[-1])
    with open_log(f"sqlite://{tmp_path}/log.db") as log:
        examples = _examples(log)
    check_examples(examples, imps, acts)
    assert counters["examples"] == len(examples) and counters["impressions"] == len(imps)
    assert counters["watermark"] is None  # drained: +inf, written as null so the line is strict JSON


def test_cli_rejects_a_bad_rate_naming_it(tmp_path):
    from streamrec.cli import app

    args = ["joiner", "--log", f"sqlite://{tmp_path}/log.db", "--negative-rate", "1.5", "--once"]
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, ConfigError) and "joiner.negative_rate" in str(result.exception)


def test_a_record_that_does_not_decode_stops_the_joiner_naming_its_offset(tmp_path):
    from streamrec.errors import LogError

    imps, _ = traffic(20, seed=4)
    with open_log(f"sqlite://{tmp_path}/log.db") as log:
        log.append("impressions", imps[:10])
        log.append("impressions", [b"\x93not an impression"])
        with Joiner(log, tmp_path / "state", CONFIG) as joiner:
            with pytest.raises(LogError, match="offset 10"):
                joiner.run(once=True)
            assert joiner.stats().impressions == 10  # the good records before it were applied
