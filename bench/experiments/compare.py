"""Drain the same input with the worker and with patched variants, interleaved, side by side.

``python -m bench.experiments.compare`` (knobs: ``BENCH_EVENTS`` default 60000,
``BENCH_REPEATS`` default 2, ``BENCH_VARIANTS``: comma-free variant names separated by
spaces, each ``worker`` or ``worker+patch,patch``; see ``worker_patched``). Writes
``bench/results/worker-experiments.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench import data, drain, kafkautil
from bench.run import load_avg, log, pick_bundle
from streams.localkafka import LocalKafka, free_port

DEFAULT_VARIANTS = (
    "worker worker+no_faust_prometheus worker+noop_monitor "
    "worker+noop_monitor,direct_send worker+noop_monitor,direct_send,batch_observe"
)


def main() -> None:
    events = int(os.environ.get("BENCH_EVENTS", "60_000"))
    repeats = int(os.environ.get("BENCH_REPEATS", "2"))
    variants = os.environ.get("BENCH_VARIANTS", DEFAULT_VARIANTS).split()
    out = Path(os.environ.get("BENCH_OUT", "bench/results"))
    home = Path(tempfile.mkdtemp(prefix="intentflow-bench-exp-"))
    broker = LocalKafka(home=home / "kafka", port=free_port(), controller_port=free_port())
    load_start = load_avg()
    try:
        broker.start(timeout=120)
        bundle, kind = pick_bundle(home)
        ds = data.generate(events, 50_000)
        topic = f"exp-input-{int(time.time())}"
        kafkautil.create_topics(broker.bootstrap, [topic])
        kafkautil.produce_all(broker.bootstrap, topic, ds.records)
        setup = drain.Setup(broker.bootstrap, home, topic, len(ds), bundle, kind, log=log)
        runs: dict[str, list[drain.DrainRun]] = {v: [] for v in variants}
        for rep in range(repeats):
            order = variants[rep % len(variants) :] + variants[: rep % len(variants)]
            for v in order:
                r = drain.drain_once(setup, v, rep, verify=False)
                runs[v].append(r)
                log(f"{v}: steady {r.steady_per_s:,.0f}/s, CPU {r.cpu_us_per_event:.0f} µs/event")
        table = {
            v: {
                "steady_per_s": round(statistics.median(r.steady_per_s for r in rs), 1),
                "cpu_us_per_event": round(statistics.median(r.cpu_us_per_event for r in rs), 1),
                "runs": [r.to_dict() for r in rs],
            }
            for v, rs in runs.items()
        }
        base = table.get("worker", {}).get("cpu_us_per_event")
        for row in table.values():
            if base:
                row["cpu_saving_vs_worker"] = round(1 - row["cpu_us_per_event"] / base, 3)
        doc = {
            "events": len(ds),
            "repeats": repeats,
            "bundle": kind,
            "load_avg_start": load_start,
            "load_avg_end": load_avg(),
            "variants": table,
        }
        out.mkdir(parents=True, exist_ok=True)
        (out / "worker-experiments.json").write_text(json.dumps(doc, indent=2) + "\n")
        for v, row in table.items():
            print(
                f"{v:60s} {row['steady_per_s']:>9,.0f}/s {row['cpu_us_per_event']:>7.0f} µs/event "
                f"{row.get('cpu_saving_vs_worker', 0):+.1%}"
            )
    finally:
        broker.stop()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
