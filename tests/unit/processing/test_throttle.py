"""The throttled scoring policy: at most one score per user per window, always the latest."""

from __future__ import annotations

import orjson

from streams import features
from streams.contracts.events import ClickEvent, decode_event
from streams.processing.step import Record, Row
from streams.processing.throttle import Throttle


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


def test_forget_drops_the_pending_rows_of_erased_users_only() -> None:
    throttle = Throttle(interval=5.0)
    throttle.admit([_row("a", 1), _row("b", 1)], 100.0)
    throttle.admit([_row("a", 2), _row("b", 2)], 101.0)
    assert throttle.pending == 2
    assert throttle.forget(lambda user: user == "a") == 1
    assert [r.event.user_id for r in throttle.due(106.0)] == ["b"]
