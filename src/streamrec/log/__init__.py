"""The event log that connects the loop: topics of typed records read by consumer groups.

``open_log(url)`` picks the backend from the URL (SQLite embedded, Redis Streams, Kafka); every
backend has the same interface and the same guarantees, written down in ``docs/log.md``.
"""

from streamrec.log.base import Consumer, Envelope, EventLog
from streamrec.log.open import open_log

__all__ = ["Consumer", "Envelope", "EventLog", "open_log"]
