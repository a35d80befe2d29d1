"""Takeover: how long the partitions of a SIGKILLed worker go without scores, with and without
standby replicas.

For each variant (``INTENTFLOW_STANDBY_REPLICAS`` = 1, then 0) on its own broker topics:

1. the profile changelog is seeded with ``TAKEOVER_USERS`` profiles (200,000 by default; the
   envelopes of replayed simulated histories, as in ``state.py``), 4 partitions;
2. two workers start on empty data directories and rebuild their partitions from it;
3. a steady load (``TAKEOVER_RATE`` events/s over those users, each event's id carrying its
   partition and send time) runs for ``TAKEOVER_WARMUP`` seconds (standbys catch up);
4. one worker is SIGKILLed. The time until its partitions score again is, per moved
   partition, from the kill to the arrival of the first score of an event of that partition
   sent after the kill (only the survivor can have scored it); the figure is the slowest
   partition. Also reported: when the survivor is ready again (``/readyz``), when its
   rebalance began (its log), and how many changelog records it read to take the partitions
   over (its recovery tables: highwater minus start offset).

Target with standbys: the session timeout (10 s, ``streams/worker/app.py``) + 5 s.

Run: ``.venv/bin/python -m bench.takeover`` (``TAKEOVER_USERS``, ``TAKEOVER_RATE``,
``TAKEOVER_WARMUP``, ``TAKEOVER_VARIANTS=1,0``, ``BENCH_KEEP=1`` keeps the scratch
directory). Writes ``bench/results/takeover.json`` and ``bench/results/takeover.md``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition

from bench import kafkautil, state
from bench.drain import PSEUDONYM_KEYS
from bench.procs import unique
from streams.devtools.localkafka import LocalKafka, free_port
from streams.kafka.topics import create_topics
from streams.settings import load_settings
from streams.sources.simulate import DEFAULT_START
from tests.integration.harness import WorkerProcess

RESULTS = Path(__file__).resolve().parent / "results"
SESSION_TIMEOUT_S = 10.0  # broker_session_timeout in streams/worker/app.py
PARTITIONS = 4
_ROW = re.compile(r"^\|\s*\S+\s*\|\s*(\d+)\s*\|\s*(-?\d+)\s*\|")
_STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, str(default)))


class Load(threading.Thread):
    """Steady events over the seeded users, each sent to its user's partition; the event id
    is ``tk-<partition>-<seq>-<send ms>``."""

    def __init__(self, bootstrap: str, topic: str, users: int, prefix: str, rate: float) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.users, self.prefix = bootstrap, topic, users, prefix
        self.rate = rate
        self.stop_event = threading.Event()
        self.sent = 0

    def run(self) -> None:
        producer = kafkautil.producer(self.bootstrap, **{"linger.ms": 2})
        kinds = ["view"] * 6 + ["click"] * 2 + ["add_to_cart", "favorite"]
        started = time.monotonic()
        seq = 0
        while not self.stop_event.is_set():
            due = started + seq / self.rate
            if (wait := due - time.monotonic()) > 0:
                time.sleep(min(wait, 0.05))
                continue
            user = f"{self.prefix}{(seq * 7919) % self.users:07d}"
            partition = kafkautil.partition_of(user.encode(), PARTITIONS)
            now = time.time()
            # Event time continues the seeded histories (which end at the simulator's default
            # start): dated now, every seeded profile would look idle for longer than the
            # profile TTL, and the retention sweep would delete them all during the run.
            occurred = DEFAULT_START + timedelta(seconds=time.monotonic() - started)
            event = {
                "schema_version": "1",
                "event_id": f"tk-{partition}-{seq}-{int(now * 1000)}",
                "user_id": user,
                "event_type": kinds[seq % len(kinds)],
                "item_id": f"i{seq % 500}",
                "category_id": f"c{seq % 60:04d}",
                "price": 10.0,
                "occurred_at": occurred.isoformat(),
            }
            producer.produce(self.topic, orjson.dumps(event), user.encode(), partition=partition)
            producer.poll(0)
            seq += 1
            self.sent = seq
        producer.flush(30)


class Tap(threading.Thread):
    """Reads the scores topic from its end; keeps (arrival time, event id) of every score."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.consumer = Consumer(
            kafkautil.rdkafka(bootstrap, **{"group.id": unique("tap"), "enable.auto.commit": False})
        )
        self.consumer.assign(
            [TopicPartition(topic, p, -1) for p in range(PARTITIONS)]  # -1: OFFSET_END
        )
        self.seen: list[tuple[float, str]] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                for msg in self.consumer.consume(1000, 0.05):
                    if msg.error() is None and msg.value():
                        event_id = orjson.loads(msg.value())["event_id"]
                        self.seen.append((time.time(), event_id))
        finally:
            self.consumer.close()

    def first_after(self, killed_at: float) -> dict[int, float]:
        """Per partition: arrival of the first score of an event sent after ``killed_at``."""
        first: dict[int, float] = {}
        for arrived, event_id in list(self.seen):
            _, partition, _, sent_ms = event_id.split("-")
            if int(sent_ms) / 1000 > killed_at and int(partition) not in first:
                first[int(partition)] = arrived
        return first

    def latency_before(self, killed_at: float) -> float | None:
        """Median send-to-score seconds of the scores before the kill (the steady state)."""
        gaps = sorted(
            arrived - int(event_id.split("-")[3]) / 1000
            for arrived, event_id in list(self.seen)
            if arrived < killed_at
        )
        return round(gaps[len(gaps) // 2], 3) if gaps else None


def recovery_tables(log: str, title: str) -> list[dict[int, int]]:
    """Every ``title`` table (e.g. "Reading Starts At - Active") of a worker log."""
    tables, lines = [], log.splitlines()
    for i, line in enumerate(lines):
        if title in line:
            table: dict[int, int] = {}
            for row in lines[i + 1 :]:
                if row.startswith("+") and table:
                    break
                if found := _ROW.match(row):
                    table[int(found[1])] = int(found[2])
            tables.append(table)
    return tables


def first_log_time(log: str, text: str, after: float) -> float | None:
    """Unix time of the first log line containing ``text`` stamped after ``after``."""
    for line in log.splitlines():
        if text in line and (stamp := _STAMP.match(line)):
            at = datetime.strptime(stamp[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()  # local time
            if at > after:
                return at
    return None


def run_variant(
    bootstrap: str, home: Path, bundle: Path, samples: list[bytes], standby: int
) -> dict[str, Any]:
    users = _env_int("TAKEOVER_USERS", 200_000)
    rate = float(os.environ.get("TAKEOVER_RATE", "400"))
    warmup = float(os.environ.get("TAKEOVER_WARMUP", "45"))
    tag = unique(f"tk{standby}")
    app_id, events, scores, prefix = f"bench-{tag}", f"in-{tag}", f"out-{tag}", f"{tag}-u"
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    state.seed_changelog(bootstrap, app_id, users, samples, prefix)
    seeding = time.perf_counter() - t0
    create_topics(
        load_settings(
            kafka_bootstrap=bootstrap, topic_events=events, topic_scores=scores,
            topic_dlq=f"{scores}.dlq", app_id=app_id, partitions=PARTITIONS,
        )
    )  # fmt: skip
    env = {
        "INTENTFLOW_KAFKA_BOOTSTRAP": bootstrap,
        "INTENTFLOW_TOPIC_EVENTS": events,
        "INTENTFLOW_TOPIC_SCORES": scores,
        "INTENTFLOW_TOPIC_DLQ": f"{scores}.dlq",
        "INTENTFLOW_APP_ID": app_id,
        "INTENTFLOW_PARTITIONS": str(PARTITIONS),
        "INTENTFLOW_MODEL_PATH": str(bundle),
        "INTENTFLOW_PSEUDONYM_KEYS": PSEUDONYM_KEYS,
        "INTENTFLOW_STANDBY_REPLICAS": str(standby),
        "INTENTFLOW_KAFKA_CONNECT_TIMEOUT_SECONDS": "20",
    }
    logs = home / "logs"
    survivor = WorkerProcess(
        env | {"INTENTFLOW_DATA_DIR": str(home / tag / "a")}, logs / f"{tag}-a.log"
    )
    victim = WorkerProcess(
        env | {"INTENTFLOW_DATA_DIR": str(home / tag / "b")}, logs / f"{tag}-b.log"
    )
    tap = Tap(bootstrap, scores)
    load = Load(bootstrap, events, users, prefix, rate)
    started = time.time()
    survivor.start()
    victim.start()
    try:
        survivor.wait_ready(timeout=900)
        victim.wait_ready(timeout=900)
        ready = time.time()
        tap.start()
        load.start()
        time.sleep(warmup)
        killed_at = time.time()
        victim.kill()
        back: float | None = None  # /readyz 200 again, after the rebalance made it 503
        not_ready: float | None = None
        deadline = killed_at + 300
        moved: set[int] = set()
        first: dict[int, float] = {}
        while time.time() < deadline:
            if back is None:
                try:
                    status = survivor.get("/readyz", timeout=0.5)[0]
                except OSError:
                    status = 0
                if status != 200 and not_ready is None:
                    not_ready = time.time()
                elif status == 200 and not_ready is not None:
                    back = time.time()
            starts = recovery_tables(survivor.log(tail=1_000_000), "Reading Starts At - Active")
            if len(starts) >= 2 and len(starts[-1]) == PARTITIONS:
                moved = set(starts[-1]) - set(starts[-2])
                first = tap.first_after(killed_at)
                if moved and moved <= set(first) and back is not None:
                    break
            time.sleep(0.1)
        load.stop_event.set()
        load.join(30)
        tap.stop_event.set()
        tap.join(10)
        log = survivor.log(tail=1_000_000)
        expired = survivor.metric("intentflow_profiles_expired_total")
    finally:
        survivor.stop()
        victim.stop()
    starts = recovery_tables(log, "Reading Starts At - Active")[-1]
    highwaters = recovery_tables(log, "Highwater - Active")[-1]
    rebalance = first_log_time(log, "Revoking previously assigned partitions", killed_at)
    gaps = {p: round(first[p] - killed_at, 2) for p in sorted(moved) if p in first}
    return {
        "standby_replicas": standby,
        "users": users,
        "rate_per_s": rate,
        "warmup_s": warmup,
        "events_sent": load.sent,
        "seeding_s": round(seeding, 1),
        "start_to_ready_s": round(ready - started, 1),
        "moved_partitions": sorted(moved),
        "moved_scoring_again_s": gaps,
        "takeover_s": max(gaps.values()) if len(gaps) == len(moved) and moved else None,
        "survivor_not_ready_s": round(not_ready - killed_at, 2) if not_ready else None,
        "survivor_ready_again_s": round(back - killed_at, 2) if back else None,
        "rebalance_began_s": round(rebalance - killed_at, 2) if rebalance else None,
        "records_read_at_takeover": {
            p: highwaters[p] - max(starts[p], -1) for p in sorted(starts) if p in highwaters
        },
        "score_latency_before_kill_p50_s": tap.latency_before(killed_at),
        "survivor_profiles_expired": expired,  # by the retention sweep: 0 expected
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }


def markdown(result: dict[str, Any]) -> str:
    rows = [
        "| standby replicas | moved partitions scoring again (s, slowest) | survivor /readyz "
        "again (s) | rebalance began (s) | changelog records read for the moved partitions | "
        "load average before / after |",
        "|---|---|---|---|---|---|",
    ]
    for v in result["variants"]:
        read = sum(v["records_read_at_takeover"].get(p, 0) for p in v["moved_partitions"])
        rows.append(
            f"| {v['standby_replicas']} | {v['takeover_s']} | {v['survivor_ready_again_s']} | "
            f"{v['rebalance_began_s']} | {read:,} | "
            f"{v['load_average_before'][0]} / {v['load_average_after'][0]} |"
        )
    target = result["target_s"]
    with_standby = next((v for v in result["variants"] if v["standby_replicas"] >= 1), None)
    verdict = ""
    if with_standby and with_standby["takeover_s"] is not None:
        met = "met" if with_standby["takeover_s"] <= target else "missed"
        verdict = f"\nTarget with standbys: <= {target} s (session timeout + 5 s): {met}.\n"
    return (
        f"# Takeover after a SIGKILL ({result['finished_at']})\n\n"
        f"{result['variants'][0]['users']:,} users in the changelog, 2 workers, 4 partitions, "
        f"{result['variants'][0]['rate_per_s']:.0f} events/s steady load, one worker SIGKILLed "
        f"after {result['variants'][0]['warmup_s']:.0f} s of it. Times from the kill.\n\n"
        + "\n".join(rows)
        + "\n"
        + verdict
    )


def _code() -> dict[str, Any]:
    """The commit measured, and the files of streams/ that differ from it (the checkout is
    shared, and the workers run the working tree)."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, check=False, cwd=RESULTS.parent.parent
        ).stdout.strip()

    changed = git("status", "--porcelain", "streams/").splitlines()
    return {"head": git("rev-parse", "--short", "HEAD"), "streams_changed": changed}


def main() -> None:
    variants = [int(v) for v in os.environ.get("TAKEOVER_VARIANTS", "1,0").split(",")]
    code = _code()
    home = Path(tempfile.mkdtemp(prefix="bench-takeover-"))
    broker = LocalKafka(home=home / "kafka", port=free_port(), controller_port=free_port())
    try:
        broker.start(timeout=180)
        from tests.bundles import make_bundle

        bundle = make_bundle(home / "bundle", "bench-logistic", seed=0)
        payloads, _ = state.long_histories(1_000, 2.0)
        samples = [state.envelope(p) for p in state.replay_profiles(payloads).values()]
        out = []
        for standby in variants:
            print(f"takeover with INTENTFLOW_STANDBY_REPLICAS={standby} ...", flush=True)
            out.append(run_variant(broker.bootstrap, home, bundle, samples, standby))
            print(json.dumps(out[-1], indent=1), flush=True)
        result = {
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "code": code,
            "session_timeout_s": SESSION_TIMEOUT_S,
            "target_s": SESSION_TIMEOUT_S + 5,
            "cpus": os.cpu_count(),
            "variants": out,
        }
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "takeover.json").write_text(json.dumps(result, indent=1) + "\n")
        (RESULTS / "takeover.md").write_text(markdown(result))
        print(markdown(result))
    finally:
        broker.stop()
        if os.environ.get("BENCH_KEEP") != "1":
            shutil.rmtree(home, ignore_errors=True)
        else:
            print(f"kept {home}")


if __name__ == "__main__":
    main()
