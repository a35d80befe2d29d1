"""examples/score_consumer.py against the real broker: run as documented, it handles each score
once (v1 and a v2-shaped record alike), skips what it cannot read, and commits its offsets, so a
second run of the same group starts after them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "score_consumer.py"
PARTITIONS = 2


def score(event_id: str, user_id: str, version: str = "1") -> dict[str, Any]:
    record: dict[str, Any] = {
        "schema_version": version,
        "user_id": user_id,
        "event_id": event_id,
        "occurred_at": "2026-01-02T03:04:05.678Z",
        "scored_at": "2026-01-02T03:04:05.900Z",
        "purchase_probability": 0.5,
        "model_version": "m-1",
        "feature_version": "1",
        "top_categories": [{"category_id": "c-1", "weight": 1.0}],
    }
    if version != "1":  # shaped like purchase-scores.v2: v1 plus exploration and reasons
        record["exploration"] = [{"category_id": "c-2", "propensity": 0.1, "why": "explore"}]
        record["reasons"] = [{"group": "session", "impact": 0.2}]
    return record


def produce(bootstrap: str, topic: str, records: list[tuple[str, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=[bootstrap], acks="all")
    try:
        for key, value in records:
            producer.send(topic, key=key.encode(), value=value)
        producer.flush(timeout=30)
    finally:
        producer.close()


def run_example(bootstrap: str, topic: str, group: str, max_records: int) -> tuple[list[dict], str]:
    """The example as a user runs it; returns its JSON lines and its log."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "INTENTFLOW_KAFKA_"))}
    cmd = [
        sys.executable, str(EXAMPLE), "--bootstrap", bootstrap, "--topic", topic,
        "--group", group, "--from-beginning", "--max", str(max_records), "--idle-timeout", "60",
    ]  # fmt: skip
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()], result.stderr


def committed(bootstrap: str, group: str, topic: str) -> dict[int, int | None]:
    """The group's committed offset per partition (read without joining the group)."""
    consumer = KafkaConsumer(
        bootstrap_servers=[bootstrap], group_id=group, enable_auto_commit=False
    )
    try:
        return {p: consumer.committed(TopicPartition(topic, p)) for p in range(PARTITIONS)}
    finally:
        consumer.close()


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=[bootstrap])
    try:
        ends = consumer.end_offsets([TopicPartition(topic, p) for p in range(PARTITIONS)])
    finally:
        consumer.close()
    return {tp.partition: offset for tp, offset in ends.items()}


def test_the_example_consumer_handles_each_score_once_and_commits(
    bootstrap: str, unique: str
) -> None:
    topic, group = f"scores-{unique}", f"marketing-{unique}"
    admin = KafkaAdminClient(bootstrap_servers=[bootstrap])
    try:
        admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    finally:
        admin.close()
    deadline = time.monotonic() + 30
    while len(end_offsets(bootstrap, topic)) < PARTITIONS:  # metadata of the new topic
        assert time.monotonic() < deadline, f"topic {topic} has no partitions after 30 s"
        time.sleep(0.2)

    first = [
        ("u-1", json.dumps(score("e1", "u-1")).encode()),
        ("u-1", json.dumps(score("e2", "u-1")).encode()),
        ("u-1", json.dumps(score("e1", "u-1")).encode()),  # a worker's replay: same event_id
        ("u-2", json.dumps(score("e3", "u-2", version="2")).encode()),
        ("u-2", b"{not json"),
        ("u-1", json.dumps(score("e2", "u-1")).encode()),
    ]
    produce(bootstrap, topic, first)
    lines, log = run_example(bootstrap, topic, group, max_records=len(first))

    handled = [line["event_id"] for line in lines]
    assert sorted(handled) == ["e1", "e2", "e3"], lines
    assert handled.index("e1") < handled.index("e2"), "one user's scores stay in order"
    assert {line["event_id"]: line["schema_version"] for line in lines}["e3"] == "2"
    assert "handled 3, duplicates 2, invalid 1" in log, log
    # Offsets were committed after handling: the group's position is the end of the topic.
    assert committed(bootstrap, group, topic) == end_offsets(bootstrap, topic)

    # A second run of the same group starts after the committed offsets: only new records.
    produce(
        bootstrap,
        topic,
        [("u-2", json.dumps(score("e4", "u-2")).encode())] * 2,
    )
    lines, log = run_example(bootstrap, topic, group, max_records=2)
    assert [line["event_id"] for line in lines] == ["e4"], lines
    assert "handled 1, duplicates 1, invalid 0" in log, log
    assert committed(bootstrap, group, topic) == end_offsets(bootstrap, topic)
