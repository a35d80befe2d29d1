"""A real Prometheus server for tests, plus the PromQL of the dashboard and the alert rules.

``PrometheusServer`` starts the ``prometheus`` binary on a free loopback port with a temporary
config (scraping the given targets every second as job ``intentflow-worker``, itself as job
``prometheus``, and evaluating ``deploy/prometheus/alerts.yml`` every second) and a temporary
TSDB, waits for ``/-/ready`` with a deadline, answers queries through the HTTP API, and stops
without leaving a process behind::

    with PrometheusServer(targets=["127.0.0.1:6066"]) as prom:
        prom.wait_for('up{job="intentflow-worker"}', lambda s: s and s[0].value == 1)
        rows = prom.samples("sum(rate(intentflow_scores_published_total[30s]))")
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.devtools.localkafka import free_port, signal_group

REPO_ROOT = Path(__file__).resolve().parents[2]
ALERTS = REPO_ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "dashboards" / "intentflow.json"
WORKER_JOB = "intentflow-worker"

# Grafana's variables, replaced by values that make sense with 1 s scrapes.
GRAFANA_VARIABLES = {
    "$__rate_interval": "15s",
    "$__interval": "5s",
    "$__range": "5m",
    "${datasource}": "",
    "$instance": ".*",
}


class PrometheusError(RuntimeError):
    """The Prometheus test server did not start, or did not answer as expected."""


class PrometheusMissingError(PrometheusError):
    """No ``prometheus`` binary on PATH. Install it: ``apt-get install prometheus``."""


class PrometheusQueryError(PrometheusError):
    """Prometheus rejected a query (bad PromQL, or an evaluation error)."""

    def __init__(self, expr: str, error_type: str, error: str) -> None:
        super().__init__(f"{error_type}: {error}\n  in: {expr}")
        self.expr = expr
        self.error_type = error_type
        self.error = error


@dataclass(frozen=True)
class Sample:
    """One series of an instant query: its labels and value (NaN stays NaN)."""

    labels: dict[str, str]
    value: float


@dataclass
class PrometheusServer:
    """One ``prometheus`` process scraping ``targets`` (``host:port``) as job intentflow-worker."""

    targets: Sequence[str] = ()
    job: str = WORKER_JOB
    rule_files: Sequence[Path] = (ALERTS,)
    scrape_interval_seconds: float = 1.0
    host: str = "127.0.0.1"
    binary: str | None = None
    port: int = 0
    workdir: Path | None = None  # None: a temporary directory, removed on exit
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _own_workdir: bool = field(default=False, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def log_file(self) -> Path:
        return self._dir / "prometheus.log"

    @property
    def _dir(self) -> Path:
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="intentflow-prom-"))
            self._own_workdir = True
        return self.workdir

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def config(self) -> dict[str, Any]:
        """The configuration the server runs with (written as JSON, which is YAML)."""
        interval = f"{self.scrape_interval_seconds:g}s"
        return {
            "global": {
                "scrape_interval": interval,
                "scrape_timeout": interval,
                "evaluation_interval": interval,
            },
            "rule_files": [str(Path(p).resolve()) for p in self.rule_files],
            "scrape_configs": [
                {"job_name": self.job, "static_configs": [{"targets": list(self.targets)}]},
                {
                    "job_name": "prometheus",
                    "static_configs": [{"targets": [f"{self.host}:{self.port}"]}],
                },
            ],
        }

    def start(self, timeout: float = 30.0, attempts: int = 3) -> PrometheusServer:
        """Start the server and return once ``/-/ready`` answers 200, or raise PrometheusError.

        A free port can be taken by someone else before Prometheus binds it; then it retries
        on another port, up to ``attempts`` times.
        """
        if self._proc is not None:
            raise PrometheusError(f"this server already runs (pid {self._proc.pid})")
        binary = self.binary or shutil.which("prometheus")
        if binary is None:
            raise PrometheusMissingError(
                "`prometheus` is not installed; install it with `apt-get install prometheus` "
                "(then stop the server the package starts: `pkill -x prometheus`)."
            )
        for attempt in range(1, attempts + 1):
            self.port = self.port if attempt == 1 and self.port else free_port(self.host)
            try:
                self._launch(binary, timeout)
                return self
            except PrometheusError:
                in_use = "address already in use" in self.log_tail().lower()
                if not in_use or attempt == attempts:
                    self.cleanup()  # the error message carries the log tail
                    raise
                self.stop()
                self.port = 0
        raise AssertionError("unreachable")  # pragma: no cover

    def _launch(self, binary: str, timeout: float) -> None:
        tsdb = self._dir / "tsdb"
        tsdb.mkdir(parents=True, exist_ok=True)
        config_file = self._dir / "prometheus.yml"
        config_file.write_text(json.dumps(self.config(), indent=2))
        with open(self.log_file, "wb") as log:  # one log per launch attempt
            self._proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config_file}",
                    f"--storage.tsdb.path={tsdb}",
                    f"--web.listen-address={self.host}:{self.port}",
                    "--storage.tsdb.retention.time=1d",
                    "--log.level=info",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise PrometheusError(
                    f"prometheus exited with code {self._proc.returncode} during start-up on "
                    f"{self.host}:{self.port}. Its log ({self.log_file}):\n{self.log_tail()}"
                )
            if self._ready():
                return
            time.sleep(0.1)
        raise PrometheusError(
            f"prometheus was not ready at {self.url}/-/ready within {timeout:.0f}s. "
            f"Its log ({self.log_file}):\n{self.log_tail()}"
        )

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1.0) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; returns when the process is gone."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            signal_group(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)

    def cleanup(self) -> None:
        """Stop, then remove the working directory if this server created it."""
        self.stop()
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir, self._own_workdir = None, False

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log written)"
        return "\n".join(text.splitlines()[-lines:])

    # HTTP API -------------------------------------------------------------------------------

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>`` and return its ``data``; raise PrometheusQueryError on error."""
        if self._proc is None:
            raise PrometheusError("the server is not running; call start() first")
        query = urllib.parse.urlencode(params)
        url = f"{self.url}/api/v1/{path}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(url, timeout=10.0) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            # Prometheus answers bad queries with 400/422 and a JSON error body.
            try:
                body = json.loads(exc.read())
            except ValueError:
                raise PrometheusError(f"GET {url}: HTTP {exc.code}") from None
        if body.get("status") != "success":
            raise PrometheusQueryError(
                params.get("query", path), body.get("errorType", "?"), body.get("error", "?")
            )
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> dict[str, Any]:
        """An instant query: Prometheus' ``data`` (``resultType`` and ``result``)."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data: dict[str, Any] = self.api("query", **params)
        return data

    def samples(self, expr: str) -> list[Sample]:
        """An instant query as samples; a scalar or string result is one unlabelled sample."""
        data = self.query(expr)
        kind, result = data["resultType"], data["result"]
        if kind == "vector":
            return [Sample(r["metric"], float(r["value"][1])) for r in result]
        if kind in ("scalar", "string"):
            return [Sample({}, float(result[1]))]
        raise PrometheusError(f"{expr!r} returned a {kind}, not an instant vector or scalar")

    def wait_for(
        self,
        expr: str,
        condition: Callable[[list[Sample]], bool] = bool,
        timeout: float = 30.0,
        interval: float = 0.25,
    ) -> list[Sample]:
        """Poll ``expr`` until ``condition(samples)`` holds; raise TimeoutError naming the last
        result and the scrape targets' health otherwise."""
        deadline = time.monotonic() + timeout
        last: list[Sample] = []
        while True:
            last = self.samples(expr)
            if condition(last):
                return last
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{expr!r} did not meet the condition within {timeout:.0f}s; last result "
                    f"{last!r}; targets: {self.target_health()!r}"
                )
            time.sleep(interval)

    def target_health(self) -> list[dict[str, str]]:
        """Each active target's job, URL, health and last scrape error."""
        data = self.api("targets", state="active")
        return [
            {
                "job": t["labels"].get("job", ""),
                "url": t["scrapeUrl"],
                "health": t["health"],
                "error": t.get("lastError", ""),
            }
            for t in data["activeTargets"]
        ]

    def rules(self) -> list[dict[str, Any]]:
        """Every loaded rule, flattened across groups (with ``health`` and ``lastError``)."""
        groups = self.api("rules")["groups"]
        return [rule for group in groups for rule in group["rules"]]


