"""The batch runner without a broker: strict offset order, the profile cache, and the
checkpoint's order (deliveries, changelog, RocksDB, commit) with fakes for Faust's parts and a
real RocksDB."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
import rocksdict
from faust.types import TP
from pydantic import SecretStr

from streams.model.bundle import load_bundle
from streams.privacy.pseudonyms import Pseudonymizer, parse_keys
from streams.processing.envelope import decode_stored
from streams.processing.throttle import Throttle
from streams.settings import load_settings
from streams.worker.app import step_config
from streams.worker.context import Worker
from streams.worker.metrics import Metrics
from streams.worker.runner import BatchRunner
from tests.bundles import make_bundle
from tests.integration.harness import click_events

START = 1_760_000_000.0
TOPIC = "events"


class Delivery:
    """An awaitable delivery that logs when it is awaited (what "delivered" means here)."""

    def __init__(self, log: list[str], what: str, records: int = 1) -> None:
        self.log, self.what, self.records = log, what, records

    def __await__(self) -> Any:
        self.log.extend([f"delivered {self.what}"] * self.records)  # one line per record
        if False:  # pragma: no cover - makes this a generator
            yield
        return None


class Producer:
    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.sent: list[tuple[str, bytes, bytes, int | None]] = []

    async def send(self, topic: str, key: bytes, value: bytes, partition: Any, *_: Any) -> Any:
        self.sent.append((topic, key, value, partition))
        return Delivery(self.log, topic)

    async def send_many(self, topic: str, records: list[tuple[bytes, bytes]]) -> list[Any]:
        """One delivery for the whole batch, as the real producer's record batches."""
        self.sent.extend((topic, key, value, None) for key, value in records)
        return [Delivery(self.log, topic, len(records))]


class Consumer:
    def __init__(self, log: list[str], partitions: set[int]) -> None:
        self.log = log
        self.owned = {TP(TOPIC, p) for p in partitions}
        self._committed_offset: dict[TP, int | None] = {}
        self.commits: list[dict[TP, int]] = []
        self.seeks: list[dict[TP, int]] = []

    def assignment(self) -> set[TP]:
        return set(self.owned)

    async def seek_wait(self, partitions: dict[TP, int]) -> None:
        self.seeks.append(dict(partitions))

    async def _commit_offsets(self, offsets: dict[TP, int]) -> bool:
        self.log.append("commit")
        self.commits.append(dict(offsets))
        return True


class LoggedDB:
    def __init__(self, db: Any, log: list[str], partition: int) -> None:
        self.db, self.log, self.partition = db, log, partition

    def get(self, key: bytes) -> Any:
        return self.db.get(key)

    def iter(self) -> Any:
        return self.db.iter()

    def write(self, batch: Any) -> None:
        self.log.append(f"rocksdb {self.partition}")
        self.db.write(batch)


class Store:
    def __init__(self, root: Path, log: list[str]) -> None:
        self.root, self.log, self.dbs = root, log, {}

    def _db_for_partition(self, partition: int) -> Any:
        if partition not in self.dbs:
            db = rocksdict.Rdict(
                str(self.root / f"p{partition}"), options=rocksdict.Options(raw_mode=True)
            )
            self.dbs[partition] = LoggedDB(db, self.log, partition)
        return self.dbs[partition]


@pytest.fixture
def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    log: list[str] = []
    member = SimpleNamespace(ok=True)

    async def prove_membership(consumer: Any, offsets: dict[TP, int]) -> bool:
        log.append("member?")
        return member.ok

    monkeypatch.setattr("streams.worker.faust_compat.prove_membership", prove_membership)
    # purchase-scores.v1 only: these tests count the sends of one scores topic
    settings = load_settings(
        topic_events=TOPIC, checkpoint_interval_seconds=60, publish_scores_v2=False
    )
    bundle = load_bundle(make_bundle(tmp_path / "b", "runner-v1", seed=3))
    app = SimpleNamespace(
        consumer_generation_id=1,
        consumer=Consumer(log, {0, 1}),
        producer=Producer(log),
    )
    w = Worker(
        settings=settings, app=app, events_topic=None, scores_topic=None, dlq_topic=None,
        erasure_topic=None,
        profiles=SimpleNamespace(data=Store(tmp_path, log)), metrics=Metrics(),
        models=SimpleNamespace(bundle=bundle), throttle=Throttle(5.0), executor=None,
        step_config=step_config(settings), changelog_topic="changelog",
        pseudonyms=Pseudonymizer(parse_keys(settings.pseudonym_keys)),
    )  # type: ignore[arg-type]  # fmt: skip
    runner = BatchRunner(w)
    return SimpleNamespace(log=log, w=w, app=app, runner=runner, member=member)


