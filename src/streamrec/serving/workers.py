"""``streamrec serve --workers N``: several serving processes behind one port, and their supervisor.

Why processes: a request is Python from the socket to the top k (FastAPI, the feature plan, the
ranker's glue), so one process uses one core whatever its threads do. N workers use N cores.

How they share the port: each worker binds its own listening socket to the same ``host:port``
with ``SO_REUSEPORT``, and the kernel spreads new connections over the listening sockets by a
hash of the connection (Linux). The supervisor binds the port first (``SO_REUSEPORT`` too, never
listening), so a port held by another server fails at start, and the port stays held while a
worker is replaced.

What each worker holds: its own model replica, loaded from the snapshot and following
``model-updates`` by itself (a fresh consumer group per process, as a single ``serve`` does), and,
in embedded mode, its own replica of the profiles in ``<profiles>/worker-<i>``, built and kept
current by an ingest of the ``actions`` topic (group ``serve-worker-<i>``): events posted to any
worker are appended to the log and reach every replica from there. (One store folder has one
writer process, so N processes cannot share the embedded store.) In cluster mode the workers
read the profile nodes like a single ``serve``.

A worker that dies: ``--on-worker-death restart`` (default) starts a new one in its place (same
index, so the same replica folder, resumed from its committed offset), unless workers died more
than ``max_restarts`` times within ``restart_window_s``: then the supervisor stops every worker
and exits 1, saying why (a worker that dies at once would otherwise be restarted forever).
``--on-worker-death exit`` stops everything and exits 1 at the first death. Either way the death
is printed with the worker's index, pid and exit code.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Supervisor", "bind_reuseport", "signal_ready"]


def bind_reuseport(host: str, port: int, listen: bool = True) -> socket.socket:
    """A TCP socket bound to ``host:port`` with ``SO_REUSEPORT`` (and listening, unless ``listen=False``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    if listen:
        sock.listen(2048)
    return sock


def signal_ready(fd: int | None) -> None:
    """Tell the supervisor this worker is built and about to serve (writes to the pipe it gave)."""
    if fd is None:
        return
    try:
        os.write(fd, b"ready\n")
    finally:
        os.close(fd)


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen
    ready_fd: int | None  # read end of the worker's ready pipe, until it said ready (or died)
    started: float = field(default_factory=time.monotonic)

    @property
    def ready(self) -> bool:
        return self.ready_fd is None


class Supervisor:
    """Starts ``workers`` processes, waits until each is ready, and replaces (or stops on) a death.

    Parameters
    ----------
    command: ``(index, ready_fd) -> argv`` of worker ``index``; the worker writes to ``ready_fd``
        (:func:`signal_ready`) once it serves.
    workers: how many.
    host, port: the address the workers bind (held by the supervisor meanwhile).
    on_death: ``"restart"`` or ``"exit"``.
    max_restarts, restart_window_s: more deaths than this within the window stop everything.
    ready_timeout_s: a worker not ready within this long counts as dead.
    echo: where the supervisor's lines go (stderr by default).
    """

    def __init__(
        self,
        command: Callable[[int, int], list[str]],
        workers: int,
        host: str,
        port: int,
        *,
        on_death: str = "restart",
        max_restarts: int = 5,
        restart_window_s: float = 60.0,
        ready_timeout_s: float = 300.0,
        echo: Callable[[str], None] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        from streamrec.errors import InvalidInputError

        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise InvalidInputError("workers", workers, "must be an integer >= 1")
        if on_death not in ("restart", "exit"):
            raise InvalidInputError("on_worker_death", on_death, "must be 'restart' or 'exit'")
        self.command = command
        self.workers = workers
        self.host, self.port = host, port
        self.on_death = on_death
        self.max_restarts = max_restarts
        self.restart_window_s = restart_window_s
        self.ready_timeout_s = ready_timeout_s
        self.echo = echo or (lambda line: print(line, file=sys.stderr, flush=True))
        self.env = env
        self.deaths: list[float] = []
        self._procs: dict[int, _Worker] = {}
        self._stop = False

    # -- lifecycle ------------------------------------------------------------------------------
    def _spawn(self, index: int) -> _Worker:
        read_fd, write_fd = os.pipe()
        try:
            proc = subprocess.Popen(self.command(index, write_fd), pass_fds=(write_fd,), env=self.env)
        finally:
            os.close(write_fd)
        worker = _Worker(index, proc, read_fd)
        self._procs[index] = worker
        return worker

    def _check_ready(self, timeout: float) -> None:
        """Wait up to ``timeout`` for a worker's ready line (or, with none pending, just wait:
        the loop of :meth:`run` must not spin once every worker serves; it took half a core from
        the workers it supervises)."""
        waiting = {w.ready_fd: w for w in self._procs.values() if w.ready_fd is not None}
        if not waiting:
            time.sleep(timeout)
            return
        readable, _, _ = select.select(list(waiting), [], [], timeout)
        for fd in readable:
            worker = waiting[fd]
            data = os.read(fd, 64)
            os.close(fd)
            worker.ready_fd = None
            if data.startswith(b"ready"):
                self.echo(f"streamrec serve: worker {worker.index} (pid {worker.proc.pid}) ready")
            # EOF: the worker died before it was ready; its exit is handled by _reap

    def _reap(self) -> list[tuple[_Worker, int]]:
        dead = []
        now = time.monotonic()
        for worker in list(self._procs.values()):
            rc = worker.proc.poll()
            if rc is None and not worker.ready and now - worker.started > self.ready_timeout_s:
                self.echo(
                    f"streamrec serve: worker {worker.index} not ready after {self.ready_timeout_s:.0f} s; killed"
                )
                worker.proc.kill()
                rc = worker.proc.wait()
            if rc is not None:
                if worker.ready_fd is not None:
                    os.close(worker.ready_fd)
                    worker.ready_fd = None
                del self._procs[worker.index]
                dead.append((worker, rc))
        return dead

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM every worker, then SIGKILL what is left after ``timeout_s``."""
        for worker in self._procs.values():
            if worker.proc.poll() is None:
                worker.proc.terminate()
        deadline = time.monotonic() + timeout_s
        for worker in self._procs.values():
            try:
                worker.proc.wait(max(deadline - time.monotonic(), 0.0))
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                worker.proc.wait()
            if worker.ready_fd is not None:
                os.close(worker.ready_fd)
                worker.ready_fd = None
        self._procs.clear()

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT (returns 0) or a death it may not survive (returns 1)."""
        try:
            hold = bind_reuseport(self.host, self.port, listen=False)
        except OSError as exc:
            self.echo(f"streamrec serve: cannot bind {self.host}:{self.port}: {exc}")
            return 1

        def on_signal(signum: int, frame: object) -> None:
            self._stop = True

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            for i in range(self.workers):
                self._spawn(i)
            announced = False
            while not self._stop:
                self._check_ready(0.2)
                if not announced and len(self._procs) == self.workers and all(w.ready for w in self._procs.values()):
                    pids = ", ".join(str(w.proc.pid) for w in sorted(self._procs.values(), key=lambda w: w.index))
                    self.echo(f"streamrec serve: {self.workers} workers ready on {self.host}:{self.port} (pids {pids})")
                    announced = True
                for worker, rc in self._reap():
                    self.echo(f"streamrec serve: worker {worker.index} (pid {worker.proc.pid}) exited with code {rc}")
                    if self._stop:
                        continue
                    if self.on_death == "exit":
                        self.echo("streamrec serve: stopping every worker (--on-worker-death exit)")
                        return 1
                    now = time.monotonic()
                    self.deaths = [t for t in self.deaths if now - t <= self.restart_window_s] + [now]
                    if len(self.deaths) > self.max_restarts:
                        self.echo(
                            f"streamrec serve: {len(self.deaths)} worker deaths within {self.restart_window_s:.0f} s"
                            f" (more than {self.max_restarts}); stopping every worker"
                        )
                        return 1
                    replacement = self._spawn(worker.index)
                    self.echo(f"streamrec serve: worker {worker.index} replaced by pid {replacement.proc.pid}")
            return 0
        finally:
            self.stop()
            hold.close()
            for s, handler in previous.items():
                signal.signal(s, handler)