# Panels whose queries must return data whenever a worker scores traffic (title prefixes).
LIVE_PANELS = (
    "Throughput",
    "Event-to-score latency",
    "Ingest-to-score latency",
    "Consumer lag per partition",
)


def is_finite(samples: Sequence[Sample]) -> bool:
    """True when there is at least one sample and every value is a finite number."""
    return bool(samples) and all(math.isfinite(s.value) for s in samples)


# PromQL of the deployment files -------------------------------------------------------------


@dataclass(frozen=True)
class Expression:
    """A PromQL expression from the dashboard or the alert rules, and where it comes from."""

    source: str  # "dashboard" or "alerts"
    name: str  # the panel title (with the target's refId), or the alert name
    expr: str  # Grafana variables already substituted

    def __str__(self) -> str:
        return f"{self.source}: {self.name}"


def grafana_to_promql(expr: str, variables: dict[str, str] | None = None) -> str:
    """Replace Grafana's template variables with concrete values."""
    for name, value in sorted((variables or GRAFANA_VARIABLES).items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(name, value)
    return expr


def _walk_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _walk_panels(panel.get("panels", []))


def dashboard_expressions(path: Path = DASHBOARD) -> list[Expression]:
    """Every panel target's and annotation's PromQL in the dashboard."""
    dashboard = json.loads(path.read_text())
    out = []
    for panel in _walk_panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            if target.get("expr"):
                name = f"{panel['title']} [{target.get('refId', '?')}]"
                out.append(Expression("dashboard", name, grafana_to_promql(target["expr"])))
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if annotation.get("expr"):
            name = f"annotation {annotation['name']}"
            out.append(Expression("dashboard", name, grafana_to_promql(annotation["expr"])))
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        text = query.get("query") if isinstance(query, dict) else None
        if variable.get("type") == "query" and text and text.startswith("label_values("):
            # label_values(<selector>, label) is Grafana's; its selector is plain PromQL.
            selector = text[len("label_values(") : text.rindex(",")]
            out.append(Expression("dashboard", f"variable {variable['name']}", selector))
    return out


def alert_expressions(path: Path = ALERTS) -> list[Expression]:
    """Every rule's PromQL in alerts.yml (parsed with PyYAML)."""
    import yaml

    rules = yaml.safe_load(path.read_text())
    return [
        Expression("alerts", rule.get("alert") or rule["record"], rule["expr"])
        for group in rules["groups"]
        for rule in group["rules"]
    ]
