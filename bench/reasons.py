"""The cost of reasons in the pure step: a MICROBENCHMARK, not the drain benchmark.

``run_step`` (the worker's whole step: decode, profiles, features, one onnxruntime call, encode)
on 256-record batches of simulated shoppers, timed for each configuration on the same batches,
interleaved so that a busy machine slows all of them alike:

- ``v1``: purchase-scores.v1 only (the step before issue 12);
- ``v1+v2, reasons off``: both versions, ``INTENTFLOW_REASONS=false``;
- ``v1+v2, reasons on``: both versions with reasons (the default).

Also timed: the drift observer's work per batch (``streams.worker.drift``), which runs with
reasons on or off. Kafka, Faust and the event loop are not in it: the drain benchmark's ratio
(the issue's target) will be closer to 1 than the step's, since the step is only part of the
worker's time. For the drain itself, run the worker with ``INTENTFLOW_REASONS=false`` beside
the default.

Run: ``python -m bench.reasons --model models/current [--batches 40 --repeats 5]``; the
bundle must have a training reference (trained since reasons exist). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from streams.model.bundle import load_bundle
from streams.processing.envelope import StoredProfile
from streams.processing.step import Record, StepConfig, apply_batch, run_step
from streams.sources.simulate import generate
from streams.worker.drift import FeatureMonitor
from streams.worker.metrics import Metrics

CONFIGS = {
    "v1": StepConfig(),
    "v1+v2, reasons off": StepConfig(score_versions=frozenset({"1", "2"}), explain=False),
    "v1+v2, reasons on": StepConfig(score_versions=frozenset({"1", "2"}), explain=True),
}


class Profiles:
    def __init__(self) -> None:
        self.stored: dict[str, StoredProfile] = {}

    def get(self, partition: int, user_id: str, /) -> StoredProfile | None:
        return self.stored.get(user_id)


def records(users: int, seconds: float, seed: int) -> list[Record]:
    out = []
    for rec in generate(users, seconds, seed):
        ts = rec.ts_ms / 1000
        out.append(Record("events", 0, len(out), rec.key, rec.payload, ts, ts))
    return out


def run(model: Path, *, batch: int, batches: int, repeats: int, warm: int) -> dict[str, Any]:
    bundle = load_bundle(model)
    if bundle.reference is None:
        raise SystemExit(f"{model}: the bundle has no training reference (retrain it)")
    stream = records(2000, 86400.0, seed=11)
    if len(stream) < warm + batch * batches:
        raise SystemExit(f"only {len(stream)} simulated events; lower --warm or --batches")
    profiles = Profiles()
    for i in range(0, warm, 500):  # the users' state before the measured batches
        applied = apply_batch(stream[i : min(i + 500, warm)], profiles, StepConfig())
        for user, (stored, _) in applied.profiles.items():
            profiles.stored[user] = stored
    per_event: dict[str, list[float]] = {name: [] for name in CONFIGS}
    cpu_per_event: dict[str, list[float]] = {name: [] for name in CONFIGS}
    drift_per_event: list[float] = []
    monitor = FeatureMonitor(Metrics(), half_life_s=600.0)
    for b in range(batches):
        chunk = stream[warm + b * batch : warm + (b + 1) * batch]
        for config in CONFIGS.values():
            run_step(chunk, profiles, bundle, config)  # warm caches
        for _ in range(repeats):
            for name, config in CONFIGS.items():
                t0, c0 = time.perf_counter(), time.process_time()
                out = run_step(chunk, profiles, bundle, config)
                per_event[name].append((time.perf_counter() - t0) / len(chunk))
                cpu_per_event[name].append((time.process_time() - c0) / len(chunk))
            t0 = time.perf_counter()
            monitor.observe(bundle, out)
            drift_per_event.append((time.perf_counter() - t0) / len(chunk))
    median = {name: statistics.median(v) * 1e6 for name, v in per_event.items()}
    cpu = {name: statistics.median(v) * 1e6 for name, v in cpu_per_event.items()}
    off, on = median["v1+v2, reasons off"], median["v1+v2, reasons on"]
    return {
        "what": "microbenchmark: run_step per event on simulated shoppers (no Kafka, no Faust)",
        "model": bundle.model_version,
        "batch": batch,
        "batches": batches,
        "repeats": repeats,
        "us_per_event_median": {k: round(v, 2) for k, v in median.items()},
        "events_per_s_reasons_on_over_off": round(off / on, 3),
        # CPU time of this process: less disturbed by other processes on a shared machine
        "cpu_us_per_event_median": {k: round(v, 2) for k, v in cpu.items()},
        "cpu_reasons_on_over_off": round(cpu["v1+v2, reasons off"] / cpu["v1+v2, reasons on"], 3),
        "events_per_s_v1v2_reasons_on_over_v1_only": round(median["v1"] / on, 3),
        "drift_observe_us_per_event_median": round(statistics.median(drift_per_event) * 1e6, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/current"))
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warm", type=int, default=20_000)
    args = parser.parse_args()
    result = run(
        args.model, batch=args.batch, batches=args.batches, repeats=args.repeats, warm=args.warm
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
