"""``intentflow demo``: the whole pipeline on this machine, in one command.

It starts (or reuses) the local Kafka broker, creates the topics, trains a model on simulated
traffic unless one is already built, starts a worker, streams live shoppers (with a few
malformed events) and shows scores as they arrive. It ends on Ctrl-C or after ``--seconds``
with a summary: events, scores, dead letters, end-to-end latency and where /metrics is.

It prints one line per step, so that the first scores are on the first screen. The training
steps run as their own commands with their output in ``var/demo-train.log``; on a terminal
their progress bars show.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import click
import orjson

from streams.devtools.localkafka import DEFAULT_HOME, LocalKafka, broker_ready
from streams.errors import IntentflowError, ModelError
from streams.kafka.connection import connection
from streams.progress import on_terminal
from streams.settings import Settings, load_settings

# Under the working directory (the repository, for `make demo`): generated logs and state.
DATA = Path("var") / "demo-data"
TRAIN_LOG = Path("var") / "demo-train.log"
TAOBAO_CSV = Path("data") / "taobao" / "user_behavior_815_users.csv"  # ships with the repo


@dataclass
class Tally:
    """What the demo saw, shared between its producer and consumer threads."""

    sent_at: dict[str, float] = field(default_factory=dict)  # event_id -> produce time
    valid: int = 0
    malformed: int = 0
    scored: dict[str, float] = field(default_factory=dict)  # event_id -> latency seconds
    duplicates: int = 0
    dead_letters: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _step(message: str) -> None:
    click.secho(f"==> {message}", fg="cyan", err=True)


def _near(path: Path) -> str:
    """``path`` relative to the working directory when it is under it (shorter, and the same
    on every machine)."""
    try:
        return str(path.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _run(args: list[str], env: dict[str, str]) -> None:
    """Run ``intentflow ARGS`` with its output in TRAIN_LOG (its progress bars, on a terminal,
    stay on screen); on failure, show the end of the log and stop."""
    live = on_terminal()
    cmd = [sys.executable, "-m", "streams.cli", *args, *([] if live else ["--quiet"])]
    shown = "intentflow " + " ".join(cmd[3:])
    TRAIN_LOG.parent.mkdir(parents=True, exist_ok=True)
    with TRAIN_LOG.open("ab") as log:
        log.write(f"$ {shown}\n".encode())
        log.flush()
        stderr = None if live else subprocess.STDOUT
        result = subprocess.run(cmd, env=env, stdout=log, stderr=stderr, check=False)
    if result.returncode != 0:
        for line in TRAIN_LOG.read_text(errors="replace").splitlines()[-15:]:
            click.echo(f"  {line}", err=True)
        raise IntentflowError(
            f"`{shown}` failed with exit code {result.returncode}; see {TRAIN_LOG}"
        )


def ensure_model(link: Path, dataset: str, env: dict[str, str]) -> None:
    """Reuse the bundle behind ``link`` if it loads; otherwise train and export one."""
    from streams.model.bundle import load_bundle

    try:
        bundle = load_bundle(link)
        _step(f"reusing model {bundle.model_version} ({link})")
        return
    except ModelError as exc:
        source = "the Taobao sample" if dataset == "taobao" else "2,000 simulated shoppers (3 days)"
        _step(
            f"no usable model at {link} ({exc.__class__.__name__}): training one on {source}, "
            f"log {TRAIN_LOG}"
        )
    started = time.monotonic()
    DATA.mkdir(parents=True, exist_ok=True)
    if dataset == "taobao":
        events, truth = DATA / "taobao.jsonl", None
        if not events.exists():
            _run(["import-taobao", str(TAOBAO_CSV), "--out", str(events)], env)
    else:
        events, truth = DATA / "sim-train.jsonl", DATA / "sim-train.truth.jsonl"
        if not events.exists():
            _run(["simulate", "--users", "2000", "--duration", "3d", "--seed", "7",
                  "--out", str(events), "--truth-out", str(truth)], env)  # fmt: skip
    out = link.parent / "bundles" / f"{dataset}-{{model_version}}"
    cmd = ["train", "--events", str(events), "--out", str(out), "--epochs", "20"]
    if truth is not None:
        cmd += ["--truth", str(truth)]
    _run(cmd, env)
    built = max((link.parent / "bundles").glob(f"{dataset}-*"), key=lambda p: p.stat().st_mtime)
    meta = json.loads((built / "metadata.json").read_text(encoding="utf-8"))
    val, base = meta["metrics"]["validation"], meta["metrics"]["baselines"]
    _step(
        f"trained model {meta['model_version']} in {time.monotonic() - started:.0f}s: "
        f"roc_auc {val['roc_auc']:.3f} on {val['rows']:,} validation snapshots (logistic "
        f"regression {base['logistic_regression']['roc_auc']:.3f}); report {built}/report.md"
    )
    tmp = link.with_name(link.name + ".tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(os.path.relpath(built, link.parent))
    os.replace(tmp, link)


def traffic(dataset: str, seed: int) -> Iterator[tuple[bytes, bytes, str | None]]:
    """(key, payload, event_id or None when malformed), endlessly for simulated shoppers."""
    if dataset == "taobao":
        with open(DATA / "taobao.jsonl", "rb") as lines:
            for line in lines:
                event = orjson.loads(line)
                yield event["user_id"].encode(), line.rstrip(b"\n"), event["event_id"]
        return
    from streams.sources.simulate.stream import generate

    for round_ in itertools.count():
        for record in generate(500, 86_400, seed + round_, 0.01, datetime.now(UTC)):
            yield record.key, record.payload, record.event_id if record.valid else None


def produce_loop(
    settings: Settings, dataset: str, rate: float, tally: Tally, stop: threading.Event
) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(**connection(settings).kafka_python(), acks="all", linger_ms=5)
    began = time.monotonic()
    for n, (key, payload, event_id) in enumerate(traffic(dataset, seed=int(time.time()))):
        if stop.is_set():
            break
        delay = began + n / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        with tally.lock:
            if event_id is None:
                tally.malformed += 1
            else:
                tally.valid += 1
                tally.sent_at[event_id] = time.time()
        producer.send(settings.topic_events, key=key, value=payload)
    producer.flush(30)
    producer.close(10)


def consume_loop(
    settings: Settings, tally: Tally, stop: threading.Event, ready: threading.Event, show: float
) -> None:
    from kafka import KafkaConsumer, TopicPartition

    from streams.kafka.tail import format_score

    consumer = KafkaConsumer(
        **connection(settings).kafka_python(), group_id=None, enable_auto_commit=False
    )
    # purchase-scores.v2 when the worker publishes it: every v1 field and the reasons (why=)
    scores = settings.scores_v2_topic if settings.publish_scores_v2 else settings.topic_scores
    partitions = [
        TopicPartition(topic, p)
        for topic in (scores, settings.topic_dlq)
        for p in sorted(consumer.partitions_for_topic(topic) or ())
    ]
    consumer.assign(partitions)
    consumer.seek_to_end()
    for tp in partitions:  # resolve the end offsets now, before any traffic is produced
        consumer.position(tp)
    ready.set()
    last_shown = 0.0
    while not stop.is_set():
        for tp, records in consumer.poll(timeout_ms=300).items():
            for record in records:
                now = time.time()
                if tp.topic == settings.topic_dlq:
                    with tally.lock:
                        tally.dead_letters += 1
                    letter = orjson.loads(record.value)
                    click.secho(
                        f"  DLQ  {letter['error_class']}: {letter['reason'][:90]}", fg="yellow"
                    )
                    continue
                event_id = orjson.loads(record.value)["event_id"]
                with tally.lock:
                    sent = tally.sent_at.get(event_id)
                    if event_id in tally.scored:
                        tally.duplicates += 1
                    elif sent is not None:
                        tally.scored[event_id] = now - sent
                if now - last_shown >= show:
                    last_shown = now
                    click.echo("  " + format_score(record.value))
    consumer.close()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


@click.command("demo")
@click.option("--seconds", type=float, default=0, help="Stop after this long (0: on Ctrl-C).")
@click.option("--data", "dataset", type=click.Choice(["sim", "taobao"]), default="sim")
@click.option("--rate", type=float, default=200.0, show_default=True, help="Events per second.")
@click.option("--show-every", type=float, default=0.25, show_default=True,
              help="Show at most one score line per this many seconds.")  # fmt: skip
def demo_command(seconds: float, dataset: str, rate: float, show_every: float) -> None:
    """Broker, model, worker, live shoppers and scores, in one command."""
    base = load_settings()
    # Each demo run gets its own topics, consumer group and state, so that state left by an
    # earlier run (or another version) on a long-lived local broker never leaks into this one.
    run = datetime.now(UTC).strftime("demo-%Y%m%d-%H%M%S")
    scoped = {
        "topic_events": f"{base.topic_events}.{run}",
        "topic_scores": f"{base.topic_scores}.{run}",
        "topic_dlq": f"{base.topic_dlq}.{run}",
        "app_id": f"{base.app_id}-{run}",
        "data_dir": str(Path("var").absolute() / "demo" / run),
        # The simulated shoppers live a day in a few minutes: their events are dated up to a day
        # after they are produced, which the worker would otherwise reject as clock skew.
        "max_clock_skew_seconds": str(2 * 86_400),
    }
    settings = load_settings(**scoped)
    env = dict(os.environ, **{f"INTENTFLOW_{k.upper()}": v for k, v in scoped.items()})
    started_broker: LocalKafka | None = None
    if broker_ready(settings.kafka_bootstrap):
        _step(f"using the Kafka broker at {settings.kafka_bootstrap}")
    else:
        port = int(settings.bootstrap_servers[0].rpartition(":")[2])
        started_broker = LocalKafka(home=DEFAULT_HOME, port=port, controller_port=port + 1)
        kafka_log = _near(started_broker.log_file)
        _step(f"starting Kafka at {started_broker.bootstrap} (log {kafka_log})")
        took = started_broker.start(timeout=120)
        _step(f"Kafka ready in {took:.1f}s")
    from streams.kafka.topics import create_topics

    outcomes = create_topics(settings)
    names = ", ".join(name.removesuffix(f".{run}") for name in outcomes)
    if all(o.startswith("created") for o in outcomes.values()):
        _step(f"created topics {names} (suffix .{run}, for this run only)")
    else:
        _step("topics: " + "; ".join(f"{n} {o}" for n, o in outcomes.items()))
    model_link = settings.model_path if dataset == "sim" else Path("models/taobao-current")
    ensure_model(model_link, dataset, env)
    if dataset == "taobao" and not (DATA / "taobao.jsonl").exists():
        _run(["import-taobao", str(TAOBAO_CSV), "--out", str(DATA / "taobao.jsonl")], env)

    log_path = Path("var") / "demo-worker.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    worker_env = dict(env, INTENTFLOW_MODEL_PATH=str(model_link))
    _step(f"starting a worker (log {log_path})")
    with open(log_path, "ab") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"], env=worker_env,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    metrics_url = f"http://{settings.web_host}:{settings.web_port}"
    # Producing stops first; consuming goes on while the last scores drain.
    tally, stop_producing, stop = Tally(), threading.Event(), threading.Event()
    interrupted = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: interrupted.set())
    try:
        _wait_ready(worker, metrics_url, log_path)
        _step(f"worker ready; streaming {dataset} shoppers at {rate:.0f} events/s")
        ready = threading.Event()
        consumer = threading.Thread(
            target=consume_loop, args=(settings, tally, stop, ready, show_every)
        )
        consumer.start()
        if not ready.wait(30):
            raise IntentflowError("could not subscribe to the scores topic within 30s")
        producer = threading.Thread(
            target=produce_loop, args=(settings, dataset, rate, tally, stop_producing)
        )
        producer.start()
        deadline = time.monotonic() + seconds if seconds > 0 else float("inf")
        while not interrupted.is_set() and time.monotonic() < deadline and producer.is_alive():
            if worker.poll() is not None:
                raise IntentflowError(f"the worker exited with {worker.returncode}; see {log_path}")
            time.sleep(0.2)
        stop_producing.set()
        producer.join(30)
        _drain(tally)
        stop.set()
        consumer.join(10)
    finally:
        stop_producing.set()
        stop.set()
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
        if started_broker is not None:
            started_broker.stop()
    _summary(tally, metrics_url)


def _wait_ready(worker: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise IntentflowError(f"the worker exited with {worker.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=1) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise IntentflowError(f"the worker was not ready within 120s; see {log_path}")


def _drain(tally: Tally, timeout: float = 20.0) -> None:
    """Wait (bounded) for the scores and dead letters of events already sent."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with tally.lock:
            if len(tally.scored) >= tally.valid and tally.dead_letters >= tally.malformed:
                return
        time.sleep(0.2)


def _summary(tally: Tally, metrics_url: str) -> None:
    latencies = [v * 1000 for v in tally.scored.values()]
    click.echo("")
    click.secho("intentflow demo summary", bold=True)
    click.echo(f"  events produced      {tally.valid + tally.malformed:>8,}"
               f"  ({tally.valid:,} valid, {tally.malformed:,} malformed)")  # fmt: skip
    click.echo(f"  scores received      {len(tally.scored):>8,}  ({tally.duplicates} duplicates)")
    click.echo(f"  dead letters         {tally.dead_letters:>8,}")
    click.echo(f"  latency produce->score  p50 {_percentile(latencies, 0.5):.1f} ms"
               f"  p99 {_percentile(latencies, 0.99):.1f} ms")  # fmt: skip
    click.echo(f"  metrics              {metrics_url}/metrics (while a worker runs)")