def fetch(partition: int, first: int, payloads: list[tuple[bytes, bytes]]) -> dict[TP, list]:
    records = [
        SimpleNamespace(offset=first + i, key=k, value=v, timestamp=int(START * 1000))
        for i, (k, v) in enumerate(payloads)
    ]
    return {TP(TOPIC, partition): records}


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_checkpoint_delivers_then_writes_the_changelog_then_rocksdb_then_commits(rig) -> None:
    payloads = click_events(30, users=3, seed=1, start=START - 3600)
    run(rig.runner.process(fetch(0, 0, payloads), 1))
    sent_topics = {t for t, *_ in rig.app.producer.sent}
    assert sent_topics == {rig.w.settings.topic_scores}  # nothing written before a checkpoint
    assert rig.log == []
    run(rig.runner._checkpoint())
    changelog = [(k, v, p) for t, k, v, p in rig.app.producer.sent if t == "changelog"]
    assert len(changelog) == 3 and {p for *_, p in changelog} == {0}  # one record per user
    # Order: every score delivered, then every changelog record, then RocksDB, then commit.
    scores = [e for e in rig.log if e.endswith(rig.w.settings.topic_scores)]
    assert len(scores) == 30
    assert rig.log == [*scores, "member?", *["delivered changelog"] * 3, "rocksdb 0", "commit"]
    assert rig.app.consumer.commits == [{TP(TOPIC, 0): 30}]
    db = rig.w.profiles.data._db_for_partition(0)
    for key, value, _ in changelog:
        assert db.get(key) == value
        assert decode_stored(value).offset <= 29


def test_a_jump_in_offsets_seeks_back_and_is_accepted_only_when_it_repeats(rig) -> None:
    payloads = click_events(10, users=2, seed=2, start=START - 3600)
    run(rig.runner.process(fetch(0, 0, payloads[:4]), 1))
    # Offsets 4..5 were not handed over: the partition is read again from 4.
    run(rig.runner.process(fetch(0, 6, payloads[6:]), 1))
    assert rig.app.consumer.seeks == [{TP(TOPIC, 0): 4}]
    assert rig.runner.pending.commit == {TP(TOPIC, 0): 4}
    # A prefetch handed over again is skipped; the re-read continues in order.
    run(rig.runner.process(fetch(0, 2, payloads[2:]), 1))
    assert rig.runner.pending.commit == {TP(TOPIC, 0): 10}
    # The same jump twice (offsets with no record, e.g. transaction markers) is accepted.
    more = click_events(4, users=2, seed=3, start=START - 1800)
    run(rig.runner.process(fetch(0, 12, more[:2]), 1))
    run(rig.runner.process(fetch(0, 12, more[:2]), 1))
    assert rig.app.consumer.seeks[-1] == {TP(TOPIC, 0): 10}
    assert rig.runner.pending.commit == {TP(TOPIC, 0): 14}


def test_the_first_fetch_after_an_assignment_continues_from_the_commit(rig) -> None:
    payloads = click_events(10, users=2, seed=4, start=START - 3600)
    rig.app.consumer._committed_offset[TP(TOPIC, 1)] = 5
    run(rig.runner.process(fetch(1, 3, payloads[3:]), 1))  # a stale prefetch from 3
    assert rig.runner.pending.commit == {TP(TOPIC, 1): 10}
    scored = [k for t, k, *_ in rig.app.producer.sent]
    assert len(scored) == 5  # offsets 5..9 only


