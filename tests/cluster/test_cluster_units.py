"""``cluster up --print systemd``: units systemd accepts, and processes that run a cluster when a
supervisor other than the launcher starts them (here a few lines that read the unit files only)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from streamrec.cluster.units import exec_args

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")


def _print_units(folder: Path, *extra: str) -> dict[str, dict[str, list[str]]]:
    args = [sys.executable, "-m", "streamrec", "cluster", "up", "--dir", str(folder), "--print", "systemd", *extra]
    run = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    units = {}
    for path in sorted((folder / "systemd").iterdir()):
        assert f"# ==> {path.name} <==\n{path.read_text()}" in run.stdout  # printed as written
        fields: dict[str, list[str]] = {}
        for line in path.read_text().splitlines():
            if "=" in line and not line.startswith(("[", "#")):
                key, _, value = line.partition("=")
                fields.setdefault(key, []).append(value)
        units[path.name] = fields
    return units


def _order(units: dict[str, dict[str, list[str]]]) -> list[str]:
    """The services in an order that respects every After= (what systemd computes)."""
    services = {n: set(" ".join(u.get("After", [])).split()) for n, u in units.items() if n.endswith(".service")}
    order: list[str] = []
    while services:
        ready = sorted(n for n, after in services.items() if after <= set(order))
        assert ready, f"a cycle in After=: {services}"
        order += ready
        for n in ready:
            del services[n]
    return order


def test_every_process_gets_a_unit_that_systemd_accepts(tmp_path):
    units = _print_units(tmp_path / "c", "--nodes", "2", "--partitions", "3", "--joiners", "2", "--api-port", "0")
    names = {n.removeprefix("streamrec-").removesuffix(".service") for n in units if n.endswith(".service")}
    assert names == {
        "redis",
        "topics",
        "node-0",
        "node-1",
        "ingest",
        "joiner-0",
        "joiner-1",
        "trainer",
        "retriever",
        "api",
    }
    assert set(units["streamrec.target"]["Wants"][0].split()) == {f"streamrec-{n}.service" for n in names}
    topics = exec_args(units["streamrec-topics.service"]["ExecStart"][0])
    assert topics[-5:] == ["actions:3", "impressions:3", "examples:3", "model-updates:1", "retrieval-updates:1"]
    api_after = set(units["streamrec-api.service"]["After"][0].split())
    assert {"streamrec-node-0.service", "streamrec-node-1.service", "streamrec-redis.service"} <= api_after
    assert _order(units)[0] == "streamrec-redis.service"
    verify = shutil.which("systemd-analyze")
    if verify is None:
        pytest.skip("systemd-analyze is not installed: the unit syntax was not checked by systemd")
    files = [str(p) for p in sorted((tmp_path / "c" / "systemd").iterdir()) if p.suffix == ".service"]
    run = subprocess.run([verify, "verify", "--man=no", *files], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and not run.stderr.strip(), run.stderr


def test_the_units_command_lines_run_a_cluster_that_serves_a_model(tmp_path):
    folder = tmp_path / "c"
    units = _print_units(folder, "--nodes", "1", "--replicas", "1", "--api-port", "0", "--grace", "5")
    procs: list[subprocess.Popen] = []
    try:
        for name in _order(units):
            unit = units[name]
            env = {**os.environ, **dict(v.split("=", 1) for v in exec_args(unit["Environment"][0]))}
            args = exec_args(unit["ExecStart"][0])
            log = open(unit["StandardOutput"][0].removeprefix("append:"), "ab")  # noqa: SIM115
            proc = subprocess.Popen(args, cwd=unit["WorkingDirectory"][0], env=env, stdout=log, stderr=log)
            if unit["Type"] == ["oneshot"]:
                assert proc.wait(120) == 0, name
            else:
                procs.append(proc)
                time.sleep(0.5)  # Type=simple: started, not ready; the parts wait for their neighbours
        api = json.loads((folder / "cluster.json").read_text())  # ports fixed by --print, as by `up`
        assert "node_ports" in api
        url = units["streamrec-api.service"]["Description"][0].rsplit("(", 1)[1].rstrip(")")
        deadline = time.monotonic() + 240
        health: dict = {}
        while time.monotonic() < deadline:
            for proc in procs:
                assert proc.poll() is None, f"{proc.args[:6]} exited with {proc.returncode}"
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2) as reply:
                    health = json.loads(reply.read())
                if health.get("model_version") is not None and health["model_version"] >= 1:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert health.get("status") == "ok" and health.get("model_version", 0) >= 1, health
    finally:
        for proc in reversed(procs):
            proc.send_signal(signal.SIGTERM)
        for proc in reversed(procs):
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
