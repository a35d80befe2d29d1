"""Kafka plumbing for the benchmarks: topics, bulk preload, and counting what a system delivered.

The harness uses confluent-kafka (librdkafka, installed with quixstreams) so that loading and
counting cost as little CPU as possible next to the system under test. Every client of the
benchmark (these, the systems under test, the load generator) connects through
``connection_of``: the ``INTENTFLOW_KAFKA_*`` settings (security protocol, SASL, TLS) with the
benchmark's bootstrap address, the same connection the worker builds. Keys are partitioned
with ``murmur2_random``: the Java, kafka-python and aiokafka default, so a user lands in the
same partition whichever client wrote the record (the worker's changelog relies on that).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streams.kafka.connection import KafkaConnection, connection
from streams.settings import load_settings

PARTITIONER = "murmur2_random"
# Output topics are stamped by the broker on append: the same clock for every system (Quix's
# to_topic would otherwise carry the input record's timestamp over to the output).
APPEND_TIME = {"message.timestamp.type": "LogAppendTime"}


def connection_of(bootstrap: str) -> KafkaConnection:
    """The ``INTENTFLOW_KAFKA_*`` connection (security, SASL, TLS), at ``bootstrap``."""
    return connection(load_settings(kafka_bootstrap=bootstrap))


def rdkafka(bootstrap: str, **extra: object) -> dict[str, object]:
    """librdkafka configuration for ``bootstrap`` with the connection's security, plus ``extra``."""
    return {**connection_of(bootstrap).librdkafka(), **extra}


def create_topics(
    bootstrap: str, names: Iterable[str], partitions: int = 4, config: dict[str, str] | None = None
) -> None:
    """Create topics (all with ``partitions``) and wait until the broker confirms each one."""
    admin = AdminClient(rdkafka(bootstrap))
    new = [
        NewTopic(n, num_partitions=partitions, replication_factor=1, config=config or {})
        for n in names
    ]
    for name, future in admin.create_topics(new, operation_timeout=30).items():
        try:
            future.result(60)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise RuntimeError(f"cannot create topic {name}: {exc}") from None
    wait_for_leaders(admin, [t.topic for t in new], partitions)


def wait_for_leaders(admin: AdminClient, names: list[str], partitions: int) -> None:
    """Block until every partition of ``names`` has a leader (a new topic needs a moment)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        meta = admin.list_topics(timeout=10).topics
        if all(
            n in meta
            and meta[n].error is None
            and len(meta[n].partitions) == partitions
            and all(p.leader >= 0 for p in meta[n].partitions.values())
            for n in names
        ):
            return
        time.sleep(0.1)
    raise RuntimeError(f"topics {names} have no leaders after 30 s")


def producer(bootstrap: str, **extra: object) -> Producer:
    """A fast bulk producer with acks=all (what the benchmark loads must not lose)."""
    conf = {
        **connection_of(bootstrap).librdkafka(),
        "partitioner": PARTITIONER,
        "acks": "all",
        "linger.ms": 20,
        "batch.size": 1_000_000,
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
        "compression.type": "none",
    }
    conf.update(extra)
    return Producer(conf)


def partition_of(key: bytes, partitions: int = 4) -> int:
    """The partition Kafka's default partitioner (murmur2) gives ``key``, as every client here."""
    from aiokafka.partitioner import murmur2

    return (murmur2(key) & 0x7FFFFFFF) % partitions


def produce_keyed(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[bytes, bytes, bytes]],
    partitions: int = 4,
) -> int:
    """Produce ``(partition key, key, value)``: each record keyed by ``key`` but sent to the
    partition of ``partition key`` (a table keyed by pseudonym, partitioned like the input)."""
    return produce_all(
        bootstrap,
        topic,
        ((key, value, partition_of(pkey, partitions)) for pkey, key, value in records),
    )


def produce_all(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes] | tuple[bytes | None, bytes, int]],
) -> int:
    """Produce (key, value[, partition]) and wait until every one is acknowledged. Returns the
    count. Without a partition, the key's murmur2 partition."""
    failures: list[str] = []

    def on_delivery(err: object, _msg: object) -> None:
        if err is not None:
            failures.append(str(err))

    p = producer(bootstrap)
    count = 0
    for record in records:
        key, value = record[0], record[1]
        where = {"partition": record[2]} if len(record) == 3 else {}  # type: ignore[misc]
        while True:
            try:
                p.produce(topic, value=value, key=key, on_delivery=on_delivery, **where)
                break
            except BufferError:
                p.poll(0.05)
        count += 1
        if count % 10_000 == 0:
            p.poll(0)
    remaining = p.flush(120)
    if remaining or failures:
        raise RuntimeError(
            f"preloading {topic}: {remaining} records undelivered, {len(failures)} failed "
            f"({failures[:3]})"
        )
    return count


