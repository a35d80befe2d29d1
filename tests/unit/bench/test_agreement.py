"""The cross-system check: the same purchase_probability per event_id, within 1e-6."""

from __future__ import annotations

import orjson

from bench.agreement import compare, compare_all, read_probabilities


def score(event_id: str, p: float) -> bytes:
    return orjson.dumps({"event_id": event_id, "purchase_probability": p, "user_id": "u"})


def test_read_keeps_the_first_copy_and_counts_duplicates_that_disagree() -> None:
    values = [
        score("a", 0.25),
        score("b", 0.5),
        score("a", 0.25 + 5e-7),  # a replayed duplicate, within the tolerance
        score("b", 0.75),  # a duplicate that disagrees
        b'{"error_class": "invalid_json"}',  # a dead letter: no probability
        None,
    ]
    got = read_probabilities(values)
    assert got.by_event == {"a": 0.25, "b": 0.5}
    assert (got.records, got.duplicates, got.duplicate_conflicts, got.unreadable) == (6, 2, 1, 2)


def test_compare_counts_mismatches_beyond_the_tolerance_only() -> None:
    expected = {"a": 0.1, "b": 0.2, "c": 0.3, "d": 0.4}
    got = {"a": 0.1, "b": 0.2 + 9e-7, "c": 0.3 + 2e-6, "e": 0.9}
    c = compare("quix", got, "worker", expected)
    assert (c.compared, c.mismatches, c.missing, c.extra) == (3, 1, 1, 1)
    assert abs(c.max_abs_diff - 2e-6) < 1e-12
    assert c.examples == [{"event_id": "c", "quix": 0.3 + 2e-6, "worker": 0.3}]
    assert c.agrees is False
    assert c.to_dict()["agrees"] is False


def test_identical_outputs_agree() -> None:
    same = {"a": 0.125, "b": 0.5}
    c = compare("plain_loop", dict(same), "worker", same)
    assert c.agrees and c.compared == 2 and c.max_abs_diff == 0.0


def test_compare_all_skips_the_reference() -> None:
    by_system = {"worker": {"a": 0.5}, "quix": {"a": 0.5}, "worker_f87345e": {"a": 0.6}}
    out = compare_all(by_system, "worker")
    assert set(out) == {"quix", "worker_f87345e"}
    assert out["quix"].mismatches == 0
    assert out["worker_f87345e"].mismatches == 1
