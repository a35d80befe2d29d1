"""The worker's batch step without Kafka: decoding, replay guard, scores, throttling, state."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import orjson
import pytest
from jsonschema import Draft202012Validator, FormatChecker

from streams import features
from streams.events import ClickEvent, decode_event
from streams.pipeline import Record, Row, Throttle, encode_scores, process_batch, score_rows
from streams.scoring import load_bundle
from streams.state import StoredProfile, decode_stored, encode_stored
from tests.bundles import make_bundle
from tests.conftest import SCHEMAS
from tests.integration.harness import click_events

START = 1_760_000_000.0


def records(
    payloads: list[tuple[bytes, bytes]], partition: int = 0, first: int = 0
) -> list[Record]:
    return [
        Record("events", partition, first + i, key, value, START)
        for i, (key, value) in enumerate(payloads)
    ]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return load_bundle(make_bundle(tmp_path_factory.mktemp("b") / "v1", "unit-v1", seed=4))


def test_batch_applies_events_in_order_and_builds_one_row_per_event() -> None:
    payloads = click_events(50, users=5, seed=1, start=START)
    out = process_batch(records(payloads), lambda user, rec: None, max_event_bytes=65536)
    assert len(out.rows) == 50 and not out.dead_letters and out.replayed == 0
    expected: dict[str, features.Profile] = {}
    for row, (_, value) in zip(out.rows, payloads, strict=True):
        event = decode_event(value)
        assert isinstance(event, ClickEvent)
        expected[event.user_id] = features.update(expected.get(event.user_id), event)
        assert row.profile == expected[event.user_id]  # the profile right after this event
    assert {u: s.profile for u, (s, _) in out.profiles.items()} == expected
    # The stored offset is that of the user's last event in the batch.
    last = {decode_event(v).user_id: i for i, (_, v) in enumerate(payloads)}  # type: ignore[union-attr]
    assert {u: s.offset for u, (s, _) in out.profiles.items()} == last


def test_bad_payloads_become_dead_letters_with_their_source_position() -> None:
    good = click_events(3, users=1, seed=2, start=START)
    batch = records([good[0], (b"u", b"{broken"), good[1], (b"u", b"\xff\xfe"), good[2]], 3, 100)
    out = process_batch(batch, lambda user, rec: None, max_event_bytes=65536)
    assert len(out.rows) == 3
    assert [(r.partition, r.offset) for r, _ in out.dead_letters] == [(3, 101), (3, 103)]
    classes = [letter.error_class.value for _, letter in out.dead_letters]
    assert classes == ["malformed_json", "not_utf8"]
    assert out.dead_letters[1][1].raw_payload() == b"\xff\xfe"


def test_events_already_applied_before_a_restart_are_not_applied_twice() -> None:
    payloads = click_events(20, users=1, seed=3, start=START)
    first = process_batch(records(payloads[:12]), lambda u, r: None, max_event_bytes=65536)
    ((stored, _),) = first.profiles.values()
    assert stored.offset == 11
    # After a crash, the input is replayed from offset 5; the table already holds offset 11.
    again = process_batch(
        records(payloads[5:], first=5), lambda u, r: stored, max_event_bytes=65536
    )
    assert again.replayed == 7
    assert len(again.rows) == 8
    uninterrupted = process_batch(records(payloads), lambda u, r: None, max_event_bytes=65536)
    assert again.profiles == {
        u: (s, again.profiles[u][1]) for u, (s, _) in uninterrupted.profiles.items()
    }


def test_scores_match_the_contract_and_the_model(bundle) -> None:  # type: ignore[no-untyped-def]
    payloads = click_events(40, users=4, seed=5, start=START)
    out = process_batch(records(payloads), lambda u, r: None, max_event_bytes=65536)
    probabilities = score_rows(bundle, out.rows)
    direct = bundle.predict(
        features.feature_matrix([(r.profile, r.event) for r in out.rows], bundle.embeddings)
    )
    np.testing.assert_array_equal(probabilities, direct)
    encoded = encode_scores(out.rows, probabilities, bundle, top_k=3)
    validator = Draft202012Validator(
        json.loads(Path(SCHEMAS / "purchase-scores.v1.json").read_text()),
        format_checker=FormatChecker(),
    )
    for (key, value), row, p in zip(encoded, out.rows, probabilities, strict=True):
        score = orjson.loads(value)
        validator.validate(score)
        assert key == row.event.user_id.encode()
        assert score["event_id"] == row.event.event_id
        assert score["purchase_probability"] == pytest.approx(float(p))
        assert score["model_version"] == "unit-v1"
        assert len(score["top_categories"]) <= 3
        top = features.top_categories(row.profile, 3)
        assert [c["category_id"] for c in score["top_categories"]] == [c for c, _ in top]


def _row(user: str, n: int) -> Row:
    event = decode_event(
        orjson.dumps(
            {
                "schema_version": "1",
                "event_id": f"{user}-{n}",
                "user_id": user,
                "event_type": "view",
                "item_id": "i",
                "category_id": "c",
                "occurred_at": "2025-01-06T10:00:00Z",
            }
        )
    )
    assert isinstance(event, ClickEvent)
    return Row(event, features.update(None, event), Record("t", 0, n, None, b"", 0.0))


def test_throttle_scores_at_most_once_per_window_and_always_the_latest() -> None:
    throttle = Throttle(interval=5.0)
    assert [r.event.event_id for r in throttle.admit([_row("a", 1), _row("b", 1)], 100.0)] == [
        "a-1",
        "b-1",
    ]
    # Inside the window: nothing now, but the latest event per user waits.
    assert throttle.admit([_row("a", 2), _row("a", 3)], 101.0) == []
    assert throttle.pending == 1
    assert throttle.due(104.9) == []
    due = throttle.due(105.0)
    assert [r.event.event_id for r in due] == ["a-3"]
    assert throttle.pending == 0
    # The flush opened a new window for "a".
    assert throttle.admit([_row("a", 4)], 106.0) == []
    assert [r.event.event_id for r in throttle.admit([_row("a", 5)], 110.0)] == ["a-5"]
    assert throttle.pending == 0


def test_stored_profile_round_trips_and_refuses_an_unknown_envelope() -> None:
    payloads = click_events(30, users=1, seed=6, start=START)
    profile = None
    for _, value in payloads:
        event = decode_event(value)
        assert isinstance(event, ClickEvent)
        profile = features.update(profile, event)
    assert profile is not None
    stored = StoredProfile(12345, profile)
    data = encode_stored(stored)
    assert decode_stored(data) == stored
    with pytest.raises(ValueError, match="envelope version 9"):
        decode_stored(b"\x09" + data[1:])
