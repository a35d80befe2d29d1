"""Latency of the worker and of patched variants at the same offered rates, one after the other.

``python -m bench.experiments.latency_variants`` (``BENCH_VARIANTS`` default
``worker worker+fetch_batching``, ``BENCH_RATES`` default ``1000,2100,3150``,
``BENCH_LATENCY_SECONDS`` default 15). Writes ``bench/results/latency-experiments.json``.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from pathlib import Path

from bench import data, latency
from bench.drain import Setup
from bench.experiments.live_profile import PatchedWorker
from bench.run import load_avg, log, pick_bundle
from streams.localkafka import LocalKafka, free_port


def main() -> None:
    variants = os.environ.get("BENCH_VARIANTS", "worker worker+fetch_batching").split()
    rates = [float(r) for r in os.environ.get("BENCH_RATES", "1000,2100,3150").split(",")]
    seconds = float(os.environ.get("BENCH_LATENCY_SECONDS", "15"))
    out = Path(os.environ.get("BENCH_OUT", "bench/results"))
    home = Path(tempfile.mkdtemp(prefix="intentflow-bench-lat-"))
    broker = LocalKafka(home=home / "kafka", port=free_port(), controller_port=free_port())
    doc: dict[str, object] = {"load_avg_start": load_avg(), "seconds_per_rate": seconds}
    try:
        broker.start(timeout=120)
        bundle, kind = pick_bundle(home)
        doc["bundle"] = kind
        setup = Setup(broker.bootstrap, home, "unused", 0, bundle, kind, log=log)
        records = data.generate(120_000, 50_000).records
        results = {}
        for variant in variants:
            log(f"{variant}:")
            factory = functools.partial(PatchedWorker, variant=variant)
            phases = latency.run(setup, records, [(r, f"{r:,.0f}/s") for r in rates], seconds,
                                 worker_class=factory)  # fmt: skip
            results[variant] = [p.to_row() for p in phases]
        doc["variants"] = results
        doc["load_avg_end"] = load_avg()
        out.mkdir(parents=True, exist_ok=True)
        (out / "latency-experiments.json").write_text(json.dumps(doc, indent=2) + "\n")
    finally:
        broker.stop()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
