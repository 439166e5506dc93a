"""``streamrec cluster up`` as a user runs it: JSON endpoints, a clean stop on SIGTERM, resuming the
same folder, and a process death that stops everything with exit code 1 naming the process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")


def _up(folder) -> tuple[subprocess.Popen, dict]:
    args = [sys.executable, "-m", "streamrec", "cluster", "up", "--dir", str(folder), "--nodes", "1"]
    proc = subprocess.Popen(
        [*args, "--api-port", "0", "--json", "--grace", "5"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    line = proc.stdout.readline()  # one JSON object once every process is ready
    if not line:
        proc.wait(30)
        pytest.fail(f"cluster up printed nothing; stderr:\n{proc.stderr.read()}")
    return proc, json.loads(line)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read())


def _clicks(api: str, user: str) -> float:
    query = {"entities": [f"user:{user}"], "features": [{"slot": "actions", "window": "1h", "counters": ["count"]}]}
    return _post(f"{api}/v1/features/query", query)["results"][0]["actions:counters:1h"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "streamrec", "cluster", *args]
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def test_cluster_up_stops_cleanly_resumes_its_folder_and_fails_loudly(tmp_path):
    proc, info = _up(tmp_path)
    pids = [p["pid"] for p in info["processes"]]
    try:
        names = ["redis", "node-0", "ingest", "joiner", "trainer", "retriever", "api"]
        assert [p["name"] for p in info["processes"]] == names
        api = info["api"]
        event = {"user": "carol", "item": "x", "action": "click", "time": time.time()}
        assert _post(f"{api}/v1/events", {"events": [event]})["accepted"] == 1
        deadline = time.monotonic() + 10
        while _clicks(api, "carol") < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        assert all(_gone(pid) for pid in pids)
        assert not (tmp_path / "run" / "up.json").exists()
    finally:
        if proc.poll() is None:
            proc.kill()

    # The same folder again: same ports, the profile written before is still there.
    proc, again = _up(tmp_path)
    pids = [p["pid"] for p in again["processes"]]
    try:
        assert (again["profile_nodes"], again["redis"]) == (info["profile_nodes"], info["redis"])
        assert _clicks(again["api"], "carol") == 1
        trainer = next(p["pid"] for p in again["processes"] if p["name"] == "trainer")
        os.kill(trainer, signal.SIGKILL)
        assert proc.wait(60) == 1
        err = proc.stderr.read()
        assert "trainer exited with code -9" in err and "trainer.log" in err
        assert all(_gone(pid) for pid in pids)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_cluster_status_and_down_from_another_terminal(tmp_path):
    assert _cli("status", "--dir", str(tmp_path)).returncode == 3  # nothing runs yet
    proc, info = _up(tmp_path)
    pids = [p["pid"] for p in info["processes"]]
    try:
        api = info["api"]
        event = {"user": "dave", "item": "y", "action": "click", "time": time.time()}
        assert _post(f"{api}/v1/events", {"events": [event]})["accepted"] == 1

        done = _cli("status", "--dir", str(tmp_path), "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        report = json.loads(done.stdout)
        assert report["running"] and report["healthy"] and report["api"] == api
        by_name = {p["name"]: p for p in report["processes"]}
        assert [p["pid"] for p in report["processes"]] == pids
        assert all(p["alive"] and p["healthy"] for p in report["processes"])
        assert by_name["node-0"]["detail"] == "SERVING" and by_name["redis"]["detail"] == "PONG"
        assert by_name["api"]["detail"].startswith("model version ")
        groups = {(r["topic"], r["group"]): r for r in report["lag"]}
        assert set(groups) == {("actions", "profiles"), ("impressions", "joiner"), ("actions", "joiner"),
                               ("examples", "trainer")}  # fmt: skip
        assert groups["actions", "profiles"]["end"] >= 1 and groups["actions", "profiles"]["lag"] >= 0

        again = _cli("up", "--dir", str(tmp_path), "--nodes", "1", "--api-port", "0")
        assert again.returncode != 0 and "already runs from this folder" in again.stderr + again.stdout
        assert proc.poll() is None  # the running cluster is untouched

        stopped = _cli("down", "--dir", str(tmp_path))
        assert stopped.returncode == 0 and "stopped after" in stopped.stdout, stopped.stdout + stopped.stderr
        assert all(_gone(pid) for pid in pids)  # down returns only once every process is gone
        assert proc.wait(10) == 0  # the launcher stopped as on Ctrl-C
        assert _cli("status", "--dir", str(tmp_path)).returncode == 3
        assert "nothing runs" in _cli("down", "--dir", str(tmp_path)).stdout
    finally:
        if proc.poll() is None:
            proc.kill()
