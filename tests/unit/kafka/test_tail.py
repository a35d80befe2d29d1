"""``intentflow scores``'s printer and de-duplication memory, without a broker."""

from __future__ import annotations

import orjson
import pytest

from streams.kafka.tail import RecentIds, format_score, parse_score, score_line

V1 = {
    "schema_version": "1", "user_id": "u42", "event_id": "e-1",
    "occurred_at": "2025-01-06T10:00:00+00:00", "scored_at": "2025-01-06T10:00:00.250000+00:00",
    "purchase_probability": 0.8125, "model_version": "m-7", "feature_version": "1",
    "top_categories": [
        {"category_id": "c0001", "weight": 0.75},
        {"category_id": "c0002", "weight": 0.25},
    ],
}  # fmt: skip


def test_a_v1_score_reads_as_one_line() -> None:
    assert format_score(orjson.dumps(V1)) == (
        "10:00:00.250  user=u42        p=0.812  model=m-7  top=[c0001:0.75, c0002:0.25]"
    )


def test_a_newer_version_with_extra_fields_and_no_top_categories_still_prints() -> None:
    v2 = {k: v for k, v in V1.items() if k != "top_categories"}
    v2 |= {"schema_version": "2", "exploration": True, "reasons": [{"feature": "carts"}]}
    assert format_score(orjson.dumps(v2)) == (
        "10:00:00.250  user=u42        p=0.812  model=m-7  top=[]"
    )


def test_a_v2_score_shows_its_reasons_largest_impact_first() -> None:
    v2 = V1 | {
        "schema_version": "2",
        "reasons": {
            "reference_probability": 0.05,
            "top": [
                {"code": "cart", "direction": "up", "impact": 0.4213},
                {"code": "habits", "direction": "down", "impact": -0.0311},
            ],
            "interests": [],
        },
        "exploration": None,
    }
    assert format_score(orjson.dumps(v2)) == (
        "10:00:00.250  user=u42        p=0.812  model=m-7  top=[c0001:0.75, c0002:0.25]"
        "  why=[cart +0.421, habits -0.031]"
    )
    unexplained = v2 | {"reasons": None}
    assert format_score(orjson.dumps(unexplained)).endswith("top=[c0001:0.75, c0002:0.25]")


def test_missing_or_odd_fields_show_as_a_question_mark() -> None:
    odd = {"event_id": "e-9", "purchase_probability": "high", "top_categories": [7, {"w": 1}]}
    assert score_line(odd) == "?  user=?          p=?  model=?  top=[?:?]"


@pytest.mark.parametrize(
    ("value", "reason"),
    [(None, "tombstone"), (b"\xff{", "not JSON"), (b"[1, 2]", "a JSON list, expected an object")],
)
def test_records_that_are_not_json_objects_are_refused_with_a_reason(
    value: bytes | None, reason: str
) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_score(value)


def test_recent_ids_remember_the_last_n_and_forget_the_least_recently_seen() -> None:
    recent = RecentIds(capacity=2)
    assert [recent.seen_before(k) for k in ("a", "b", "a")] == [False, False, True]
    assert recent.seen_before("c") is False  # forgets b, seen less recently than a
    assert len(recent) == 2
    assert recent.seen_before("a") is True
    assert recent.seen_before("b") is False
    assert recent.repeats({"event_id": "b"}) is True
    assert recent.repeats({"no_event_id": 1}) is False
    with pytest.raises(ValueError, match="at least 1"):
        RecentIds(0)
