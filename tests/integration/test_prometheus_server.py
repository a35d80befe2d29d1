"""A real Prometheus server scraping a real worker under simulated load: every dashboard and
alert expression evaluates without error, and the throughput, latency and lag panels have data.

Meant for tests/integration/ (it needs the session broker from tests/conftest.py, the worker
harness and the Prometheus harness).
"""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.harness import WorkerProcess, click_events, produce
from tests.integration.prom import (
    LIVE_PANELS,
    PrometheusServer,
    alert_expressions,
    dashboard_expressions,
    is_finite,
)
from tests.integration.test_worker import make_stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WORKER = 'job="intentflow-worker"'
StartLoad = Callable[[dict[str, str], Path], None]


@pytest.fixture(autouse=True)
def _needs_prometheus() -> None:
    if shutil.which("prometheus") is None:
        pytest.skip("`prometheus` is not installed (apt-get install prometheus; .ci/run does)")


def _produce_forever(bootstrap: str, topic: str, stop: threading.Event) -> None:
    """About 200 events/s, now-stamped (so event-to-score latency is real), 1 in 50 malformed."""
    batch = 0
    while not stop.is_set():
        batch += 1
        records = click_events(
            40, users=50, seed=batch, start=time.time(), step=0.005, prefix=f"b{batch}"
        )
        records.append((b"bad-user", b"{not json"))
        produce(bootstrap, topic, records)
        stop.wait(0.2)


@pytest.fixture
def load() -> Iterator[StartLoad]:
    """Start simulated traffic on a topic: the simulator CLI when it exists, else a producer
    thread. Stopped at teardown."""
    stops: list[threading.Event] = []
    threads: list[threading.Thread] = []
    procs: list[subprocess.Popen[bytes]] = []

    def start(env: dict[str, str], log: Path) -> None:
        if importlib.util.find_spec("streams.simulator") is not None:
            with open(log, "ab") as out:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "streams.cli", "simulate", "--users", "200",
                         "--duration", "1d", "--rate", "200", "--kafka", "--bad-fraction",
                         "0.02", "--seed", "11"],
                        env={**_clean_env(), **env}, stdout=out, stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL, start_new_session=True,
                    )
                )  # fmt: skip
            return
        stop = threading.Event()
        thread = threading.Thread(
            target=_produce_forever,
            args=(env["INTENTFLOW_KAFKA_BOOTSTRAP"], env["INTENTFLOW_TOPIC_EVENTS"], stop),
            daemon=True,
        )
        thread.start()
        stops.append(stop)
        threads.append(thread)

    yield start
    for stop in stops:
        stop.set()
    for thread in threads:
        thread.join(timeout=30)
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("INTENTFLOW_")}


def test_every_dashboard_and_alert_expression_on_a_real_worker(
    bootstrap: str, tmp_path: Path, unique: str, load: StartLoad
) -> None:
    stack = make_stack(bootstrap, tmp_path, unique)  # topics, a test bundle, the env
    env = dict(stack.env, INTENTFLOW_DATA_DIR=str(tmp_path / "worker-data"))
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        worker.wait_ready(timeout=120)
        load(env, tmp_path / "simulator.log")
        target = f"127.0.0.1:{worker.web_port}"
        with PrometheusServer(targets=[target], workdir=tmp_path / "prometheus") as prom:
            prom.wait_for(f"up{{{WORKER}}}", lambda s: len(s) == 1 and s[0].value == 1, 60)
            prom.wait_for(
                f"sum(rate(intentflow_scores_published_total{{{WORKER}}}[15s]))",
                lambda s: bool(s) and s[0].value > 0,
                timeout=120,
            )
            prom.wait_for(f"intentflow_consumer_lag_messages{{{WORKER}}}", bool, timeout=60)
            prom.wait_for(
                f"sum(rate(intentflow_dlq_writes_total{{{WORKER}}}[15s]))",
                lambda s: bool(s) and s[0].value > 0,
                timeout=60,
            )

            expressions = dashboard_expressions() + alert_expressions()
            results = {}
            for expression in expressions:
                results[str(expression)] = prom.samples(expression.expr)  # raises on errors

            live = [
                name for name in results if name.removeprefix("dashboard: ").startswith(LIVE_PANELS)
            ]
            assert len(live) >= 9, live
            empty = {name: results[name] for name in live if not is_finite(results[name])}
            assert not empty, f"live panels without data: {empty}\n{worker.log()}"

            lag = results["dashboard: Consumer lag per partition [A]"]
            assert {s.labels["topic"] for s in lag} == {env["INTENTFLOW_TOPIC_EVENTS"]}
            assert {s.labels["partition"] for s in lag} == {"0", "1", "2", "3"}
            models = results["dashboard: Model served per worker [A]"]
            assert [s.labels["model_version"] for s in models] == ["test-v1"]
            assert results["dashboard: variable instance"][0].labels["instance"] == target
            ready = results["dashboard: Workers up / ready [B]"]
            assert ready and ready[0].value == 1

            # A healthy worker: none of these alert conditions holds.
            for name in (
                "IntentflowWorkerDown",
                "IntentflowWorkerNotReady",
                "IntentflowNoScoresPublished",
                "IntentflowModelReloadFailed",
            ):
                values = [s.value for s in results[f"alerts: {name}"]]
                assert not [v for v in values if not math.isnan(v)], (name, values)

            # The rules were loaded and evaluated by the server without errors.
            rules = prom.rules()
            assert {r["name"] for r in rules} == {e.name for e in alert_expressions()}
            prom.wait_for("vector(1)", lambda _: all(r["health"] == "ok" for r in prom.rules()))
    finally:
        worker.stop()
