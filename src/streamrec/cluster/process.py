"""One supervised child process of a cluster: started, probed until ready, stopped politely.

Why each child is an OS process with its own session and a parent-death signal: the parts must
fail independently (that is what cluster mode demonstrates), Ctrl-C in the launcher's terminal must
reach the launcher only (it stops the children in order: the API first, the profile nodes and Redis
last), and a launcher killed with ``kill -9`` must not leave orphans running (Linux delivers
SIGTERM to each child when the launcher dies, via ``prctl(PR_SET_PDEATHSIG)``). Output goes to one
log file per child, appended across restarts with a header line, so a death can be reported with
the tail of its log.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from streamrec.errors import StreamrecError

__all__ = ["Child", "ProcessDiedError", "redis_answers", "stop_all"]


class ProcessDiedError(StreamrecError):
    """A child of the cluster exited; ``name``, ``returncode`` and the ``tail`` of its log."""

    def __init__(self, name: str, returncode: int | None, log: Path, tail: str) -> None:
        self.name = name
        self.returncode = returncode
        self.log = log
        self.tail = tail
        super().__init__(f"{name} exited with code {returncode} (log {log}); last lines:\n{tail}")


def _parent_death_signal() -> None:  # pragma: no cover - runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Child:
    """A command run as a child process with its output in ``log``.

    Parameters
    ----------
    name: how the table and errors call it (``node-0``, ``api``, ...).
    args: the command line (``[sys.executable, "-m", "streamrec", ...]`` for streamrec parts).
    log: file the child's stdout and stderr are appended to.
    ready: returns True once the child answers (a ready file, a health check); called repeatedly.
    address: what to show for it (``host:port``, a URL), if anything.
    """

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        log: Path,
        ready: Callable[[], bool],
        address: str = "",
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.args = list(args)
        self.log = log
        self.ready_check = ready
        self.address = address
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready = False
        self.started_at = 0.0
        self.ready_after_s: float | None = None

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def start(self) -> None:
        """Start the process (its own session; SIGTERM to it if the launcher dies)."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(self.args)}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                self.args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(self.env or {})},
                start_new_session=True,
                preexec_fn=_parent_death_signal,
            )
        self.started_at = time.monotonic()

    def returncode(self) -> int | None:
        """The exit code, or ``None`` while it runs (or before it started)."""
        return None if self.proc is None else self.proc.poll()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def probe(self) -> bool:
        """Check readiness once (remembered once true); raise :class:`ProcessDiedError` if it exited."""
        if not self.ready:
            if not self.alive():
                raise self.died()
            try:
                self.ready = bool(self.ready_check())
            except Exception:  # not answering yet is the normal state while starting
                self.ready = False
            if self.ready:
                self.ready_after_s = time.monotonic() - self.started_at
        return self.ready

    def died(self) -> ProcessDiedError:
        """The error describing this child's exit, with the tail of its log."""
        return ProcessDiedError(self.name, self.returncode(), self.log, self.tail())

    def tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the log."""
        try:
            with self.log.open("rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 16_384))
                text = fh.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def terminate(self) -> None:
        """Send SIGTERM (graceful stop: the parts finish their step, flush and exit)."""
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """Send SIGKILL and reap."""
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()


def stop_all(children: Sequence[Child], grace_s: float) -> None:
    """SIGTERM every running child, wait up to ``grace_s`` for all of them, then SIGKILL the rest."""
    running = [c for c in children if c.alive()]
    for child in running:
        child.terminate()
    deadline = time.monotonic() + grace_s
    for child in running:
        assert child.proc is not None
        note = ""
        try:
            child.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            note = f" (SIGKILL after a {grace_s:g} s grace period)"
        with child.log.open("ab") as out:
            out.write(f"=== {time.strftime('%H:%M:%S')} stopped, exit code {child.returncode()}{note}\n".encode())


def redis_answers(url: str) -> bool:
    """True if a Redis server answers ``PING`` at ``url`` within a second (the readiness probe of ``redis``)."""
    import redis

    try:
        client = redis.Redis.from_url(url.split("?", 1)[0], socket_connect_timeout=1.0, socket_timeout=1.0)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return False
