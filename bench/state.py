"""Scenario 4: profile size, and the worker's memory, disk and throughput as users grow.

Profile bytes per user come from replaying simulated histories through the pure feature code
and ``streams.processing.envelope.encode_stored`` (exactly what the worker stores).

Scale: a worker must hold S users. Pushing S users through the worker one event at a time
takes S / (drain rate) seconds, too long for 1M users in the time budget, so the profile
table is populated through its changelog instead: S profile envelopes (sampled from the
realistic profiles, each under its own user id, offset -1 so later events apply) are written
to the worker's changelog topic, partitioned like the input (murmur2 of the user id). The
worker then starts with an empty data directory, rebuilds its RocksDB table from the
changelog (timed: start to /readyz 200) and drains a burst of events spread over those S
users (timed like scenario 1). RSS (psutil) and the data directory's size are read after the
burst, and the table's user count from ``intentflow_profile_table_users``.

Recovery (``restart=True``, at ``BENCH_RECOVERY_USERS``, default 200k): after the burst (so
the changelog also holds the worker's own writes) the worker is stopped, its data directory
deleted, and it is started again: the time from that restart to /readyz 200 is the recovery
time.
"""

from __future__ import annotations

import itertools
import random
import shutil
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from pydantic import SecretStr

from bench import kafkautil
from bench.drain import PSEUDONYM_KEYS, Launched, Setup, wait_for_outputs, worker_env
from bench.procs import dir_size_mb, unique
from streams import features
from streams.contracts.events import Rejection, decode_event
from streams.privacy.pseudonyms import Pseudonymizer, parse_keys
from streams.processing.envelope import StoredProfile, encode_stored
from tests.integration.harness import WorkerProcess


def replay_profiles(payloads: list[bytes]) -> dict[str, features.Profile]:
    """Every user's profile after applying ``payloads`` in order (the worker's computation)."""
    profiles: dict[str, features.Profile] = {}
    for raw in payloads:
        event = decode_event(raw)
        if isinstance(event, Rejection):
            continue
        profiles[event.user_id] = features.update(profiles.get(event.user_id), event)
    return profiles


def size_stats(sizes: list[int]) -> dict[str, float]:
    a = np.asarray(sizes, dtype=np.float64)
    return {
        "users": int(a.size),
        "mean": round(float(a.mean()), 1),
        "p50": float(np.percentile(a, 50)),
        "p99": round(float(np.percentile(a, 99)), 1),
        "max": int(a.max()),
    }


def long_histories(users: int, days: float, seed: int = 11) -> tuple[list[bytes], Any]:
    """Payloads of ``users`` simulated shoppers over ``days``, ending at the simulator's
    default start (so the benchmark's events come after these histories)."""
    from streams.sources.simulate import DEFAULT_START, generate

    start = DEFAULT_START - timedelta(days=days)
    stream = generate(users, days * 86_400.0, seed, start=start)
    return [r.payload for r in stream], start


def envelope(profile: features.Profile) -> bytes:
    return encode_stored(StoredProfile(-1, profile))


def seed_changelog(
    bootstrap: str, app_id: str, users: int, samples: list[bytes], prefix: str
) -> str:
    """Write ``users`` profile envelopes to the app's changelog topic; returns the topic.

    The worker keys its table by pseudonym (``streams.privacy.pseudonyms``), so each record
    is keyed by the user's pseudonym under the benchmark's key, and sent to the partition of
    the user's raw id (where the user's events go, murmur2 like every client here)."""
    topic = f"{app_id}-user_profile-changelog"
    kafkautil.create_topics(bootstrap, [topic], config={"cleanup.policy": "compact"})
    pseudonyms = Pseudonymizer(parse_keys(SecretStr(PSEUDONYM_KEYS)))
    rng = random.Random(users)
    records = ((f"{prefix}{i:07d}", samples[rng.randrange(len(samples))]) for i in range(users))
    kafkautil.produce_keyed(
        bootstrap,
        topic,
        ((user.encode(), pseudonyms.pseudonym(user).encode(), value) for user, value in records),
    )
    return topic


def burst_records(
    source: list[tuple[bytes, bytes]], users: int, n: int, prefix: str, seed: int
) -> list[tuple[bytes, bytes]]:
    """``n`` events of the dataset, each moved to a random one of the ``users`` seeded users."""
    rng = random.Random(seed)
    out = []
    for i, (_, payload) in enumerate(itertools.islice(itertools.cycle(source), n)):
        event = orjson.loads(payload)
        user = f"{prefix}{rng.randrange(users):07d}"
        event["user_id"] = user
        event["event_id"] = f"{prefix}e{i}"
        out.append((user.encode(), orjson.dumps(event)))
    return out


def _start_worker(
    setup: Setup,
    app_id: str,
    topic: str,
    scores: str,
    *,
    data_dir: Path,
    log: Path,
    timeout: float = 900.0,
) -> tuple[WorkerProcess, float, float]:
    env = worker_env(setup, app_id=app_id, scores=scores, data_dir=data_dir, input_topic=topic)
    started = time.time()
    worker = WorkerProcess(env, log).start()
    try:
        worker.wait_ready(timeout)
    except AssertionError as exc:  # not ready in time, or exited: never leave it running
        worker.stop()
        raise NotReadyError(f"worker not ready within {timeout:.0f} s") from exc
    return worker, started, time.time()


