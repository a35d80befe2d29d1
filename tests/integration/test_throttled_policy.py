"""The throttled scoring policy end to end, against the real broker: bursts of events for many
users, a short interval. Each user gets at most one score per interval (by ``scored_at``), and
every user's latest event is scored."""

from __future__ import annotations

import itertools
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import orjson
import pytest

from tests.integration.harness import (
    TopicTail,
    click_events,
    covering,
    produce,
    read_topic,
    score_event_id,
)
from tests.integration.test_worker import make_stack

pytestmark = pytest.mark.integration

INTERVAL = 1.0  # INTENTFLOW_SCORE_INTERVAL_SECONDS
# A window is measured from the batch's start and scored_at is stamped when the batch is
# scored, a few milliseconds later: allow that much, far less than the interval.
STAMP_SLACK = 0.05


def test_throttled_policy_scores_a_user_at_most_once_per_interval_and_always_the_latest(
    bootstrap: str, tmp_path: Path, unique: str
) -> None:
    stack = make_stack(
        bootstrap, tmp_path, unique,
        INTENTFLOW_SCORING_POLICY="throttled",
        INTENTFLOW_SCORE_INTERVAL_SECONDS=str(INTERVAL),
    )  # fmt: skip
    s = stack.settings
    rounds, users = 5, 40
    payloads = click_events(rounds * users * 8, users=users, seed=51, start=time.time() - 3600)
    latest = {key: orjson.loads(value)["event_id"] for key, value in payloads}  # last per user
    worker = stack.worker("t")
    worker.start()
    scores = TopicTail(bootstrap, s.topic_scores)
    try:
        worker.wait_ready()
        size = len(payloads) // rounds
        for i in range(0, len(payloads), size):  # bursts that straddle the users' windows
            produce(bootstrap, s.topic_events, payloads[i : i + size])
            time.sleep(0.6 * INTERVAL)
        scores.wait(
            covering(set(latest.values()), score_event_id), 60, "every user's latest scored"
        )
    finally:
        scores.close()
        code = worker.stop()
    assert code == 0, worker.log(40)

    records = [orjson.loads(r.value) for r in read_topic(bootstrap, s.topic_scores)]
    produced = {orjson.loads(value)["event_id"] for _, value in payloads}
    assert {r["event_id"] for r in records} <= produced
    assert {r["event_id"] for r in records} >= set(latest.values())
    by_user: dict[str, list[datetime]] = defaultdict(list)
    for r in records:
        by_user[r["user_id"]].append(datetime.fromisoformat(r["scored_at"]))
    too_close = []
    for user, stamps in by_user.items():
        stamps.sort()
        for before, after in itertools.pairwise(stamps):
            gap = (after - before).total_seconds()
            if gap < INTERVAL - STAMP_SLACK:
                too_close.append((user, round(gap, 3)))
    print(
        f"throttled: {len(payloads)} events of {users} users, {len(records)} scores, "
        f"at most {max(len(v) for v in by_user.values())} per user"
    )
    assert not too_close, (
        f"{len(too_close)} scores within {INTERVAL}s of the previous: {too_close[:5]}"
    )
    assert len(records) < len(payloads) / 2  # the policy held most events back


def test_a_stopping_worker_scores_what_the_throttle_held_back(
    bootstrap: str, tmp_path: Path, unique: str
) -> None:
    """A long interval holds every user's later events back; a clean stop scores each user's
    latest event before it exits, so no user's last state goes unscored."""
    stack = make_stack(
        bootstrap, tmp_path, unique,
        INTENTFLOW_SCORING_POLICY="throttled", INTENTFLOW_SCORE_INTERVAL_SECONDS="3600",
    )  # fmt: skip
    s = stack.settings
    payloads = click_events(600, users=30, seed=52, start=time.time() - 3600)
    latest = {key: orjson.loads(value)["event_id"] for key, value in payloads}
    first = {}
    for key, value in payloads:
        first.setdefault(key, orjson.loads(value)["event_id"])
    worker = stack.worker("t")
    worker.start()
    scores = TopicTail(bootstrap, s.topic_scores)
    try:
        worker.wait_ready()
        produce(bootstrap, s.topic_events, payloads)
        # each user's first event is scored at once; the rest wait for the hour's window
        scores.wait(covering(set(first.values()), score_event_id), 60, "first events scored")
    finally:
        scores.close()
        assert worker.stop() == 0, worker.log(40)
    scored = {orjson.loads(r.value)["event_id"] for r in read_topic(bootstrap, s.topic_scores)}
    assert set(latest.values()) <= scored
    assert len(scored) <= 2 * len(latest)  # at most the first and the latest of each user
