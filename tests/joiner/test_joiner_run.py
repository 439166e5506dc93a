"""A joiner left running: it follows new records, stops on Ctrl-C or after --max-seconds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from streamrec.joiner import JoinConfig, Joiner
from streamrec.log import open_log
from streamrec.records import ActionEvent, Impression


def _imp(req: str, item: str, t: float) -> Impression:
    return Impression(request_id=req, user="u", item=item, time=t)


def test_max_seconds_stops_a_running_joiner_that_follows_new_records(tmp_path):
    config = JoinConfig(window_s=10, allowed_lateness_s=0, negative_rate=1.0, sync=False)
    with open_log(f"sqlite://{tmp_path}/log.db") as log, Joiner(log, tmp_path / "state", config) as joiner:
        log.append("impressions", [_imp("r1", "a", 0.0), _imp("r1", "b", 0.0)])
        start = time.monotonic()
        stats = joiner.run(max_seconds=0.3, idle_sleep_s=0.05)
        assert 0.3 <= time.monotonic() - start < 5
        assert stats.pending == 2 and stats.examples == 0  # the window is still open
        log.append("actions", [ActionEvent(user="u", item="a", action="click", time=3.0, request_id="r1")])
        log.append("impressions", [_imp("r2", "c", 30.0)])  # moves the watermark past 10
        stats = joiner.run(max_seconds=0.3, idle_sleep_s=0.05)
        assert (stats.positives, stats.negatives_kept, stats.pending) == (1, 1, 1)


def test_ctrl_c_ends_the_command_with_its_summary(tmp_path):
    url = f"sqlite://{tmp_path}/log.db"
    with open_log(url) as log:
        log.append("impressions", [_imp("r1", "a", 0.0)])
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamrec.joiner", "--log", url, "--state-dir", str(tmp_path / "state"), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 60
    with open_log(url) as log:
        while log.committed("impressions", "joiner") < 1:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1])["impressions"] == 1