class NotReadyError(RuntimeError):
    """The worker did not reach /readyz 200 in the time allowed."""


def count_users(data_dir: Path) -> int:
    """Exact number of user keys in a stopped worker's RocksDB table (all partitions)."""
    from rocksdict import AccessType, Rdict

    total = 0
    for path in sorted(data_dir.glob("*/tables/user_profile-*.db")):
        db = Rdict(str(path), access_type=AccessType.read_only())
        try:
            total += sum(1 for key in db.keys() if not key.startswith(b"__faust"))  # noqa: SIM118 - an Rdict iterates its items
        finally:
            db.close()
    return total


def scale_run(
    setup: Setup,
    users: int,
    samples: list[bytes],
    source: list[tuple[bytes, bytes]],
    burst: int,
    *,
    restart: bool = False,
    ready_timeout: float = 900.0,
) -> dict[str, Any]:
    """Seed ``users`` profiles, start a worker on them (rebuilding its table from the
    changelog), drain a burst of events over those users, and measure. With ``restart``, then
    stop it, delete its data directory and time a restart to ready (the recovery test)."""
    tag = unique(f"scale{users}")
    app_id, topic, scores = f"bench-{tag}", f"in-{tag}", f"out-{tag}"
    prefix = f"s{users}-u"
    t0 = time.perf_counter()
    seed_changelog(setup.bootstrap, app_id, users, samples, prefix)
    seeding_s = time.perf_counter() - t0
    kafkautil.create_topics(setup.bootstrap, [topic])
    kafkautil.create_topics(setup.bootstrap, [scores], config=kafkautil.APPEND_TIME)
    data_dir = setup.home / "data" / tag
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    log = setup.home / "logs" / f"{tag}.log"
    worker, started, ready = _start_worker(
        setup, app_id, topic, scores, data_dir=data_dir, log=log, timeout=ready_timeout
    )
    try:
        running = Launched(worker, started)
        running.ready_at = ready
        rss_ready = running.cpu.rss_mb()
        kafkautil.produce_all(
            setup.bootstrap, topic, burst_records(source, users, burst, prefix, seed=users)
        )
        cpu0 = running.cpu.seconds()
        done = wait_for_outputs(
            setup, running, scores, burst, timeout=max(180.0, burst / 100), label=tag
        )
        cpu = running.cpu.seconds() - cpu0
        rss = running.cpu.rss_mb()
        # The worker writes profiles at its next checkpoint (about a second), with the input
        # offsets: stopped before it, the table and changelog would miss the burst's users.
        checkpointed = kafkautil.wait_committed(setup.bootstrap, app_id, topic, burst, timeout=30.0)
        disk_running = dir_size_mb(data_dir)
    finally:
        worker.stop()
    first, last = kafkautil.edge_timestamps(setup.bootstrap, scores)
    result: dict[str, Any] = {
        "users": users,
        "seeding_seconds": round(seeding_s, 1),
        "recovery_seconds": round(ready - started, 2),
        "recovery_records_per_s": round(users / max(ready - started, 1e-6), 1),
        "burst_events": burst,
        "throughput_per_s": round(burst / max(last - first, 1e-6), 1),
        "throughput_incl_wait_per_s": round(burst / max(done - ready, 1e-6), 1),
        "cpu_us_per_event": round(cpu / burst * 1e6, 1),
        "rss_mb_ready": round(rss_ready, 1),
        "rss_mb": round(rss, 1),
        "rocksdb_mb": round(disk_running, 1),
        "rocksdb_mb_after_stop": round(dir_size_mb(data_dir), 1),
        "table_users": count_users(data_dir),
        "burst_committed_after_s": None if checkpointed is None else round(checkpointed, 2),
    }
    if restart:
        shutil.rmtree(data_dir)
        worker, restarted, ready = _start_worker(
            setup, app_id, topic, scores, data_dir=data_dir, log=log
        )
        worker.stop()
        result["restart_to_ready_seconds"] = round(ready - restarted, 2)
        result["table_users_after_restart"] = count_users(data_dir)
        result["changelog_records"] = users + burst
    return result


def plot(scales: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    users = [s["users"] for s in scales]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.6))
    axes[0].plot(users, [s["throughput_per_s"] for s in scales], "o-")
    axes[0].set_title("worker throughput (events/s)", fontsize=9)
    axes[1].plot(users, [s["rss_mb"] for s in scales], "o-", label="RSS after burst")
    axes[1].plot(users, [s["rocksdb_mb"] for s in scales], "s-", label="RocksDB dir")
    axes[1].set_title("memory and disk (MiB)", fontsize=9)
    axes[1].legend(fontsize=8)
    axes[2].plot(users, [s["recovery_seconds"] for s in scales], "o-")
    axes[2].set_title("start to ready, rebuilding from changelog (s)", fontsize=9)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("users in the profile table")
        ax.grid(True, which="both", alpha=0.3)
        ax.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def profile_sizes(payloads: list[bytes]) -> dict[str, float]:
    return size_stats([len(envelope(p)) for p in replay_profiles(payloads).values()])
