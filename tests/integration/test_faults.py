"""The worker's delivery guarantees under faults, against the real broker: three SIGKILLs
mid-stream, a changelog the broker refuses to write, and a worker that loses its partitions
while it is frozen mid-batch. Each test has its own topics, group and data directories."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from streams.processing.envelope import decode_stored
from streams.worker.app import changelog_topic_name
from tests.integration.harness import (
    TopicTail,
    WorkerProcess,
    click_events,
    committed_offsets,
    covering,
    group_state,
    produce_at,
    read_topic,
    score_event_id,
    set_topic_config,
)
from tests.integration.test_worker import (
    Stack,
    assert_profiles_match,
    make_stack,
    offline_profiles,
)

pytestmark = pytest.mark.integration

START = time.time() - 86_400  # event times in the past day: never ahead of the Kafka timestamp
PROBE = b"__probe__"  # the changelog key of _wait_refused's probes (no user's)


def ids_of(payloads: list[tuple[bytes, bytes]]) -> set[str]:
    return {orjson.loads(v)["event_id"] for _, v in payloads}


def test_three_kills_mid_stream_lose_nothing(
    bootstrap: str, tmp_path: Path, unique: str, workers: list[WorkerProcess]
) -> None:
    """SIGKILL the worker three times while it drains a backlog; a restart (same data
    directory) each time. Every event is scored and the profiles equal an uninterrupted run."""
    stack = make_stack(bootstrap, tmp_path, unique)
    s = stack.settings
    payloads = click_events(30_000, users=500, seed=21, start=START)
    ids = ids_of(payloads)
    scores = TopicTail(bootstrap, s.topic_scores)
    try:
        worker = stack.worker("k")
        workers.append(worker.start())
        worker.wait_ready()
        feeder = threading.Thread(target=produce_at, args=(bootstrap, s.topic_events, payloads))
        feeder.start()
        kills: list[int] = []
        seen = Seen()
        for share in (0.2, 0.45, 0.7):
            target = int(share * len(ids))
            scores.wait(
                lambda recs, target=target: seen(recs) >= target,
                timeout=180, what=f"{target} events scored before kill {len(kills) + 1}",
            )  # fmt: skip
            worker.kill()
            scored = seen(scores.snapshot())
            kills.append(scored)
            assert scored < len(ids), f"kill {len(kills)} came after the stream was drained"
            worker = stack.worker("k")  # same data dir, as a restarted process would have
            workers.append(worker.start())
            worker.wait_ready(timeout=120)
        feeder.join(120)
        scores.wait(covering(ids, score_event_id), 240, "every event scored after three kills")
    finally:
        scores.close()
    counts = Counter(score_event_id(r) for r in read_topic(bootstrap, s.topic_scores))
    duplicates = sum(c - 1 for c in counts.values())
    print(f"three kills at {kills} of {len(ids)} scored; {duplicates} duplicate scores")
    assert set(counts) == ids
    # Each kill hit uncommitted work, which the restart scored again (at-least-once).
    assert duplicates > 0
    assert_profiles_match(stack, payloads)


def test_a_changelog_the_broker_refuses_stops_the_worker_before_it_commits(
    bootstrap: str, tmp_path: Path, unique: str, workers: list[WorkerProcess]
) -> None:
    """The changelog topic's max.message.bytes is set below one profile record: the worker must
    not commit the input offsets of the batch whose profiles it could not write, and stops.
    With the topic fixed, a restarted worker scores everything and the profiles are exact."""
    stack = make_stack(bootstrap, tmp_path, unique)
    s = stack.settings
    changelog = changelog_topic_name(s)
    first = click_events(2000, users=200, seed=31, start=START)
    second = click_events(2000, users=300, seed=32, start=START + 1000)  # same users and new
    worker = stack.worker("c")
    workers.append(worker.start())
    worker.wait_ready()
    positions = produce_at(bootstrap, s.topic_events, first)
    ends = _ends(positions)
    _wait_committed(bootstrap, s.app_id, s.topic_events, ends, timeout=60)
    before = committed_offsets(bootstrap, s.app_id, s.topic_events)

    set_topic_config(bootstrap, changelog, {"max.message.bytes": "64"})
    _wait_refused(bootstrap, changelog)
    positions += produce_at(bootstrap, s.topic_events, second)
    assert worker.proc is not None
    try:
        code = worker.proc.wait(60)
    except subprocess.TimeoutExpired:
        after = committed_offsets(bootstrap, s.app_id, s.topic_events)
        raise AssertionError(
            f"the worker did not stop within 60 s of the changelog refusing its writes "
            f"(committed {before} -> {after}):\n{worker.log(40)}"
        ) from None
    after = committed_offsets(bootstrap, s.app_id, s.topic_events)
    log = worker.log_path.read_text(errors="replace")
    print(f"changelog refused: worker exit {code}; committed {before} -> {after}")
    assert code != 0, worker.log(40)
    assert "TooLarge" in log, worker.log(40)  # the log names the broker's refusal
    assert after == before, f"offsets committed past unwritten profiles: {before} -> {after}"
    _assert_commits_covered(stack, first + second, positions, after)

    set_topic_config(bootstrap, changelog, {"max.message.bytes": "1048588"})
    restarted = stack.worker("c")
    workers.append(restarted.start())
    restarted.wait_ready(timeout=120)
    scores = TopicTail(bootstrap, s.topic_scores)
    try:
        scores.wait(covering(ids_of(first + second), score_event_id), 180, "all scored")
    finally:
        scores.close()
    _assert_profiles_without_probe(stack, first + second)


class StaleWriteError(AssertionError):
    """A changelog record that takes a user's profile back to an older input position."""


