"""The Prometheus test harness against a real ``prometheus`` server (no Kafka needed).

Besides the harness itself, this runs every dashboard and alert expression on a real server
that scrapes the worker's metric registry (``streams.worker.metrics.Metrics`` plus Faust's sensors)
served over HTTP, so the PromQL is checked against the real exposition format before the
worker exists. The same check against a real worker lives with the worker's integration tests.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client import start_http_server

from streams.devtools.localkafka import free_port
from streams.worker.metrics import Metrics
from tests.integration.prom import (
    ALERTS,
    LIVE_PANELS,
    PrometheusQueryError,
    PrometheusServer,
    alert_expressions,
    dashboard_expressions,
    is_finite,
)

FAUST_PREFIX = "intentflow"  # setup_prometheus_sensors' default name_prefix: the app name


@pytest.fixture(autouse=True)
def _needs_prometheus() -> None:
    if shutil.which("prometheus") is None:
        pytest.skip("`prometheus` is not installed (apt-get install prometheus; .ci/run does)")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def test_self_scrape_is_up_and_stop_leaves_nothing(tmp_path: Path) -> None:
    with PrometheusServer(workdir=tmp_path) as prom:
        pid, port = prom.pid, prom.port
        assert pid is not None and _alive(pid)
        samples = prom.wait_for(
            'up{job="prometheus"}', lambda s: len(s) == 1 and s[0].value == 1, timeout=30
        )
        assert samples[0].labels["instance"] == f"127.0.0.1:{port}"
        # Prometheus' own metrics arrived through the scrape, not just the synthetic `up`.
        assert prom.samples('prometheus_build_info{job="prometheus"}')
    assert not _alive(pid), f"prometheus (pid {pid}) is still running after stop()"
    assert not _listening(port)


def test_temporary_workdir_is_removed(tmp_path: Path) -> None:
    prom = PrometheusServer()
    with prom:
        workdir = prom.workdir
        assert workdir is not None and (workdir / "tsdb").is_dir()
    assert not workdir.exists()


def test_alert_rules_load_and_evaluate_without_errors(tmp_path: Path) -> None:
    expected = {
        r["alert"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]
    }
    with PrometheusServer(workdir=tmp_path) as prom:

        def all_evaluated(_: object) -> bool:
            rules = prom.rules()
            return {r["name"] for r in rules} == expected and all(
                r.get("health") == "ok" for r in rules
            )

        prom.wait_for("vector(1)", all_evaluated, timeout=30)
        for rule in prom.rules():
            assert rule["type"] == "alerting"
            assert not rule.get("lastError"), f"{rule['name']}: {rule['lastError']}"


def test_bad_promql_raises_with_the_reason(tmp_path: Path) -> None:
    with PrometheusServer(workdir=tmp_path) as prom:
        with pytest.raises(PrometheusQueryError) as err:
            prom.query("sum(rate(intentflow_scores_published_total[1m])")
        assert err.value.error_type == "bad_data"
        assert "intentflow_scores_published_total" in str(err.value)


def _feed(metrics: Metrics, stop: threading.Event) -> None:
    """Traffic-like updates every 50 ms, until ``stop`` is set."""
    metrics.set_model("test-model-1", "fv1")
    metrics.ready.set(1)
    for outcome in ("loaded", "unchanged", "missing", "corrupt", "spec_mismatch"):
        metrics.model_reloads.labels(outcome)
    metrics.model_reloads.labels("loaded").inc()
    i = 0
    while not stop.is_set():
        i += 1
        metrics.events_consumed.labels("valid").inc(10)
        metrics.events_consumed.labels("malformed_json").inc()
        metrics.dlq_writes.labels("malformed_json").inc()
        metrics.scores_published.inc(10)
        for k in range(10):
            metrics.event_to_score_latency.observe(0.01 + 0.002 * k)
            metrics.ingest_to_score_latency.observe(0.002 + 0.0005 * k)
            metrics.purchase_probability.observe((i + k) % 20 / 20)
        metrics.inference_batch_size.observe(10)
        metrics.inference_duration.observe(0.0008)
        metrics.profile_users.set(100 + i)
        for partition in range(4):
            metrics.consumer_lag.labels("clickstream.v1", str(partition)).set((i + partition) % 7)
        metrics.last_event_processed.set_to_current_time()
        stop.wait(0.05)


@pytest.fixture
def exported_metrics() -> Iterator[str]:
    """The worker's registry served over HTTP with live-looking values; yields host:port."""
    from faust.sensors.prometheus import FaustMetrics

    metrics = Metrics()
    FaustMetrics.create(metrics.registry, FAUST_PREFIX)
    port = free_port()
    httpd, _ = start_http_server(port, addr="127.0.0.1", registry=metrics.registry)
    stop = threading.Event()
    feeder = threading.Thread(target=_feed, args=(metrics, stop), daemon=True)
    feeder.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop.set()
        feeder.join(timeout=5)
        httpd.shutdown()
        httpd.server_close()


def test_every_dashboard_and_alert_expression_runs_on_the_worker_registry(
    tmp_path: Path, exported_metrics: str
) -> None:
    with PrometheusServer(targets=[exported_metrics], workdir=tmp_path) as prom:
        prom.wait_for('up{job="intentflow-worker"}', lambda s: s and s[0].value == 1, timeout=30)
        # rate() over the dashboard's 15 s window needs a few scrapes of rising counters.
        prom.wait_for(
            'sum(rate(intentflow_scores_published_total{job="intentflow-worker"}[15s]))',
            lambda s: bool(s) and s[0].value > 0,
            timeout=30,
        )
        expressions = dashboard_expressions() + alert_expressions()
        assert len(expressions) > 30
        results = {str(e): prom.samples(e.expr) for e in expressions}  # raises on any error

        live = [
            name for name in results if name.removeprefix("dashboard: ").startswith(LIVE_PANELS)
        ]
        assert len(live) >= 9, live  # throughput 2, latency 3 + 3, lag 1
        for name in live:
            assert is_finite(results[name]), f"{name}: {results[name]!r}"

        # The values are the ones fed in, not merely present.
        lag = results["dashboard: Consumer lag per partition [A]"]
        assert sorted(s.labels["partition"] for s in lag) == ["0", "1", "2", "3"]
        p99 = results["dashboard: Event-to-score latency [C]"][0].value
        assert 0.01 <= p99 <= 0.05
        model = results["dashboard: Model served per worker [A]"]
        assert [s.labels["model_version"] for s in model] == ["test-model-1"]
        instances = results["dashboard: variable instance"]
        assert [s.labels["instance"] for s in instances] == [exported_metrics]
        # No alert condition holds for this healthy, fast, lag-free traffic (the DLQ share
        # is 1 in 11, about 9%, so that one does).
        firing = {
            e.name
            for e in alert_expressions()
            if any(not math.isnan(s.value) for s in results[str(e)])
        }
        assert firing == {"IntentflowDeadLetterRateHigh"}
