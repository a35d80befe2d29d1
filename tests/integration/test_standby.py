"""Standby replicas: a worker killed mid-stream hands its partitions to one that kept a warm
copy of them, and the profiles still equal those of an uninterrupted run."""

from __future__ import annotations

import re
import time

import orjson
import pytest

from tests.integration.harness import WorkerProcess, click_events
from tests.integration.test_worker import (
    START,
    Stack,
    assert_profiles_match,
    feed_until_midstream,
    wait_scored,
)

pytestmark = pytest.mark.integration


_ROW = re.compile(r"^\|\s*\S+\s*\|\s*(\d+)\s*\|\s*(-?\d+)\s*\|")


def reading_starts(log: str) -> list[dict[int, int]]:
    """Every "Reading Starts At - Active" table of a worker's log: partition -> the changelog
    offset its recovery started from (-1: the beginning)."""
    tables: list[dict[int, int]] = []
    lines = log.splitlines()
    for i, line in enumerate(lines):
        if "Reading Starts At - Active" not in line:
            continue
        table: dict[int, int] = {}
        for row in lines[i + 1 :]:
            if row.startswith("+") and table:
                break
            if found := _ROW.match(row):
                table[int(found[1])] = int(found[2])
        tables.append(table)
    return tables


def wait_for(worker: WorkerProcess, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in worker.log(tail=100_000):
        assert time.monotonic() < deadline, f"no {text!r} within {timeout}s:\n{worker.log()}"
        time.sleep(0.2)


def test_profiles_after_a_standby_takeover_equal_an_uninterrupted_run(
    stack: Stack, workers: list[WorkerProcess]
) -> None:
    payloads = click_events(6000, users=400, seed=21, start=START)
    ids = {orjson.loads(v)["event_id"] for _, v in payloads}
    one = stack.worker("one", INTENTFLOW_STANDBY_REPLICAS="1")
    two = stack.worker("two", INTENTFLOW_STANDBY_REPLICAS="1")
    workers.extend([one.start(), two.start()])
    one.wait_ready(timeout=120)
    two.wait_ready(timeout=120)
    # Each keeps a standby copy of the other's partitions.
    wait_for(one, "Starting standby partitions", 60)
    wait_for(two, "Starting standby partitions", 60)
    feeder = feed_until_midstream(stack, payloads)
    assert one.metric("intentflow_scores_published_total") > 0
    assert two.metric("intentflow_scores_published_total") > 0
    two.kill()
    feeder.join(120)
    wait_scored(stack, ids, timeout=180)
    assert_profiles_match(stack, payloads)

    tables = reading_starts(one.log(tail=1_000_000))
    assert len(tables) >= 2, one.log()
    before, after = tables[-2], tables[-1]
    moved = set(after) - set(before)
    assert set(after) == set(range(stack.settings.partitions)), after
    assert moved, (before, after)
    # The moved partitions continued from the standby's copy, and the survivor's own from its
    # own last write: no partition was read again from the start of the changelog.
    assert all(after[p] >= 0 for p in after), after
