"""The production event log: Apache Kafka through confluent-kafka (``pip install 'streamrec[kafka]'``).

Why a thin mapping and not more: Kafka already is the log the Monolith paper runs on; streamrec
only maps its interface onto a producer and a consumer, and leaves partitioning, replication and
retention to the broker's configuration.

Mapping:

* A topic is a Kafka topic used as a **single partition** (partition 0). This keeps the contract
  the other backends give: one total order per topic and one integer offset per record. Records
  of partitions other than 0 make :meth:`KafkaConsumer.poll` raise.
* An append produces the batch to partition 0 with an idempotent producer (``acks=all``) and
  flushes; it returns when every record is acknowledged by the in-sync replicas, with the offsets
  from the delivery reports. Kafka has no multi-record atomicity without transactions: if the
  broker fails mid-batch, a prefix may be written and :class:`~streamrec.errors.LogError` is raised.
* A group is a Kafka consumer group (``subscribe``; automatic commits off). ``commit`` commits
  ``offset + 1`` of partition 0 synchronously. A second consumer of one group gets no partition
  and reads nothing until the first one leaves (Kafka's own rule).

confluent-kafka is imported only when a ``kafka://`` URL is opened, so the rest of streamrec does
not need it installed.
"""

from __future__ import annotations

import time
from typing import Any, TypeVar

from streamrec.errors import LogError
from streamrec.log.base import Consumer, EventLog, Start

__all__ = ["KafkaConsumer", "KafkaLog"]

T = TypeVar("T")


def _import_kafka(url: str) -> Any:
    try:
        import confluent_kafka
    except ImportError:
        raise LogError(
            f"event log {url!r} needs confluent-kafka, which is not installed: pip install 'streamrec[kafka]'"
        ) from None
    return confluent_kafka


class KafkaLog(EventLog):
    """The event log on Kafka (``kafka://host:port[,host:port...]``); see ``docs/log.md``.

    Parameters
    ----------
    url
        ``kafka://`` followed by the bootstrap servers.
    """

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._kafka = _import_kafka(url)
        self.servers = url.split("://", 1)[1].split("/", 1)[0]
        if not self.servers:
            raise LogError(f"event log {url!r}: no broker given (expected kafka://host:port)")
        try:  # fail at open, not at the first append, when no broker answers
            self._producer = self._kafka.Producer(
                {"bootstrap.servers": self.servers, "enable.idempotence": True, "acks": "all", "linger.ms": 5}
            )
            self._producer.list_topics(timeout=10)
        except self._kafka.KafkaException as exc:
            raise LogError(f"event log {url!r}: cannot reach a broker: {exc}") from None

    def _append(self, topic: str, payloads: list[bytes]) -> list[int]:
        offsets: list[int | None] = [None] * len(payloads)
        errors: list[str] = []

        def delivered(index: int):  # type: ignore[no-untyped-def]
            def report(err: Any, msg: Any) -> None:
                if err is not None:
                    errors.append(str(err))
                else:
                    offsets[index] = msg.offset()

            return report

        self._check_open()
        try:
            for index, payload in enumerate(payloads):
                while True:
                    try:
                        self._producer.produce(topic, payload, partition=0, on_delivery=delivered(index))
                        break
                    except BufferError:  # local queue full: let deliveries drain
                        self._producer.poll(0.1)
            left = self._producer.flush(60)
        except self._kafka.KafkaException as exc:
            raise LogError(f"event log {self.url!r}: append to {topic!r} failed: {exc}") from None
        if left or errors or any(offset is None for offset in offsets):
            reason = errors[0] if errors else f"{left} records not acknowledged within 60 s"
            raise LogError(f"event log {self.url!r}: append to {topic!r} failed: {reason}")
        return offsets  # type: ignore[return-value]

    def _consumer(self, topic: str, group: str, record_type: type[T], name: str, start: Start) -> Consumer[T]:
        return KafkaConsumer(self, topic, group, record_type, name, start)

    def _metadata_consumer(self, group: str = "streamrec-metadata") -> Any:
        return self._kafka.Consumer({"bootstrap.servers": self.servers, "group.id": group, "enable.auto.commit": False})

    def end_offset(self, topic: str) -> int:
        self._check_open()
        consumer = self._metadata_consumer()
        try:
            _, high = consumer.get_watermark_offsets(self._kafka.TopicPartition(topic, 0), timeout=10)
            return max(high, 0)
        except self._kafka.KafkaException as exc:
            if "UNKNOWN" in str(exc):  # topic (or its partition) not created yet
                return 0
            raise LogError(f"event log {self.url!r}: end_offset failed: {exc}") from None
        finally:
            consumer.close()

    def committed(self, topic: str, group: str) -> int:
        self._check_open()
        consumer = self._metadata_consumer(group)
        try:
            partition = self._kafka.TopicPartition(topic, 0)
            (part,) = consumer.committed([partition], timeout=10)
            low, _ = consumer.get_watermark_offsets(partition, timeout=10)
            return max(part.offset, low, 0)  # never below the first record kept
        except self._kafka.KafkaException as exc:
            raise LogError(f"event log {self.url!r}: committed failed: {exc}") from None
        finally:
            consumer.close()

    def trim(self, topic: str, before: int) -> None:
        self._check_open()
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.servers})
        if not hasattr(admin, "delete_records"):
            raise LogError(f"event log {self.url!r}: trim needs confluent-kafka >= 2.4 (delete_records)")
        futures = admin.delete_records([self._kafka.TopicPartition(topic, 0, int(before))])
        try:
            for future in futures.values():
                future.result(timeout=30)
        except Exception as exc:
            raise LogError(f"event log {self.url!r}: trim {topic!r} failed: {exc}") from None

    def _close(self) -> None:
        self._producer.flush(30)


