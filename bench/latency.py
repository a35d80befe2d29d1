"""Scenario 2: event-to-score latency of one running worker at fixed offered loads.

A paced producer (``bench.loadgen``, its own process) offers each rate for a fixed time; a
consumer thread here reads the scores topic and notes the wall time each score arrives. The
latency of an event is (score arrival - send time of the event), joined on ``event_id``; the
events are stamped with ``occurred_at`` = send time too, so the occurred_at-based latency is
reported beside it. A phase is over when every event of it has a score (or after a grace
period, and the missing ones are counted), so phases never overlap.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Consumer, TopicPartition

from bench import kafkautil
from bench.drain import Setup, launch
from bench.procs import CpuMeter, child_env, module_command, unique

WARM_UP_SECONDS = 5.0  # at the first rate, not measured: imports, first batches, metadata


class ScoreTap:
    """Reads a scores topic in a thread; remembers (arrival wall time, occurred_at) per id."""

    def __init__(self, bootstrap: str, topic: str, partitions: int = 4) -> None:
        self.arrived: dict[str, tuple[float, float]] = {}
        self._stop = threading.Event()
        self._consumer = Consumer(
            kafkautil.rdkafka(
                bootstrap,
                **{
                    "group.id": unique("tap"),
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "fetch.wait.max.ms": 5,
                    "fetch.min.bytes": 1,
                },
            )
        )
        self._consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        self._thread = threading.Thread(target=self._run, name="score-tap", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        arrived = self.arrived
        while not self._stop.is_set():
            # poll returns as soon as a record is there; consume(n, timeout) would wait for n
            # records or the whole timeout, and stamp them all late by up to that timeout
            first = self._consumer.poll(0.05)
            if first is None:
                continue
            now = time.time()
            for msg in [first, *self._consumer.consume(1000, 0)]:  # what is already here
                if msg.error():
                    continue
                score = orjson.loads(msg.value())
                occurred = datetime.fromisoformat(score["occurred_at"]).timestamp()
                arrived[score["event_id"]] = (now, occurred)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._consumer.close()


def percentiles(values_ms: np.ndarray) -> dict[str, float]:
    if values_ms.size == 0:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan"), "max": float("nan")}
    p50, p95, p99 = np.percentile(values_ms, [50, 95, 99])
    return {
        "p50": round(float(p50), 2),
        "p95": round(float(p95), 2),
        "p99": round(float(p99), 2),
        "max": round(float(values_ms.max()), 2),
    }


@dataclass
class Phase:
    offered_per_s: float
    label: str
    sent: int = 0
    scored: int = 0
    achieved_per_s: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    occurred_latency_ms: dict[str, float] = field(default_factory=dict)
    cpu_percent: float = 0.0  # CPU of the system under test over the phase, % of one core
    cpu_us_per_event: float = 0.0  # that CPU per event sent (idle timers included: live cost)
    # the worker's own counters over the phase (a worker only): batches scored, events per
    # batch, onnxruntime time per batch, checkpoints
    worker: dict[str, float] = field(default_factory=dict)
    # (seconds since the phase began, latency ms) per scored event, for the timeline plot
    series: list[tuple[float, float]] = field(default_factory=list, repr=False)

    def to_row(self) -> dict[str, Any]:
        row: dict[str, Any] = {"offered_per_s": round(self.offered_per_s, 1), "label": self.label}
        row.update(self.latency_ms)
        row.update(
            achieved_per_s=round(self.achieved_per_s, 1),
            sent=self.sent,
            scored=self.scored,
            occurred_at_based=self.occurred_latency_ms,
            cpu_percent=round(self.cpu_percent, 1),
            cpu_us_per_event=round(self.cpu_us_per_event, 1),
        )
        if self.worker:
            row["worker_metrics"] = self.worker
        return row


# Histograms and counters of ``streams.worker.metrics`` read around each phase
WORKER_SERIES = (
    "intentflow_inference_batch_events_count",
    "intentflow_inference_batch_events_sum",
    "intentflow_inference_duration_seconds_sum",
    "intentflow_checkpoint_duration_seconds_count",
    "intentflow_checkpoint_duration_seconds_sum",
    "intentflow_offset_rewinds_total",
    "intentflow_event_to_score_latency_seconds_sum",
    "intentflow_event_to_score_latency_seconds_count",
    "intentflow_ingest_to_score_latency_seconds_sum",
    "intentflow_ingest_to_score_latency_seconds_count",
)


def scrape(url: str | None) -> dict[str, float]:
    """Sums of ``WORKER_SERIES`` from a worker's /metrics (empty: no URL or no answer)."""
    if url is None:
        return {}
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(url, timeout=2.0) as resp:
            body = resp.read().decode()
    except OSError:
        return {}
    out = dict.fromkeys(WORKER_SERIES, 0.0)
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name in out:
                out[sample.name] += sample.value
    return out


