"""Simulator throughput: generation alone, and generation + produce to a real broker.

    python bench/bench_simulator.py [--events 200000] [--reps 3] [--bootstrap HOST:PORT]

Without --bootstrap it starts its own local broker on free ports (and stops it). Each
repetition produces N fresh payloads (1% malformed) to a new topic with the simulator's own
Kafka sink (kafka-python, acks=all, flushed). Prints the median events/s and writes
bench/results/simulator.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
import uuid
from itertools import islice
from pathlib import Path

from streams.devtools.localkafka import LocalKafka, free_port
from streams.kafka.topics import create_topics
from streams.settings import load_settings
from streams.sources.simulate import generate
from streams.sources.simulate.sinks import produce

RESULTS = Path(__file__).resolve().parent / "results" / "simulator.json"


def _records(n: int, seed: int) -> islice:  # type: ignore[type-arg]
    # ~30 events per user-day: enough users and days that N is reached.
    users = max(100, n // 60)
    return islice(generate(users, 2 * 86_400.0, seed=seed, bad_fraction=0.01), n)


def generation_rate(n: int, seed: int) -> float:
    """Payloads per second of the pure generator (no I/O)."""
    began = time.perf_counter()
    count = sum(1 for _ in _records(n, seed))
    return count / (time.perf_counter() - began)


def produce_rate(bootstrap: str, n: int, seed: int, compression: str) -> tuple[float, int]:
    """Payloads per second produced and acknowledged, end to end (generation included)."""
    topic = f"bench-sim-{uuid.uuid4().hex[:8]}"
    settings = load_settings(
        kafka_bootstrap=bootstrap, topic_events=topic, topic_scores=f"{topic}-s",
        topic_dlq=f"{topic}-d", partitions=4,
    )  # fmt: skip
    create_topics(settings)
    began = time.perf_counter()
    report = produce(_records(n, seed), settings, compression=compression)
    seconds = time.perf_counter() - began
    return report.tally.payloads / seconds, report.failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--bootstrap", default=None)
    parser.add_argument("--compression", default="auto", choices=["auto", "lz4", "gzip", "none"])
    args = parser.parse_args()

    broker = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        home = Path(tempfile.mkdtemp(prefix="bench-kafka-"))
        broker = LocalKafka(home=home, port=free_port(), controller_port=free_port())
        print(f"starting a local broker in {home} ...", flush=True)
        broker.start(timeout=120)
        bootstrap = broker.bootstrap
    try:
        gen = [generation_rate(args.events, seed) for seed in range(args.reps)]
        print(f"generation: {[round(r) for r in gen]} payloads/s", flush=True)
        runs = [
            produce_rate(bootstrap, args.events, seed, args.compression)
            for seed in range(args.reps)
        ]
        rates = [r for r, _ in runs]
        print(f"produce:    {[round(r) for r in rates]} payloads/s", flush=True)
    finally:
        if broker is not None:
            broker.stop()
    result = {
        "events": args.events,
        "repetitions": args.reps,
        "compression": args.compression,
        "generation_events_per_s_median": round(statistics.median(gen)),
        "generation_events_per_s": [round(r) for r in gen],
        "produce_events_per_s_median": round(statistics.median(rates)),
        "produce_events_per_s": [round(r) for r in rates],
        "delivery_failures": sum(f for _, f in runs),
        "bootstrap": "own LocalKafka" if broker is not None else bootstrap,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        },
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"median: produce {result['produce_events_per_s_median']:,} events/s, "
        f"generation {result['generation_events_per_s_median']:,} events/s -> {RESULTS}"
    )


if __name__ == "__main__":
    main()
