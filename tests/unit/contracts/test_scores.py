"""purchase-scores.v1 is frozen: its encoder's bytes are pinned. purchase-scores.v2 encodes
every v1 field the same way, plus reasons and exploration."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from streams.contracts.events import ClickEvent, decode_event
from streams.contracts.scores import encode_score
from streams.contracts.scores_v2 import ScoreReasons, encode_score_v2

EVENT = (
    b'{"schema_version":"1","event_id":"e-42","user_id":"u-7","event_type":"add_to_cart",'
    b'"item_id":"i-1","category_id":"c0417","price":12.5,"occurred_at":"2026-01-02T03:04:05.678Z"}'
)
SCORED_AT = datetime(2026, 1, 2, 3, 4, 6, 120000, tzinfo=UTC)
TOP = [("c0417", 0.6), ("c0101", 0.25)]

# The exact bytes of a purchase-scores.v1 record. Consumers parse these: if this test fails,
# v1 changed. Do not update the bytes; put the change in a new schema version.
V1_GOLDEN = (
    b'{"schema_version":"1","user_id":"u-7","event_id":"e-42",'
    b'"occurred_at":"2026-01-02T03:04:05.678000+00:00",'
    b'"scored_at":"2026-01-02T03:04:06.120000+00:00","purchase_probability":0.4242,'
    b'"model_version":"20260101T000000Z-abcdef12","feature_version":"1",'
    b'"top_categories":[{"category_id":"c0417","weight":0.6},{"category_id":"c0101","weight":0.25}]}'
)


def _event() -> ClickEvent:
    event = decode_event(EVENT)
    assert isinstance(event, ClickEvent)
    return event


def test_v1_bytes_are_frozen() -> None:
    got = encode_score(
        _event(), 0.4242, model_version="20260101T000000Z-abcdef12", feature_version="1",
        top_categories=TOP, scored_at=SCORED_AT,
    )  # fmt: skip
    assert got == V1_GOLDEN


def test_v2_is_v1_plus_reasons_and_exploration() -> None:
    why = ScoreReasons(0.05, [("cart", 0.2), ("price", -0.03)], [("c0417", 0.04)])
    got = orjson.loads(
        encode_score_v2(
            _event(),
            0.4242,
            model_version="20260101T000000Z-abcdef12",
            feature_version="1",
            top_categories=TOP,
            scored_at=SCORED_AT,
            reasons=why,
        )
    )
    v1 = orjson.loads(V1_GOLDEN)
    assert list(got) == [*v1, "reasons", "exploration"]
    assert {k: got[k] for k in v1} == {**v1, "schema_version": "2"}
    assert got["exploration"] is None
    assert got["reasons"] == {
        "reference_probability": 0.05,
        "top": [
            {"code": "cart", "direction": "up", "impact": 0.2},
            {"code": "price", "direction": "down", "impact": -0.03},
        ],
        "interests": [{"category_id": "c0417", "impact": 0.04}],
    }
    none = orjson.loads(
        encode_score_v2(
            _event(),
            1.5,
            model_version="m",
            feature_version="1",
            top_categories=[],
            scored_at=SCORED_AT,
            reasons=None,
        )
    )
    assert none["reasons"] is None and none["purchase_probability"] == 1.0
