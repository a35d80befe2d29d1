"""Chaos against the real broker: a simulated stream with 1% ordinary malformed events and, mixed
in, every poison input of issue 10. The worker must stay up (same process, no crash in its
log), score every valid event once, and dead-letter every bad record exactly once per source
(partition, offset) with its class, cutting payloads over 64 KiB with their size and sha256.

Poison inputs, and the class each must get:
- tombstones (value None): ``null_value``;
- 300 KB and 900 KB payloads of control characters: ``oversized`` (their dead letters, JSON-
  escaped, would be 1.8 MB and 5.4 MB uncut);
- two events of one user with price 1.7e308, and one with 1e400: ``invalid_value``;
- an event dated 9999-12-31 produced now (its Kafka timestamp is the send time): ``clock_skew``;
- a key that is not the payload's user_id, and no key at all: ``key_mismatch``;
- a stored profile in an envelope version this worker does not know (a rollback), put in the
  changelog before the worker starts: that user's events are ``processing_error`` (stage
  ``load_profile``), and the stored bytes are left as they are.

A NaN-producing feature: none is reachable from the outside. ``decode_event`` refuses a price
over 1e9 and non-finite numbers, ``features.update`` refuses a non-finite price sum, and
``occurred_at`` is bounded to years 1..9999; a fuzz of the feature math over those bounds
(years 1, 1970 and 9999, prices 0, 5e-324 and 1e9, out-of-order and 128-character ids) found
no non-finite feature. So the stream carries those extreme but valid events instead (a user
whose first event is in year 1, then 1970, prices 1e9, 0 and 5e-324, an event 200 s ahead of
its Kafka timestamp), and they must be scored with a finite probability like any other.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from streams.contracts.dead_letters import MAX_DLQ_PAYLOAD_BYTES
from streams.contracts.events import ErrorClass
from streams.processing.envelope import decode_stored
from streams.sources.simulate.stream import generate
from streams.worker.app import changelog_topic_name
from tests.integration.harness import (
    TopicTail,
    WorkerProcess,
    covering,
    create_topic,
    produce_at,
    read_topic,
    score_event_id,
    set_topic_config,
)
from tests.integration.test_worker import make_stack, offline_profiles

pytestmark = pytest.mark.integration

# The issue asks for 100,000 events. That run took 40-48 s here (2 shared cores), most of it
# in this process (producing, reading 100,000 scores back, the offline profiles; the worker
# finished 3-5 s after the last send), which put the fault tests together over their budget of
# 2.5 minutes. 50,000 keep every poison input and all nine classes of ordinary malformed
# events (about 500 of them); N_EVENTS = 100_000 runs the size.
N_EVENTS = 50_000
BIG = 2 * 1024 * 1024  # max.message.bytes of the input topic and the producer's request limit
CONTROL = "control characters"  # the note of the 300 KB and 900 KB payloads
GARBAGE_PROFILE = b"\x09" + b"profile written by a newer worker" * 4  # envelope version 9


@dataclass
class Item:
    """One record to produce, and what the worker must make of it."""

    key: bytes | None
    value: bytes | None
    expected: ErrorClass | None  # None: a valid event, to be scored
    event_id: str | None = None
    note: str = ""


@dataclass
class Chaos:
    items: list[Item] = field(default_factory=list)
    poisoned_user: str = ""
    extreme_user: str = ""


def _event(user: str, event_id: str, occurred_at: str, **extra: object) -> bytes:
    event: dict[str, object] = {
        "schema_version": "1",
        "event_id": event_id,
        "user_id": user,
        "event_type": "view",
        "item_id": "i-chaos",
        "category_id": "c0001",
        "price": 10.0,
        "occurred_at": occurred_at,
    }
    event.update(extra)
    return orjson.dumps(event)


def _control_characters(n: int) -> bytes:
    return bytes(i % 32 for i in range(n))  # U+0000..U+001F: valid UTF-8, escaped in JSON


def build_chaos(unique: str) -> Chaos:
    """The simulated stream with every poison input inserted at seeded random places."""
    start = datetime(2025, 3, 3, tzinfo=UTC)
    simulated = list(itertools.islice(generate(1500, 3 * 86_400, 31, 0.01, start), N_EVENTS))
    items = [Item(r.key, r.payload, r.error_class, r.event_id, r.bad_kind or "") for r in simulated]
    valid = [r for r in simulated if r.valid]
    rng = random.Random(f"chaos/{unique}")
    chaos = Chaos(poisoned_user=f"poisoned-{unique}", extreme_user=f"extreme-{unique}")

    def near(i: int) -> tuple[str, str]:  # a real user and an event time around position i
        ref = valid[i]
        return ref.key.decode(), orjson.loads(ref.payload)["occurred_at"]

    poison: list[Item] = []
    for n in range(3):
        user, _ = near(rng.randrange(len(valid)))
        poison.append(Item(user.encode(), None, ErrorClass.NULL_VALUE, note=f"tombstone {n}"))
    for size in (300_000, 900_000):
        user, _ = near(rng.randrange(len(valid)))
        poison.append(
            Item(user.encode(), _control_characters(size), ErrorClass.OVERSIZED, note=CONTROL)
        )
    user, at = near(len(valid) // 3)
    for n in range(2):  # two of the same user: once, the stored price sum became inf
        poison.append(
            Item(user.encode(), _event(user, f"chaos-price-{n}", at, price=1.7e308),
                 ErrorClass.INVALID_VALUE, note="price 1.7e308")
        )  # fmt: skip
    raw = _event(user, "chaos-price-inf", at).replace(b'"price":10.0', b'"price":1e400')
    poison.append(Item(user.encode(), raw, ErrorClass.INVALID_VALUE, note="price 1e400"))
    user, _ = near(len(valid) // 2)  # a user with later events, which must not be frozen
    poison.append(
        Item(user.encode(), _event(user, "chaos-year-9999", "9999-12-31T23:59:59Z"),
             ErrorClass.CLOCK_SKEW, note="year 9999")
    )  # fmt: skip
    user, at = near(rng.randrange(len(valid)))
    other, _ = near(rng.randrange(len(valid)))
    if other == user:
        other = user + "-other"
    poison.append(
        Item(other.encode(), _event(user, "chaos-key-mismatch", at), ErrorClass.KEY_MISMATCH,
             note="key of another user")
    )  # fmt: skip
    poison.append(
        Item(None, _event(user, "chaos-no-key", at), ErrorClass.KEY_MISMATCH, note="no key")
    )
    for n in range(3):
        _, at = near(rng.randrange(len(valid)))
        poison.append(
            Item(chaos.poisoned_user.encode(),
                 _event(chaos.poisoned_user, f"chaos-poisoned-{n}", at),
                 ErrorClass.PROCESSING_ERROR, note="unreadable stored profile")
        )  # fmt: skip

    for item in poison:
        items.insert(rng.randrange(len(items) + 1), item)

    # Extreme but valid: scored with a finite probability, kept in the profile.
    x = chaos.extreme_user
    soon = datetime.fromtimestamp(time.time() + 200, UTC).isoformat()
    extreme = [
        ("year-1", _event(x, "chaos-x-year-1", "0001-01-01T00:00:00+23:59", price=1e9)),
        ("epoch", _event(x, "chaos-x-epoch", "1970-01-01T00:00:00Z", price=0.0)),
        ("max-price-1", _event(x, "chaos-x-max-1", "2025-03-04T00:00:00Z", price=1e9)),
        ("max-price-2", _event(x, "chaos-x-max-2", "2025-03-04T00:00:01Z", price=1e9)),
        ("tiny-price", _event(x, "chaos-x-tiny", "2025-03-04T00:00:02Z", price=5e-324)),
        ("long-ids", _event(x, "chaos-x-" + "l" * 120, "2025-03-04T00:00:03Z",
                            item_id="i" * 128, category_id="c" * 128, quantity=10_000)),
        ("200 s ahead", _event(x, "chaos-x-soon", soon, event_type="add_to_cart")),
    ]  # fmt: skip
    places = sorted(rng.sample(range(len(items)), len(extreme)))
    for shift, (place, (note, payload)) in enumerate(zip(places, extreme, strict=True)):
        event_id = orjson.loads(payload)["event_id"]  # in this order, each at its place
        items.insert(place + shift, Item(x.encode(), payload, None, event_id, note))
    chaos.items = items
    return chaos


def test_no_input_stops_the_worker(
    bootstrap: str, tmp_path: Path, unique: str, workers: list[WorkerProcess]
) -> None:
    chaos = build_chaos(unique)
    stack = make_stack(bootstrap, tmp_path, unique)
    s = stack.settings
    set_topic_config(bootstrap, s.topic_events, {"max.message.bytes": str(BIG)})
    # A stored profile this worker cannot read, as a rollback would leave it.
    changelog = changelog_topic_name(s)
    create_topic(bootstrap, changelog, s.partitions, {"cleanup.policy": "compact"})
    garbage_key, garbage_partition = _stored_at(chaos.poisoned_user, s.partitions)
    _write_garbage(bootstrap, changelog, garbage_key, garbage_partition)

    worker = stack.worker("chaos")
    workers.append(worker.start())
    worker.wait_ready()
    assert worker.proc is not None
    pid = worker.proc.pid
    scores, dlq = TopicTail(bootstrap, s.topic_scores), TopicTail(bootstrap, s.topic_dlq)
    try:
        began = time.monotonic()
        positions = produce_at(
            bootstrap, s.topic_events, [(i.key, i.value) for i in chaos.items],
            max_request_size=BIG,
        )  # fmt: skip
        produced = time.monotonic()
        bad = {pos: item for pos, item in zip(positions, chaos.items, strict=True) if item.expected}
        assert {p for (p, _), i in bad.items() if i.key == chaos.poisoned_user.encode()} == {
            garbage_partition
        }
        valid_ids = {i.event_id for i in chaos.items if i.expected is None}
        assert len(valid_ids) == sum(1 for i in chaos.items if i.expected is None)
        scores.wait(covering(valid_ids, score_event_id), 300, "every valid event scored")
        dlq.wait(covering(set(bad), _source), 120, "every bad record dead-lettered")
        drained = time.monotonic()
    finally:
        scores.close()
        dlq.close()
    print(
        f"chaos: {len(chaos.items)} records ({len(bad)} bad) produced in {produced - began:.1f}s,"
        f" scored and dead-lettered {drained - began:.1f}s after the first send"
    )

    # The worker never restarted: the same process, alive, with no crash in its log.
    assert worker.proc.poll() is None, worker.log()
    assert worker.proc.pid == pid
    log = worker.log_path.read_text(errors="replace")
    for sign in ("Traceback", "Crashed", "CRITICAL"):
        assert sign not in log, f"{sign!r} in the worker log:\n{worker.log(80)}"
    assert worker.metric("intentflow_worker_errors_total") == 0
    assert worker.metric("intentflow_events_consumed_total", {"outcome": "replayed"}) == 0
    assert worker.metric("intentflow_events_consumed_total", {"outcome": "valid"}) == len(valid_ids)

    # Every valid event scored exactly once (no restart, so no replay), nothing else scored.
    score_records = read_topic(bootstrap, s.topic_scores)
    ids = Counter(orjson.loads(r.value)["event_id"] for r in score_records)
    assert set(ids) == valid_ids, f"scored but not valid: {sorted(set(ids) - valid_ids)[:5]}"
    assert max(ids.values()) == 1, f"scored twice: {[i for i, c in ids.items() if c > 1][:5]}"
    extreme = {i.event_id: i.note for i in chaos.items if i.key == chaos.extreme_user.encode()}
    for r in score_records:
        score = orjson.loads(r.value)
        if score["event_id"] in extreme:
            p = score["purchase_probability"]
            assert isinstance(p, float) and math.isfinite(p) and 0 <= p <= 1, (extreme, score)

    # Every bad record dead-lettered exactly once per source position, with its class.
    letters = [orjson.loads(r.value) for r in read_topic(bootstrap, s.topic_dlq)]
    per_source = Counter((x["source_partition"], x["source_offset"]) for x in letters)
    assert set(per_source) == set(bad), f"unexpected: {sorted(set(per_source) - set(bad))[:5]}"
    assert max(per_source.values()) == 1, [k for k, c in per_source.items() if c > 1][:5]
    for letter in letters:
        item = bad[(letter["source_partition"], letter["source_offset"])]
        where = f"{item.note or item.expected} at {letter['source_partition']}@"
        where += str(letter["source_offset"])
        assert letter["error_class"] == item.expected, (where, letter["reason"])
        assert letter["source_topic"] == s.topic_events
        _check_payload(letter, item, where)
        if item.note == CONTROL:
            assert letter["payload_truncated"] and letter["payload_encoding"] == "utf-8", where
        if item.expected is ErrorClass.PROCESSING_ERROR:
            assert "load_profile" in letter["reason"], (where, letter["reason"])
    classes = Counter(item.expected for item in bad.values())
    print(f"chaos: dead letters by class {dict(sorted(classes.items()))}")
    assert len(classes) == 13  # nine payload classes from the simulator and four poison ones

    # Profiles equal an uninterrupted run over the valid events alone (the last ones reach
    # the changelog at the next checkpoint, so poll briefly), and the unreadable stored
    # profile was neither overwritten nor dropped.
    expected = offline_profiles([(i.key, i.value) for i in chaos.items if i.expected is None])
    deadline = time.monotonic() + 30
    while True:
        latest = {r.key: (r.partition, r.value) for r in read_topic(bootstrap, changelog)}
        assert latest.pop(garbage_key) == (garbage_partition, GARBAGE_PROFILE)
        got = {k.decode(): decode_stored(v).profile for k, (_, v) in latest.items() if v}
        if got == expected or time.monotonic() > deadline:
            break
        time.sleep(1)
    differing = sorted(u for u in expected if got.get(u) != expected[u])
    assert not differing, f"{len(differing)} of {len(expected)} profiles differ: {differing[:5]}"
    assert got.keys() == expected.keys()


def _stored_at(user: str, partitions: int) -> tuple[bytes, int]:
    """The changelog key and partition of a user's profile: the key the worker stores it
    under (as ``offline_profiles`` computes it) in the partition of the user's events (the
    producer's murmur2 of the user id)."""
    from kafka.partitioner.default import murmur2

    (key,) = offline_profiles([(user.encode(), _event(user, "probe", "2025-03-03T00:00:00Z"))])
    return key.encode(), (murmur2(user.encode()) & 0x7FFFFFFF) % partitions


