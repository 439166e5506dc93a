"""``streamrec cluster status`` and ``streamrec cluster down``: a running cluster seen from outside.

``cluster up`` stays in the foreground; a second terminal, a script or a CI job needs to ask what
is running and to stop it without knowing the launcher's pid. While it runs, the launcher keeps
``<dir>/run/up.json``: its own pid and what ``--json`` printed (processes, pids, addresses). It
is written once every process is ready and removed when the launcher has stopped them all, so

* **status** reads it, checks that each pid still runs the command it was started with (a pid
  can be reused), and asks each part that answers: the API's ``/healthz`` (model version), Redis
  ``PING``, each profile node's gRPC health check, and the consumer groups' lag on the log
  (records appended but not committed: the trainer commits only when a snapshot holds what it
  learned, so its lag grows between snapshots by design);
* **down** sends SIGTERM to the launcher, which stops the parts in order (API first, Redis last)
  exactly as Ctrl-C does, and waits for every process to be gone. The children also receive
  SIGTERM if the launcher itself dies (``process.py``), so there is nothing else to clean up.

A folder whose ``up.json`` names a launcher that no longer runs is simply not running.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from streamrec.cluster.process import redis_answers
from streamrec.errors import StreamrecError

__all__ = ["CONSUMER_GROUPS", "down", "launcher_cmdline", "read_running", "running_file", "status"]

# (process, topic, consumer group) of the parts that consume the log in a cluster.
CONSUMER_GROUPS = (
    ("ingest", "actions", "profiles"),
    ("joiner", "impressions", "joiner"),
    ("joiner", "actions", "joiner"),
    ("trainer", "examples", "trainer"),
)


def running_file(directory: Path) -> Path:
    """Where a running launcher describes itself."""
    return Path(directory) / "run" / "up.json"


def launcher_cmdline() -> str:
    """This process's command line as :func:`_runs` reads it back (what ``up.json`` records)."""
    try:
        return " ".join(psutil.Process().cmdline())
    except psutil.Error:
        return ""


def _runs(pid: int | None, marker: str) -> bool:
    """True if ``pid`` runs a command whose line contains ``marker`` (a reused pid does not count).

    A zombie (dead but not yet reaped by its parent) does not run. Where psutil cannot read another
    user's command line, an existing pid counts as running.
    """
    if pid is None:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        line = " ".join(proc.cmdline())
    except psutil.AccessDenied:
        return psutil.pid_exists(pid)
    except psutil.Error:  # gone (NoSuchProcess) or a zombie psutil could not read
        return False
    return marker.strip() in line


def _marker(name: str) -> str:
    return "redis-server" if name == "redis" else "streamrec"


def read_running(directory: Path) -> dict[str, Any] | None:
    """``up.json`` of ``directory`` if its launcher still runs, else None."""
    path = running_file(directory)
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not _runs(info.get("launcher_pid"), info.get("launcher_cmdline", "")):
        return None
    return info


def _api_health(url: str) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2.0) as reply:
            body = json.loads(reply.read())
    except Exception as exc:
        return False, f"no answer ({type(exc).__name__})"
    detail = f"model version {body.get('model_version')}"
    if body.get("model_error"):
        return False, f"{detail}, model error: {body['model_error']}"
    return body.get("status") == "ok", detail


def _redis_health(url: str) -> tuple[bool, str]:
    return (True, "PONG") if redis_answers(url) else (False, "no PING answer")


def _node_health(address: str) -> tuple[bool, str]:
    from streamrec.profiles import ProfileClient

    client = ProfileClient([address], timeout=2.0)
    try:
        state = client.health()[address]
    finally:
        client.close()
    return state == "SERVING", state


def _lags(log_url: str) -> list[dict[str, Any]]:
    """Each consumer group's lag, in total and per partition."""
    from streamrec.log import open_log

    rows = []
    log = open_log(log_url)
    try:
        for process, topic, group in CONSUMER_GROUPS:
            ends = log.end_offsets(topic)
            done = log.committed_offsets(topic, group)
            lags = [end - committed for end, committed in zip(ends, done, strict=True)]
            row = {"process": process, "topic": topic, "group": group, "end": sum(ends), "lag": sum(lags)}
            rows.append({**row, "partition_lags": lags})
    finally:
        log.close()
    return rows


def status(directory: Path) -> dict[str, Any]:
    """What runs from ``directory``: ``running``, and per process ``alive``, ``healthy``, ``detail``.

    ``healthy`` is true when every process is alive and every part that answers says it is well.
    """
    info = read_running(directory)
    if info is None:
        return {"dir": str(Path(directory).resolve()), "running": False, "healthy": False, "processes": [], "lag": []}
    processes = []
    for proc in info["processes"]:
        name = proc["name"]
        alive = _runs(proc["pid"], _marker(name))
        healthy, detail = alive, "running" if alive else "not running"
        if alive and name == "api":
            healthy, detail = _api_health(info["api"])
        elif alive and name == "redis":
            healthy, detail = _redis_health(info["redis"])
        elif alive and name.startswith("node-"):
            healthy, detail = _node_health(proc["address"])
        processes.append({**proc, "alive": alive, "healthy": healthy, "detail": detail})
    try:
        lag = _lags(info.get("log") or info["redis"])
    except Exception as exc:
        lag = [{"error": f"{type(exc).__name__}: {exc}"}]
    return {
        "dir": info["dir"],
        "running": True,
        "healthy": all(p["healthy"] for p in processes),
        "launcher_pid": info["launcher_pid"],
        "up_since": info.get("up_since"),
        "api": info["api"],
        "redis": info["redis"],
        "log": info.get("log") or info["redis"],
        "partitions": info.get("partitions", 1),
        "profile_nodes": info["profile_nodes"],
        "processes": processes,
        "lag": lag,
    }


def down(directory: Path, timeout_s: float = 120.0) -> dict[str, Any]:
    """Stop the cluster running from ``directory`` (SIGTERM to its launcher) and wait until all is gone.

    Returns ``{"was_running": bool, "stopped_after_s": float | None}``; raises
    :class:`StreamrecError` if processes still run after ``timeout_s``.
    """
    info = read_running(directory)
    if info is None:
        return {"was_running": False, "stopped_after_s": None}
    start = time.monotonic()
    with contextlib.suppress(ProcessLookupError):
        os.kill(info["launcher_pid"], signal.SIGTERM)
    watched = [(info["launcher_pid"], info.get("launcher_cmdline", ""))]
    watched += [(p["pid"], _marker(p["name"])) for p in info["processes"]]
    deadline = start + timeout_s
    while True:
        left = [pid for pid, marker in watched if _runs(pid, marker)]
        if not left:
            return {"was_running": True, "stopped_after_s": round(time.monotonic() - start, 2)}
        if time.monotonic() > deadline:
            raise StreamrecError(
                f"cluster down: still running after {timeout_s:g} s: pids {left} "
                f"(the launcher's log is its terminal; each part's is in {Path(directory) / 'logs'})"
            )
        time.sleep(0.1)
