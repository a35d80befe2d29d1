"""Scenario 1: drain a preloaded topic with four consumers and count what each delivered.

Every system runs in its own process with its own consumer group and its own output topic,
and reads the same preloaded input topic. A run is timed from the launch of the process until
the output topic's end offsets add up to the number of input events. The steady-state rate is
``events / (CreateTime of the last output - CreateTime of the first output)``, read from the
first and last record of every output partition, so start-up (Python imports, group join,
Faust recovery) is excluded from it and included in the total rate.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench import agreement, kafkautil
from bench.procs import CpuMeter, Proc, connection_env, module_command, unique
from tests.integration.harness import WorkerProcess

SYSTEMS = ("passthrough", "worker", "plain_loop", "quix")


# The benchmark's own pseudonym key (not a secret: scratch data), so that state.py can key the
# profiles it seeds into a worker's changelog exactly as that worker looks them up
PSEUDONYM_KEYS = "bench:intentflow-benchmark-scratch-key"


def old_worker_name(commit: str) -> str:
    """The system name of the worker of another commit: ``worker_<7 hex digits>``."""
    return f"worker_{commit[:7]}"


@dataclass
class Setup:
    """What every scenario shares: the broker, a scratch directory, the input and the model."""

    bootstrap: str
    home: Path
    input_topic: str
    events: int
    bundle: Path  # the bundle directory (or symlink) the worker and the jobs serve
    bundle_kind: str
    batch_max: int = 500  # the baselines' batch size
    worker_batch_max: int | None = None  # None: each worker at its own default
    # worker_<commit> -> an export of that commit, whose worker runs as that system
    sources: dict[str, Path] = field(default_factory=dict)
    log: Callable[[str], None] = print


@dataclass
class DrainRun:
    system: str
    rep: int
    events: int
    delivered: int
    launched_at: float
    done_at: float
    first_output: float
    last_output: float
    ready_at: float | None = None
    cpu_seconds: float = 0.0
    rss_mb: float = 0.0
    distinct_event_ids: int | None = None  # checked on the first repetition of each system
    note: str = ""
    # read back on a verified run (not written to the results: 200k ids)
    probabilities: agreement.Probabilities | None = field(default=None, repr=False)

    @property
    def steady_per_s(self) -> float:
        return self.events / max(self.last_output - self.first_output, 1e-6)

    @property
    def total_per_s(self) -> float:
        return self.events / max(self.done_at - self.launched_at, 1e-6)

    @property
    def from_ready_per_s(self) -> float | None:
        if self.ready_at is None:
            return None
        return self.events / max(self.done_at - self.ready_at, 1e-6)

    @property
    def cpu_us_per_event(self) -> float:
        return self.cpu_seconds / self.events * 1e6

    def to_dict(self) -> dict[str, Any]:
        probabilities, self.probabilities = self.probabilities, None
        try:
            d = asdict(self)
        finally:
            self.probabilities = probabilities
        if probabilities is not None:
            d["scores_read"] = {
                "records": probabilities.records,
                "event_ids": len(probabilities.by_event),
                "duplicates": probabilities.duplicates,
                "duplicate_conflicts": probabilities.duplicate_conflicts,
                "unreadable": probabilities.unreadable,
            }
        d.update(
            steady_per_s=round(self.steady_per_s, 1),
            total_per_s=round(self.total_per_s, 1),
            from_ready_per_s=None
            if self.ready_at is None
            else round(self.from_ready_per_s or 0, 1),
            cpu_us_per_event=round(self.cpu_us_per_event, 1),
        )
        return d


class SourceWorkerProcess(WorkerProcess):
    """``intentflow worker`` from another tree (an export of an older commit): the same
    INTENTFLOW_* settings, run with that tree first on the path and as the working directory."""

    def __init__(self, env: dict[str, str], log_path: Path, source: Path) -> None:
        super().__init__(env, log_path)
        self.source = source

    def start(self) -> SourceWorkerProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("INTENTFLOW_")}
        env.update(self.env)
        env["INTENTFLOW_WEB_PORT"] = str(self.web_port)
        env.setdefault("INTENTFLOW_WEB_HOST", "127.0.0.1")
        env["PYTHONPATH"] = str(self.source)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "worker"],
                env=env, cwd=self.source, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        return self


class Launched:
    """A running system: its process, CPU meter, and (for a worker) its readiness URL."""

    def __init__(
        self, proc: Proc | WorkerProcess, launched_at: float, ready_url: str | None = None
    ) -> None:
        self.proc = proc
        self.launched_at = launched_at
        if isinstance(proc, WorkerProcess):
            assert proc.proc is not None
            self.pid = proc.proc.pid
            ready_url = ready_url or proc.url + "/readyz"
        else:
            self.pid = proc.pid
        self.ready_url = ready_url
        self.cpu = CpuMeter(self.pid)
        self.ready_at: float | None = None

    def alive(self) -> bool:
        if isinstance(self.proc, Proc):
            return self.proc.alive()
        return self.proc.proc is not None and self.proc.proc.poll() is None

    def poll_ready(self) -> None:
        if self.ready_at is not None or self.ready_url is None:
            return
        try:
            with urllib.request.urlopen(self.ready_url, timeout=0.5) as resp:
                if resp.status == 200:
                    self.ready_at = time.time()
        except (OSError, urllib.error.HTTPError):
            return

    def wait_ready(self, timeout: float) -> None:
        """Until a worker answers /readyz 200 (a system without a URL: at once)."""
        deadline = time.monotonic() + timeout
        while self.ready_url is not None and self.ready_at is None:
            if not self.alive():
                raise RuntimeError(f"exited before it was ready:\n{self.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"not ready within {timeout:.0f} s:\n{self.log()}")
            self.poll_ready()
            time.sleep(0.1)

    def stop(self) -> None:
        self.proc.stop()

    def log(self) -> str:
        """The end of its log, or, if it raised, its last traceback (a worker's shutdown
        chatter would otherwise push the error out of the tail)."""
        text = self.proc.log(tail=400)
        if "Traceback (most recent call last)" in text:
            last = text[text.rindex("Traceback (most recent call last)") :].splitlines()
            return "\n".join([line for line in last if line.strip(" ^")][:60])
        return "\n".join(text.splitlines()[-40:])


def worker_env(
    setup: Setup,
    *,
    app_id: str,
    scores: str,
    data_dir: Path,
    input_topic: str | None = None,
    **extra: str,
) -> dict[str, str]:
    """INTENTFLOW_* settings of a benchmark worker (everything else at its default)."""
    env = {
        **connection_env(),  # the broker's security (bench.run sets it)
        "INTENTFLOW_KAFKA_BOOTSTRAP": setup.bootstrap,
        "INTENTFLOW_TOPIC_EVENTS": input_topic or setup.input_topic,
        "INTENTFLOW_TOPIC_SCORES": scores,
        "INTENTFLOW_TOPIC_DLQ": f"{scores}.dlq",
        "INTENTFLOW_APP_ID": app_id,
        "INTENTFLOW_PARTITIONS": "4",
        "INTENTFLOW_MODEL_PATH": str(setup.bundle),
        "INTENTFLOW_DATA_DIR": str(data_dir),
        "INTENTFLOW_KAFKA_CONNECT_TIMEOUT_SECONDS": "20",
        "INTENTFLOW_PSEUDONYM_KEYS": PSEUDONYM_KEYS,  # an older worker ignores it
    }
    if setup.worker_batch_max is not None:
        env["INTENTFLOW_BATCH_MAX"] = str(setup.worker_batch_max)
    env.update(extra)
    return env


def launch(
    setup: Setup, system: str, output: str, tag: str, *, input_topic: str | None = None
) -> Launched:
    """Start ``system`` reading the input topic (or ``input_topic``) and writing ``output``."""
    logs = setup.home / "logs"
    source = input_topic or setup.input_topic
    common = [
        "--bootstrap",
        setup.bootstrap,
        "--input",
        source,
        "--output",
        output,
        "--group",
        unique(f"g-{system}"),
        "--batch-max",
        str(setup.batch_max),
    ]
    base, *overrides = system.split("@")
    if base == "worker" or base in setup.sources:
        # A worker variant is a set of settings: worker@INTENTFLOW_X=1@INTENTFLOW_Y=2; the
        # worker of another commit is worker_<commit> (an export of it, setup.sources)
        (setup.home / "data").mkdir(parents=True, exist_ok=True)
        env = worker_env(
            setup,
            app_id=unique("bench-worker"),
            scores=output,
            data_dir=setup.home / "data" / tag,
            input_topic=source,
        )
        env.update(o.split("=", 1) for o in overrides)  # type: ignore[arg-type]
        wp = (
            SourceWorkerProcess(env, logs / f"{tag}.log", setup.sources[base])
            if base in setup.sources
            else WorkerProcess(env, logs / f"{tag}.log")
        )
        launched_at = time.time()
        return Launched(wp.start(), launched_at)
    if system == "passthrough":
        cmd = module_command("bench.systems.passthrough", *common)
    elif system == "plain_loop":
        cmd = module_command("bench.systems.plain_loop", *common, "--bundle", str(setup.bundle))
    elif system in {"quix", "quix_per_message"}:
        mode = "batched" if system == "quix" else "per-message"
        cmd = module_command(
            "bench.systems.quix_job",
            *common,
            "--bundle",
            str(setup.bundle),
            "--state-dir",
            str(setup.home / "quix-state" / tag),
            "--mode",
            mode,
        )
    else:
        raise ValueError(f"unknown system {system!r}")
    proc = Proc(cmd, logs / f"{tag}.log")
    launched_at = time.time()
    return Launched(proc.start(), launched_at)


def wait_for_outputs(
    setup: Setup, running: Launched, output: str, expected: int, *, timeout: float, label: str
) -> float:
    """Poll the output's end offsets until ``expected`` records are there. Returns that time."""
    counter = kafkautil.Counter(setup.bootstrap, output)
    deadline = time.monotonic() + timeout
    last_report = time.monotonic()
    try:
        while True:
            running.poll_ready()
            n = counter.count()
            if n >= expected:
                return time.time()
            if not running.alive():
                raise RuntimeError(f"{label} exited after {n} outputs:\n{running.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{label}: {n} of {expected} outputs after {timeout:.0f}s")
            if time.monotonic() - last_report > 15:
                setup.log(f"    {label}: {n:,}/{expected:,} outputs")
                last_report = time.monotonic()
            time.sleep(0.05)
    finally:
        counter.close()


