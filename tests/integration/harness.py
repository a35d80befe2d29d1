"""Helpers for integration tests: a worker subprocess, a producer, and bounded consumers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from streams.devtools.localkafka import free_port


@dataclass
class WorkerProcess:
    """``intentflow worker`` in a subprocess, configured only through INTENTFLOW_* variables."""

    env: dict[str, str]
    log_path: Path
    web_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("INTENTFLOW_")}
        env.update(self.env)
        env["INTENTFLOW_WEB_PORT"] = str(self.web_port)
        env.setdefault("INTENTFLOW_WEB_HOST", "127.0.0.1")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "worker"],
                env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def get(self, path: str, timeout: float = 2.0) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.log()}")
            try:
                status, _ = self.get("/readyz", timeout=1.0)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"worker not ready within {timeout}s:\n{self.log()}")

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        """Sum of a metric's samples matching ``labels`` from /metrics."""
        from prometheus_client.parser import text_string_to_metric_families

        _, body = self.get("/metrics")
        total = 0.0
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in (labels or {}).items()
                ):
                    total += sample.value
        return total

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to commit or flush."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        return self.proc.returncode

    def log(self, tail: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-tail:])
        except FileNotFoundError:
            return "(no log)"


def produce(bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes]]) -> int:
    """Produce (key, value) pairs and wait for every delivery. Returns the count."""
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, batch_size=262_144
    )
    count = 0
    for key, value in records:
        producer.send(topic, key=key, value=value)
        count += 1
    producer.flush(60)
    producer.close(10)
    return count


