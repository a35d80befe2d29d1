"""Profile the worker while events trickle in at a fixed rate (not a drain): where does the
CPU go when batches are small?

``python -m bench.experiments.live_profile`` (``BENCH_LIVE_RATE`` default 1000 events/s,
``BENCH_PROFILE_SECONDS`` default 15). Writes ``bench/results/worker-profile-live.txt`` and
the folded stacks beside it, and prints the worker's CPU per event and its batch sizes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench import data, kafkautil, latency, profiling
from bench.drain import Setup, worker_env
from bench.procs import CpuMeter, child_env, module_command
from bench.run import load_avg, log, pick_bundle
from streams.localkafka import LocalKafka, free_port
from tests.integration.harness import WorkerProcess


@dataclass
class PatchedWorker(WorkerProcess):
    """The harness's worker, started through ``worker_patched`` (``worker+patch,...``)."""

    variant: str = "worker"

    def start(self) -> PatchedWorker:
        env = child_env({k: v for k, v in self.env.items()})
        env["INTENTFLOW_WEB_PORT"] = str(self.web_port)
        env["BENCH_WORKER_PATCHES"] = self.variant.split("+", 1)[1] if "+" in self.variant else ""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log_file:
            self.proc = subprocess.Popen(
                module_command("bench.experiments.worker_patched"),
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self


def main() -> None:
    rate = float(os.environ.get("BENCH_LIVE_RATE", "1000"))
    seconds = float(os.environ.get("BENCH_PROFILE_SECONDS", "15"))
    out = Path(os.environ.get("BENCH_OUT", "bench/results"))
    home = Path(tempfile.mkdtemp(prefix="intentflow-bench-live-"))
    broker = LocalKafka(home=home / "kafka", port=free_port(), controller_port=free_port())
    try:
        broker.start(timeout=120)
        bundle, kind = pick_bundle(home)
        setup = Setup(broker.bootstrap, home, "in-live", 0, bundle, kind, log=log)
        kafkautil.create_topics(broker.bootstrap, ["in-live", "out-live"])
        templates = home / "templates.jsonl"
        latency.write_templates(data.generate(60_000, 50_000).records, templates)
        (home / "data").mkdir()
        env = worker_env(setup, app_id="live", scores="out-live", data_dir=home / "data" / "w",
                         input_topic="in-live")  # fmt: skip
        variant = os.environ.get("BENCH_VARIANT", "worker")
        worker = PatchedWorker(env, home / "worker.log", variant=variant).start()
        worker.wait_ready(120)
        assert worker.proc is not None
        duration = seconds + 10
        cmd = module_command("bench.loadgen", "--bootstrap", broker.bootstrap, "--topic",
                             "in-live", "--templates", str(templates), "--rate", str(rate),
                             "--seconds", str(duration), "--prefix", "live",
                             "--sent", str(home / "sent.json"))  # fmt: skip
        gen = threading.Thread(
            target=subprocess.run, args=(cmd,), kwargs={"env": child_env(), "check": True}
        )
        gen.start()
        time.sleep(5)  # warm
        cpu = CpuMeter(worker.proc.pid)
        before = worker.metric("intentflow_inference_batch_events_count")
        events_before = worker.metric("intentflow_inference_batch_events_sum")
        raw = home / "live.folded"
        profiling.start_record(worker.proc.pid, raw, seconds, "raw", log=home / "py-spy.log").wait()
        busy = cpu.seconds()
        batches = worker.metric("intentflow_inference_batch_events_count") - before
        events = worker.metric("intentflow_inference_batch_events_sum") - events_before
        gen.join()
        worker.stop()
        text, _ = profiling.summarize(raw)
        header = (
            f"# {variant} at {rate:,.0f} events/s offered (not a drain), py-spy "
            f"{seconds:.0f} s; load average {load_avg()}; {kind}\n"
            f"# worker CPU {100 * busy / seconds:.0f}% of a core = "
            f"{busy / max(events, 1) * 1e6:,.0f} µs per event; {batches:,.0f} batches, "
            f"{events / max(batches, 1):.1f} events per batch\n\n"
        )
        out.mkdir(parents=True, exist_ok=True)
        suffix = "" if variant == "worker" else "-" + variant.split("+", 1)[1].replace(",", "-")
        (out / f"worker-profile-live{suffix}.txt").write_text(header + text)
        shutil.copy(raw, out / f"worker-profile-live{suffix}.folded.txt")
        print(header)
    finally:
        broker.stop()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