def drain_once(
    setup: Setup,
    system: str,
    rep: int,
    *,
    verify: bool,
) -> DrainRun:
    """One timed drain of the whole input topic by ``system``."""
    tag = unique(f"{re.sub(r'[^A-Za-z0-9_-]+', '_', system)[:60]}-r{rep}")
    output = f"out-{tag}"
    # purchase-scores.v2 goes to OUTPUT.v2 (the worker's derived name, and the Quix job's)
    kafkautil.create_topics(setup.bootstrap, [output, f"{output}.v2"], config=kafkautil.APPEND_TIME)
    running = launch(setup, system, output, tag)
    timeout = max(180.0, setup.events / 300.0)
    try:
        done_at = wait_for_outputs(setup, running, output, setup.events, timeout=timeout, label=tag)
        cpu = running.cpu.seconds()
        rss = running.cpu.rss_mb()
    finally:
        running.stop()
    first, last = kafkautil.edge_timestamps(setup.bootstrap, output)
    counter = kafkautil.Counter(setup.bootstrap, output)
    delivered = counter.count()
    counter.close()
    run = DrainRun(
        system=system,
        rep=rep,
        events=setup.events,
        delivered=delivered,
        launched_at=running.launched_at,
        done_at=done_at,
        first_output=first,
        last_output=last,
        ready_at=running.ready_at,
        cpu_seconds=cpu,
        rss_mb=rss,
    )
    if verify:
        records = kafkautil.read_all(setup.bootstrap, output)
        run.distinct_event_ids = len({orjson.loads(v)["event_id"] for _, v, _ in records})
        if run.distinct_event_ids < setup.events:
            run.note = f"only {run.distinct_event_ids} distinct event ids of {setup.events}"
        if scores(system):
            run.probabilities = agreement.read_probabilities(v for _, v, _ in records)
    return run


def scores(system: str) -> bool:
    """Whether ``system`` publishes scores (everything but the passthrough)."""
    return system.split("@", maxsplit=1)[0] != "passthrough"