def _write_garbage(bootstrap: str, topic: str, key: bytes, partition: int) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        producer.send(topic, key=key, value=GARBAGE_PROFILE, partition=partition).get(30)
    finally:
        producer.close(5)


def _source(record) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    letter = orjson.loads(record.value)
    return letter["source_partition"], letter["source_offset"]


def _check_payload(letter: dict, item: Item, where: str) -> None:
    """The dead letter carries the source payload: its size and sha256, and its bytes (all of
    them up to 64 KiB, else the first 64 KiB). From clickstream.dlq.v2 on, identifiers in the
    kept bytes are pseudonymised (``payload_pseudonymised``), so the source key, the user id,
    appears nowhere in the record."""
    import base64

    value = item.value
    if value is None:
        assert letter["payload_encoding"] == "null" and letter["payload"] == "", where
        return
    kept = (
        base64.b64decode(letter["payload"])
        if letter["payload_encoding"] == "base64"
        else letter["payload"].encode("utf-8")
    )
    assert letter["payload_bytes"] == len(value), where
    assert letter["payload_sha256"] == hashlib.sha256(value).hexdigest(), where
    assert len(kept) <= MAX_DLQ_PAYLOAD_BYTES, where
    assert len(orjson.dumps(letter)) < 1_000_000, where  # under the producer's request limit
    if letter.get("schema_version", "1") != "1" and item.key and len(item.key) >= 4:
        assert item.key not in orjson.dumps(letter), f"{where}: the raw key is in the letter"
    if letter.get("payload_pseudonymised"):
        return
    assert letter["payload_truncated"] == (len(value) > MAX_DLQ_PAYLOAD_BYTES), where
    if len(value) > MAX_DLQ_PAYLOAD_BYTES:
        # cut at 64 KiB (a character split by the cut is dropped whole)
        assert value.startswith(kept) and len(kept) > MAX_DLQ_PAYLOAD_BYTES - 4, where
    else:
        assert kept == value, where
