"""Time a worker's rebuild of its profile table from the changelog, with and without patches.

``python -m bench.experiments.recovery`` (``BENCH_RECOVERY_USERS`` default 100000,
``BENCH_REPEATS`` default 2, ``BENCH_VARIANTS`` as in ``compare``, plus
``@INTENTFLOW_X=value`` suffixes for settings). One changelog is seeded
once; each run is a fresh worker process (same app id, fresh empty data directory), timed
from launch to /readyz 200. Writes ``bench/results/recovery-experiments.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

from bench import kafkautil, state
from bench.drain import Setup, worker_env
from bench.procs import Proc, child_env, module_command, unique
from bench.run import load_avg, log, pick_bundle
from streams.localkafka import LocalKafka, free_port


def time_to_ready(setup: Setup, app_id: str, variant: str, topic: str) -> float:
    port = free_port()
    tag = unique("rec")
    env = worker_env(
        setup,
        app_id=app_id,
        scores=f"out-{app_id}",
        data_dir=setup.home / "data" / tag,
        input_topic=topic,
        INTENTFLOW_WEB_PORT=str(port),
        INTENTFLOW_WEB_HOST="127.0.0.1",
    )
    name, *overrides = variant.split("@")  # worker+patch,patch@INTENTFLOW_X=1@...
    env.update(o.split("=", 1) for o in overrides)  # type: ignore[arg-type]
    env["BENCH_WORKER_PATCHES"] = name.split("+", 1)[1] if "+" in name else ""
    proc = Proc(
        module_command("bench.experiments.worker_patched"),
        setup.home / "logs" / f"{tag}.log",
        env=child_env(env),
    ).start()
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            if not proc.alive():
                raise RuntimeError(f"worker exited:\n{proc.log()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=0.5) as r:
                    if r.status == 200:
                        return time.time() - proc.started_at
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("worker not ready in 900 s")
    finally:
        proc.stop()


def main() -> None:
    users = int(os.environ.get("BENCH_RECOVERY_USERS", "100_000"))
    repeats = int(os.environ.get("BENCH_REPEATS", "2"))
    variants = os.environ.get("BENCH_VARIANTS", "worker worker+fast_recovery").split()
    out = Path(os.environ.get("BENCH_OUT", "bench/results"))
    home = Path(tempfile.mkdtemp(prefix="intentflow-bench-rec-"))
    broker = LocalKafka(home=home / "kafka", port=free_port(), controller_port=free_port())
    load_start = load_avg()
    try:
        broker.start(timeout=120)
        bundle, kind = pick_bundle(home)
        setup = Setup(broker.bootstrap, home, "unused", 0, bundle, kind, log=log)
        (home / "data").mkdir()
        payloads, _ = state.long_histories(300, 2.0)
        samples = [state.envelope(p) for p in state.replay_profiles(payloads).values()]
        app_id = unique("bench-rec")
        state.seed_changelog(broker.bootstrap, app_id, users, samples, "rec-u")
        topic = f"in-{app_id}"
        kafkautil.create_topics(broker.bootstrap, [topic, f"out-{app_id}"])
        times: dict[str, list[float]] = {v: [] for v in variants}
        for rep in range(repeats):
            for v in variants[rep % len(variants) :] + variants[: rep % len(variants)]:
                t = time_to_ready(setup, app_id, v, topic)
                times[v].append(t)
                log(f"{v}: {users:,} users rebuilt, ready in {t:.1f} s")
        doc = {
            "users": users,
            "bundle": kind,
            "load_avg_start": load_start,
            "load_avg_end": load_avg(),
            "variants": {
                v: {
                    "median_s": round(statistics.median(ts), 2),
                    "runs_s": [round(t, 2) for t in ts],
                }
                for v, ts in times.items()
            },
        }
        out.mkdir(parents=True, exist_ok=True)
        (out / "recovery-experiments.json").write_text(json.dumps(doc, indent=2) + "\n")
        for v, row in doc["variants"].items():
            print(f"{v:40s} {row['median_s']:>7.1f} s  {row['runs_s']}")
    finally:
        broker.stop()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
