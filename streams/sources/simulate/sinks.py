"""Where simulated payloads go: a JSONL file or a Kafka topic. The I/O edge of the simulator.

Both sinks count what passes through (``Tally``), hand the running tally to a progress callback
every few thousand records (the command shows it with ``streams.progress``), and optionally
write the truth sidecar (one ``{"event_id", "intent"}`` line per
valid event). The Kafka sink uses librdkafka's producer (confluent-kafka), keyed by user id,
with ``acks=all``: the load generator must never limit a benchmark, and librdkafka produces an
order of magnitude faster than a pure-Python client here. It checks the broker and the topic
first (kafka-python admin), so a wrong address fails fast with ``BrokerUnreachableError``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO, Any

import orjson
from confluent_kafka import KafkaException, Producer

from streams.errors import ProduceError, TopicConfigError
from streams.kafka.connection import connection
from streams.kafka.topics import existing_partitions
from streams.settings import Settings
from streams.sources.simulate.stream import SimRecord, format_timestamp

PROGRESS_EVERY_RECORDS = 4096
BATCH_SIZE_BYTES = 256 * 1024
LINGER_MS = 20
COMPRESSIONS = ("auto", "lz4", "gzip", "none")


@dataclass
class Tally:
    """Counts of what a run emitted."""

    payloads: int = 0
    valid: int = 0
    by_type: Counter[str] = field(default_factory=Counter)
    invalid: Counter[str] = field(default_factory=Counter)
    first_ts_ms: int | None = None
    last_ts_ms: int | None = None

    def add(self, rec: SimRecord) -> None:
        """Count one record."""
        self.payloads += 1
        if rec.error_class is None:
            self.valid += 1
            self.by_type[rec.event_type or "?"] += 1
        else:
            self.invalid[rec.error_class.value] += 1
        if self.first_ts_ms is None:
            self.first_ts_ms = rec.ts_ms
        self.last_ts_ms = rec.ts_ms

    def lines(self) -> list[str]:
        """The end-of-run summary, one line per topic."""
        span = ""
        if self.first_ts_ms is not None and self.last_ts_ms is not None:
            first, last = format_timestamp(self.first_ts_ms), format_timestamp(self.last_ts_ms)
            span = f", event time {first} .. {last}"
        types = ", ".join(f"{k} {v:,}" for k, v in self.by_type.most_common())
        bad = ", ".join(f"{k} {v:,}" for k, v in sorted(self.invalid.items()))
        return [
            f"events   {self.payloads:>12,}{span}",
            f"valid    {self.valid:>12,}" + (f"  ({types})" if types else ""),
            f"invalid  {sum(self.invalid.values()):>12,}" + (f"  ({bad})" if bad else ""),
        ]


OnProgress = Callable[[Tally], None]


def _no_progress(_tally: Tally) -> None:
    pass


def _truth_line(rec: SimRecord) -> bytes:
    return orjson.dumps({"event_id": rec.event_id, "intent": round(rec.intent or 0.0, 6)}) + b"\n"


def write_jsonl(
    records: Iterable[SimRecord],
    out: IO[bytes],
    truth: IO[bytes] | None = None,
    progress: OnProgress = _no_progress,
) -> Tally:
    """Write one payload per line (bad ones too, as raw bytes), as fast as possible.

    ``progress`` gets the running tally every ``PROGRESS_EVERY_RECORDS`` records.
    """
    tally = Tally()
    write = out.write
    for n, rec in enumerate(records):
        write(rec.payload + b"\n")
        if truth is not None and rec.error_class is None:
            truth.write(_truth_line(rec))
        tally.add(rec)
        if n % PROGRESS_EVERY_RECORDS == 0:
            progress(tally)
    return tally


def resolve_compression(name: str) -> str | None:
    """The producer's compression for ``name``; ``auto`` is lz4 (librdkafka has it built in;
    consumers decode it through cramjam, a dependency of intentflow)."""
    if name not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {', '.join(COMPRESSIONS)}, got {name!r}")
    if name == "auto":
        return "lz4"
    return None if name == "none" else name


def check_topic(settings: Settings, topic: str) -> int:
    """The partition count of ``topic``, or a clear error if the broker or topic is missing."""
    partitions = existing_partitions(settings, [topic])  # BrokerUnreachableError if no broker
    if topic not in partitions:
        raise TopicConfigError(
            f"topic {topic!r} does not exist at {settings.kafka_bootstrap}. Create it with "
            "`intentflow topics create` (same INTENTFLOW_* settings), then run again."
        )
    return partitions[topic]


@dataclass
class ProduceReport:
    """What a Kafka run did."""

    tally: Tally
    topic: str
    partitions: int
    compression: str
    failures: int
    first_error: str | None
    seconds: float


def produce(
    records: Iterable[SimRecord],
    settings: Settings,
    *,
    topic: str | None = None,
    rate: float | None = None,
    compression: str = "auto",
    truth: IO[bytes] | None = None,
    progress: OnProgress = _no_progress,
    max_request_bytes: int = 1_048_576,
) -> ProduceReport:
    """Produce every record to ``topic`` (default: the events topic), keyed by user id.

    ``rate`` paces to that many payloads per wall-clock second; None is as fast as possible.
    ``progress`` gets the running tally every ``PROGRESS_EVERY_RECORDS`` records.
    Flushes at the end and raises ``ProduceError`` if any payload was not acknowledged.
    """
    topic = topic or settings.topic_events
    partitions = check_topic(settings, topic)
    kind = resolve_compression(compression)
    failures = 0
    first_error: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        nonlocal failures
        if err is not None:
            failures += 1
            if not first_error:
                first_error.append(str(err))

    producer = Producer(
        {
            **connection(settings).librdkafka(),
            "client.id": f"{settings.app_id}-simulator",
            "acks": "all",
            "linger.ms": LINGER_MS,
            "batch.size": BATCH_SIZE_BYTES,
            "compression.type": kind or "none",
            "message.max.bytes": max_request_bytes,
            "queue.buffering.max.messages": 500_000,
            "message.timeout.ms": int(max(60.0, settings.kafka_connect_timeout_seconds) * 1000),
        }
    )
    tally = Tally()
    started = time.monotonic()
    send, poll = producer.produce, producer.poll
    try:
        for n, rec in enumerate(records):
            while True:
                try:
                    send(topic, value=rec.payload, key=rec.key, on_delivery=on_delivery)
                    break
                except BufferError:  # the local queue is full: let deliveries drain
                    poll(0.05)
            if truth is not None and rec.error_class is None:
                truth.write(_truth_line(rec))
            tally.add(rec)
            if rate is not None:
                ahead = (n + 1) / rate - (time.monotonic() - started)
                if ahead > 0.005:
                    time.sleep(ahead)
            if n % PROGRESS_EVERY_RECORDS == 0:
                poll(0)
                progress(tally)
        left = producer.flush(max(60.0, settings.kafka_connect_timeout_seconds))
        if left:
            failures += left
            first_error.append(f"{left} payloads still unacknowledged at the flush deadline")
    except KafkaException as exc:
        raise ProduceError(
            f"producing to {topic!r} at {settings.kafka_bootstrap} failed after "
            f"{tally.payloads:,} payloads: {exc}"
        ) from None
    seconds = time.monotonic() - started
    report = ProduceReport(
        tally, topic, partitions, kind or "none", failures,
        first_error[0] if first_error else None, seconds,
    )  # fmt: skip
    if failures:
        raise ProduceError(
            f"{failures:,} of {tally.payloads:,} payloads were not acknowledged by "
            f"{settings.kafka_bootstrap} (topic {topic!r}); the first: {report.first_error}"
        )
    return report
