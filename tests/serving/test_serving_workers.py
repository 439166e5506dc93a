"""``streamrec serve --workers N`` with real processes: both workers serve, follow model updates,
and a dead worker is replaced or stops the server loudly.

The reference for what the workers answer is an in-process :class:`Recommender` over the
world's own store (written directly) and the same snapshot, with the same update applied: the
workers' profile replicas are built from the ``actions`` topic, so equal answers also show the
replicas hold what the store holds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import torch

from conftest import NOW
from streamrec.log import open_log
from streamrec.redis_server import free_port
from streamrec.serving import Recommender, RecommenderConfig
from streamrec.serving.retrieval import RetrievalConfig
from streamrec.serving.workers import Supervisor
from streamrec.training.serving_model import ServingModel
from streamrec.training.updates import UPDATES_TOPIC, ModelUpdate, encode_dense

SRC = str(Path(__file__).resolve().parents[2] / "src")
RETRIEVAL = {"quotas": {"co_engaged": 30, "popular": 30, "fresh": 20}}


class Server:
    """``streamrec serve --workers N`` as a child process; its stderr lines collected in a thread."""

    def __init__(self, folder: Path, world, *extra: str, workers: int = 2) -> None:
        self.port = free_port()
        config = folder / "serve.toml"
        config.write_text(
            '[profiles]\nclock = "event"\n[serving.retrieval.quotas]\nco_engaged = 30\npopular = 30\nfresh = 20\n'
        )
        argv = [
            sys.executable, "-m", "streamrec", "serve", "--workers", str(workers), "--port", str(self.port),
            "--log", f"sqlite:///{world.folder}/log.db", "--profiles", str(folder / "profiles"),
            "--snapshot", f"{world.folder}/deepfm.snapshot", "--config", str(config), *extra,
        ]  # fmt: skip
        env = dict(os.environ, PYTHONPATH=SRC, OMP_NUM_THREADS="1")
        self.proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=env)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.port}"

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.rstrip())

    def wait_for(self, text: str, timeout: float = 240.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                if text in line:
                    return line
            if self.proc.poll() is not None and not any(text in line for line in self.lines):
                time.sleep(0.5)  # the reader may still be draining
                if not any(text in line for line in self.lines):
                    raise AssertionError(f"serve exited ({self.proc.returncode}) before {text!r}: {self.lines}")
            time.sleep(0.1)
        raise AssertionError(f"no {text!r} within {timeout} s: {self.lines}")

    def per_worker(self, path: str, want: int, params: dict | None = None, tries: int = 400) -> dict[int, dict]:
        """GET ``path`` on new connections until each of ``want`` workers answered (kernel spreads them)."""
        seen: dict[int, dict] = {}
        for _ in range(tries):
            with httpx.Client(base_url=self.url, timeout=30) as http:  # a new connection each time
                health = http.get("/healthz").json()
                body = http.get(path, params=params).json() if path != "/healthz" else health
            seen[health["worker"]] = {"health": health, "body": body}
            if len(seen) == want:
                return seen
        raise AssertionError(f"only workers {sorted(seen)} answered in {tries} connections")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _reference(world, model) -> Recommender:
    cfg = RecommenderConfig(features=world.plan, retrieval=RetrievalConfig(**RETRIEVAL))
    return Recommender(world.client, world.log, model, cfg, write_profiles=False, clock=lambda: NOW)


def _top(body: dict) -> list[tuple[str, float]]:
    return [(x["item"], round(x["score"], 5)) for x in body["items"]]


@pytest.fixture(scope="module")
def server(world, tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("workers"), world)
    try:
        s.wait_for("2 workers ready")
        yield s
    finally:
        s.stop()


def test_every_worker_answers_what_one_process_answers_and_follows_model_updates(server, world):
    params = {"user_id": "u3", "k": 8, "now": NOW}
    model = ServingModel.from_snapshot(f"{world.folder}/deepfm.snapshot")
    expected = _top(
        {"items": [{"item": i, "score": s} for i, s, _ in _reference(world, model).recommend("u3", 8, NOW).items]}
    )
    for answer in server.per_worker("/v1/recommendations", 2, params).values():
        assert _top(answer["body"]) == expected

    # The trainer publishes a new head: every worker applies it and scores as the reference does.
    state = {k: v * 1.7 if v.is_floating_point() else v for k, v in model._model.head.state_dict().items()}
    update = ModelUpdate(kind="dense", version=1, created_at=time.time(), payload=encode_dense(state))
    with open_log(f"sqlite:///{world.folder}/log.db") as log:
        log.append(UPDATES_TOPIC, [update])
    model.apply(update)
    expected_after = [(i, round(s, 5)) for i, s, _ in _reference(world, model).recommend("u3", 8, NOW).items]
    assert expected_after != expected
    deadline = time.monotonic() + 60
    while True:
        answers = server.per_worker("/v1/recommendations", 2, params)
        if all(a["health"]["model_version"] == 1 for a in answers.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for answer in answers.values():
        assert answer["health"]["model_version"] == 1
        assert _top(answer["body"]) == expected_after


def test_a_killed_worker_is_replaced_and_serves_again(server):
    before = server.per_worker("/healthz", 2)
    victim = before[0]["health"]["pid"]
    os.kill(victim, signal.SIGKILL)
    server.wait_for(f"worker 0 (pid {victim}) exited with code -9")
    line = server.wait_for("worker 0 replaced by pid")
    new_pid = int(line.rsplit(" ", 1)[1])
    server.wait_for(f"worker 0 (pid {new_pid}) ready")
    after = server.per_worker("/healthz", 2)
    assert after[0]["health"]["pid"] == new_pid and after[1]["health"]["pid"] == before[1]["health"]["pid"]
    assert server.proc.poll() is None and not _alive(victim)


def test_on_worker_death_exit_stops_every_worker_and_exits_1(world, tmp_path):
    s = Server(tmp_path, world, "--on-worker-death", "exit")
    try:
        s.wait_for("2 workers ready")
        pids = {w: a["health"]["pid"] for w, a in s.per_worker("/healthz", 2).items()}
        os.kill(pids[1], signal.SIGKILL)
        assert s.proc.wait(60) == 1
        s.wait_for("stopping every worker (--on-worker-death exit)")
        time.sleep(0.5)
        assert not _alive(pids[0]) and not _alive(pids[1])
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{s.url}/healthz", timeout=5)
    finally:
        s.stop()


def _child(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_worker_that_keeps_dying_stops_the_supervisor_loudly():
    """Real child processes that exit at once: restarted up to the limit, then exit 1, saying why."""
    lines: list[str] = []
    sup = Supervisor(
        lambda i, fd: _child("import sys; sys.exit(3)"), 2, "127.0.0.1", free_port(),
        max_restarts=3, restart_window_s=60.0, echo=lines.append,
    )  # fmt: skip
    started = time.monotonic()
    assert sup.run() == 1
    assert time.monotonic() - started < 60
    assert sum("exited with code 3" in line for line in lines) == 4
    assert any("4 worker deaths within 60 s (more than 3); stopping every worker" in line for line in lines)


def test_the_supervisor_waits_for_ready_workers_and_stops_them_on_sigterm():
    lines: list[str] = []
    code = "import os, sys, time; os.write(int(sys.argv[1]), b'ready\\n'); time.sleep(600)"
    sup = Supervisor(lambda i, fd: [*_child(code), str(fd)], 2, "127.0.0.1", free_port(), echo=lines.append)
    threading.Timer(3.0, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()
    assert sup.run() == 0
    assert any("2 workers ready" in line for line in lines)
    pids = [int(line.split("pid ")[1].split(")")[0]) for line in lines if ") ready" in line]
    assert len(pids) == 2 and not any(_alive(p) for p in pids)


def test_the_supervisor_idles_while_its_workers_serve():
    """Once every worker is ready the supervisor only watches for deaths: it must not take the CPU
    its workers need (its loop spun at half a core before)."""
    code = "import os, sys, time; os.write(int(sys.argv[1]), b'ready\\n'); time.sleep(600)"
    sup = Supervisor(lambda i, fd: [*_child(code), str(fd)], 2, "127.0.0.1", free_port(), echo=lambda line: None)
    threading.Timer(4.0, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()
    cpu, wall = time.process_time(), time.monotonic()
    assert sup.run() == 0
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    assert wall >= 3.5
    assert cpu < 0.1 * wall, f"the supervisor used {cpu:.2f} s of CPU in {wall:.1f} s"


def test_a_port_held_by_another_server_fails_at_start():
    import socket

    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        lines: list[str] = []
        sup = Supervisor(lambda i, fd: _child("pass"), 2, "127.0.0.1", other.getsockname()[1], echo=lines.append)
        assert sup.run() == 1
        assert "cannot bind" in lines[0]


def test_bad_worker_options_are_refused_naming_them():
    from streamrec.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="workers"):
        Supervisor(lambda i, fd: [], 0, "127.0.0.1", 1)
    with pytest.raises(InvalidInputError, match="on_worker_death"):
        Supervisor(lambda i, fd: [], 2, "127.0.0.1", 1, on_death="ignore")


torch.set_num_threads(1)
