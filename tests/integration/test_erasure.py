"""Erasure against the real broker: receipts within seconds, the compacted changelog keeps no
record of an erased shopper, a fresh worker restored from it lacks them while every other
profile is bit-identical, a SIGKILL right after the erase does not bring them back, and an
erased shopper who returns gets a fresh profile that survives a restore."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from streams.privacy.pseudonyms import Pseudonymizer, parse_keys
from tests.integration.harness import click_events, consume_until, produce, score_ids
from tests.integration.test_worker import (
    Stack,
    changelog_profiles,
    make_stack,
    offline_profiles,
    wait_scored,
)

pytestmark = pytest.mark.integration

START = time.time() - 6 * 3600
USERS, EVENTS, ERASED = 1000, 4000, 10


def _erase(stack: Stack, users: list[str]) -> tuple[float, str]:
    args = [a for u in users for a in ("--user-id", u)]
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "streams.cli", "erase", *args, "--wait", "30"],
        env=stack.env | {"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=90,
        check=False,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert run.returncode == 0, run.stdout + run.stderr
    return elapsed, run.stdout


def _compacting_stack(bootstrap: str, tmp_path: Path, unique: str) -> Stack:
    """A stack whose changelog compacts within seconds and keeps tombstones for 2 s."""
    return make_stack(
        bootstrap, tmp_path, unique,
        INTENTFLOW_CHANGELOG_MAX_COMPACTION_LAG_SECONDS="2",
        INTENTFLOW_CHANGELOG_DELETE_RETENTION_SECONDS="2",
    )  # fmt: skip


def _until_compacted(stack: Stack, gone: set[str], *, seed: int, prefix: str) -> dict:
    """Keep the changelog moving (other shoppers' events) so segments roll and compaction
    runs, until none of ``gone`` is left in it (or 150 s); the changelog's last keys."""
    deadline, n = time.monotonic() + 150, 0
    keys = _changelog_keys(stack)
    while gone & keys.keys() and time.monotonic() < deadline:
        more = click_events(40, users=50, seed=seed + n, start=START + 7200 + n * 60, prefix=prefix)
        produce(stack.settings.kafka_bootstrap, stack.settings.topic_events, more)
        n += 1
        time.sleep(3)
        keys = _changelog_keys(stack)
    return keys


def _changelog_keys(stack: Stack) -> dict[str, bytes | None]:
    """Every key in the changelog with its last value (None: a tombstone)."""
    from kafka import KafkaConsumer, TopicPartition

    topic = f"{stack.settings.app_id}-user_profile-changelog"
    consumer = KafkaConsumer(bootstrap_servers=stack.settings.kafka_bootstrap)
    tps = [TopicPartition(topic, p) for p in range(stack.settings.partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning()
    end = consumer.end_offsets(tps)
    keys: dict[str, bytes | None] = {}
    deadline = time.monotonic() + 60
    while any(consumer.position(tp) < end[tp] for tp in tps) and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            for r in batch:
                keys[r.key.decode()] = r.value
    consumer.close()
    return keys


def _rocksdb_profiles(data_dir: Path) -> dict[str, bytes]:
    """Every key and value in a stopped worker's profile table (all partitions)."""
    import rocksdict

    found: dict[str, bytes] = {}
    dbs = sorted(p for p in data_dir.rglob("*user_profile*") if p.is_dir() and p.suffix == ".db")
    assert dbs, f"no profile table under {data_dir}"
    for path in dbs:
        db = rocksdict.Rdict(
            str(path), options=rocksdict.Options(raw_mode=True),
            access_type=rocksdict.AccessType.read_only(),
        )  # fmt: skip
        found.update({k.decode(): v for k, v in db.items()})
        db.close()
    return found


def test_erasure_reaches_rocksdb_and_the_compacted_changelog(
    bootstrap: str, tmp_path: Path, unique: str
) -> None:
    stack = _compacting_stack(bootstrap, tmp_path, unique)
    pseudonyms = Pseudonymizer(parse_keys(stack.settings.pseudonym_keys))
    payloads = click_events(EVENTS, users=USERS, seed=31, start=START, step=1.0)
    users = sorted({key.decode() for key, _ in payloads})
    erased = users[:ERASED]
    worker = stack.worker("a").start()
    try:
        worker.wait_ready()
        produce(stack.settings.kafka_bootstrap, stack.settings.topic_events, payloads)
        ids = set(score_ids([(None, v) for _, v in payloads]))  # event ids in the payloads
        consume_until(
            stack.settings.kafka_bootstrap, stack.settings.topic_scores,
            lambda recs: ids <= set(score_ids(recs)), timeout=120,
        )  # fmt: skip
        elapsed, out = _erase(stack, erased)
        assert elapsed < 10, f"receipts took {elapsed:.1f}s"
        assert out.count("profile erased on partition") == ERASED, out
        assert not any(u in out for u in erased)  # the command never prints an id
        worker.kill()  # SIGKILL right after the receipts
    finally:
        worker.stop()

    # Keep the changelog moving (other shoppers' events) so segments roll and compaction runs.
    gone = {p for u in erased for p in pseudonyms.all_pseudonyms(u)}
    worker = stack.worker("a").start()  # the same data dir, after the SIGKILL
    try:
        worker.wait_ready()
        keys = _until_compacted(stack, gone, seed=1000, prefix="f")
        left = gone & keys.keys()
        assert not left, (
            f"{len(left)} erased keys left in the changelog (tombstones: "
            f"{sum(keys[k] is None for k in left)})"
        )
        # An erased shopper who returns starts a fresh profile.
        returning = erased[0]
        again = [
            (k, v.replace(k, returning.encode()))
            for k, v in click_events(5, users=1, seed=77, start=START + 4 * 3600)
        ]
        produce(stack.settings.kafka_bootstrap, stack.settings.topic_events, again)
        deadline = time.monotonic() + 60
        mine = pseudonyms.pseudonym(returning)
        while time.monotonic() < deadline:
            profiles = changelog_profiles(stack)
            if mine in profiles and profiles[mine].n_events == 5:
                break
            time.sleep(1)
        else:
            pytest.fail("the returning shopper's fresh profile did not reach the changelog")
    finally:
        worker.stop()

    # A fresh worker restored from the changelog: the erased are gone, the rest bit-identical.
    fresh = stack.worker("fresh").start()
    try:
        fresh.wait_ready(timeout=120)
    finally:
        fresh.stop()
    restored = _rocksdb_profiles(stack.tmp / "data-fresh")
    assert not (gone - {mine}) & restored.keys()
    assert mine in restored
    expected = offline_profiles(payloads)
    from streams.processing.envelope import decode_stored

    kept = {k: v for k, v in expected.items() if k not in gone}
    assert {k: decode_stored(restored[k]).profile for k in kept} == kept


def test_a_stale_local_copy_cannot_bring_an_erased_profile_back(
    bootstrap: str, tmp_path: Path, unique: str
) -> None:
    """Worker A stops with every profile in its RocksDB. While it is away, B erases some
    shoppers and compaction removes their tombstones from the changelog. A's copy is then
    older than the changelog keeps tombstones: reading on from its position would never see
    the erasures, so A discards it and rebuilds the partitions from the changelog."""
    stack = _compacting_stack(bootstrap, tmp_path, unique)
    pseudonyms = Pseudonymizer(parse_keys(stack.settings.pseudonym_keys))
    payloads = click_events(800, users=200, seed=41, start=START, step=1.0)
    users = sorted({key.decode() for key, _ in payloads})
    erased = users[:5]
    gone = {p for u in erased for p in pseudonyms.all_pseudonyms(u)}
    a = stack.worker("a").start()
    try:
        a.wait_ready()
        produce(stack.settings.kafka_bootstrap, stack.settings.topic_events, payloads)
        wait_scored(stack, set(score_ids([(None, v) for _, v in payloads])), timeout=120)
    finally:
        assert a.stop() == 0, a.log()
    assert gone & _rocksdb_profiles(stack.tmp / "data-a").keys()  # A holds them

    b = stack.worker("b").start()
    try:
        b.wait_ready(timeout=120)
        _erase(stack, erased)
        keys = _until_compacted(stack, gone, seed=2000, prefix="g")
        assert not gone & keys.keys(), "compaction did not remove them"
    finally:
        assert b.stop() == 0, b.log()

    a = stack.worker("a").start()  # its old data directory
    try:
        a.wait_ready(timeout=120)
    finally:
        a.stop()
    restored = _rocksdb_profiles(stack.tmp / "data-a")
    assert not gone & restored.keys(), "an erased profile came back from the stale copy"
    assert "discarding it and reading the partition from the start" in a.log(tail=2000)
    kept = {pseudonyms.pseudonym(u) for u in users[5:]}
    assert kept <= restored.keys()
