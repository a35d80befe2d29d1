"""The worker's batch step without Kafka: decoding, replay guard, scores, throttling, state."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import orjson
import pytest
from jsonschema import Draft202012Validator, FormatChecker

from streams import features
from streams.contracts.events import ClickEvent, decode_event
from streams.model.bundle import load_bundle
from streams.processing.envelope import StoredProfile
from streams.processing.step import Record, apply_batch, encode_scores, run_step, score_rows
from streams.processing.throttle import Throttle
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


def test_batch_applies_events_in_order_and_builds_one_row_per_event() -> None:
    payloads = click_events(50, users=5, seed=1, start=START)
    out = apply_batch(records(payloads), Stored(), max_event_bytes=65536)
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
    out = apply_batch(batch, Stored(), max_event_bytes=65536)
    assert len(out.rows) == 3
    assert [(r.partition, r.offset) for r, _ in out.dead_letters] == [(3, 101), (3, 103)]
    classes = [letter.error_class.value for _, letter in out.dead_letters]
    assert classes == ["malformed_json", "not_utf8"]
    assert out.dead_letters[1][1].raw_payload() == b"\xff\xfe"


def test_events_already_applied_before_a_restart_are_not_applied_twice() -> None:
    payloads = click_events(20, users=1, seed=3, start=START)
    first = apply_batch(records(payloads[:12]), Stored(), max_event_bytes=65536)
    ((stored, _),) = first.profiles.values()
    assert stored.offset == 11
    # After a crash, the input is replayed from offset 5; the table already holds offset 11.
    again = apply_batch(records(payloads[5:], first=5), Stored(stored), max_event_bytes=65536)
    assert again.replayed == 7
    assert len(again.rows) == 8
    uninterrupted = apply_batch(records(payloads), Stored(), max_event_bytes=65536)
    assert again.profiles == {
        u: (s, again.profiles[u][1]) for u, (s, _) in uninterrupted.profiles.items()
    }


def test_scores_match_the_contract_and_the_model(bundle) -> None:  # type: ignore[no-untyped-def]
    payloads = click_events(40, users=4, seed=5, start=START)
    out = apply_batch(records(payloads), Stored(), max_event_bytes=65536)
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


def test_each_user_is_read_once_per_batch_from_the_partition_of_its_events() -> None:
    payloads = click_events(30, users=3, seed=7, start=START)
    lookup = Stored()
    apply_batch(records(payloads, partition=2), lookup, max_event_bytes=65536)
    users = {decode_event(v).user_id for _, v in payloads}  # type: ignore[union-attr]
    assert sorted(lookup.reads) == sorted((2, u) for u in users)


def test_run_step_is_apply_then_one_scoring_call(bundle) -> None:  # type: ignore[no-untyped-def]
    payloads = click_events(40, users=4, seed=8, start=START)
    batch = records(payloads)
    out = run_step(batch, Stored(), bundle, max_event_bytes=65536, top_k=3)
    applied = apply_batch(batch, Stored(), max_event_bytes=65536)
    assert out.applied.profiles == applied.profiles
    assert out.scored.rows == out.applied.rows and len(out.scored.records) == 40
    expected = score_rows(bundle, applied.rows)
    np.testing.assert_array_equal(out.scored.probabilities, expected)


def test_run_step_with_a_throttle_scores_only_what_it_admits(bundle) -> None:  # type: ignore[no-untyped-def]
    payloads = click_events(40, users=4, seed=9, start=START)
    throttle = Throttle(interval=60.0)
    out = run_step(
        records(payloads), Stored(), bundle, max_event_bytes=65536, top_k=3,
        throttle=throttle, now=1000.0,
    )  # fmt: skip
    # One score per user now (the first event); each user's latest waits for its window.
    assert len(out.scored.rows) == 4 and len(out.applied.rows) == 40
    assert throttle.pending == 4