def _consumer(bootstrap: str) -> Consumer:
    return Consumer(
        rdkafka(
            bootstrap,
            **{
                "group.id": "bench-reader",  # never subscribes or commits: assign() only
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 10,
                "enable.partition.eof": False,
            },
        )
    )


@dataclass
class Watermarks:
    """Low and high offsets per partition of one topic."""

    topic: str
    ranges: dict[int, tuple[int, int]]

    @property
    def total(self) -> int:
        return sum(hi - lo for lo, hi in self.ranges.values())


class Counter:
    """Counts the records in a topic from its end offsets: no guessing, no full read.

    A record written without transactions takes exactly one offset, so the sum of the high
    watermarks is the number of delivered records.
    """

    def __init__(self, bootstrap: str, topic: str, partitions: int = 4) -> None:
        self.topic = topic
        self.partitions = partitions
        self._consumer = _consumer(bootstrap)

    def watermarks(self) -> Watermarks:
        ranges = {}
        for p in range(self.partitions):
            for attempt in range(50):
                try:
                    lo, hi = self._consumer.get_watermark_offsets(
                        TopicPartition(self.topic, p), timeout=5, cached=False
                    )
                    break
                except KafkaException:  # leader moving or not elected yet: transient
                    if attempt == 49:
                        raise
                    time.sleep(0.1)
            ranges[p] = (max(lo, 0), max(hi, 0))
        return Watermarks(self.topic, ranges)

    def count(self) -> int:
        return self.watermarks().total

    def close(self) -> None:
        self._consumer.close()


def edge_timestamps(bootstrap: str, topic: str, partitions: int = 4) -> tuple[float, float]:
    """Broker-side CreateTime (unix seconds) of the first and of the last record of ``topic``.

    The first and last record of every partition are read, so the window is exact: the time
    of the first output to the time of the last one.
    """
    c = _consumer(bootstrap)
    try:
        firsts, lasts = [], []
        for p in range(partitions):
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=5, cached=False)
            if hi <= lo:
                continue
            for offset, sink in ((lo, firsts), (hi - 1, lasts)):
                msg = _read_one(c, topic, p, offset)
                sink.append(msg.timestamp()[1] / 1000.0)
        if not firsts:
            raise RuntimeError(f"topic {topic} is empty")
        return min(firsts), max(lasts)
    finally:
        c.close()


def _read_one(c: Consumer, topic: str, partition: int, offset: int):  # type: ignore[no-untyped-def]
    c.assign([TopicPartition(topic, partition, offset)])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        msg = c.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            raise RuntimeError(f"reading {topic}[{partition}]@{offset}: {msg.error()}")
        return msg
    raise RuntimeError(f"timed out reading {topic}[{partition}]@{offset}")


def read_all(bootstrap: str, topic: str, partitions: int = 4, timeout: float = 120.0):  # type: ignore[no-untyped-def]
    """Every record of ``topic`` up to its current end: a list of (key, value, CreateTime s)."""
    c = _consumer(bootstrap)
    try:
        ends = {}
        tps = []
        for p in range(partitions):
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=5, cached=False)
            if hi > lo:
                ends[p] = hi
                tps.append(TopicPartition(topic, p, lo))
        c.assign(tps)
        out = []
        done: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(done) < len(ends) and time.monotonic() < deadline:
            for msg in c.consume(10_000, 0.5):
                if msg.error():
                    continue
                out.append((msg.key(), msg.value(), msg.timestamp()[1] / 1000.0))
                if msg.offset() + 1 >= ends[msg.partition()]:
                    done.add(msg.partition())
        if len(done) < len(ends):
            raise RuntimeError(f"timed out reading {topic}: {len(out)} records so far")
        return out
    finally:
        c.close()


def wait_committed(
    bootstrap: str, group: str, topic: str, total: int, *, timeout: float, partitions: int = 4
) -> float | None:
    """Poll until ``group`` has committed offsets summing to ``total`` on ``topic`` (all read).
    Returns the seconds it took, None if it did not within ``timeout``."""
    c = Consumer(rdkafka(bootstrap, **{"group.id": group, "enable.auto.commit": False}))
    started = time.monotonic()
    try:
        while time.monotonic() - started < timeout:
            tps = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
            if sum(max(tp.offset, 0) for tp in tps) >= total:
                return time.monotonic() - started
            time.sleep(0.1)
        return None
    finally:
        c.close()