def test_a_worker_that_lost_its_partitions_writes_no_profile_for_them(
    bootstrap: str, tmp_path: Path, unique: str, workers: list[WorkerProcess]
) -> None:
    """Freeze one of two workers mid-batch (SIGSTOP) past the session timeout while events
    keep coming, so its partitions move to the other, which applies newer events of every
    user; then wake it (SIGCONT). No changelog record may take a user's profile back to an
    older input position, and the profiles equal an uninterrupted run."""
    # A 3 s checkpoint interval and a steady feed: the frozen worker holds applied but
    # uncheckpointed profiles (its "batch") at the freeze, whenever it comes.
    stack = make_stack(bootstrap, tmp_path, unique, INTENTFLOW_CHECKPOINT_INTERVAL_SECONDS="3")
    s = stack.settings
    users = 200
    last = _one_event_per_user(users, seed=43, start=START + 40_000)
    a, b = stack.worker("a"), stack.worker("b")
    workers.extend([a.start(), b.start()])
    a.wait_ready(timeout=120)
    b.wait_ready(timeout=120)
    scores = TopicTail(bootstrap, s.topic_scores)
    feeder = Feeder(bootstrap, s.topic_events, click_events(60_000, users=users, seed=41,
                                                           start=START))  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while a.metric("intentflow_scores_published_total") < 500:  # a holds partitions
            assert time.monotonic() < deadline, f"a scored nothing:\n{a.log(30)}"
            time.sleep(0.2)
        assert a.proc is not None
        os.killpg(a.proc.pid, signal.SIGSTOP)
        frozen = time.monotonic()
        deadline = frozen + 90
        while group_state(bootstrap, s.app_id) != ("Stable", 1):  # a's session expired
            assert time.monotonic() < deadline, f"a was not removed:\n{b.log(30)}"
            time.sleep(0.5)
        fed = feeder.stop()
        # b applies every event (a's partitions included, from a's last commit), writes the
        # profiles and commits: every user's stored position is now past anything a held.
        scores.wait(covering(ids_of(fed), score_event_id), 180, "b scored a's partitions")
        _wait_committed(bootstrap, s.app_id, s.topic_events, feeder.ends, timeout=60)
        paused = time.monotonic() - frozen
        assert a.proc.poll() is None
        os.killpg(a.proc.pid, signal.SIGCONT)
        deadline = time.monotonic() + 90
        while group_state(bootstrap, s.app_id) != ("Stable", 2) and a.proc.poll() is None:
            assert time.monotonic() < deadline, f"a did not rejoin:\n{a.log(40)}"
            time.sleep(0.5)
        produce_at(bootstrap, s.topic_events, last)
        scores.wait(covering(ids_of(fed + last), score_event_id), 120, "all scored")
    finally:
        feeder.stop()
        scores.close()
    # Checked while both workers run (their last writes come at the next checkpoint).
    records = read_topic(bootstrap, changelog_topic_name(s))
    backwards = _backwards(records)
    print(
        f"partition loss: {len(fed)} events fed, a frozen {paused:.1f}s, a "
        f"{'running' if a.proc.poll() is None else f'exited {a.proc.returncode}'}, "
        f"{len(records)} changelog records, {len(backwards)} going backwards"
    )
    if backwards:
        raise StaleWriteError(
            f"{len(backwards)} changelog writes take a profile back to an older input position "
            f"(user, partition, changelog offset, stored offset), e.g. {backwards[:3]}"
        )
    assert_profiles_match(stack, fed + last)


# -- helpers -----------------------------------------------------------------------------


class Feeder:
    """Produces ``payloads`` in a background thread at a steady pace (about 1,000 events/s)
    until ``stop``, which returns the payloads sent, in order."""

    def __init__(self, bootstrap: str, topic: str, payloads: list[tuple[bytes, bytes]]) -> None:
        self.bootstrap, self.topic, self.payloads = bootstrap, topic, payloads
        self.sent = 0
        self.ends: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5)
        try:
            while not self._stop.is_set() and self.sent < len(self.payloads):
                chunk = self.payloads[self.sent : self.sent + 50]
                futures = [producer.send(self.topic, key=k, value=v) for k, v in chunk]
                producer.flush(30)
                self.ends.update(
                    _ends([(m.partition, m.offset) for m in (f.get(10) for f in futures)])
                )
                self.sent += len(chunk)
                self._stop.wait(0.05)
        finally:
            producer.close(5)

    def stop(self) -> list[tuple[bytes, bytes]]:
        self._stop.set()
        self._thread.join(60)
        assert self.sent < len(self.payloads), "the feeder ran out of events"
        return self.payloads[: self.sent]


