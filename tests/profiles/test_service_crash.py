"""A node process killed with SIGKILL keeps every write it acknowledged; SIGTERM drains and flushes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamrec.profiles import Feature, FeatureQuery
from streamrec.profiles.client import ProfileClient


def start_node(path: Path, tag: str) -> tuple[subprocess.Popen, str]:
    ready = path.parent / f"ready-{tag}.json"
    cmd = [
        sys.executable, "-m", "streamrec.profiles.service_cli", "--path", str(path),
        "--port", "0", "--metrics-port", "-1", "--ready-file", str(ready),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline, "node did not start"
        time.sleep(0.05)
    return proc, json.loads(ready.read_text())["address"]


def clicks(client: ProfileClient, now: float) -> float:
    q = FeatureQuery(features=[Feature(slot="actions", window="1h", counters=("count",))], entities=["user:7"], now=now)
    return client.query(q).results[0][0].scalar()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_acknowledged_writes_survive_the_node_process(tmp_path, sig):
    now = time.time()
    events = [{"user": "7", "item": f"m{i}", "action": "click", "time": now - 60 - i} for i in range(25)]
    proc, address = start_node(tmp_path / "data", "a")
    try:
        client = ProfileClient([address])
        assert client.write(events).accepted == 25  # durable on return
        client.close()
    finally:
        proc.send_signal(sig)
        proc.wait(30)
    proc, address = start_node(tmp_path / "data", "b")
    try:
        client = ProfileClient([address])
        assert clicks(client, now) == 25.0
        assert client.health() == {address: "SERVING"}
        client.close()
    finally:
        proc.terminate()
        proc.wait(30)
