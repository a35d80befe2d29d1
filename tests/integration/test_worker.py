"""The worker against a real Kafka broker: crash, scale-out, broker outage, hot reload and
start-up errors. Each test has its own topics, consumer group and data directories."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from streams import features
from streams.devtools.localkafka import LocalKafka, free_port
from streams.kafka.topics import create_topics
from streams.processing.envelope import decode_stored
from streams.settings import Settings, load_settings
from tests.bundles import make_bundle, point
from tests.integration.harness import (
    WorkerProcess,
    click_events,
    consume_until,
    produce,
    score_ids,
)

pytestmark = pytest.mark.integration

START = time.time() - 3 * 3600  # event times a few hours back, so latency metrics are sane


@dataclass
class Stack:
    settings: Settings
    env: dict[str, str]
    models: Path  # the models/current symlink
    bundles: Path
    tmp: Path

    def worker(self, name: str, **extra: str) -> WorkerProcess:
        env = dict(self.env, INTENTFLOW_DATA_DIR=str(self.tmp / f"data-{name}"), **extra)
        return WorkerProcess(env, self.tmp / f"{name}.log")


def make_stack(bootstrap: str, tmp: Path, unique: str, **overrides: str) -> Stack:
    bundles = tmp / "bundles"
    current = tmp / "current"
    point(current, make_bundle(bundles / "v1", "test-v1", seed=1))
    env = {
        "INTENTFLOW_KAFKA_BOOTSTRAP": bootstrap,
        "INTENTFLOW_TOPIC_EVENTS": f"events-{unique}",
        "INTENTFLOW_TOPIC_SCORES": f"scores-{unique}",
        "INTENTFLOW_TOPIC_DLQ": f"dlq-{unique}",
        "INTENTFLOW_APP_ID": f"app-{unique}",
        "INTENTFLOW_PARTITIONS": "4",
        "INTENTFLOW_MODEL_PATH": str(current),
        "INTENTFLOW_MODEL_POLL_SECONDS": "0.5",
        "INTENTFLOW_KAFKA_CONNECT_TIMEOUT_SECONDS": "10",
        **overrides,
    }
    settings = load_settings(**{k.removeprefix("INTENTFLOW_").lower(): v for k, v in env.items()})
    create_topics(settings)
    return Stack(settings, env, current, bundles, tmp)


def wait_scored(stack: Stack, ids: set[str], timeout: float) -> list[tuple[bytes | None, bytes]]:
    records = consume_until(
        stack.settings.kafka_bootstrap,
        stack.settings.topic_scores,
        lambda recs: ids <= set(score_ids(recs)),
        timeout=timeout,
    )
    missing = ids - set(score_ids(records))
    assert not missing, (
        f"{len(missing)} of {len(ids)} events have no score, e.g. {sorted(missing)[:5]}"
    )
    return records


def changelog_profiles(stack: Stack) -> dict[str, features.Profile]:
    """The profile table as the changelog holds it (last value per key: the user's pseudonym)."""
    from kafka import KafkaConsumer, TopicPartition

    topic = f"{stack.settings.app_id}-user_profile-changelog"
    consumer = KafkaConsumer(
        bootstrap_servers=stack.settings.kafka_bootstrap, enable_auto_commit=False
    )
    tps = [TopicPartition(topic, p) for p in range(stack.settings.partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning()
    end = consumer.end_offsets(tps)
    latest: dict[str, bytes] = {}
    deadline = time.monotonic() + 60
    while any(consumer.position(tp) < end[tp] for tp in tps) and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            for r in batch:
                latest[r.key.decode()] = r.value  # None: a tombstone (an erased profile)
    consumer.close()
    return {key: decode_stored(value).profile for key, value in latest.items() if value}


def assert_profiles_match(stack: Stack, payloads: list[tuple[bytes, bytes]]) -> None:
    """The changelog converges to the profiles of an uninterrupted run (the last changelog
    writes of a batch follow its scores, so poll briefly rather than read once)."""
    expected = offline_profiles(payloads)
    deadline = time.monotonic() + 30
    while (got := changelog_profiles(stack)) != expected and time.monotonic() < deadline:
        time.sleep(1)
    differing = sorted(u for u in expected if got.get(u) != expected[u])
    assert not differing, (
        f"{len(differing)} of {len(expected)} profiles differ, e.g. {differing[:3]}: "
        f"n_events {[got[u].n_events if u in got else None for u in differing[:3]]} "
        f"!= {[expected[u].n_events for u in differing[:3]]}"
    )
    assert got.keys() == expected.keys()


def offline_profiles(payloads: list[tuple[bytes, bytes]]) -> dict[str, features.Profile]:
    """Profiles of an uninterrupted run: every event applied once, in order, per user, keyed
    by the user's pseudonym under the default (development) key, as the worker stores them."""
    from streams.contracts.events import ClickEvent, decode_event
    from streams.privacy.pseudonyms import Pseudonymizer, parse_keys

    pseudonyms = Pseudonymizer(parse_keys(load_settings().pseudonym_keys))
    out: dict[str, features.Profile] = {}
    for _, value in payloads:
        event = decode_event(value)
        assert isinstance(event, ClickEvent)
        key = pseudonyms.pseudonym(event.user_id)
        out[key] = features.update(out.get(key), event)
    return out


def produce_paced(bootstrap: str, topic: str, payloads: list, chunks: int, pause: float) -> None:
    size = -(-len(payloads) // chunks)
    for i in range(0, len(payloads), size):
        produce(bootstrap, topic, payloads[i : i + size])
        time.sleep(pause)


def feed_until_midstream(stack: Stack, payloads: list[tuple[bytes, bytes]]) -> threading.Thread:
    """Produce ``payloads`` in paced chunks in the background; return once some, but not all,
    of them have scores (the moment to kill a worker mid-stream)."""
    feeder = threading.Thread(
        target=produce_paced,
        args=(stack.settings.kafka_bootstrap, stack.settings.topic_events, payloads, 12, 0.4),
    )
    feeder.start()
    consume_until(
        stack.settings.kafka_bootstrap,
        stack.settings.topic_scores,
        lambda recs: len(recs) >= 1500,
        timeout=120,
    )
    return feeder


def test_crash_loses_nothing_and_profiles_match_an_uninterrupted_run(
    stack: Stack, workers: list[WorkerProcess]
) -> None:
    payloads = click_events(6000, users=300, seed=11, start=START)
    ids = {orjson.loads(v)["event_id"] for _, v in payloads}
    first = stack.worker("a")
    workers.append(first.start())
    first.wait_ready()
    feeder = feed_until_midstream(stack, payloads)
    first.kill()
    second = stack.worker("a")  # same data dir, as a restarted process would have
    workers.append(second.start())
    second.wait_ready(timeout=120)
    feeder.join(120)
    records = wait_scored(stack, ids, timeout=180)
    counts = Counter(score_ids(records))
    duplicates = sum(c - 1 for c in counts.values())
    print(f"crash test: {len(ids)} events, {len(records)} scores, {duplicates} duplicates")
    assert set(counts) == ids
    assert_profiles_match(stack, payloads)


def test_a_clean_stop_checkpoints_so_the_restart_scores_nothing_twice(
    bootstrap: str, tmp_path: Path, unique: str, workers: list[WorkerProcess]
) -> None:
    # No timed checkpoint within the test: only the stop's own can commit the first half.
    stack = make_stack(bootstrap, tmp_path, unique, INTENTFLOW_CHECKPOINT_INTERVAL_SECONDS="60")
    payloads = click_events(4000, users=200, seed=13, start=START)
    first_half, second_half = payloads[:2000], payloads[2000:]
    ids = [orjson.loads(v)["event_id"] for _, v in payloads]
    first = stack.worker("a")
    workers.append(first.start())
    first.wait_ready()
    produce(bootstrap, stack.settings.topic_events, first_half)
    wait_scored(stack, set(ids[:2000]), timeout=120)
    assert first.stop() == 0, first.log()
    assert "last checkpoint done" in first.log(tail=400), first.log()

    produce(bootstrap, stack.settings.topic_events, second_half)
    second = stack.worker("a")  # the same data directory, as a restarted process
    workers.append(second.start())
    second.wait_ready(timeout=120)
    records = wait_scored(stack, set(ids), timeout=180)
    counts = Counter(score_ids(records))
    duplicates = {event_id: n for event_id, n in counts.items() if n > 1}
    assert not duplicates, f"{len(duplicates)} events scored twice, e.g. {list(duplicates)[:3]}"
    assert second.metric("intentflow_events_consumed_total", {"outcome": "replayed"}) == 0
    assert second.stop() == 0, second.log()  # its stop writes the second half's profiles
    assert_profiles_match(stack, payloads)


def test_scale_out_and_takeover(stack: Stack, workers: list[WorkerProcess]) -> None:
    payloads = click_events(6000, users=400, seed=12, start=START)
    ids = {orjson.loads(v)["event_id"] for _, v in payloads}
    one, two = stack.worker("one"), stack.worker("two")
    workers.extend([one.start(), two.start()])
    one.wait_ready(timeout=120)
    two.wait_ready(timeout=120)
    feeder = feed_until_midstream(stack, payloads)
    # Both workers held partitions and scored before the kill.
    assert one.metric("intentflow_scores_published_total") > 0
    assert two.metric("intentflow_scores_published_total") > 0
    two.kill()
    feeder.join(120)
    wait_scored(stack, ids, timeout=180)
    assert_profiles_match(stack, payloads)


def test_worker_recovers_from_a_broker_outage(
    tmp_path: Path, unique: str, workers: list[WorkerProcess]
) -> None:
    broker = LocalKafka(home=tmp_path / "kafka", port=free_port(), controller_port=free_port())
    broker.start(timeout=120)
    try:
        stack = make_stack(broker.bootstrap, tmp_path, unique)
        payloads = click_events(4000, users=200, seed=13, start=START)
        ids = {orjson.loads(v)["event_id"] for _, v in payloads}
        worker = stack.worker("w")
        workers.append(worker.start())
        worker.wait_ready()
        produce(broker.bootstrap, stack.settings.topic_events, payloads[:2000])
        consume_until(
            broker.bootstrap, stack.settings.topic_scores, lambda r: len(r) >= 500, timeout=60
        )
        broker.stop()
        time.sleep(10)  # the outage itself: ten seconds without a broker
        assert worker.proc is not None and worker.proc.poll() is None, worker.log()
        broker.start(timeout=120)
        produce(broker.bootstrap, stack.settings.topic_events, payloads[2000:])
        wait_scored(stack, ids, timeout=240)
    finally:
        for w in workers:
            w.stop()
        broker.stop()


def test_hot_reload_swaps_models_and_refuses_a_corrupt_one(
    stack: Stack, workers: list[WorkerProcess]
) -> None:
    worker = stack.worker("w")
    workers.append(worker.start())
    worker.wait_ready()
    bootstrap, topic = stack.settings.kafka_bootstrap, stack.settings.topic_events

    def run(prefix: str, seed: int) -> dict[str, str]:
        payloads = click_events(300, users=50, seed=seed, start=START, prefix=prefix)
        produce(bootstrap, topic, payloads)
        ids = {orjson.loads(v)["event_id"] for _, v in payloads}
        records = wait_scored(stack, ids, timeout=120)
        versions = {}
        for _, value in records:
            score = orjson.loads(value)
            if score["event_id"] in ids:
                versions[score["event_id"]] = score["model_version"]
        return versions

    assert set(run("a", 1).values()) == {"test-v1"}

    point(stack.models, make_bundle(stack.bundles / "v2", "test-v2", seed=2))
    deadline = time.monotonic() + 30
    while worker.metric("intentflow_model_info", {"model_version": "test-v2"}) != 1:
        assert time.monotonic() < deadline, worker.log()
        time.sleep(0.2)
    assert set(run("b", 2).values()) == {"test-v2"}

    corrupt = make_bundle(stack.bundles / "v3", "test-v3", seed=3)
    (corrupt / "model.onnx").write_bytes(b"this is not an onnx model")
    point(stack.models, corrupt)
    deadline = time.monotonic() + 30
    while worker.metric("intentflow_model_reloads_total", {"outcome": "corrupt"}) < 1:
        assert time.monotonic() < deadline, worker.log()
        time.sleep(0.2)
    assert set(run("c", 3).values()) == {"test-v2"}
    assert "model reload refused (corrupt)" in worker.log(tail=400)


def _run_worker(env: dict[str, str], timeout: float = 60) -> tuple[int, str, float]:
    import os

    full = {k: v for k, v in os.environ.items() if not k.startswith("INTENTFLOW_")}
    full.update(env)
    began = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "streams.cli", "worker"],
        env=full, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - began


def test_unreachable_broker_fails_fast_with_a_clear_message(stack: Stack) -> None:
    dead = f"127.0.0.1:{free_port()}"
    env = dict(
        stack.env, INTENTFLOW_KAFKA_BOOTSTRAP=dead, INTENTFLOW_KAFKA_CONNECT_TIMEOUT_SECONDS="5"
    )
    code, output, seconds = _run_worker(env)
    assert code != 0
    assert seconds < 30
    assert f"no Kafka broker answered at {dead}" in output
    assert "Traceback" not in output


def test_missing_model_fails_fast_with_a_clear_message(stack: Stack, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-bundle"
    code, output, seconds = _run_worker(dict(stack.env, INTENTFLOW_MODEL_PATH=str(missing)))
    assert code != 0
    assert seconds < 30
    assert f"no model bundle at {missing}" in output
    assert "Traceback" not in output


def test_bad_setting_names_the_variable(stack: Stack) -> None:
    code, output, _ = _run_worker(dict(stack.env, INTENTFLOW_BATCH_MAX="-5"))
    assert code != 0
    assert "INTENTFLOW_BATCH_MAX" in output
    assert "Traceback" not in output
