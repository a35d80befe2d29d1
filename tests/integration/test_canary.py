"""No store keeps a raw shopper id. Canary ids ride in every identifier field of valid events and
in every kind of rejected record (malformed, not UTF-8, oversized, a tombstone, a wrong key);
then the worker's data directory (RocksDB files included), the changelog and dead-letter
topics, its debug-level log and /metrics are scanned byte for byte: zero occurrences. Only the
input topic and the scores (which marketing needs, kept 24 h) carry raw ids."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from tests.integration.harness import (
    click_events,
    consume_until,
    produce,
    read_topic,
    score_ids,
)
from tests.integration.test_worker import make_stack

pytestmark = pytest.mark.integration

START = time.time() - 3 * 3600
CANARIES = [f"CANARYzq{n:04d}x" for n in range(20)]


def _canary_traffic() -> tuple[list[tuple[bytes | None, bytes | None]], set[str]]:
    out: list[tuple[bytes | None, bytes | None]] = []
    valid: set[str] = set()
    for n, (_, value) in enumerate(click_events(400, users=20, seed=5, start=START)):
        event = orjson.loads(value)
        canary = CANARIES[int(event["user_id"].removeprefix("tu"))]
        event["user_id"] = canary
        event["event_id"] = f"{canary}-e{n}"
        event["session_id"] = f"{canary}-s1"
        if "item_id" in event:
            event["item_id"] = f"{canary}-i{n % 7}"
        out.append((canary.encode(), orjson.dumps(event)))
        valid.add(event["event_id"])
    for n, canary in enumerate(CANARIES):
        key = canary.encode()
        out += [
            (key, b'{"user_id": "' + key + b'", broken'),  # malformed JSON
            (key, b"\xff\xfe" + key + b"\xff"),  # not UTF-8
            (key, b'{"user_id":"' + key + b'","pad":"' + b"y" * 70_000 + b'"}'),  # oversized
            (key, None),  # a tombstone
            (b"someone-else", orjson.dumps({  # a key that is not the payload's user id
                "schema_version": "1", "event_id": f"{canary}-k{n}", "user_id": canary,
                "event_type": "view", "item_id": "i1", "category_id": "c1",
                "occurred_at": "2025-01-06T09:30:00Z",
            })),
        ]  # fmt: skip
    return out, valid


def test_no_store_keeps_a_raw_shopper_id(bootstrap: str, tmp_path: Path, unique: str) -> None:
    stack = make_stack(bootstrap, tmp_path, unique, INTENTFLOW_LOG_LEVEL="debug")
    records, valid = _canary_traffic()
    worker = stack.worker("canary").start()
    try:
        worker.wait_ready()
        produce(stack.settings.kafka_bootstrap, stack.settings.topic_events, records)
        consume_until(
            stack.settings.kafka_bootstrap, stack.settings.topic_scores,
            lambda recs: valid <= set(score_ids(recs)), timeout=90,
        )  # fmt: skip
        rejected = len(records) - len(valid)
        consume_until(
            stack.settings.kafka_bootstrap, stack.settings.topic_dlq,
            lambda recs: len(recs) >= rejected, timeout=60,
        )  # fmt: skip
        # Every shopper's profile has reached the changelog (the last checkpoint is done).
        changelog_topic = f"{stack.settings.app_id}-user_profile-changelog"
        deadline = time.monotonic() + 60
        while len(
            {r.key for r in read_topic(stack.settings.kafka_bootstrap, changelog_topic)}
        ) < len(CANARIES):
            assert time.monotonic() < deadline, "the profiles never reached the changelog"
            time.sleep(0.5)
        status, metrics = worker.get("/metrics")
        assert status == 200
    finally:
        worker.stop()

    needles = [c.encode() for c in CANARIES]

    def leaks(blob: bytes) -> list[bytes]:
        return [n for n in needles if n in blob]

    found: dict[str, list[bytes]] = {}
    for path in (stack.tmp / "data-canary").rglob("*"):
        if path.is_file() and (hit := leaks(path.read_bytes())):
            found[str(path.relative_to(stack.tmp))] = hit
    changelog = read_topic(
        stack.settings.kafka_bootstrap, f"{stack.settings.app_id}-user_profile-changelog"
    )
    assert changelog, "the worker wrote no profile: the scan would prove nothing"
    for r in changelog:
        if hit := leaks((r.key or b"") + (r.value or b"")):
            found[f"changelog@{r.partition}:{r.offset}"] = hit
    dlq = read_topic(stack.settings.kafka_bootstrap, stack.settings.topic_dlq)
    assert len(dlq) == rejected
    for r in dlq:
        if hit := leaks((r.key or b"") + (r.value or b"")):
            found[f"dlq@{r.partition}:{r.offset}"] = hit
    log = worker.log_path.read_bytes()
    assert b"DEBUG" in log  # the log really is at debug level
    if hit := leaks(log):
        found["worker log"] = hit
    if hit := leaks(metrics.encode()):
        found["/metrics"] = hit
    assert not found, f"raw ids found in: {sorted(found)[:10]}"
    # The raw ids are where they belong: the scores carry them for marketing.
    scores = read_topic(stack.settings.kafka_bootstrap, stack.settings.topic_scores)
    assert any(n in r.value for r in scores for n in needles)
