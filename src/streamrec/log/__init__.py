"""The event log that connects the loop: topics of typed records read by consumer groups.

``open_log(url)`` picks the backend from the URL (SQLite embedded, Redis Streams, Kafka); every
backend has the same interface and the same guarantees, written down in ``docs/log.md``.

Examples
--------
>>> import tempfile
>>> from streamrec.log import open_log
>>> from streamrec.records import ActionEvent
>>> log = open_log(f"sqlite://{tempfile.mkdtemp()}/log.db")
>>> log.append("actions", [ActionEvent(user="u1", item=f"i{n}", action="click", time=float(n)) for n in range(5)])
[0, 1, 2, 3, 4]
>>> with log.consumer("actions", group="profiles", record_type=ActionEvent) as consumer:
...     first = consumer.poll(max_records=3, timeout_s=0)
...     consumer.commit()
>>> print(f"read {len(first)}, lag of the group {log.end_offset('actions') - log.committed('actions', 'profiles')}")
read 3, lag of the group 2
>>> log.close()
"""

from streamrec.log.base import Consumer, Envelope, EventLog
from streamrec.log.open import open_log

__all__ = ["Consumer", "Envelope", "EventLog", "open_log"]