def test_a_fetch_from_an_older_generation_or_a_lost_partition_writes_nothing(rig) -> None:
    payloads = click_events(10, users=2, seed=5, start=START - 3600)
    run(rig.runner.process(fetch(0, 0, payloads), 0))  # generation 0 < current 1
    assert rig.app.producer.sent == [] and rig.runner.pending.commit == {}
    run(rig.runner.process(fetch(0, 0, payloads), 1))
    rig.app.consumer.owned = {TP(TOPIC, 1)}  # partition 0 is lost before the checkpoint
    run(rig.runner._checkpoint())
    assert [t for t, *_ in rig.app.producer.sent if t == "changelog"] == []
    assert rig.app.consumer.commits == []
    assert not any(e.startswith("rocksdb") for e in rig.log)


def test_a_revocation_checkpoints_while_owned_and_forgets_the_partition(rig) -> None:
    payloads = click_events(10, users=2, seed=6, start=START - 3600)
    run(rig.runner.process(fetch(0, 0, payloads), 1))
    run(rig.runner.on_revoked({TP(TOPIC, 0)}))
    assert rig.app.consumer.commits == [{TP(TOPIC, 0): 10}]
    assert rig.runner.cache.clean == {} and rig.runner.cache.dirty == {}
    assert TP(TOPIC, 0) not in rig.runner.expected


def test_profiles_are_read_from_rocksdb_once_and_then_from_the_cache(rig) -> None:
    payloads = click_events(20, users=2, seed=7, start=START - 3600)
    run(rig.runner.process(fetch(0, 0, payloads[:10]), 1))
    run(rig.runner._checkpoint())
    fresh = BatchRunner(rig.w)  # a restarted worker: an empty cache over the same RocksDB
    run(fresh.process(fetch(0, 10, payloads[10:15]), 1))
    assert (fresh.cache.misses, fresh.cache.hits) == (2, 0)  # one read per user and batch
    run(fresh.process(fetch(0, 15, payloads[15:]), 1))
    assert (fresh.cache.misses, fresh.cache.hits) == (2, 2)  # the next batch hits the cache
    assert {stored.offset for stored in fresh.cache.dirty.values()} <= set(range(10, 20))


def test_stores_are_keyed_by_pseudonyms_and_a_rotated_key_moves_the_profile(rig) -> None:
    payloads = click_events(12, users=1, seed=8, start=START - 3600)
    user = orjson.loads(payloads[0][1])["user_id"]
    old_keys = rig.w.pseudonyms
    run(rig.runner.process(fetch(0, 0, payloads[:6]), 1))
    run(rig.runner._checkpoint())
    written = {k for t, k, *_ in rig.app.producer.sent if t == "changelog"}
    assert written == {old_keys.pseudonym(user).encode()} and user.encode() not in written
    # Rotate: a new active key, the old one still listed.
    rotated = Pseudonymizer(
        parse_keys(
            SecretStr(
                "k2:another-secret-of-16-chars," + "dev:intentflow-development-key-not-secret"
            )
        )
    )
    rig.w.pseudonyms = rotated
    runner = BatchRunner(rig.w)
    runner.expected[TP(TOPIC, 0)] = 6
    run(runner.process(fetch(0, 6, payloads[6:]), 1))
    assert runner.cache.moved == 1
    rig.app.producer.sent.clear()
    run(runner._checkpoint())
    changelog = {k: v for t, k, v, _ in rig.app.producer.sent if t == "changelog"}
    new, old = rotated.pseudonym(user).encode(), old_keys.pseudonym(user).encode()
    assert changelog[old] is None  # the old entry is tombstoned
    assert decode_stored(changelog[new]).profile.n_events == 12  # nothing lost in the move
    db = rig.w.profiles.data._db_for_partition(0)
    assert db.get(old) is None and db.get(new) == changelog[new]