class KafkaConsumer(Consumer[T]):
    """A member of a Kafka consumer group reading partition 0 of one topic."""

    def __init__(self, log: KafkaLog, topic: str, group: str, record_type: type[T], name: str, start: Start) -> None:
        super().__init__(topic, group, record_type)
        self._log = log
        kafka = log._kafka
        settings = {
            "bootstrap.servers": log.servers,
            "group.id": group,
            "client.id": name,
            "enable.auto.commit": False,
            "auto.offset.reset": start,
            "enable.partition.eof": False,
        }
        try:
            self._consumer = kafka.Consumer(settings)
            self._consumer.subscribe([topic])
        except kafka.KafkaException as exc:
            raise LogError(f"event log {log.url!r}: cannot open a consumer of {topic!r}: {exc}") from None

    def _fetch(self, max_records: int, timeout_s: float) -> list[tuple[int, bytes]]:
        kafka = self._log._kafka
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                messages = self._consumer.consume(num_messages=max_records, timeout=max(deadline - time.monotonic(), 0))
            except kafka.KafkaException as exc:
                raise LogError(f"event log {self._log.url!r}: poll failed: {exc}") from None
            out = []
            for message in messages:
                if message.error() is not None:
                    raise LogError(f"event log {self._log.url!r}: poll failed: {message.error()}")
                if message.partition() != 0:
                    raise LogError(
                        f"topic {self.topic!r} has several partitions; streamrec reads topics as one partition"
                    )
                out.append((message.offset(), message.value()))
            if out or time.monotonic() >= deadline:
                return out

    def _commit(self, upto: int, offsets: list[int]) -> None:
        kafka = self._log._kafka
        try:
            self._consumer.commit(offsets=[kafka.TopicPartition(self.topic, 0, upto + 1)], asynchronous=False)
        except kafka.KafkaException as exc:
            raise LogError(f"event log {self._log.url!r}: commit failed: {exc}") from None

    def _close(self) -> None:
        self._consumer.close()
