"""The worker's batch step without Kafka: checks, replay guard, isolation, scores, throttling."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from jsonschema import Draft202012Validator, FormatChecker

from streams import features
from streams.contracts.dead_letters import encode_dead_letter
from streams.contracts.events import ClickEvent, decode_event
from streams.errors import ProfileDecodeError
from streams.model.bundle import load_bundle
from streams.processing.envelope import StoredProfile, topic_identity
from streams.processing.step import Record, StepConfig, apply_batch, run_step, score
from streams.processing.throttle import Throttle
from tests.bundles import make_bundle
from tests.conftest import SCHEMAS
from tests.integration.harness import click_events

START = 1_760_000_000.0
CONFIG = StepConfig(top_k=3)


def records(
    payloads: list[tuple[bytes | None, bytes | None]], partition: int = 0, first: int = 0
) -> list[Record]:
    """Records as Kafka would hand them: timestamped when produced (here: the event time)."""
    out = []
    for i, (key, value) in enumerate(payloads):
        ts = START
        if value is not None:
            decoded = decode_event(value)
            ts = decoded.ts if isinstance(decoded, ClickEvent) else START
        out.append(Record("events", partition, first + i, key, value, START, ts))
    return out


class Stored:
    """A ``ProfileLookup`` that returns the same stored profile (or None) for every user."""

    def __init__(self, stored: StoredProfile | None = None) -> None:
        self.stored = stored
        self.reads: list[tuple[int, str]] = []

    def get(self, partition: int, user_id: str, /) -> StoredProfile | None:
        self.reads.append((partition, user_id))
        return self.stored


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return load_bundle(make_bundle(tmp_path_factory.mktemp("b") / "v1", "unit-v1", seed=4))


def _event(**overrides: Any) -> dict[str, Any]:
    event = {
        "schema_version": "1",
        "event_id": "e-1",
        "user_id": "u1",
        "event_type": "view",
        "item_id": "i1",
        "category_id": "c0001",
        "price": 10.0,
        "occurred_at": "2025-10-09T08:53:20Z",
    }
    event.update(overrides)
    return event


def test_batch_applies_events_in_order_and_builds_one_row_per_event() -> None:
    payloads = click_events(50, users=5, seed=1, start=START)
    out = apply_batch(records(payloads), Stored(), CONFIG)  # type: ignore[arg-type]
    assert len(out.rows) == 50 and not out.dead_letters and out.replayed == 0
    expected: dict[str, features.Profile] = {}
    for row, (_, value) in zip(out.rows, payloads, strict=True):
        event = decode_event(value)
        assert isinstance(event, ClickEvent)
        expected[event.user_id] = features.update(expected.get(event.user_id), event)
        assert row.profile == expected[event.user_id]  # the profile right after this event
    assert {u: s.profile for u, (s, _) in out.profiles.items()} == expected
    # The stored position is that of the user's last event in the batch.
    last = {decode_event(v).user_id: i for i, (_, v) in enumerate(payloads)}  # type: ignore[union-attr]
    assert {u: s.offset for u, (s, _) in out.profiles.items()} == last
    assert {s.partition for s, _ in out.profiles.values()} == {0}
    assert {s.topic for s, _ in out.profiles.values()} == {topic_identity("events")}


def test_bad_payloads_become_dead_letters_with_their_source_position() -> None:
    good = click_events(3, users=1, seed=2, start=START)
    batch = records(
        [good[0], (b"tu0", b"{broken"), good[1], (b"tu0", b"\xff\xfe"), good[2]], 3, 100
    )
    out = apply_batch(batch, Stored(), CONFIG)
    assert len(out.rows) == 3
    assert [(r.partition, r.offset) for r, _ in out.dead_letters] == [(3, 101), (3, 103)]
    classes = [letter.error_class.value for _, letter in out.dead_letters]
    assert classes == ["malformed_json", "not_utf8"]
    assert out.dead_letters[1][1].raw_payload() == b"\xff\xfe"


def test_poison_inputs_are_dead_lettered_with_their_own_class_and_the_batch_goes_on() -> None:
    ok = orjson.dumps(_event())
    batch = [
        Record("events", 0, 0, b"u1", None, START, START),  # a tombstone
        Record("events", 0, 1, b"someone-else", ok, START, START),  # key is not the user_id
        Record("events", 0, 2, None, ok, START, START),  # no key at all
        Record("events", 0, 3, b"u1", orjson.dumps(_event(price=1.7e308)), START, START),
        Record("events", 0, 4, b"u1", orjson.dumps(_event(occurred_at="9999-12-31T23:59:59Z")),
               START, START),
        Record("events", 0, 5, b"u1", ok, START, decode_event(ok).ts),  # type: ignore[union-attr]
    ]  # fmt: skip
    out = apply_batch(batch, Stored(), CONFIG)
    classes = [(r.offset, letter.error_class.value) for r, letter in out.dead_letters]
    assert classes == [
        (0, "null_value"),
        (1, "key_mismatch"),
        (2, "key_mismatch"),
        (3, "invalid_value"),
        (4, "clock_skew"),
    ]
    assert [r.record.offset for r in out.rows] == [5]
    tombstone = out.dead_letters[0][1]
    assert tombstone.payload_encoding == "null" and tombstone.raw_payload() is None
    assert "INTENTFLOW_MAX_CLOCK_SKEW_SECONDS" in out.dead_letters[4][1].reason
    # A key of another user is not echoed into the reason.
    assert "someone-else" not in out.dead_letters[1][1].reason


def test_clock_skew_allows_events_up_to_the_limit_after_the_kafka_timestamp() -> None:
    value = orjson.dumps(_event())
    ts = decode_event(value).ts  # type: ignore[union-attr]
    config = StepConfig(max_clock_skew_seconds=60)
    within = Record("events", 0, 0, b"u1", value, START, ts - 59)
    beyond = Record("events", 0, 1, b"u1", value, START, ts - 61)
    late = Record("events", 0, 2, b"u1", value, START, ts + 86_400)  # old events are fine
    out = apply_batch([within, beyond, late], Stored(), config)
    assert [r.record.offset for r in out.rows] == [0, 2]
    assert [letter.error_class.value for _, letter in out.dead_letters] == ["clock_skew"]


class Unreadable:
    def get(self, partition: int, user_id: str, /) -> StoredProfile | None:
        raise ProfileDecodeError("profile format version 9 is unknown; this worker reads 2")


def test_an_unreadable_stored_profile_dead_letters_that_users_events_only() -> None:
    payloads = click_events(20, users=1, seed=3, start=START)
    out = apply_batch(records(payloads), Unreadable(), CONFIG)  # type: ignore[arg-type]
    assert not out.rows and not out.profiles and len(out.dead_letters) == 20
    reasons = {letter.reason for _, letter in out.dead_letters}
    assert reasons == {
        "stage `load_profile` failed: ProfileDecodeError: profile format version 9 is unknown; "
        "this worker reads 2"
    }
    assert {letter.error_class.value for _, letter in out.dead_letters} == {"processing_error"}


def test_a_failing_update_dead_letters_the_record_and_keeps_the_profile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    payloads = click_events(10, users=1, seed=4, start=START)
    real = features.update

    def flaky(profile: features.Profile | None, event: Any) -> features.Profile:
        if event.event_id.endswith("-4"):
            raise ZeroDivisionError("boom")
        return real(profile, event)

    monkeypatch.setattr("streams.processing.step.features.update", flaky)
    out = apply_batch(records(payloads), Stored(), CONFIG)  # type: ignore[arg-type]
    assert [r.offset for r, _ in out.dead_letters] == [4]
    assert out.dead_letters[0][1].reason == "stage `update` failed: ZeroDivisionError: boom"
    assert len(out.rows) == 9
    # The profile skips only the failed event.
    expected = None
    for i, (_, value) in enumerate(payloads):
        if i != 4:
            expected = real(expected, decode_event(value))  # type: ignore[arg-type]
    ((stored, _),) = out.profiles.values()
    assert stored.profile == expected


def test_events_already_applied_before_a_restart_are_not_applied_twice() -> None:
    payloads = click_events(20, users=1, seed=3, start=START)
    first = apply_batch(records(payloads[:12]), Stored(), CONFIG)  # type: ignore[arg-type]
    ((stored, _),) = first.profiles.values()
    assert stored.offset == 11
    # After a crash, the input is replayed from offset 5; the table already holds offset 11.
    again = apply_batch(records(payloads[5:], first=5), Stored(stored), CONFIG)  # type: ignore[arg-type]
    assert again.replayed == 7
    assert len(again.rows) == 8
    uninterrupted = apply_batch(records(payloads), Stored(), CONFIG)  # type: ignore[arg-type]
    assert again.profiles == {
        u: (s, again.profiles[u][1]) for u, (s, _) in uninterrupted.profiles.items()
    }


def test_an_event_from_another_partition_or_a_recreated_topic_is_never_a_replay() -> None:
    payloads = click_events(12, users=1, seed=3, start=START)
    first = apply_batch(records(payloads[:10]), Stored(), CONFIG)  # type: ignore[arg-type]
    ((stored, _),) = first.profiles.values()
    # Same offsets, another partition (a producer with another partitioner): applied.
    moved = apply_batch(records(payloads[10:], partition=1), Stored(stored), CONFIG)  # type: ignore[arg-type]
    assert moved.replayed == 0 and len(moved.rows) == 2
    # Same partition, but the topic was re-created (new topic id; offsets start again).
    recreated = StepConfig(topic_ids={"events": topic_identity("events", "new-uuid")})
    again = apply_batch(records(payloads[10:]), Stored(stored), recreated)  # type: ignore[arg-type]
    assert again.replayed == 0 and len(again.rows) == 2


def test_each_user_is_read_once_per_batch_from_the_partition_of_its_events() -> None:
    payloads = click_events(30, users=3, seed=7, start=START)
    lookup = Stored()
    apply_batch(records(payloads, partition=2), lookup, CONFIG)  # type: ignore[arg-type]
    users = {decode_event(v).user_id for _, v in payloads}  # type: ignore[union-attr]
    assert sorted(lookup.reads) == sorted((2, u) for u in users)


def test_scores_match_the_contract_and_the_model(bundle) -> None:  # type: ignore[no-untyped-def]
    payloads = click_events(40, users=4, seed=5, start=START)
    out = apply_batch(records(payloads), Stored(), CONFIG)  # type: ignore[arg-type]
    scored = score(out.rows, bundle, top_k=3)
    direct = bundle.predict(
        features.feature_matrix([(r.profile, r.event) for r in out.rows], bundle.embeddings)
    )
    np.testing.assert_array_equal(scored.probabilities, direct)
    validator = Draft202012Validator(
        json.loads(Path(SCHEMAS / "purchase-scores.v1.json").read_text()),
        format_checker=FormatChecker(),
    )
    for (key, value), row, p in zip(scored.records, out.rows, direct, strict=True):
        record = orjson.loads(value)
        validator.validate(record)
        assert key == row.event.user_id.encode()
        assert record["event_id"] == row.event.event_id
        assert record["purchase_probability"] == pytest.approx(float(p))
        assert record["model_version"] == "unit-v1"
        top = features.top_categories(row.profile, 3)
        assert [c["category_id"] for c in record["top_categories"]] == [c for c, _ in top]


def test_non_finite_features_never_reach_the_model(bundle, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    payloads = click_events(8, users=2, seed=6, start=START)
    out = apply_batch(records(payloads), Stored(), CONFIG)  # type: ignore[arg-type]
    real = features.feature_matrix

    def poisoned(rows: Any, embeddings: Any) -> np.ndarray:
        matrix = real(rows, embeddings)
        matrix[3, 0] = np.inf
        matrix[5, 2] = np.nan
        return matrix

    seen: list[np.ndarray] = []
    real_predict = type(bundle).predict
    monkeypatch.setattr("streams.processing.step.features.feature_matrix", poisoned)
    monkeypatch.setattr(
        type(bundle), "predict", lambda self, x: seen.append(x) or real_predict(self, x)
    )
    scored = score(out.rows, bundle, top_k=3)
    assert all(np.isfinite(x).all() for x in seen)
    assert [r.record.offset for r in scored.rows] == [0, 1, 2, 4, 6, 7]
    assert [(r.offset, letter.error_class.value) for r, letter in scored.dead_letters] == [
        (3, "processing_error"),
        (5, "processing_error"),
    ]
    assert features.FEATURE_NAMES[0] in scored.dead_letters[0][1].reason


def test_a_model_that_fails_on_some_rows_fails_only_those(bundle, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    payloads = click_events(6, users=2, seed=6, start=START)
    out = apply_batch(records(payloads), Stored(), CONFIG)  # type: ignore[arg-type]
    real_predict = type(bundle).predict
    poison = features.feature_matrix([(out.rows[2].profile, out.rows[2].event)], bundle.embeddings)

    def picky(self: Any, x: np.ndarray) -> np.ndarray:
        if any(np.array_equal(row, poison[0]) for row in x):
            raise RuntimeError("onnxruntime says no")
        return real_predict(self, x)

    monkeypatch.setattr(type(bundle), "predict", picky)
    scored = score(out.rows, bundle, top_k=3)
    assert [r.record.offset for r in scored.rows] == [0, 1, 3, 4, 5]
    ((record, letter),) = scored.dead_letters
    assert record.offset == 2
    assert letter.reason == "stage `score` failed: RuntimeError: onnxruntime says no"


def test_run_step_is_apply_then_one_scoring_call(bundle) -> None:  # type: ignore[no-untyped-def]
    payloads = click_events(40, users=4, seed=8, start=START)
    batch = records(payloads)  # type: ignore[arg-type]
    out = run_step(batch, Stored(), bundle, CONFIG)
    applied = apply_batch(batch, Stored(), CONFIG)
    assert out.applied.profiles == applied.profiles
    assert out.scored.rows == out.applied.rows and len(out.scored.records) == 40
    expected = score(applied.rows, bundle, top_k=3).probabilities
    np.testing.assert_array_equal(out.scored.probabilities, expected)
    assert out.dead_letters == []


def test_run_step_with_a_throttle_scores_only_what_it_admits(bundle) -> None:  # type: ignore[no-untyped-def]
    payloads = click_events(40, users=4, seed=9, start=START)
    throttle = Throttle(interval=60.0)
    out = run_step(records(payloads), Stored(), bundle, CONFIG, throttle=throttle, now=1000.0)  # type: ignore[arg-type]
    # One score per user now (the first event); each user's latest waits for its window.
    assert len(out.scored.rows) == 4 and len(out.applied.rows) == 40
    assert throttle.pending == 4


def test_every_dead_letter_of_the_largest_input_fits_the_producer_limit() -> None:
    # The worst case: a payload of control characters, which JSON escapes to six characters
    # per byte, far over the event limit, with a maximal key and reason.
    huge = b"\x01" * 900_000
    batch = [Record("events", 0, 0, b"k" * 900_000, huge, START, START)]
    ((_, letter),) = apply_batch(batch, Stored(), CONFIG).dead_letters
    wire = encode_dead_letter(letter)
    assert len(wire) < 1_000_000 - 2_048  # the producer's max.request.size, with a margin
    assert letter.payload_truncated and letter.payload_bytes == 900_000
    assert letter.raw_payload() == huge[:65_536]
    import hashlib

    assert letter.payload_sha256 == hashlib.sha256(huge).hexdigest()