def test_an_erase_command_tombstones_the_profile_then_sends_the_receipt_then_commits(rig) -> None:
    from datetime import UTC, datetime

    from streams.contracts.erasure import EraseCommand, EraseReceipt

    payloads = click_events(12, users=2, seed=9, start=START - 3600)
    users = sorted({orjson.loads(v)["user_id"] for _, v in payloads})
    run(rig.runner.process(fetch(0, 0, payloads), 1))
    run(rig.runner._checkpoint())
    gone, kept = (rig.w.pseudonyms.pseudonym(u) for u in users)
    command = EraseCommand(
        request_id="r-1", pseudonyms=rig.w.pseudonyms.all_pseudonyms(users[0]),
        requested_at=datetime.now(UTC),
    )  # fmt: skip
    erasure = TP(rig.w.settings.topic_erasure, 0)
    rig.app.consumer.owned.add(erasure)
    rig.app.producer.sent.clear()
    rig.log.clear()
    record = SimpleNamespace(offset=0, key=b"r-1", value=command.model_dump_json().encode())
    run(rig.runner.process({erasure: [record]}, 1))
    run(rig.runner._checkpoint())
    sent = [(t, k, v) for t, k, v, _ in rig.app.producer.sent]
    assert sent[0] == ("changelog", gone.encode(), None)  # a tombstone
    topic, _, value = sent[1]
    assert topic == rig.w.settings.topic_erasure_receipts
    receipt = EraseReceipt.model_validate_json(value)
    assert (receipt.request_id, receipt.partition, receipt.held) == ("r-1", 0, True)
    assert rig.log == [
        "member?",
        "delivered changelog",
        "rocksdb 0",
        f"delivered {topic}",
        "commit",
    ]
    assert rig.app.consumer.commits[-1] == {erasure: 1}
    db = rig.w.profiles.data._db_for_partition(0)
    assert db.get(gone.encode()) is None and db.get(kept.encode()) is not None
    assert rig.runner.cache.get(0, users[0]) is None  # a returning shopper starts afresh


def test_the_retention_sweep_expires_profiles_idle_longer_than_the_ttl(rig) -> None:
    old = click_events(5, users=1, seed=10, start=START - 40 * 86_400, prefix="old")
    new = click_events(5, users=1, seed=11, start=START - 3600, prefix="new")
    run(rig.runner.process(fetch(0, 0, old + new), 1))
    run(rig.runner._checkpoint())
    rig.runner.retention.ttl = 30 * 86_400
    assert run(rig.runner.retention.step()) == 1  # the shopper idle for 40 days
    assert run(rig.runner.retention.step()) == 0  # a pass is done: it rests
    rig.app.producer.sent.clear()
    run(rig.runner._checkpoint())
    old_user = orjson.loads(old[0][1])["user_id"]
    tombstones = [k for t, k, v, _ in rig.app.producer.sent if t == "changelog" and v is None]
    assert tombstones == [rig.w.pseudonyms.pseudonym(old_user).encode()]
    assert rig.w.metrics.profiles_expired._value.get() == 1


def test_a_worker_no_longer_in_the_group_writes_nothing_at_its_checkpoint(rig) -> None:
    payloads = click_events(20, users=2, seed=12, start=START - 3600)
    run(rig.runner.process(fetch(0, 0, payloads[:10]), 1))
    run(rig.runner._checkpoint())
    run(rig.runner.process(fetch(0, 10, payloads[10:]), 1))
    rig.member.ok = False  # frozen past the session timeout: the partitions moved
    rig.app.producer.sent = [s for s in rig.app.producer.sent if s[0] != "changelog"]
    rig.log.clear()
    run(rig.runner._checkpoint())
    assert [t for t, *_ in rig.app.producer.sent if t == "changelog"] == []
    assert not any(e.startswith("rocksdb") or e == "commit" for e in rig.log)
    assert rig.runner.cache.dirty == {} and rig.runner.pending.commit == {}
    assert rig.w.metrics.errors.labels("fenced")._value.get() == 1


