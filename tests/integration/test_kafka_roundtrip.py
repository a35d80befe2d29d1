"""Simulated events through a real broker: every payload comes back exactly, valid ones decode
to the simulated event, malformed ones are caught with their expected class."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from kafka import KafkaConsumer

from streams.contracts.events import ClickEvent, Rejection, decode_event
from streams.kafka.topics import create_topics
from streams.settings import load_settings
from streams.sources.simulate import generate
from streams.sources.simulate.corrupt import BadKind
from streams.sources.simulate.sinks import produce

pytestmark = pytest.mark.integration

N = 20_000


def test_simulated_events_round_trip_through_kafka(bootstrap: str, unique: str) -> None:
    settings = load_settings(
        kafka_bootstrap=bootstrap,
        topic_events=f"it-events-{unique}",
        topic_scores=f"it-scores-{unique}",
        topic_dlq=f"it-dlq-{unique}",
        app_id=f"it-app-{unique}",  # its own erase-command topics too
        partitions=3,
    )
    create_topics(settings)
    records = list(generate(800, 86_400.0, seed=17, bad_fraction=0.01))[:N]
    report = produce(iter(records), settings)
    assert report.failures == 0 and report.tally.payloads == N

    consumer = KafkaConsumer(
        settings.topic_events,
        bootstrap_servers=[bootstrap],
        group_id=f"it-{unique}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=1_000,
    )
    got: dict[bytes, list[bytes]] = {}
    deadline = time.monotonic() + 90
    count = 0
    try:
        while count < N and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500, max_records=5_000).values():
                for msg in batch:
                    got.setdefault(msg.key, []).append(msg.value)
                    count += 1
    finally:
        consumer.close()
    assert count == N, f"read {count} of {N} within the deadline"

    # Keyed by user: per user, the payloads come back in the order they were produced.
    expected: dict[bytes, list[bytes]] = {}
    for rec in records:
        expected.setdefault(rec.key, []).append(rec.payload)
    assert got == expected

    classes: Counter[str] = Counter()
    for rec in records:
        verdict = decode_event(rec.payload)
        if rec.valid:
            assert isinstance(verdict, ClickEvent)
            assert verdict.event_id == rec.event_id and verdict.to_json() == rec.payload
        else:
            assert isinstance(verdict, Rejection), rec.payload[:200]
            assert verdict.error_class is rec.error_class
            field_named = {
                BadKind.MISSING_FIELD: "Field required",
                BadKind.NEGATIVE_PRICE: "`price`",
                BadKind.UNKNOWN_EVENT_TYPE: "`event_type`",
                BadKind.NAIVE_TIMESTAMP: "`occurred_at`",
                BadKind.UNSUPPORTED_VERSION: "`schema_version`",
                BadKind.OVERSIZED: "bytes; the limit is",
                BadKind.NOT_UTF8: "not UTF-8",
            }.get(rec.bad_kind)  # type: ignore[arg-type]
            if field_named:
                assert field_named in verdict.reason or "is required" in verdict.reason
            classes[verdict.error_class.value] += 1
    assert 120 <= sum(classes.values()) <= 300  # 1% of 20,000, give or take
    assert len(classes) >= 7
