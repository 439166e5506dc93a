"""Kafka backend: runs against the broker named by STREAMREC_KAFKA, skipped otherwise."""

from __future__ import annotations

import importlib.util
import os
import uuid

import pytest

from streamrec.errors import LogError
from streamrec.log import open_log
from streamrec.records import ActionEvent

BROKER = os.environ.get("STREAMREC_KAFKA")
HAVE_CLIENT = importlib.util.find_spec("confluent_kafka") is not None
needs_broker = pytest.mark.skipif(not BROKER, reason="STREAMREC_KAFKA does not name a Kafka broker (host:port)")


@pytest.mark.skipif(HAVE_CLIENT, reason="confluent-kafka is installed")
def test_missing_client_gives_an_install_hint():
    with pytest.raises(LogError, match=r"pip install 'streamrec\[kafka\]'"):
        open_log("kafka://127.0.0.1:9092")


@needs_broker
def test_append_consume_commit_resume_on_kafka():
    url = BROKER if BROKER.startswith("kafka://") else f"kafka://{BROKER}"
    topic, group = f"streamrec-test-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    events = [ActionEvent(user="u", item=str(n), action="click", time=float(n)) for n in range(20)]
    with open_log(url) as log:
        offsets = log.append(topic, events)
        assert offsets == list(range(offsets[0], offsets[0] + 20))
        with log.consumer(topic, group, ActionEvent) as consumer:
            got = []
            while len(got) < 8:
                got += consumer.poll(8 - len(got), timeout_s=10)
            consumer.commit()
        assert log.committed(topic, group) == offsets[0] + 8
        with log.consumer(topic, group, ActionEvent) as consumer:
            rest = []
            while len(rest) < 12:
                rest += consumer.poll(100, timeout_s=10)
        assert [e.record for e in got + rest] == events
        assert log.end_offset(topic) == offsets[-1] + 1
