"""Fixtures shared across parts. Services the tests need are started for real, never mocked."""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture(scope="session")
def redis_url():
    """URL of a real redis-server started for this test session (skipped if not installed)."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    from streamrec.redis_server import RedisServer

    with RedisServer() as server:
        yield server.url