class Seen:
    """Distinct event_ids among a tail's records so far (each record looked at once)."""

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self._looked = 0

    def __call__(self, records: list) -> int:
        self.ids.update(score_event_id(r) for r in records[self._looked :])
        self._looked = len(records)
        return len(self.ids)


def _ends(positions: list[tuple[int, int]]) -> dict[int, int]:
    """Next offset per partition after the produced records."""
    ends: dict[int, int] = {}
    for partition, offset in positions:
        ends[partition] = max(ends.get(partition, 0), offset + 1)
    return ends


def _wait_committed(
    bootstrap: str, group: str, topic: str, ends: dict[int, int], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        got = committed_offsets(bootstrap, group, topic)
        if all(got.get(p, -1) >= end for p, end in ends.items()):
            return
        assert time.monotonic() < deadline, f"commits {got} did not reach {ends}"
        time.sleep(0.3)


def _wait_refused(bootstrap: str, topic: str, timeout: float = 30) -> None:
    """Until the broker refuses a record on ``topic`` (topic configs apply asynchronously). The
    probe is a tombstone for a key that is no user's, which every check here skips."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", retries=0)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                producer.send(topic, key=PROBE, value=None, partition=0).get(10)
            except KafkaError as exc:
                assert "TooLarge" in type(exc).__name__, exc
                return
            assert time.monotonic() < deadline, f"{topic} still takes records"
            time.sleep(0.2)
    finally:
        producer.close(5)


def _assert_commits_covered(
    stack: Stack,
    payloads: list[tuple[bytes, bytes]],
    positions: list[tuple[int, int]],
    committed: dict[int, int],
) -> None:
    """Every event below a partition's committed offset is in its user's profile in the
    changelog (the stored position is at or after it)."""
    latest = {
        r.key: decode_stored(r.value) if r.value else None
        for r in read_topic(stack.settings.kafka_bootstrap, changelog_topic_name(stack.settings))
    }
    one_each = dict(payloads)  # an event of each user
    stored_key = {
        key: next(iter(offline_profiles([(key, v)]))).encode() for key, v in one_each.items()
    }
    uncovered = []
    for (key, _), (partition, offset) in zip(payloads, positions, strict=True):
        if offset < committed.get(partition, 0):
            stored = latest.get(stored_key[key])
            if stored is None or stored.partition != partition or stored.offset < offset:
                uncovered.append((key.decode(), partition, offset))
    assert not uncovered, f"committed but not in the changelog: {uncovered[:5]}"


def _assert_profiles_without_probe(stack: Stack, payloads: list[tuple[bytes, bytes]]) -> None:
    """``assert_profiles_match``, skipping the probe's tombstone."""
    expected = offline_profiles(payloads)
    topic = changelog_topic_name(stack.settings)
    deadline = time.monotonic() + 30
    while True:
        latest = {r.key: r.value for r in read_topic(stack.settings.kafka_bootstrap, topic)}
        latest.pop(PROBE, None)
        got = {k.decode(): decode_stored(v).profile for k, v in latest.items() if v}
        if got == expected or time.monotonic() > deadline:
            break
        time.sleep(1)
    differing = sorted(u for u in expected if got.get(u) != expected[u])
    assert not differing, f"{len(differing)} of {len(expected)} profiles differ: {differing[:5]}"
    assert got.keys() == expected.keys()


def _one_event_per_user(users: int, seed: int, start: float) -> list[tuple[bytes, bytes]]:
    """One event for each of the users ``click_events`` names tu0..tu{users-1}."""
    out = []
    for i, (_, value) in enumerate(click_events(users, users=1, seed=seed, start=start)):
        event = orjson.loads(value)
        event["user_id"] = f"tu{i}"
        out.append((f"tu{i}".encode(), orjson.dumps(event)))
    return out


def _backwards(records: list) -> list[tuple[str, int, int, int]]:
    """Changelog records (in log order per partition) whose stored input position is older than
    an earlier record's for the same user: (user, partition, changelog offset, stored offset)."""
    newest: dict[bytes, int] = {}
    out = []
    for r in records:
        if r.key == PROBE or r.value is None:  # the probe, or a tombstone (an erased profile)
            continue
        stored = decode_stored(r.value)
        seen = newest.get(r.key)
        if seen is not None and stored.offset < seen:
            out.append((r.key.decode(), r.partition, r.offset, stored.offset))
        newest[r.key] = max(stored.offset, seen if seen is not None else -1)
    return out