def consume_until(
    bootstrap: str,
    topic: str,
    done: Callable[[list[tuple[bytes | None, bytes]]], bool],
    *,
    timeout: float,
) -> list[tuple[bytes | None, bytes]]:
    """Read ``topic`` from the beginning until ``done(records)`` or the deadline."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest", consumer_timeout_ms=1000,
    )  # fmt: skip
    partitions = None
    deadline = time.monotonic() + timeout
    while partitions is None and time.monotonic() < deadline:
        found = consumer.partitions_for_topic(topic)
        if found:
            partitions = [TopicPartition(topic, p) for p in found]
        else:
            time.sleep(0.2)
    if partitions is None:
        consumer.close()
        return []
    consumer.assign(partitions)
    consumer.seek_to_beginning()
    records: list[tuple[bytes | None, bytes]] = []
    try:
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend((r.key, r.value) for r in batch)
            if done(records):
                break
    finally:
        consumer.close()
    return records


def click_events(
    n: int, *, users: int, seed: int, start: float, step: float = 0.5, prefix: str = "t"
) -> list[tuple[bytes, bytes]]:
    """``n`` valid clickstream.v1 payloads in event-time order, keyed by user (worker tests
    that need controlled, not realistic, traffic)."""
    import random
    from datetime import UTC, datetime

    import orjson

    rng = random.Random(seed)
    kinds = ["view"] * 6 + ["click"] * 2 + ["add_to_cart", "favorite", "search", "purchase"]
    out = []
    for i in range(n):
        user = f"{prefix}u{rng.randrange(users)}"
        kind = rng.choice(kinds)
        event = {
            "schema_version": "1",
            "event_id": f"{prefix}-{seed}-{i}",
            "user_id": user,
            "event_type": kind,
            "occurred_at": datetime.fromtimestamp(start + i * step, UTC).isoformat(),
        }
        if kind != "search":
            event["item_id"] = f"i{rng.randrange(500)}"
            event["category_id"] = f"c{rng.randrange(60):04d}"
            event["price"] = round(rng.uniform(1, 200), 2)
        out.append((user.encode(), orjson.dumps(event)))
    return out


def score_ids(records: list[tuple[bytes | None, bytes]]) -> list[str]:
    """event_id of every score record (duplicates kept)."""
    import orjson

    return [orjson.loads(v)["event_id"] for _, v in records]


# -- Helpers for the fault tests (tests/integration/test_chaos.py, test_faults.py) ------------


def produce_at(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes | None]],
    *,
    max_request_size: int = 1_048_576,
) -> list[tuple[int, int]]:
    """Produce (key, value) pairs in order (a None value is a tombstone) and return the
    (partition, offset) each one was written at."""
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, batch_size=262_144,
        max_request_size=max_request_size,
    )  # fmt: skip
    try:
        futures = [producer.send(topic, key=key, value=value) for key, value in records]
        producer.flush(120)
        return [(meta.partition, meta.offset) for meta in (f.get(30) for f in futures)]
    finally:
        producer.close(10)


def read_topic(bootstrap: str, topic: str, timeout: float = 60.0) -> list:
    """Every record of ``topic`` from the beginning to its end offsets at the time of the
    call (kafka-python ConsumerRecords, in partition order)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        found = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(found)]
        consumer.assign(tps)
        consumer.seek_to_beginning()
        end = consumer.end_offsets(tps)
        out: list = []
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < end[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {topic} to its end within {timeout}s")
            for batch in consumer.poll(timeout_ms=500).values():
                out.extend(batch)
        return sorted(out, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close()


class TopicTail:
    """A background reader of a topic from the beginning: tests poll what it has seen."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        import threading

        self.bootstrap, self.topic = bootstrap, topic
        self.records: list = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        try:
            found = None
            while not found and not self._stop.is_set():
                found = consumer.partitions_for_topic(self.topic)
                if not found:
                    time.sleep(0.2)
            if not found:
                return
            consumer.assign([TopicPartition(self.topic, p) for p in sorted(found)])
            consumer.seek_to_beginning()
            while not self._stop.is_set():
                for batch in consumer.poll(timeout_ms=200).values():
                    with self._lock:
                        self.records.extend(batch)
        finally:
            consumer.close()

    def snapshot(self) -> list:
        with self._lock:
            return list(self.records)

    def wait(self, done: Callable[[list], bool], timeout: float, what: str) -> list:
        """Poll until ``done(records)``; AssertionError naming ``what`` at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            records = self.snapshot()
            if done(records):
                return records
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {timeout:.0f}s ({len(records)} read)")
            time.sleep(0.2)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The consumer group's committed offsets (next offset to read) for ``topic``'s
    partitions; a partition with no commit is absent."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
    finally:
        admin.close()
    return {
        tp.partition: meta.offset
        for tp, meta in offsets.items()
        if tp.topic == topic and meta.offset >= 0
    }


def set_topic_config(bootstrap: str, topic: str, configs: dict[str, str]) -> None:
    """Change dynamic configs of a topic (IncrementalAlterConfigs: others keep their values)."""
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource, ConfigResourceType

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, configs=configs)], incremental=True
        )
    finally:
        admin.close()


def create_topic(bootstrap: str, topic: str, partitions: int, configs: dict[str, str]) -> None:
    """Create ``topic`` with ``configs`` (before the worker declares it)."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, partitions, 1, topic_configs=configs)])
    finally:
        admin.close()


def covering(wanted: set, key: Callable[[Any], Any]) -> Callable[[list], bool]:
    """A ``TopicTail.wait`` condition: ``key(record)`` of the records seen covers ``wanted``.
    It looks at each record once (the tail's list only grows)."""
    seen: set = set()
    looked = 0

    def done(records: list) -> bool:
        nonlocal looked
        seen.update(key(r) for r in records[looked:])
        looked = len(records)
        return wanted <= seen

    return done


def score_event_id(record: Any) -> str:
    """The event_id of a purchase-scores.v1 record (a kafka-python ConsumerRecord)."""
    import orjson

    return str(orjson.loads(record.value)["event_id"])


def group_state(bootstrap: str, group: str) -> tuple[str, int]:
    """The consumer group's state (``Stable``, ``PreparingRebalance``, ...) and member count."""
    import logging

    from kafka import KafkaAdminClient

    # kafka-python warns at length that it cannot decode Faust's member metadata: not needed
    quiet = logging.getLogger("kafka.admin._groups")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        found = admin.describe_groups([group])[group]
    finally:
        admin.close()
        quiet.setLevel(level)
    return str(found.get("group_state")), len(found.get("members") or [])