def batch_figures(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Per-phase figures from two scrapes: batches, events per batch, ms per batch."""
    if not before or not after:
        return {}
    d = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in WORKER_SERIES}
    batches = d["intentflow_inference_batch_events_count"]
    checkpoints = d["intentflow_checkpoint_duration_seconds_count"]
    return {
        "batches": batches,
        "events_per_batch": round(d["intentflow_inference_batch_events_sum"] / batches, 1)
        if batches
        else 0.0,
        "inference_ms_per_batch": round(
            1000 * d["intentflow_inference_duration_seconds_sum"] / batches, 3
        )
        if batches
        else 0.0,
        "checkpoints": checkpoints,
        "checkpoint_ms_mean": round(
            1000 * d["intentflow_checkpoint_duration_seconds_sum"] / checkpoints, 2
        )
        if checkpoints
        else 0.0,
        "offset_rewinds": d["intentflow_offset_rewinds_total"],
        # the worker's own view: from occurred_at (= the send time here), and from taking the
        # record, to handing its score to the producer; the rest is delivery and the broker
        "send_to_handoff_ms_mean": _mean_ms(d, "intentflow_event_to_score_latency_seconds"),
        "taken_to_handoff_ms_mean": _mean_ms(d, "intentflow_ingest_to_score_latency_seconds"),
    }


def _mean_ms(delta: dict[str, float], histogram: str) -> float:
    n = delta[f"{histogram}_count"]
    return round(1000 * delta[f"{histogram}_sum"] / n, 2) if n else 0.0


def write_templates(records: list[tuple[bytes, bytes]], path: Path) -> None:
    with path.open("wb") as fh:
        for key, payload in records:
            fh.write(orjson.dumps({"key": key.decode(), "event": orjson.loads(payload)}) + b"\n")


def run_phase(
    setup: Setup,
    tap: ScoreTap,
    cpu: CpuMeter,
    *,
    topic: str,
    templates: Path,
    rate: float,
    seconds: float,
    label: str,
    offset: int,
    metrics_url: str | None = None,
) -> Phase:
    prefix = unique(f"lat{int(rate)}")
    sent_file = setup.home / f"{prefix}.sent.json"
    cmd = module_command(
        "bench.loadgen",
        "--bootstrap",
        setup.bootstrap,
        "--topic",
        topic,
        "--templates",
        str(templates),
        "--rate",
        str(rate),
        "--seconds",
        str(seconds),
        "--prefix",
        prefix,
        "--offset",
        str(offset),
        "--sent",
        str(sent_file),
    )
    cpu_before = cpu.seconds()
    scraped = scrape(metrics_url)
    t0 = time.time()
    result = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"loadgen failed: {result.stdout}{result.stderr}")
    info = orjson.loads(sent_file.read_bytes())
    sent_at = info["sent_at"]
    ids = [f"{prefix}-{i}" for i in range(len(sent_at))]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and sum(1 for i in ids[-200:] if i in tap.arrived) < 200:
        time.sleep(0.05)
    while time.monotonic() < deadline and any(i not in tap.arrived for i in ids):
        time.sleep(0.1)
    busy = cpu.seconds() - cpu_before
    counters = batch_figures(scraped, scrape(metrics_url))
    lat, occ, series = [], [], []
    start = sent_at[0] if sent_at else 0.0
    for event_id, sent in zip(ids, sent_at, strict=True):
        got = tap.arrived.get(event_id)
        if got is not None:
            lat.append((got[0] - sent) * 1000)
            occ.append((got[0] - got[1]) * 1000)
            series.append((sent - start, lat[-1]))
    phase = Phase(rate, label, sent=len(ids), scored=len(lat), series=series, worker=counters)
    phase.achieved_per_s = len(ids) / info["elapsed"]
    phase.latency_ms = percentiles(np.asarray(lat))
    phase.occurred_latency_ms = percentiles(np.asarray(occ))
    phase.cpu_percent = 100 * busy / max(time.time() - t0, 1e-6)
    phase.cpu_us_per_event = busy / max(len(ids), 1) * 1e6
    return phase


def run(
    setup: Setup,
    templates_src: list[tuple[bytes, bytes]],
    rates: list[tuple[float, str]],
    seconds: float,
    *,
    system: str = "worker",
    profile: Callable[[int], list[subprocess.Popen[bytes]]] | None = None,
) -> list[Phase]:
    """Start one ``system`` (a ``bench.drain`` system name), warm it up, then offer each rate
    in turn. A worker is waited for until /readyz; any system is warmed up for
    ``WARM_UP_SECONDS`` at the first rate, unmeasured, before the phases. With ``profile``
    (pid -> samplers started on it), one more phase at the first rate runs while they sample:
    it is not measured, so the samplers cannot disturb the figures."""
    tag = unique(f"latency-{re.sub(r'[^A-Za-z0-9_-]+', '_', system)[:60]}")  # a variant too
    topic, scores = f"in-{tag}", f"out-{tag}"
    kafkautil.create_topics(setup.bootstrap, [topic, scores, f"{scores}.v2"])  # v2: OUTPUT.v2
    templates = setup.home / f"{tag}.templates.jsonl"
    write_templates(templates_src, templates)
    running = launch(setup, system, scores, tag, input_topic=topic)
    tap = ScoreTap(setup.bootstrap, scores)
    phases = []
    try:
        running.wait_ready(120)
        cpu = CpuMeter(running.pid)
        metrics_url = (
            running.ready_url.replace("/readyz", "/metrics") if running.ready_url else None
        )
        offset = 0
        warm = run_phase(
            setup,
            tap,
            cpu,
            topic=topic,
            templates=templates,
            rate=rates[0][0],
            seconds=WARM_UP_SECONDS,
            label="warm-up",
            offset=offset,
        )
        offset += warm.sent
        setup.log(f"  warm-up: {warm.scored}/{warm.sent} scored, p50 {warm.latency_ms['p50']} ms")
        for rate, label in rates:
            phase = run_phase(
                setup,
                tap,
                cpu,
                topic=topic,
                templates=templates,
                rate=rate,
                seconds=seconds,
                label=label,
                offset=offset,
                metrics_url=metrics_url,
            )
            offset += phase.sent
            lat = phase.latency_ms
            setup.log(
                f"  {system} {label}: offered {rate:,.0f}/s (achieved {phase.achieved_per_s:,.0f}"
                f"/s), scored {phase.scored:,}/{phase.sent:,}; p50 {lat['p50']} p95 {lat['p95']} "
                f"p99 {lat['p99']} max {lat['max']} ms; CPU {phase.cpu_percent:.0f}% of a core, "
                f"{phase.cpu_us_per_event:.0f} µs/event"
                + (
                    f"; {phase.worker['batches']:.0f} batches of "
                    f"{phase.worker['events_per_batch']} events"
                    if phase.worker
                    else ""
                )
            )
            phases.append(phase)
        if profile is not None:
            samplers = profile(running.pid)
            run_phase(
                setup,
                tap,
                cpu,
                topic=topic,
                templates=templates,
                rate=rates[0][0],
                seconds=seconds,
                label="profiled",
                offset=offset,
            )
            for sampler in samplers:
                sampler.wait(60)
    finally:
        tap.close()
        running.stop()
    return phases


def plot_timeline(phases: list[Phase], path: Path) -> None:
    """Latency of every event against its send time, one panel per offered rate: shows
    whether the tail is steady queueing or periodic stalls."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(phases), 1, figsize=(9, 1.9 * len(phases)), sharex=True)
    for ax, p in zip(list(np.atleast_1d(axes)), phases, strict=True):
        if p.series:
            t, ms = zip(*p.series, strict=True)
            ax.plot(t, ms, ",", alpha=0.5)
        ax.set_yscale("log")
        ax.set_ylabel("ms")
        ax.set_title(f"{p.label}: {p.offered_per_s:,.0f} events/s", fontsize=8, loc="left")
        ax.grid(True, which="both", alpha=0.3)
    np.atleast_1d(axes)[-1].set_xlabel("seconds into the phase (send time)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot(phases: list[Phase], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    x = [p.offered_per_s for p in phases]
    for key, style in (("p50", "o-"), ("p95", "s-"), ("p99", "^-"), ("max", "x--")):
        ax.plot(x, [p.latency_ms[key] for p in phases], style, label=key)
    ax.axhline(50, color="grey", lw=0.8, ls=":", label="50 ms target (p99 @ 1,000/s)")
    ax.set_yscale("log")
    ax.set_xlabel("offered load (events/s)")
    ax.set_ylabel("event-to-score latency (ms)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
