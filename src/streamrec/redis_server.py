"""Start a private ``redis-server`` on a free loopback port, for tests and benchmarks.

The real server runs (Debian's ``redis-server``), never a mock: tests of the Redis log backend and
the profile benchmark's Redis baseline both use it. The server lives in a temporary directory and
is stopped (and its directory removed) when the context exits.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from streamrec.errors import StreamrecError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A ``redis-server`` process on 127.0.0.1; use as a context manager.

    ``appendonly=True`` turns on the AOF with ``appendfsync always``, so a write the server
    acknowledged survives ``kill -9`` of the server.
    """

    def __init__(self, appendonly: bool = False, binary: str = "redis-server") -> None:
        self.binary = shutil.which(binary)
        if self.binary is None:
            raise StreamrecError(f"{binary} not found on PATH; install it (Debian: apt-get install redis-server)")
        self.appendonly = appendonly
        self.port = 0
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self._dir = Path(tempfile.mkdtemp(prefix="streamrec-redis-"))
        self.port = free_port()
        args = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self._dir),
            "--save", "", "--protected-mode", "yes", "--loglevel", "warning",
        ]  # fmt: skip
        if self.appendonly:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                raise StreamrecError(f"redis-server exited at start: {err.strip()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise StreamrecError("redis-server did not answer PING within 10 s")

    def kill(self) -> None:
        """SIGKILL the server (for crash tests); data on disk stays for :meth:`restart`."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
