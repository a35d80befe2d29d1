"""examples/score_consumer.py without a broker: de-duplication on event_id with a bounded
memory, tolerance of newer schema versions, and offsets committed only after handling."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import jsonschema
import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "score_consumer.py"
SCORES_SCHEMA = REPO / "schemas" / "purchase-scores.v1.json"
SCORES_V2_SCHEMA = REPO / "schemas" / "purchase-scores.v2.json"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("score_consumer_example", EXAMPLE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


sc = load_example()


def v1_score(event_id: str = "e-1", **overrides: Any) -> dict[str, Any]:
    """A purchase-scores.v1 record (checked against the schema, the source of truth)."""
    score = {
        "schema_version": "1",
        "user_id": "u-42",
        "event_id": event_id,
        "occurred_at": "2026-01-02T03:04:05.678Z",
        "scored_at": "2026-01-02T03:04:05.900Z",
        "purchase_probability": 0.73,
        "model_version": "2026-01-01T00-00-00Z",
        "feature_version": "1-abcdef12",
        "top_categories": [
            {"category_id": "c-7", "weight": 0.6},
            {"category_id": "c-9", "weight": 0.4},
        ],
    }
    jsonschema.validate(score, json.loads(SCORES_SCHEMA.read_text()))
    score.update(overrides)
    return score


def v2_score(event_id: str = "e-2") -> dict[str, Any]:
    """A purchase-scores.v2 record (validated against its schema): every v1 field plus the
    reasons and the exploration suggestions."""
    score = v1_score(event_id)
    score.update(
        schema_version="2",
        reasons={
            "reference_probability": 0.05,
            "top": [{"code": "session_carts", "direction": "up", "impact": 0.21}],
            "interests": [{"category_id": "c-7", "impact": 0.04}],
        },
        exploration={
            "policy": "ts",
            "rate": 1.0,
            "floor": 0.05,
            "suggestions": [
                {
                    "cluster": "k03",
                    "categories": ["c-11", "c-12"],
                    "draw": "sampled",
                    "posterior_mean": 0.31,
                    "posterior_strength": 2.0,
                    "propensity": 0.12,
                    "why": "similar to c-7",
                    "similar_to": "c-7",
                    "opened_at": "2026-01-02T03:04:05.678000+00:00",
                }
            ],
        },
    )
    jsonschema.validate(score, json.loads(SCORES_V2_SCHEMA.read_text()))
    return score


def encode(record: dict[str, Any]) -> bytes:
    return json.dumps(record).encode()


# Parsing -------------------------------------------------------------------------------------


def test_parse_reads_a_v1_score() -> None:
    score = sc.parse_score(encode(v1_score("e-1")))
    assert score == sc.Score(
        event_id="e-1",
        user_id="u-42",
        purchase_probability=0.73,
        model_version="2026-01-01T00-00-00Z",
        schema_version="1",
        occurred_at="2026-01-02T03:04:05.678Z",
        top_categories=(("c-7", 0.6), ("c-9", 0.4)),
    )


def test_parse_reads_a_newer_version_and_ignores_its_new_fields() -> None:
    v2 = sc.parse_score(encode(v2_score("e-2")))
    v1 = sc.parse_score(encode(v1_score("e-2")))
    assert v2.schema_version == "2"
    assert v2 == sc.Score(**{**v1.__dict__, "schema_version": "2"})
    assert sc.parse_score(encode(v1_score(schema_version="3.1"))).schema_version == "3.1"


def test_parse_tolerates_a_missing_or_odd_optional_field() -> None:
    record = v1_score()
    del record["top_categories"]
    assert sc.parse_score(encode(record)).top_categories == ()
    odd = v1_score(top_categories=[{"category_id": "c-1", "weight": "high"}, "c-2", {"weight": 1}])
    assert sc.parse_score(encode(odd)).top_categories == ()


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "a JSON list"),
        (None, "empty record value"),
        (encode(v1_score(schema_version="0")), "unsupported schema_version '0'"),
        (encode(v1_score(schema_version="v2")), "unsupported schema_version 'v2'"),
        (encode(v1_score(schema_version=1)), "'schema_version' is int"),
        (encode({k: v for k, v in v1_score().items() if k != "event_id"}), "no 'event_id' field"),
        (encode({**v1_score(), "event_id": ""}), "empty 'event_id'"),
        (encode(v1_score(purchase_probability="0.5")), "'purchase_probability' is str"),
        (encode(v1_score(purchase_probability=True)), "'purchase_probability' is bool"),
        (encode(v1_score(purchase_probability=1.5)), "outside 0..1"),
        (encode({k: v for k, v in v1_score().items() if k != "user_id"}), "no 'user_id' field"),
    ],
)
def test_parse_refuses_what_it_cannot_use_with_the_reason(value: bytes | None, reason: str) -> None:
    with pytest.raises(sc.ScoreFormatError, match=reason):
        sc.parse_score(value)


# De-duplication ------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_dedupe_spots_a_repeat() -> None:
    dedupe = sc.Deduper(capacity=10, ttl=60)
    assert [dedupe.first_time(e) for e in ["a", "b", "a", "c", "b", "a"]] == [
        True,
        True,
        False,
        True,
        False,
        False,
    ]
    assert len(dedupe) == 3


def test_dedupe_memory_is_bounded_and_forgets_the_least_recently_seen() -> None:
    dedupe = sc.Deduper(capacity=3, ttl=3600)
    for event_id in ["a", "b", "c"]:
        assert dedupe.first_time(event_id)
    assert not dedupe.first_time("a")  # "a" is now the most recently seen; "b" the oldest
    assert dedupe.first_time("d")  # evicts "b"
    assert len(dedupe) == 3
    assert not dedupe.first_time("a") and not dedupe.first_time("c")
    assert dedupe.first_time("b"), "the least recently seen id was forgotten"
    for i in range(10_000):
        dedupe.first_time(f"x{i}")
    assert len(dedupe) == 3


def test_dedupe_forgets_an_id_ttl_after_it_was_last_seen() -> None:
    clock = FakeClock()
    dedupe = sc.Deduper(capacity=100, ttl=60, clock=clock)
    assert dedupe.first_time("a")
    clock.now += 59
    assert not dedupe.first_time("a")  # seen again: remembered for another 60 s
    clock.now += 59
    assert not dedupe.first_time("a")
    clock.now += 60
    assert dedupe.first_time("a"), "forgotten 60 s after it was last seen"
    assert dedupe.first_time("b")
    clock.now += 61
    assert dedupe.first_time("c")
    assert len(dedupe) == 1, "expired ids are dropped, not kept until capacity"


def test_dedupe_refuses_a_useless_configuration() -> None:
    with pytest.raises(ValueError):
        sc.Deduper(capacity=0)
    with pytest.raises(ValueError):
        sc.Deduper(ttl=0)


# The loop ------------------------------------------------------------------------------------


class FakeConsumer:
    """Returns the given batches from poll(), then nothing; logs commits into `log`."""

    def __init__(self, batches: list[list[bytes | None]], log: list[Any]) -> None:
        self._batches: Iterator[list[bytes | None]] = iter(batches)
        self._offset = 0
        self.log = log

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[Any, Any]:
        values = next(self._batches, [])
        records = []
        for value in values:
            records.append(
                SimpleNamespace(topic="scores", partition=0, offset=self._offset, value=value)
            )
            self._offset += 1
        return {("scores", 0): records} if records else {}

    def commit(self) -> None:
        self.log.append(("commit", self._offset))


def test_run_handles_each_score_once_skips_bad_ones_and_commits_after_handling() -> None:
    log: list[Any] = []
    batches = [
        [encode(v1_score("e1")), encode(v1_score("e2")), encode(v1_score("e1"))],
        [b"garbage", encode(v2_score("e3")), encode(v2_score("e2"))],
        [encode(v1_score("e4"))],
    ]
    consumer = FakeConsumer(batches, log)
    stats = sc.run(
        consumer,
        lambda score: log.append(("handle", score.event_id, score.schema_version)),
        sc.Deduper(),
        max_records=7,
    )
    assert log == [
        ("handle", "e1", "1"),
        ("handle", "e2", "1"),
        ("commit", 3),
        ("handle", "e3", "2"),
        ("commit", 6),
        ("handle", "e4", "1"),
        ("commit", 7),
    ]
    assert (stats.handled, stats.duplicates, stats.invalid) == (4, 2, 1)
    assert stats.reasons == {"not JSON": 1}


def test_a_failing_handler_commits_nothing_of_its_batch() -> None:
    log: list[Any] = []
    consumer = FakeConsumer([[encode(v1_score("e1"))], [encode(v1_score("e2"))]], log)

    def handle(score: Any) -> None:
        if score.event_id == "e2":
            raise RuntimeError("CRM is down")
        log.append(("handle", score.event_id))

    with pytest.raises(RuntimeError, match="CRM is down"):
        sc.run(consumer, handle, sc.Deduper(), max_records=2)
    assert log == [("handle", "e1"), ("commit", 1)], "e2's batch must not be committed"


def test_run_stops_when_idle() -> None:
    log: list[Any] = []
    stats = sc.run(FakeConsumer([], log), log.append, sc.Deduper(), idle_timeout=0.0)
    assert (stats.handled, log) == (0, [])