def test_stop_checkpoints_and_then_applies_nothing(rig) -> None:
    payloads = click_events(20, users=2, seed=4, start=START - 3600)
    run(rig.runner.process(fetch(0, 0, payloads[:10]), 1))
    run(rig.runner.stop())
    assert rig.app.consumer.commits == [{TP(TOPIC, 0): 10}]
    assert rig.log[-2:] == ["rocksdb 0", "commit"]
    sent = len(rig.app.producer.sent)
    run(rig.runner.process(fetch(0, 10, payloads[10:]), 1))  # a fetch after the stop
    assert len(rig.app.producer.sent) == sent and rig.runner.pending.commit == {}
    assert rig.app.consumer.commits == [{TP(TOPIC, 0): 10}]


def test_a_profile_that_cannot_be_encoded_does_not_stop_the_checkpoint(
    rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streams.worker import runner as runner_module

    payloads = click_events(30, users=3, seed=6, start=START - 3600)
    run(rig.runner.process(fetch(0, 0, payloads), 1))
    real, calls = runner_module.encode_stored, []

    def flaky(stored: Any, profile_format: int | None = None) -> bytes:
        calls.append(stored)
        if len(calls) == 1:
            raise OverflowError("a field out of range")
        return real(stored, profile_format)

    monkeypatch.setattr(runner_module, "encode_stored", flaky)
    run(rig.runner._checkpoint())
    changelog = [k for t, k, *_ in rig.app.producer.sent if t == "changelog"]
    assert len(calls) == 3 and len(changelog) == 2  # the other two users are written
    assert rig.app.consumer.commits == [{TP(TOPIC, 0): 30}]
    errors = rig.w.metrics.registry.get_sample_value(
        "intentflow_worker_errors_total", {"stage": "checkpoint_encode"}
    )
    assert errors == 1


class Gate:
    """A delivery that completes when the test opens the gate (or fails with ``error``)."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.waiting = asyncio.Event()  # set once something awaits the delivery
        self.error: BaseException | None = None

    def __await__(self) -> Any:
        return self._wait().__await__()

    async def _wait(self) -> None:
        self.waiting.set()
        await self.open.wait()
        if self.error is not None:
            raise self.error


def _stall_changelog(rig: Any, gate: Gate) -> None:
    send = rig.app.producer.send

    async def stalled(topic: str, key: bytes, value: bytes, partition: Any, *rest: Any) -> Any:
        if topic == "changelog":
            rig.app.producer.sent.append((topic, key, value, partition))
            return gate
        return await send(topic, key, value, partition, *rest)

    rig.app.producer.send = stalled


def _n_events(rig: Any, user: str) -> int:
    stored = rig.runner.cache.get(0, user)
    return 0 if stored is None else stored.profile.n_events


def test_fetches_apply_while_a_checkpoint_waits_on_the_broker_and_lose_nothing(rig) -> None:
    payloads = click_events(40, users=4, seed=21, start=START - 3600)
    users = sorted({orjson.loads(v)["user_id"] for _, v in payloads})
    scores = rig.w.settings.topic_scores

    async def main() -> None:
        runner = rig.runner
        await runner.process(fetch(0, 0, payloads[:20]), 1)
        gate = Gate()
        _stall_changelog(rig, gate)
        async with runner.lock:
            await runner._checkpoint(wait=False)
        await asyncio.wait_for(gate.waiting.wait(), 5)  # the flush waits on the changelog
        assert runner.flushing is not None and not runner.flushing.done()
        # The next fetch is applied and scored while the checkpoint waits ...
        runner.cache.clean.clear()  # ... even with the cache's copies evicted: the writes in
        await runner.process(fetch(0, 20, payloads[20:]), 1)  # flight are the latest state
        assert sum(1 for t, *_ in rig.app.producer.sent if t == scores) == 40
        assert rig.app.consumer.commits == []  # nothing committed before the changelog landed
        gate.open.set()
        async with runner.lock:
            await runner._checkpoint()  # waits for the first flush, then does its own
        assert rig.app.consumer.commits == [{TP(TOPIC, 0): 20}, {TP(TOPIC, 0): 40}]
        assert runner.cache.pinned == {}

    run(main())
    counts = {u: sum(1 for _, v in payloads if orjson.loads(v)["user_id"] == u) for u in users}
    rig.runner.cache.clean.clear()  # read back what RocksDB holds
    assert {u: _n_events(rig, u) for u in users} == counts


def test_a_checkpoint_that_fails_in_the_background_stops_the_next_fetch_uncommitted(rig) -> None:
    payloads = click_events(20, users=2, seed=22, start=START - 3600)

    async def main() -> None:
        runner = rig.runner
        await runner.process(fetch(0, 0, payloads[:10]), 1)
        gate = Gate()
        gate.error = ConnectionError("changelog delivery failed")
        _stall_changelog(rig, gate)
        async with runner.lock:
            await runner._checkpoint(wait=False)
        gate.open.set()
        assert runner.flushing is not None
        await asyncio.wait([runner.flushing], timeout=5)  # the flush has failed by now
        assert runner.flushing.done()
        with pytest.raises(ConnectionError, match="changelog delivery failed"):
            await runner.process(fetch(0, 10, payloads[10:]), 1)

    run(main())
    assert rig.app.consumer.commits == []
    assert not any(e.startswith("rocksdb") for e in rig.log)


def test_events_after_an_erasure_start_a_new_profile_before_the_checkpoint(rig) -> None:
    first = click_events(10, users=1, seed=23, start=START - 7200, prefix="back")
    (user,) = {orjson.loads(v)["user_id"] for _, v in first}
    run(rig.runner.process(fetch(0, 0, first), 1))
    run(rig.runner._checkpoint())  # RocksDB holds the 10 events
    rig.runner.cache.delete(0, rig.w.pseudonyms.pseudonym(user))  # an erase command
    again = click_events(3, users=1, seed=24, start=START - 600, prefix="back")
    run(rig.runner.process(fetch(0, 10, again), 1))  # the shopper returns at once
    assert _n_events(rig, user) == 3  # not 13: the erased history is not read back


def test_a_revocation_whose_checkpoint_fails_drops_the_unwritten_state_and_goes_on(rig) -> None:
    payloads = click_events(20, users=2, seed=25, start=START - 3600)

    async def main() -> None:
        runner = rig.runner
        await runner.process(fetch(0, 0, payloads), 1)
        gate = Gate()
        gate.error = ConnectionError("changelog delivery failed")
        gate.open.set()
        _stall_changelog(rig, gate)
        await runner.on_revoked({TP(TOPIC, 0)})  # does not raise into the rebalance

    run(main())
    assert rig.app.consumer.commits == []
    assert rig.runner.cache.dirty == {} and rig.runner.cache.pinned == {}
    assert rig.w.metrics.errors.labels("checkpoint")._value.get() == 1


def test_a_worker_told_to_write_the_previous_format_writes_it(rig) -> None:
    """INTENTFLOW_PROFILE_FORMAT=5, for an upgrade that may be rolled back: the changelog and
    RocksDB get format 5 bytes, which a format 5 worker reads, and which this one reads back."""
    from streams.processing.envelope import _V2

    settings = rig.w.settings.model_copy(update={"profile_format": 5})
    w = dataclasses.replace(rig.w, settings=settings)
    runner = BatchRunner(w)
    payloads = click_events(20, users=2, seed=5, start=START - 3600)
    run(runner.process(fetch(0, 0, payloads), 1))
    run(runner._checkpoint())
    changelog = [v for t, _, v, _ in rig.app.producer.sent if t == "changelog"]
    assert len(changelog) == 2
    assert all(value[_V2.size : _V2.size + 3] == b"ip\x05" for value in changelog)
    assert sum(decode_stored(value).profile.n_events for value in changelog) == 20
    # The default writes the current format.
    rig.app.producer.sent.clear()
    run(rig.runner.process(fetch(1, 0, payloads), 1))
    run(rig.runner._checkpoint())
    current = [v for t, _, v, _ in rig.app.producer.sent if t == "changelog"]
    assert len(current) == 2 and all(v[_V2.size : _V2.size + 3] == b"ip\x06" for v in current)
