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
